"""``restore``: write a snapshot into a directory (or onto a file / block device for such snapshots)."""

from __future__ import annotations

from steps.commands._repo import (
    CONNECTION_EPILOG,
    add_as_of_arg,
    add_repo_args,
    open_repository,
    print_json,
    warn,
)

NAME = "restore"
HELP = "restore a snapshot into a directory"
DESCRIPTION = """Restore --snapshot (an ID, a unique prefix or 'latest') into --target, byte- and
metadata-identical: modes, owners (when permitted), times, symlinks, hard links, empty directories and
sparse files.

examples:
  python -m steps restore --repo s3://backups/shop --snapshot latest --target /restore
  python -m steps restore --repo s3://backups/shop --snapshot 3f2a9c1e --target /restore --include 'pg_wal/*'
  python -m steps restore --repo s3://backups/shop --snapshot latest --as-of 2026-11-26T19:40:00Z --target /r

With --as-of, the repository is read as it was at that time from the bucket's object versions (a
versioned bucket, ideally with Object Lock): snapshots overwritten or deleted since come back, and each
object is still checked against its name.
"""


def configure(parser):
    add_repo_args(parser)
    parser.add_argument(
        "--snapshot", required=True, metavar="ID", help="snapshot ID, unique prefix, or 'latest'"
    )
    parser.add_argument("--target", required=True, metavar="DIR", help="directory to restore into")
    parser.add_argument(
        "--allow-uncommitted",
        action="store_true",
        help="also restore a snapshot of a backup that was never committed (not a restore point)",
    )
    parser.add_argument("--include", action="append", metavar="PATTERN", help="restore only matching paths")
    parser.add_argument("--exclude", action="append", metavar="PATTERN", help="skip matching paths")
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    add_as_of_arg(parser)
    parser.epilog = CONNECTION_EPILOG


def run(args) -> int:
    import sys

    from steps.progress import Progress
    from steps.repository.pipeline import tune_for_bulk_work
    from steps.repository.restorer import restore_snapshot

    tune_for_bulk_work()
    repo = open_repository(args)
    snap = repo.find_restore_point(args.snapshot, allow_uncommitted=args.allow_uncommitted)
    with Progress("restore") as progress:
        stats = restore_snapshot(repo, snap, args.target, args.include or [], args.exclude or [], progress)
    for w in stats.warnings[:50]:
        warn(w)
    summary = {
        "snapshot": snap.id,
        "target": args.target,
        "files": stats.files,
        "dirs": stats.dirs,
        "bytes_total": stats.bytes_total,
        "bytes_written": stats.bytes_written,
        "duration_s": round(stats.duration_s, 3),
        "warnings": len(stats.warnings),
    }
    if args.json:
        print_json(summary)
    else:
        print(
            f"restored snapshot {snap.short_id} into {args.target}: {stats.files} files, {stats.dirs} dirs,"
            f" {stats.bytes_total} bytes in {stats.duration_s:.1f} s",
            file=sys.stderr,
        )
    return 0
