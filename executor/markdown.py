"""Moved: `tuneplan.executor.markdown` is now `tuneplan.executor.ledger.markdown` (issue 10). This alias
keeps command code importing the old path working until it moves to the new one; it is the same
module object, not a copy."""

import sys

from tuneplan.executor.ledger import markdown as _target

sys.modules[__name__] = _target
