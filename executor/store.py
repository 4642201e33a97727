"""Moved: `tuneplan.executor.store` is now `tuneplan.executor.ledger` (issue 10). This alias keeps
the command code importing the old path working until it moves to the new one; it is the same
module object, not a copy."""

import sys

from tuneplan.executor import ledger as _ledger

sys.modules[__name__] = _ledger
