"""`python -m tuneplan.cli ...`: the same as the `tuneplan` script."""

import sys

from .main import main

sys.exit(main())
