"""snapflow report: an HTML report of what a repository holds, per app and per run."""

from __future__ import annotations

NAME = "report"
HELP = "write an HTML report of a repository's backups (per app and per run)"
DESCRIPTION = """\
Read the repository's committed backups, their run records and snapshots, and write one
self-contained HTML page: per app the backups over time, consistency level, verify status, sizes read
and added, dedup and compression ratios, freeze windows, durations, and RPO against the schedule
(late or missing backups flagged); per run the step timeline with the freeze window. Charts are inline
SVG: the page needs no network to view. Schedules come from --policy files (or from what a local run
recorded).

Password and S3 settings come from the environment as for the steps (SNAPFLOW_PASSWORD or
SNAPFLOW_PASSWORD_FILE, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, SNAPFLOW_S3_ENDPOINT).

examples:
  snapflow report --repo s3://backups/shop --endpoint https://minio:9000 -o report.html
  snapflow report --repo s3://backups/shop --policy policies/orders-db.yaml --days 90 -o report.html
  snapflow report --fleet fleet.yaml -o fleet.html       # one row per cluster x app (docs/user/fleet.md)
  snapflow report --fleet fleet.yaml -o fleet.csv        # the same rows as CSV (or .json, --format)
  snapflow report --repo s3://backups/shop --policy orders-db.yaml --evidence --since 90d -o evidence.html
"""


def configure(parser):
    parser.add_argument(
        "--repo",
        action="append",
        default=[],
        metavar="URL",
        help="s3://BUCKET/PREFIX (also file:///PATH); repeatable: several give a fleet report",
    )
    parser.add_argument("--endpoint", metavar="URL", help="S3 endpoint URL (default: $SNAPFLOW_S3_ENDPOINT)")
    parser.add_argument("-o", "--output", required=True, metavar="FILE", help="HTML file to write")
    parser.add_argument(
        "--policy",
        action="append",
        default=[],
        metavar="FILE",
        help="policy file with schedules (repeatable)",
    )
    parser.add_argument(
        "--days", type=float, default=30, metavar="N", help="report window in days (default 30)"
    )
    parser.add_argument("--now", metavar="TIME", help="judge RPO as of this ISO time (default: now)")
    # the fleet report (workflows.report.fleet)
    parser.add_argument(
        "--fleet", metavar="FLEET", help="fleet file: one row per cluster x app of its repositories"
    )
    parser.add_argument(
        "--format",
        choices=("html", "json", "csv"),
        help="fleet report format (default: from the -o suffix .json / .csv, else html)",
    )
    parser.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="record cache (default: $XDG_CACHE_HOME/snapflow or ~/.cache/snapflow)",
    )
    parser.add_argument("--no-cache", action="store_true", help="fleet report: keep no record cache")
    parser.add_argument(
        "--no-details",
        action="store_true",
        help="fleet report: write no per-app reports for the rows to link to",
    )
    # the compliance evidence page (workflows.report.evidence)
    parser.add_argument(
        "--evidence",
        action="store_true",
        help="write the compliance evidence page of --repo (docs/user/evidence.md)",
    )
    parser.add_argument(
        "--since",
        metavar="TIME",
        help="evidence period: from this ISO time, or this long before --now (90d, 12w; default: --days)",
    )


def run(args) -> int:
    from workflows.cli._common import policy_errors_as_lines

    return policy_errors_as_lines(lambda: _run(args))


def _run(args) -> int:
    import sys

    from steps.api import UsageError
    from workflows.report import collect, parse_time, write_report

    if args.days <= 0:
        raise UsageError(f"--days: expected a positive number, got {args.days:g}")
    now = None
    if args.now:
        now = parse_time(args.now)
        if now is None:
            raise UsageError(f"--now: expected an ISO time like 2025-01-31T12:00:00Z, got {args.now!r}")
    from workflows.report.fleet import run_fleet_report, wants_fleet

    if args.evidence:
        from workflows.report.evidence import run_evidence

        return run_evidence(args, now)
    if wants_fleet(args):
        return run_fleet_report(args, now)
    report = collect(args.repo[0], args.endpoint, policies=args.policy, now=now, window_days=args.days)
    write_report(report, args.output)
    for w in report.warnings:
        print(f"warning: {w}", file=sys.stderr)
    flagged = sum(1 for a in report.apps if a.problems)
    print(f"wrote {args.output}: {len(report.apps)} app(s), {flagged} with problems", file=sys.stderr)
    return 0
