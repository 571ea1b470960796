"""Snapflow steps: everything that runs inside the step container.

Run as ``python -m steps <step> ...``; each step is a module in :mod:`steps.commands` and is also
callable as a function. This package never imports :mod:`workflows` or :mod:`hera`, and data commands
import nothing from :mod:`kubernetes` either (it costs more than a second at start-up).
"""

__version__ = "0.1.0"
