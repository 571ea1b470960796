"""The step command line, and the dispatcher both command lines (``python -m steps``, ``snapflow``) share.

Commands are discovered as modules of a package. Each defines ``NAME`` (the command name), ``HELP`` (one
line), optional ``DESCRIPTION`` (shown by ``--help``, with examples), ``configure(parser)`` to add its
arguments, and ``run(args) -> int``. Command modules keep their top-level imports light: heavy libraries
are imported inside ``run`` so that ``--help`` and unrelated commands stay fast.

:func:`run_command` is the one place where errors become what the user sees: a
:class:`steps.errors.SnapflowError` is one line on stderr and its exit code; any other exception (an
``OSError`` naming a file, a ``ValueError`` or ``KeyError`` out of damaged input, ...) is one line too,
naming what failed, with exit code 1 (75 for a network timeout or a refused connection). No traceback
is shown unless ``--debug`` is given or ``SNAPFLOW_DEBUG=1`` is set.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import re
import sys
from types import ModuleType

from steps import __version__, runtime
from steps.errors import EXIT_FAILURE, EXIT_TEMPORARY, EXIT_USAGE, SnapflowError, is_network_error, printable

DEBUG_ENV = runtime.DEBUG
_DEBUG_HELP = f"show the traceback of an unexpected error (also {DEBUG_ENV}=1)"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


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
    parser.add_argument("--debug", action="store_true", dest="_debug", help=_DEBUG_HELP)
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
        p.add_argument(
            "--debug", action="store_true", dest="_debug", default=argparse.SUPPRESS, help=_DEBUG_HELP
        )
        p.set_defaults(_run=mod.run)
    return parser


def _debugging(args) -> bool:
    return bool(getattr(args, "_debug", False)) or os.environ.get(DEBUG_ENV) == "1"


def _one_line(text: str, limit: int = 300) -> str:
    text = printable(re.sub(r"\s*[\r\n]+\s*", " ", str(text)).strip())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_unexpected(err: BaseException) -> tuple[str, int]:
    """(one-line message, exit code) for an exception that is not a SnapflowError."""
    name = type(err).__name__
    if isinstance(err, OSError):
        what = os.strerror(err.errno) if err.errno else (err.strerror or str(err) or name)
        where = ""
        if err.filename is not None:
            where = f"{os.fsdecode(err.filename)}: "
            if err.filename2 is not None:
                where = f"{os.fsdecode(err.filename)} -> {os.fsdecode(err.filename2)}: "
        code = EXIT_TEMPORARY if is_network_error(err) else EXIT_FAILURE
        return _one_line(f"{where}{what} ({name})"), code
    if isinstance(err, MemoryError):
        return "out of memory (MemoryError)", EXIT_FAILURE
    if isinstance(err, KeyError):
        detail = f"missing key {err.args[0]!r}" if err.args else "missing key"
    elif isinstance(err, UnicodeError):
        detail = f"text that is not valid {getattr(err, 'encoding', 'UTF-8')}: {err}"
    else:
        detail = str(err) or "no detail"
    return _one_line(f"unexpected {name}: {detail} (--debug or {DEBUG_ENV}=1 shows where)"), EXIT_FAILURE


def run_command(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse, run the chosen command, and turn every error into one line on stderr and an exit code.

    This is the only place that catches unexpected exceptions: commands and library code raise, and
    never print tracebacks themselves."""
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except SnapflowError as err:
        if _debugging(args):
            raise
        print(f"error: {_one_line(str(err), 2000)}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_FAILURE
    except Exception as err:  # the one catch-all: anything else is one line too
        if _debugging(args):
            raise
        message, code = describe_unexpected(err)
        print(f"error: {message}", file=sys.stderr)
        return code


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
