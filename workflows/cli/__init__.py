"""The ``snapflow`` command line: one module per subcommand in this package (``cmd_<name>.py``).

Each module follows the contract of :mod:`steps.cli` (``NAME``, ``HELP``, ``DESCRIPTION``,
``configure(parser)``, ``run(args)``): it parses arguments and calls a core function, with no logic of
its own.
"""

from __future__ import annotations

import argparse
import sys

from steps.api import build_command_parser, discover_commands, run_command
from workflows import __version__


def build_parser() -> argparse.ArgumentParser:
    return build_command_parser(
        prog="snapflow",
        description="Snapflow: app-consistent backups of Kubernetes apps, orchestrated by Argo Workflows.",
        version=f"snapflow {__version__}",
        metavar="COMMAND",
        commands=discover_commands(__name__, prefix="cmd_"),
        epilog="Run 'snapflow COMMAND --help' for the options and examples of each command.",
    )


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
