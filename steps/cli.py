"""The step command line, and the dispatcher both command lines (``python -m steps``, ``snapflow``) share.

Commands are discovered as modules of a package. Each defines ``NAME`` (the command name), ``HELP`` (one
line), optional ``DESCRIPTION`` (shown by ``--help``, with examples), ``configure(parser)`` to add its
arguments, and ``run(args) -> int``. Command modules keep their top-level imports light: heavy libraries
are imported inside ``run`` so that ``--help`` and unrelated commands stay fast. Errors derived from
:class:`steps.errors.SnapflowError` become one line on stderr and their exit code; no traceback is shown
unless ``SNAPFLOW_DEBUG=1``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from types import ModuleType

from steps import __version__
from steps.errors import EXIT_FAILURE, EXIT_USAGE, SnapflowError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def switch_option() -> dict:
    """``add_argument`` keywords of an option that is on alone (``--dry-run``) and also takes ``true`` or
    ``false`` (``--dry-run false``: how a workflow parameter passes it)."""

    def parse(value: str) -> bool:
        if value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")

    return {"nargs": "?", "const": True, "default": False, "type": parse, "metavar": "true|false"}


def discover_commands(package: str, prefix: str = "") -> list[ModuleType]:
    """The command modules of ``package`` whose names start with ``prefix`` (and not with ``_``)."""
    pkg = importlib.import_module(package)
    mods = []
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if info.name.startswith("_") or not info.name.startswith(prefix):
            continue
        mod = importlib.import_module(f"{package}.{info.name}")
        if hasattr(mod, "NAME") and hasattr(mod, "run"):
            mods.append(mod)
    return sorted(mods, key=lambda m: m.NAME)


def _command_modules() -> list[ModuleType]:
    return discover_commands("steps.commands")


def build_command_parser(
    prog: str,
    description: str,
    version: str,
    metavar: str,
    commands: list[ModuleType],
    epilog: str | None = None,
) -> argparse.ArgumentParser:
    parser = _Parser(
        prog=prog,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=version)
    sub = parser.add_subparsers(dest="_command", metavar=metavar, parser_class=_Parser)
    sub.required = True
    for mod in commands:
        p = sub.add_parser(
            mod.NAME,
            help=mod.HELP,
            description=getattr(mod, "DESCRIPTION", mod.HELP),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        mod.configure(p)
        p.set_defaults(_run=mod.run)
    return parser


def run_command(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse, run the chosen command, and turn Snapflow errors into one line and their exit code."""
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


def build_parser() -> argparse.ArgumentParser:
    return build_command_parser(
        prog="python -m steps",
        description="Snapflow step container: the steps Argo runs (and you can run by hand).",
        version=f"snapflow-steps {__version__}",
        metavar="STEP",
        commands=_command_modules(),
    )


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), argv)
