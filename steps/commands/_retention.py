"""Shared arguments of ``prune`` and ``forget``: retention rules, app filters, time zone, durations."""

from __future__ import annotations

import re

from steps.errors import UsageError

_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([smhdw]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def add_rule_args(parser) -> None:
    g = parser.add_argument_group("retention (a backup is kept when any rule keeps it)")
    for unit, text in (
        ("last", "the N most recent restore points"),
        ("hourly", "the newest point of each of the last N hours that have one"),
        ("daily", "the newest point of each of the last N days"),
        ("weekly", "the newest point of each of the last N ISO weeks"),
        ("monthly", "the newest point of each of the last N months"),
        ("yearly", "the newest point of each of the last N years"),
    ):
        g.add_argument(f"--keep-{unit}", metavar="N", default="0", help=f"keep {text}")
    g.add_argument(
        "--timezone", metavar="TZ", default="UTC", help="IANA zone of days, weeks, ... (default UTC)"
    )
    f = parser.add_argument_group("which restore points the rules apply to (default: all)")
    for name in ("cluster", "namespace", "app", "policy"):
        f.add_argument(f"--{name}", metavar=name.upper(), help=f"only backups of this {name}")


def parse_count(raw: str, option: str) -> int:
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise UsageError(f"{option}: expected a whole number >= 0, got {raw!r}") from None
    if value < 0:
        raise UsageError(f"{option}: expected a whole number >= 0, got {raw!r}")
    return value


def rules_from_args(args):
    from steps.repository.retention import UNITS, Rules, timezone

    timezone(args.timezone)  # fail early on a bad zone
    return Rules(**{u: parse_count(getattr(args, f"keep_{u}"), f"--keep-{u}") for u in UNITS})


def filters_from_args(args) -> dict[str, str]:
    return {k: getattr(args, k) for k in ("cluster", "namespace", "app", "policy") if getattr(args, k)}


def parse_duration(raw: str, option: str) -> float:
    """Seconds from ``90``, ``90s``, ``15m``, ``24h``, ``2d`` or ``1w``."""
    m = _DURATION.match(str(raw))
    if not m:
        raise UsageError(
            f"{option}: expected a duration like 24h, 90m, 2d or a number of seconds, got {raw!r}"
        )
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def print_decisions(report, out) -> None:
    """The restore points per group, newest first: KEEP with the rules that keep it, or FORGET."""
    group = None
    for d in report.decisions:
        row = d.to_dict()
        if row["group"] != group:
            group = row["group"]
            out.write(f"{row['kind']}s of {group}:\n")
        verdict = "keep  " if row["keep"] else "forget"
        why = ", ".join(row["reasons"]) if row["keep"] else "no rule keeps it"
        out.write(f"  {verdict} {row['time'][:19]}  {row['id']:40}  {why}\n")
