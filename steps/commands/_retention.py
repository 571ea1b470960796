"""Shared by ``prune`` and ``forget``: retention rules, app filters, time zone, durations, the report."""

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


def print_report(report, out) -> None:
    """The text report of prune and forget: the decisions, then what each phase did."""
    print_decisions(report, out)
    verb = "would forget" if report.dry_run else "forgot"
    out.write(
        f"{verb} {len(report.forgotten_backups)} backup(s), {len(report.forgotten_snapshots)} snapshot(s);"
        f" kept {sum(1 for d in report.decisions if d.keep)} ({report.rules})\n"
    )
    s = report.sweep
    if s:
        out.write(
            f"sweep: {s['candidate_records']} candidate record(s) due: {s['packs_deleted']} pack(s) deleted"
            f" ({s['bytes_freed']} bytes), {s['packs_rescued']} kept (in use), {s['snapshots_deleted']}"
            f" uncommitted snapshot(s) deleted, {s['snapshots_rescued'] + s['snapshots_restored']} committed"
            " meanwhile\n"
        )
    m = report.mark
    if m:
        out.write(
            f"mark: {m['packs_unused']} unused, {m['packs_unindexed']} unindexed, {m['packs_repacked']}"
            f" repacked pack(s) ({m['bytes_to_free']} bytes), {m['snapshots_uncommitted']} uncommitted"
            " snapshot(s)\n"
        )
    for p in report.pending:
        out.write(
            f"pending: candidates {p['record'][:12]}: {p['packs']} pack(s), {p['snapshots']} snapshot(s),"
            f" swept after {p['sweep_after']}\n"
        )
    if report.locks:
        lk = report.locks
        out.write(
            f"locks: {lk['checked']} object(s) checked, {lk['extended']} extended to {lk['until']},"
            f" {lk['held']} already held long enough\n"
        )
    if report.versions:
        v = report.versions
        out.write(
            f"versions: {v['versions_deleted']} old version(s) deleted ({v['bytes_freed']} bytes),"
            f" {v['versions_held']} still held by Object Lock ({v['bytes_held']} bytes"
            + (f", until {v['held_until']}" if v["held_until"] else "")
            + ")\n"
        )


def run_and_report(args, name: str, operation, opts) -> int:
    """Run ``operation`` (prune or forget) with ``opts`` on the repository of ``args``; print its warnings
    and its report (``--json``: as JSON)."""
    import sys

    from steps.commands._repo import open_repository, print_json, warn

    repo = open_repository(args)
    report = operation(repo, opts, log=lambda m: print(f"{name}: {m}", file=sys.stderr))
    for w in report.warnings[:50]:
        warn(w)
    if args.json:
        print_json(report.to_dict())
    else:
        print_report(report, sys.stdout)
    return 0
