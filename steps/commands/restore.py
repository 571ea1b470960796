"""``restore``: write a snapshot into a directory (or onto a file / block device for such snapshots)."""

from __future__ import annotations

from steps.commands._options import switch_option
from steps.commands._repo import (
    CONNECTION_EPILOG,
    add_as_of_arg,
    add_repo_args,
    open_repository,
    print_json,
    warn,
)
from steps.repository.tree import OVERWRITE_MODES, RestoreLimits

NAME = "restore"
HELP = "restore a snapshot into a directory"
DESCRIPTION = """Restore --snapshot (an ID, a unique prefix or 'latest') into --target, byte- and
metadata-identical: modes, owners (when permitted), times, symlinks, hard links, empty directories and
sparse files.

examples:
  python -m steps restore --repo s3://backups/shop --snapshot latest --target /restore
  python -m steps restore --repo s3://backups/shop --snapshot 3f2a9c1e --target /restore --include 'pg_wal/*'
  python -m steps restore --repo s3://backups/shop --snapshot latest --as-of 2026-11-26T19:40:00Z --target /r
  python -m steps restore --repo s3://backups/shop --snapshot 3f2a9c1e --target /data --uid-map 999:1000650000
  python -m steps restore --repo s3://backups/shop --snapshot 3f2a9c1e --target /data --write-backup-label
  python -m steps restore --repo s3://backups/shop --snapshot latest --volume wal --app orders-db \
      --source-namespace shop --target /restore-wal

--uid-map / --gid-map FROM:TO[:COUNT] (repeatable; COUNT defaults to 1) give the restored files, directories
and symlinks owner FROM+i as TO+i for i < COUNT, the ranges restore-app's transforms use for security
contexts (e.g. a namespace's own UID range on OpenShift); an ID outside every range is kept as recorded.
Owners are set only when the restore runs as root (or with CAP_CHOWN). A value may also hold several
ranges separated by commas or blanks, and an empty value adds none (for workflow parameters).

--write-backup-label: after the data is in place, write the backup_label (and tablespace_map) of a
PostgreSQL copied in backup mode into its data directory inside --target. The label is read from the
committed backup record of the snapshot's backup (its consistent point) in the repository; a snapshot
whose backup recorded none is refused before anything is written. It also takes an explicit true or
false (--write-backup-label false writes nothing; for workflow parameters).

A target that already holds something (bar an empty lost+found at its root, as a fresh ext4 volume
has) is refused, listing what is there (--overwrite refuse, the default), unless another mode is chosen:
--overwrite always (replace every entry in the way), if-changed (keep files whose size and modification
time match the snapshot), never (keep every existing entry); --delete also removes what the snapshot
does not hold (with always unless --overwrite says otherwise). Nothing is ever overwritten silently.

The snapshot is read as untrusted input: every tree is validated and every limit applied before the first
write. Nothing is ever written outside --target: every entry is created relative to its directory's
descriptor and a symlink in the way is replaced, never followed. A damaged tree (an invalid name, a file
whose size disagrees with its content, an unreadable tree) fails the restore with nothing written, exit 1;
--skip-damaged restores the rest, lists what it skipped and exits 3. --max-depth, --max-tree-entries and
--max-entries bound what a snapshot may expand to (defaults 1000, 10 million, 1 billion).

--volume NAME (with --app, --source-namespace): --snapshot latest is then the snapshot of that volume in
the newest committed backup (of that app in that namespace) holding it, not the newest committed
snapshot of the whole repository, which may be another volume's or another app's. The single-volume
restore WorkflowTemplate passes them, so its form works with 'latest'. With a snapshot ID they are not
used (an empty value is none, for workflow parameters).

With --as-of, the repository is read as it was at that time from the bucket's object versions (a
versioned bucket, ideally with Object Lock): snapshots overwritten or deleted since come back, and each
object is still checked against its name.
"""


def id_map_values(values: list[str] | None) -> list[str]:
    """Each ``--uid-map`` / ``--gid-map`` value split at commas and blanks, empty parts dropped:
    ``["1000:2000:10, 0:3000", ""]`` → ``["1000:2000:10", "0:3000"]``."""
    return [part for v in values or [] for part in v.replace(",", " ").split()]


def latest_of_volume(repo, volume: str, app: str = "", namespace: str = "") -> str:
    """The snapshot ID of ``volume`` in the newest committed backup (of ``app`` in ``namespace``, when
    given) whose record lists it. A backup record that does not open and may be such a backup is
    refused by name rather than chosen around; no such backup is one line naming what was asked."""
    import re

    from steps.errors import UsageError
    from steps.manifests.backup_record import app_of

    def mine(data: dict) -> bool:
        who = app_of(data)
        return (not app or who.get("name") == app) and (not namespace or who.get("namespace") == namespace)

    repo.refuse_damaged_backups(
        "--snapshot latest", mine, way_out="pass --snapshot ID to restore a chosen one"
    )
    records = [r.data for r in repo.list_records("backups") if isinstance(r.data, dict) and mine(r.data)]
    for record in sorted(records, key=lambda d: str(d.get("time", "")), reverse=True):
        for v in record.get("volumes") or ():
            if (
                isinstance(v, dict)
                and v.get("name") == volume
                and isinstance(v.get("snapshot"), str)
                and re.fullmatch(r"[0-9a-f]{8,64}", v["snapshot"])
            ):
                return v["snapshot"]
    of = f" of app {app}" if app else ""
    of += f" in namespace {namespace}" if namespace else ""
    raise UsageError(f"--snapshot latest: no committed backup{of} holds volume {volume} in {repo.url}")


