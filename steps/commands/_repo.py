"""Shared helpers of the repository steps: connection arguments, opening the repository, tag parsing.

Heavy modules are imported inside the functions so that ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import re
import sys

from steps.errors import UsageError, printable

_TAG_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-/]{0,62}$")


def add_repo_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("repository")
    g.add_argument("--repo", required=True, metavar="URL", help="s3://BUCKET/PREFIX (also file:///PATH)")
    g.add_argument("--endpoint", metavar="URL", help="S3 endpoint URL (default: $SNAPFLOW_S3_ENDPOINT)")


# (the defaults are those of steps.drivers.objectstore, not imported here to keep --help fast; a test
# compares them)
CONNECTION_EPILOG = """\
environment:
  SNAPFLOW_PASSWORD / SNAPFLOW_PASSWORD_FILE   repository password (never given as an argument)
  SNAPFLOW_S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, SNAPFLOW_S3_REGION,
  SNAPFLOW_S3_PATH_STYLE, SNAPFLOW_S3_CA_BUNDLE
  SNAPFLOW_S3_CONNECT_TIMEOUT (5 s), SNAPFLOW_S3_READ_TIMEOUT (10 s: each read, each 64 KiB written),
  SNAPFLOW_S3_RETRIES (4), SNAPFLOW_S3_RETRY_SECONDS (30: no retry starts that could end later)
  SNAPFLOW_DEBUG=1 (or --debug)                show the traceback of an unexpected error
repository URLs: s3://BUCKET/PREFIX or file:///PATH; '//' and a trailing '/' are dropped, '.' and
  '..' segments, '?', '#', '%' and whitespace are refused
"""


def open_store(args):
    from steps.drivers.objectstore import open_store as _open

    return _open(args.repo, args.endpoint)


def add_as_of_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--as-of",
        metavar="TIME",
        help="read the repository as it was at TIME (ISO 8601, UTC unless a zone is given) from the"
        " bucket's object versions: what was overwritten or deleted since comes back",
    )


def open_repository(args):
    """The repository of ``--repo`` / ``--endpoint`` (and ``--as-of`` where the command has it)."""
    from steps.repository.opener import open_repository as _open

    return _open(args.repo, args.endpoint, as_of=getattr(args, "as_of", None), warn=warn)


def parse_tags(values: list[str] | None, option: str = "--tag") -> dict[str, str]:
    tags: dict[str, str] = {}
    for raw in values or []:
        key, sep, value = raw.partition("=")
        if not sep or not _TAG_KEY.match(key):
            raise UsageError(f"{option}: expected KEY=VALUE (KEY of letters, digits, _ . - /), got {raw!r}")
        tags[key] = value
    return tags


def parse_percent(raw: str, option: str) -> float:
    text = raw.strip().rstrip("%")
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{option}: expected a percentage between 0 and 100, got {raw!r}") from None
    if not 0 <= value <= 100:
        raise UsageError(f"{option}: expected a percentage between 0 and 100, got {raw!r}")
    return value


def problems_summary(problems: list[str], shown: int = 3) -> str:
    """The first ``shown`` problems, and how many more there are: for a one-line error."""
    more = f" (and {len(problems) - shown} more)" if len(problems) > shown else ""
    return "; ".join(problems[:shown]) + more


def print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


def warn(msg: str) -> None:
    print(f"warning: {printable(msg)}", file=sys.stderr)
