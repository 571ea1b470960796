"""``repair index``: rebuild the index from the packs' own headers. ``repair records``: put renamed or
swapped records back under their own names, remove damaged records that cannot be read."""

from __future__ import annotations

from steps.commands._repo import CONNECTION_EPILOG, add_repo_args, open_repository, print_json, warn

NAME = "repair"
HELP = "repair the repository (index: rebuild it from the packs; records: fix or remove damaged records)"
DESCRIPTION = """Rebuild the index from the packs alone (each pack carries an encrypted list of its
blobs). The new index files supersede every old one, which are then deleted.

A pack whose bytes do not match its name is skipped, and the command exits 3 after the rebuild. A pack
that cannot be read for any other reason (permissions, the store not answering) stops the repair
before it writes or deletes anything: an index without that pack would drop its blobs.

Neither repair reads trees. To `repair index` a damaged tree (an entry named like a path, '..' or with
'/', a duplicate, an unknown type, a file whose size does not add up - `verify` and `check` name the
snapshot, the tree and the entry) is a blob like any other: indexed again as it is, left unchanged. The
snapshots that reach it cannot be restored whole: forget them (`forget --snapshot ID`, or `forget
--backup-id ID` for a backup's), then prune.

`repair records` (snapshot, backup and run records): a record stored under another name (renamed, or
swapped with another record; its bytes still authenticate) is written back under its own name and the
misnamed copy removed; a record that cannot be read (bytes changed, moved from another backup's group,
not written by Snapflow) is deleted - it opens nothing, and while it is there `restore --snapshot
latest`, finalize and retention refuse to choose around it. What a deleted snapshot record referenced
is freed by the next prune. --dry-run lists what would be done. Run `check` first: it tells what the
damage affects.

examples:
  python -m steps repair index --repo s3://backups/shop
  python -m steps repair records --repo s3://backups/shop --dry-run
"""


def configure(parser):
    sub = parser.add_subparsers(dest="what", metavar="WHAT", parser_class=type(parser))
    sub.required = True
    p = sub.add_parser(
        "index", help="rebuild the index from the packs", description="rebuild the index from the packs"
    )
    add_repo_args(p)
    p.add_argument("--json", action="store_true")
    p.epilog = CONNECTION_EPILOG
    r = sub.add_parser(
        "records",
        help="put renamed or swapped records back, remove damaged ones",
        description="Snapshot, backup and run records that do not open: one stored under another name"
        " (renamed or swapped) is written back under its own name; one that cannot be read is deleted.",
    )
    add_repo_args(r)
    r.add_argument("--dry-run", action="store_true", help="change nothing; list what would be done")
    r.add_argument("--json", action="store_true")
    r.epilog = CONNECTION_EPILOG


_LISTED = 200  # names an audit record lists; the counts are always complete


def _records_what(report) -> tuple[dict, None, str]:
    """What ``repair records`` changed, for its audit record: the records put back and removed."""
    what = {
        "put_back": len(report.restored),
        "removed": len(report.removed),
        "kept": len(report.kept),
        "put_back_keys": [r["key"] for r in report.restored][:_LISTED],
        "removed_keys": [{"key": r["key"], "problem": r["problem"]} for r in report.removed][:_LISTED],
    }
    return what, None, "ok"


def _index_what(report) -> tuple[dict, None, str]:
    """What ``repair index`` changed, for its audit record: the index files written and deleted, and
    the damaged packs left out (``partial``)."""
    what = {
        "packs": report.packs,
        "blobs": report.blobs,
        "new_index": len(report.new_index),
        "removed_index": len(report.removed_index),
        "damaged_packs": report.damaged[:_LISTED],
    }
    return what, None, "partial" if report.damaged else "ok"


def run_records(args) -> int:
    from steps.repository.repair_records import repair_records

    repo = open_repository(args)
    if args.dry_run:
        report = repair_records(repo, dry_run=True)  # changes nothing: not recorded
    else:
        from steps.commands.audit_trail import run_audited

        report = run_audited(repo, "repair.records", {}, lambda: repair_records(repo), describe=_records_what)
    if args.json:
        print_json(report.to_dict())
        return 0
    verb = ("would " if args.dry_run else "") + "%s"
    for r in report.restored:
        print(f"{verb % 'put back'} {r['key']} (it was stored as {r['from']})")
    for r in report.removed:
        print(f"{verb % 'remove'} {r['key']}: {r['problem']}")
        if r.get("note"):
            warn(r["note"])
    for r in report.kept:
        warn(f"kept {r['key']} ({r['problem']}): {r['why']}")
    would = "would be " if args.dry_run else ""
    print(
        f"{len(report.restored)} record(s) {would}put back, {len(report.removed)} damaged record(s)"
        f" {would}removed, {len(report.kept)} kept"
    )
    return 0


def run(args) -> int:
    if args.what == "records":
        return run_records(args)
    from steps.commands.audit_trail import run_audited
    from steps.repository.repair_index import rebuild_index

    repo = open_repository(args)
    report = run_audited(repo, "repair.index", {}, lambda: rebuild_index(repo), describe=_index_what)
    for d in report.damaged:
        warn(f"skipped damaged {d}")
    if args.json:
        print_json(
            {
                "packs": report.packs,
                "blobs": report.blobs,
                "damaged": report.damaged,
                "new_index": report.new_index,
                "removed_index": report.removed_index,
            }
        )
    else:
        print(
            f"index rebuilt from {report.packs} packs ({report.blobs} blobs); {len(report.damaged)} damaged packs"
            f" skipped; {len(report.removed_index)} old index files removed"
        )
    if report.damaged:
        from steps.errors import IntegrityError

        raise IntegrityError(
            f"repair index: {len(report.damaged)} damaged pack(s) skipped (their bytes do not match their"
            f" names), e.g. {report.damaged[0]}; their blobs are no longer indexed: run verify to see which"
            " snapshots need them"
        )
    return 0