def configure(parser):
    add_repo_args(parser)
    parser.add_argument(
        "--snapshot", required=True, metavar="ID", help="snapshot ID, unique prefix, or 'latest'"
    )
    parser.add_argument("--target", required=True, metavar="DIR", help="directory to restore into")
    parser.add_argument(
        "--volume",
        default="",
        metavar="NAME",
        help="with --snapshot latest: the volume's snapshot in the newest committed backup holding it",
    )
    parser.add_argument(
        "--app", default="", metavar="NAME", help="with --snapshot latest and --volume: the application"
    )
    parser.add_argument(
        "--source-namespace",
        default="",
        metavar="NS",
        help="with --snapshot latest and --volume: the application's namespace",
    )
    parser.add_argument(
        "--allow-uncommitted",
        action="store_true",
        help="also restore a snapshot of a backup that was never committed (not a restore point)",
    )
    parser.add_argument(
        "--overwrite",
        choices=OVERWRITE_MODES,
        default="refuse",
        help="what to do with entries already in --target: refuse a non-empty target (the default), always"
        " replace them, replace only files whose size or modification time differ (if-changed), or keep"
        " them (never)",
    )
    parser.add_argument(
        "--delete", action="store_true", help="also remove from --target what the snapshot does not hold"
    )
    parser.add_argument(
        "--skip-damaged",
        action="store_true",
        help="restore what is intact, list the damaged directories and files skipped, and exit 3",
    )
    defaults = RestoreLimits()
    for flag, what in (
        ("max_depth", "directory depth"),
        ("max_tree_entries", "entries of one directory"),
        ("max_entries", "entries of the whole snapshot"),
    ):
        parser.add_argument(
            "--" + flag.replace("_", "-"),
            type=int,
            default=getattr(defaults, flag),
            metavar="N",
            help=f"refuse a snapshot with more than N {what} (default {getattr(defaults, flag)})",
        )
    parser.add_argument("--include", action="append", metavar="PATTERN", help="restore only matching paths")
    parser.add_argument("--exclude", action="append", metavar="PATTERN", help="skip matching paths")
    parser.add_argument(
        "--uid-map",
        action="append",
        metavar="FROM:TO[:COUNT]",
        help="restore owner UIDs FROM..FROM+COUNT-1 as TO..TO+COUNT-1 (repeatable, or several ranges"
        " separated by commas; empty: none; others are kept)",
    )
    parser.add_argument(
        "--gid-map",
        action="append",
        metavar="FROM:TO[:COUNT]",
        help="restore owner GIDs FROM..FROM+COUNT-1 as TO..TO+COUNT-1 (repeatable, or several ranges"
        " separated by commas; empty: none; others are kept)",
    )
    parser.add_argument(
        "--write-backup-label",
        **switch_option(),
        help="then write the backup_label (and tablespace_map) the backup recorded for a PostgreSQL"
        " copied in backup mode into its data directory inside --target",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    add_as_of_arg(parser)
    parser.epilog = CONNECTION_EPILOG


def run(args) -> int:
    import sys

    from steps.errors import EXIT_PERMANENT, UsageError, printable
    from steps.idmap import parse_id_map
    from steps.manifests.volume_restore import check_label_target, restore_volume

    if not args.target.strip():
        raise UsageError("--target: expected a directory, file or device path, got an empty value")
    uid_map = parse_id_map(id_map_values(args.uid_map), "--uid-map")
    gid_map = parse_id_map(id_map_values(args.gid_map), "--gid-map")
    check_label_target(args.target, args.write_backup_label)
    limits = RestoreLimits(args.max_depth, args.max_tree_entries, args.max_entries)
    repo = open_repository(args)
    snapshot = args.snapshot
    if snapshot == "latest" and args.volume:
        snapshot = latest_of_volume(repo, args.volume, args.app, args.source_namespace)
    from steps.commands.audit_trail import audited, restored

    done = audited(repo, "restore", {"snapshot": snapshot, "target": args.target}, restore_volume, restored)(
        repo,
        snapshot,
        args.target,
        includes=args.include,
        excludes=args.exclude,
        uid_map=uid_map,
        gid_map=gid_map,
        overwrite=args.overwrite,
        delete=args.delete,
        skip_damaged=args.skip_damaged,
        limits=limits,
        write_backup_label=args.write_backup_label,
        allow_uncommitted=args.allow_uncommitted,
    )
    snap, stats, written = done.snap, done.stats, done.written
    for w in stats.warnings[:50]:
        warn(w)
    for d in stats.damaged[:50]:
        warn(f"skipped damaged {d}")
    summary = {
        "snapshot": snap.id,
        "target": args.target,
        "files": stats.files,
        "dirs": stats.dirs,
        "bytes_total": stats.bytes_total,
        "bytes_written": stats.bytes_written,
        "duration_s": round(stats.duration_s, 3),
        "warnings": len(stats.warnings),
        "kept": stats.kept,
        "deleted": stats.deleted,
        "damaged": stats.damaged,
    }
    if uid_map or gid_map:
        summary["uid_map"] = [str(r) for r in uid_map]
        summary["gid_map"] = [str(r) for r in gid_map]
    if args.write_backup_label:
        summary["backup_label"] = written
    if args.json:
        print_json(summary)
    else:
        print(
            f"restored snapshot {snap.short_id} into {args.target}: {stats.files} files, {stats.dirs} dirs,"
            f" {stats.bytes_total} bytes in {stats.duration_s:.1f} s",
            file=sys.stderr,
        )
        if written:
            print(
                f"wrote {printable(', '.join(written))} (PostgreSQL copied in backup mode)", file=sys.stderr
            )
    if stats.damaged:
        print(
            f"error: snapshot {snap.short_id} is damaged: {stats.damaged_total} directories or files were"
            " skipped (listed above); the rest was restored",
            file=sys.stderr,
        )
        return EXIT_PERMANENT
    return 0
