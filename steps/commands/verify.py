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
from steps.errors import IntegrityError, UsageError

NAME = "verify"
HELP = "check snapshots' structure and read back a share of their data"
DESCRIPTION = """Check that every tree and data blob referenced by the chosen snapshots is indexed and
that its pack exists with the recorded size, that every tree is well formed (entry names are names, not
paths: never empty, '.', '..', with '/' or NUL, or twice in one directory; known types; holes inside the
file) and that every file's size is what its content blobs and holes add up to; with --read-data, read
back that share of the packs, check their names against their bytes, decrypt and rehash every blob;
a registry snapshot's manifest and blob files whose data lies in a pack read back are also read whole
and must match the OCI digest they are named by (all of them with --read-data 100).
Exits 3 naming each missing or corrupt object: the snapshot, tree and entry of a damaged tree, the key
of a damaged record. With --backup-id, checks that backup's snapshots, reads back EVERY pack the backup
wrote itself (the index records which backup wrote each pack) plus --read-data of the older packs it
reuses, and stores the verdict as the run record "verify" of the backup (finalize commits the backup
only if it passed). A backup ID that no snapshot carries is refused (exit 2; exit 3 when damaged
snapshot records may be its own) and nothing is stored.

Damaged records (snapshot, backup and run records that do not authenticate or whose bytes do not match
their name) fail the verify of all snapshots; --snapshot ID refuses a damaged record of that snapshot
(and --snapshot latest any damaged snapshot or backup record, since it may be the newest); with
--backup-id, damaged backup and run records of that backup fail it, and so does a snapshot record of it
found under a wrong name. Other damaged records are warnings (`repair records` removes them).

A prune may run meanwhile: packs it deletes are checked again against a fresh view of the repository
(index and snapshot records read again), so a snapshot it forgot (a warning) or a blob it moved to another
pack is not a problem, and a blob a remaining snapshot needs that is in no pack is. A snapshot of the
backup verified with --backup-id that is deleted meanwhile is a problem: that backup cannot be committed.

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


def _choose_snapshot(repo, ref: str, snaps, damaged):
    """The snapshot ``--snapshot ref`` names. ``find_snapshot`` refuses, naming the record, a reference
    that names a damaged snapshot record (it is damaged, not missing), and ``latest`` while a snapshot
    or backup record is damaged (either may be the newest restore point)."""
    hit = next((d for d in damaged if d.id.startswith(ref)), None) if len(ref) >= 4 else None
    if hit is not None and any(s.id.startswith(ref) for s in snaps):
        raise UsageError(
            f"--snapshot: {ref!r} is ambiguous (it matches intact snapshots and the damaged record {hit.key})"
        )
    return repo.find_snapshot(ref, snaps)


def run(args) -> int:
    from steps.progress import Progress
    from steps.repository.checker import VerifyReport, verify
    from steps.repository.damage import repair_hint
    from steps.repository.inspection import damaged_record_problem
    from steps.repository.records import Snapshot, utc_now_iso

    percent = parse_percent(args.read_data, "--read-data")
    if args.snapshot and args.backup_id:
        raise UsageError("--snapshot and --backup-id: give one of them, not both")
    from steps.repository.blob_sink import tune_malloc

    tune_malloc()
    repo = open_repository(args)
    # snapshot records before the index (verify loads it): a writer stores its index files first
    records, damaged = repo.scan_records("snapshots")
    snaps = [Snapshot(r.id, r.data) for r in records]
    failing = []  # damaged records that fail this verify
    if args.snapshot:
        chosen = [_choose_snapshot(repo, args.snapshot, snaps, damaged)]
    elif args.backup_id:
        chosen = [s for s in snaps if s.backup_id == args.backup_id or s.tags.get("backup") == args.backup_id]
        # a record that opens under another name tells whose it is; one that cannot be read does not
        failing = [d for d in damaged if d.data is not None and d.data.get("backup_id") == args.backup_id]
        unknown = [d for d in damaged if d.data is None]
        if not chosen and (failing or unknown):  # they may be its snapshots: damage, not a typo
            raise IntegrityError(
                f"--backup-id: no intact snapshot carries the backup ID {args.backup_id!r}, and"
                f" {problems_summary([damaged_record_problem(d) for d in failing + unknown])}; nothing was"
                f" verified or recorded; {repair_hint(repo.url)}"
            )
        if not chosen:  # a typo must not leave a failing run record under a backup ID that never ran
            raise UsageError(
                f"--backup-id: no snapshot carries the backup ID {args.backup_id!r}; nothing was verified"
                " or recorded"
            )
        for kind in ("backups", "runs"):
            failing += repo.scan_records(kind, key=args.backup_id)[1]
    else:
        chosen = snaps
        failing = damaged + repo.scan_records("backups")[1] + repo.scan_records("runs")[1]
    noted = [d for d in damaged if d not in failing]  # damage outside what this verify checks
    with Progress("verify", enabled=percent > 0 and bool(chosen), unit="packs") as progress:
        if chosen:
            report = verify(repo, chosen, percent, progress, new_packs_of=args.backup_id)
        else:
            report = VerifyReport(read_data_percent=percent)
    report.problems[:0] = [damaged_record_problem(d) for d in failing]
    report.warnings[:0] = [damaged_record_problem(d) for d in noted]
    if failing or noted:
        report.warnings.append(f"damaged records: {repair_hint(repo.url)}")
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
            + f", {report.bytes_read} bytes)"
            + (f", {report.rechecked} checked again after a prune" if report.rechecked else "")
            + f": {'ok' if report.ok else f'{len(report.problems)} problem(s)'}"
        )
    if not report.ok:
        raise IntegrityError(f"verify failed: {problems_summary(report.problems)}")
    return 0
