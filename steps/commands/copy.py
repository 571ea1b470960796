"""``copy``: back up a directory, a file or a block device into the repository as a new snapshot."""

from __future__ import annotations

from steps.commands._kube import add_kube_args
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
    g = parser.add_argument_group(
        "changed-block tracking (block volumes; docs/user/block-volumes.md)",
        "With --cbt-driver, a block device is read only where the CSI driver's SnapshotMetadata service"
        " says it holds data (a first copy) or changed since the parent's snapshot; without it, or when"
        " the service cannot be used, the device is read in full and the copy says why.",
    )
    g.add_argument(
        "--cbt-driver",
        metavar="DRIVER",
        help="the CSI driver (its SnapshotMetadataService's name); 'auto': the driver of the copied"
        " snapshot's VolumeSnapshotContent",
    )
    g.add_argument(
        "--cbt-snapshot",
        metavar="NAMESPACE[/NAME]",
        help="the VolumeSnapshot being copied; NAMESPACE alone: the one the clone of --backup-id and"
        " --volume there was made from (what prepare-clone made), its handle read from its content",
    )
    g.add_argument(
        "--cbt-snapshot-handle",
        metavar="HANDLE",
        help="its CSI snapshot handle (VolumeSnapshotContent status.snapshotHandle): the next copy's base",
    )
    g.add_argument(
        "--cbt-service-account",
        metavar="[NAMESPACE/]NAME",
        help="the ServiceAccount whose token (TokenRequest) the service accepts (default namespace: the"
        " snapshot's)",
    )
    g.add_argument(
        "--full-read-every",
        type=int,
        default=7,
        metavar="N",
        help="every Nth copy of the volume also reads it in full and compares (0: never; default 7)",
    )
    g.add_argument(
        "--cbt-trust-again",
        action="store_true",
        help="use the service again for a volume where a full read caught it missing changes (recorded)",
    )
    add_kube_args(parser)
    parser.epilog = CONNECTION_EPILOG


def run(args) -> int:

    from steps.drivers import files
    from steps.errors import UsageError
    from steps.progress import Progress
    from steps.repository.archiver import CopyOptions, copy_source
    from steps.repository.blob_sink import tune_for_bulk_work
    from steps.repository.scan import Prescan

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
    cbt = opts.block_tracking = _block_tracking(args)
    if cbt is not None:  # a block device: nothing to list ahead
        repo = open_repository(args)
        with progress:
            result = copy_source(repo, opts, progress)
    else:
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

    if cbt is not None:
        block = repo.find_snapshot(result.snapshot_id).data.get("block") or {}
        print(
            f"block device read by {block.get('method')}: {block.get('bytes_read')} of {s.bytes_total} bytes",
            file=sys.stderr,
        )

    print(
        f"snapshot {result.snapshot_id[:8]} saved: {s.files} files, {s.dirs} dirs, read {s.bytes_read} of"
        f" {s.bytes_total} bytes, added {s.bytes_added} bytes in {s.packs_added} packs, {s.duration_s:.1f} s"
        + (f", parent {result.parent[:8]}" if result.parent else ""),
        file=sys.stderr,
    )
    if args.json:
        summary = result.summary()
        if cbt is not None:
            summary["block"] = {k: block.get(k) for k in ("method", "bytes_read", "changed_bytes", "reason")}
        print_json(summary)
    else:
        print(result.snapshot_id)
    return 0


def _block_tracking(args):
    """The changed-block tracking of this copy (a ``BlockCbt``), or None without ``--cbt-driver``."""
    from steps.errors import UsageError

    given = [
        f"--{n.replace('_', '-')}"
        for n in ("cbt_snapshot", "cbt_snapshot_handle", "cbt_service_account", "cbt_trust_again")
        if getattr(args, n)
    ]
    if not args.cbt_driver:
        if given:
            raise UsageError(
                f"{given[0]}: only with --cbt-driver (the CSI driver offering changed-block tracking)"
            )
        return None
    if args.full_read_every < 0:
        raise UsageError(f"--full-read-every: expected a number of copies >= 0, got {args.full_read_every}")
    snap = args.cbt_snapshot or ""
    namespace, _, name = snap.partition("/")
    if not namespace or "/" in name or (not name and "/" in snap):
        raise UsageError(f"--cbt-snapshot: expected NAMESPACE/NAME of the VolumeSnapshot, got {snap!r}")
    if not name and not (args.backup_id and args.volume):
        raise UsageError(
            f"--cbt-snapshot: NAMESPACE alone ({snap!r}) needs --backup-id and --volume to find the clone"
        )
    account = args.cbt_service_account or ""
    sa_namespace, _, sa_name = account.rpartition("/")
    if not sa_name or "/" in sa_namespace:
        raise UsageError(
            f"--cbt-service-account: expected [NAMESPACE/]NAME of a ServiceAccount, got {account!r}"
        )
    from dataclasses import replace

    from steps.commands._kube import kube_client
    from steps.drivers import cbt
    from steps.drivers.kube_objects import clone_claim_name
    from steps.repository.block_copy import BlockCbt

    driver, handle = args.cbt_driver, args.cbt_snapshot_handle
    unresolved: cbt.CbtUnavailable | None = None
    if not name or driver == "auto" or not handle:
        # the rendered workflow names only the namespace: the clone prepare-clone made there tells the
        # snapshot, its content the driver and handle
        try:
            with kube_client(args) as kube:
                if name:
                    found = cbt.snapshot_of_named(kube, namespace, name)
                else:
                    found = cbt.snapshot_of_clone(
                        kube, namespace, clone_claim_name(args.backup_id, args.volume)
                    )
            name, handle = found.name, handle or found.handle
            if driver == "auto":
                driver = found.driver
            elif driver != found.driver:
                unresolved = cbt.CbtUnavailable(
                    f"--cbt-driver {driver!r}: the snapshot {namespace}/{name} is of driver {found.driver!r}"
                )
        except (cbt.CbtUnavailable, UsageError) as err:
            unresolved = cbt.CbtUnavailable(str(err))
    request = cbt.CbtRequest(driver, namespace, name, sa_name, sa_namespace or None)

    def ranges(base_handle):
        if unresolved is not None:
            raise unresolved
        try:
            kube = kube_client(args)
        except UsageError as err:
            raise cbt.CbtUnavailable(str(err)) from None
        with kube:
            return cbt.ranges_for(kube, replace(request, base_snapshot_handle=base_handle))

    return BlockCbt(
        ranges,
        handle,
        driver if driver != "auto" else "unknown",
        full_read_every=args.full_read_every,
        trust_again=args.cbt_trust_again,
    )
