"""``copy``: back up a directory, a file or a block device into the repository as a new snapshot."""

from __future__ import annotations

from steps.commands._repo import (
    CONNECTION_EPILOG,
    add_repo_args,
    open_repository,
    parse_tags,
    print_json,
    warn,
)

NAME = "copy"
HELP = "back up a directory, file or block device as a snapshot"
DESCRIPTION = """Back up --source into the repository. The parent snapshot (same source, tags and app
identity) is found automatically: files whose size, mtime, ctime and inode are unchanged are not read.
Progress goes to stderr (and to $ARGO_PROGRESS_FILE as N/M MiB); the last line of stdout is the new
snapshot ID, or a JSON summary with --json.

examples:
  python -m steps copy --repo s3://backups/shop --source /data --tag volume=pgdata
  python -m steps copy --repo s3://backups/shop --source /dev/xvdf --backup-id backup-orders-x7k2 --json
"""


def configure(parser):
    add_repo_args(parser)
    parser.add_argument(
        "--source", required=True, metavar="PATH", help="directory, regular file or block device"
    )
    parser.add_argument("--tag", action="append", metavar="K=V", help="tag the snapshot (repeatable)")
    parser.add_argument(
        "--backup-id", metavar="ID", help="the backup run this copy belongs to (Argo workflow name)"
    )
    for f in ("cluster", "namespace", "app", "volume", "policy"):
        parser.add_argument(f"--{f}", metavar=f.upper(), help=f"record the {f} in the snapshot")
    parser.add_argument(
        "--exclude", action="append", metavar="PATTERN", help="skip matching paths (repeatable)"
    )
    parser.add_argument("--parent", metavar="ID", help="use this parent snapshot instead of finding one")
    parser.add_argument("--no-parent", action="store_true", help="read every file (ignore any parent)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary instead of the ID")
    parser.add_argument(
        "--allow-errors",
        action="store_true",
        help="record the snapshot even if some files could not be read (marked incomplete); by default"
        " such a copy fails with exit 3 and records nothing",
    )
    parser.epilog = CONNECTION_EPILOG


def run(args) -> int:

    from steps.drivers import files
    from steps.errors import UsageError
    from steps.progress import Progress
    from steps.repository.archiver import CopyOptions, Prescan, copy_source
    from steps.repository.pipeline import tune_for_bulk_work

    if args.repo.startswith("s3://"):
        # imported before the source scan starts: imports compete with the scan for the interpreter,
        # the key derivation the scan overlaps with does not
        import minio  # noqa: F401

    tags = parse_tags(args.tag)
    if not files.exists(args.source):
        raise UsageError(
            f"--source: {args.source!r} does not exist (expected a directory, file or block device)"
        )
    if args.backup_id:
        tags.setdefault("backup", args.backup_id)
    identity = {
        f: getattr(args, f) for f in ("cluster", "namespace", "app", "volume", "policy") if getattr(args, f)
    }
    parent = None if args.no_parent else (args.parent or "auto")
    tune_for_bulk_work()
    opts = CopyOptions(
        source=args.source,
        tags=tags,
        backup_id=args.backup_id,
        identity=identity,
        excludes=args.exclude or [],
        parent=parent,
        allow_errors=args.allow_errors,
    )
    progress = Progress("copy")
    # list and stat the source while the repository opens (key derivation, index)
    prescan = Prescan(args.source, opts.excludes, progress)
    try:
        repo = open_repository(args)
    except BaseException:
        prescan.stop()
        raise
    with progress:
        result = copy_source(repo, opts, progress, prescan=prescan)
    for w in result.warnings[:50]:
        warn(w)
    s = result.stats
    import sys

    print(
        f"snapshot {result.snapshot_id[:8]} saved: {s.files} files, {s.dirs} dirs, read {s.bytes_read} of"
        f" {s.bytes_total} bytes, added {s.bytes_added} bytes in {s.packs_added} packs, {s.duration_s:.1f} s"
        + (f", parent {result.parent[:8]}" if result.parent else ""),
        file=sys.stderr,
    )
    if args.json:
        print_json(result.summary())
    else:
        print(result.snapshot_id)
    return 0
