"""The step command line: discovers one module per step in :mod:`steps.commands`.

Each command module defines ``NAME`` (the step name), ``HELP`` (one line), ``configure(parser)`` to add
its arguments (and may set ``parser.epilog`` / ``description``), and ``run(args) -> int``. Command modules
keep their top-level imports light: heavy libraries are imported inside ``run`` so that ``--help`` and
unrelated steps stay fast. Errors derived from :class:`steps.errors.SnapflowError` become one line on
stderr and their exit code; no traceback is shown unless ``SNAPFLOW_DEBUG=1``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from steps import __version__
from steps.errors import EXIT_FAILURE, EXIT_USAGE, SnapflowError


def _command_modules():
    import steps.commands as pkg

    mods = []
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"steps.commands.{info.name}")
        if hasattr(mod, "NAME") and hasattr(mod, "run"):
            mods.append(mod)
    return mods


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m steps",
        description="Snapflow step container: the steps Argo runs (and you can run by hand).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"snapflow-steps {__version__}")
    sub = parser.add_subparsers(dest="step", metavar="STEP", parser_class=_Parser)
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
    parser = build_parser()
    args = parser.parse_args(argv)
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
