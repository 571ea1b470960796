"""``verify``: check that snapshots are complete and, for a share of packs, that their data reads back."""

from __future__ import annotations

from steps.commands._repo import (
    CONNECTION_EPILOG,
    add_repo_args,
    open_repository,
    parse_percent,
    print_json,
    problems_summary,
    warn,
)

NAME = "verify"
HELP = "check snapshots' structure and read back a share of their data"
DESCRIPTION = """Check that every tree and data blob referenced by the chosen snapshots is indexed and
that its pack exists with the recorded size; with --read-data, read back that share of the packs,
check their names against their bytes, decrypt and rehash every blob. Exits 3 naming each missing or
corrupt object. With --backup-id, checks that backup's snapshots, reads back EVERY pack the backup
wrote itself (the index records which backup wrote each pack) plus --read-data of the older packs it
reuses, and stores the verdict as the run record "verify" of the backup (finalize commits the backup
only if it passed). A backup ID that no snapshot carries is refused (exit 2) and nothing is stored.

examples:
  python -m steps verify --repo s3://backups/shop --snapshot latest --read-data 10
  python -m steps verify --repo s3://backups/shop --backup-id backup-orders-x7k2 --read-data 100 --json
"""


def configure(parser):
    add_repo_args(parser)
    parser.add_argument(
        "--snapshot", metavar="ID", help="one snapshot (ID, prefix or 'latest'); default: all"
    )
    parser.add_argument(
        "--backup-id", metavar="ID", help="every snapshot of this backup run; stores a run record"
    )
    parser.add_argument(
        "--read-data", metavar="PERCENT", default="0", help="share of packs to read back (0-100)"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.epilog = CONNECTION_EPILOG


def run(args) -> int:
    from steps.errors import IntegrityError, UsageError
    from steps.progress import Progress
    from steps.repository.checker import verify
    from steps.repository.repo import utc_now_iso

    percent = parse_percent(args.read_data, "--read-data")
    if args.snapshot and args.backup_id:
        raise UsageError("--snapshot and --backup-id: give one of them, not both")
    from steps.repository.pipeline import tune_malloc

    tune_malloc()
    repo = open_repository(args)
    snaps = repo.list_snapshots()
    if args.snapshot:
        chosen = [repo.find_snapshot(args.snapshot, snaps)]
    elif args.backup_id:
        chosen = [s for s in snaps if s.backup_id == args.backup_id or s.tags.get("backup") == args.backup_id]
        if not chosen:  # a typo must not leave a failing run record under a backup ID that never ran
            raise UsageError(
                f"--backup-id: no snapshot carries the backup ID {args.backup_id!r}; nothing was verified"
                " or recorded"
            )
    else:
        chosen = snaps
    with Progress("verify", enabled=percent > 0, unit="packs") as progress:
        report = verify(repo, chosen, percent, progress, new_packs_of=args.backup_id)
    if args.backup_id:
        record = {"name": "verify", "backup_id": args.backup_id, "time": utc_now_iso(), **report.to_dict()}
        rid = repo.save_record("runs", record, key=args.backup_id)
        report_id = rid
    else:
        report_id = None
    for w in report.warnings:
        warn(w)
    if args.json:
        out = report.to_dict()
        if report_id:
            out["record"] = report_id
        print_json(out)
    else:
        for p in report.problems:
            print(f"problem: {p}")
        print(
            f"{len(chosen)} snapshot(s), {report.trees} trees, {report.blobs} blob references,"
            f" {report.packs_referenced} packs ({report.packs_read} read back"
            + (f", all {report.packs_new} this backup wrote" if args.backup_id else "")
            + f", {report.bytes_read} bytes):"
            f" {'ok' if report.ok else f'{len(report.problems)} problem(s)'}"
        )
    if not report.ok:
        raise IntegrityError(f"verify failed: {problems_summary(report.problems)}")
    return 0
