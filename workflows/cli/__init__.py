"""The ``snapflow`` command line: one module per subcommand in this package (``cmd_<name>.py``).

Each module defines ``NAME``, ``HELP``, optional ``DESCRIPTION`` (shown by ``--help``, with examples),
``configure(parser)`` and ``run(args) -> int``; it parses arguments and calls a core function, with no
logic of its own. Errors derived from :class:`steps.errors.SnapflowError` become one line on stderr and
their exit code; no traceback unless ``SNAPFLOW_DEBUG=1``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from steps.errors import EXIT_FAILURE, EXIT_USAGE, SnapflowError
from workflows import __version__


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _command_modules():
    pkg = sys.modules[__name__]
    mods = []
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if info.name.startswith("cmd_"):
            mod = importlib.import_module(f"{__name__}.{info.name}")
            if hasattr(mod, "NAME") and hasattr(mod, "run"):
                mods.append(mod)
    return mods


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="snapflow",
        description="Snapflow: app-consistent backups of Kubernetes apps, orchestrated by Argo Workflows.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run 'snapflow COMMAND --help' for the options and examples of each command.",
    )
    parser.add_argument("--version", action="version", version=f"snapflow {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for mod in sorted(_command_modules(), key=lambda m: m.NAME):
        p = sub.add_parser(
            mod.NAME,
            help=mod.HELP,
            description=getattr(mod, "DESCRIPTION", mod.HELP),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        mod.configure(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except SnapflowError as err:
        if os.environ.get("SNAPFLOW_DEBUG") == "1":
            raise
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
