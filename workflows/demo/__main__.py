"""``python -m workflows.demo``: see :mod:`workflows.demo.main`."""

import sys

from workflows.demo.main import main

sys.exit(main())
