"""``python -m steps <step> ...``: the step container's entry point."""

import sys

from steps.cli import main

sys.exit(main())
