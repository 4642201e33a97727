"""Moved: `tuneplan.executor.sqlsafe` is now `tuneplan.executor.ledger.sqlsafe` (issue 10). This alias
keeps command code importing the old path working until it moves to the new one; it is the same
module object, not a copy."""

import sys

from tuneplan.executor.ledger import sqlsafe as _target

sys.modules[__name__] = _target
