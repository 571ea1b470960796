"""``bucket-restore``: write a bucket snapshot's objects into a bucket (the same or another endpoint)."""

from __future__ import annotations

from steps.commands._bucket import add_bucket_args
from steps.commands._repo import CONNECTION_EPILOG, add_repo_args, open_repository, print_json

NAME = "bucket-restore"
HELP = "restore a bucket snapshot into a bucket (same or other endpoint, optional prefix rewrite)"
DESCRIPTION = """Write the objects of a bucket snapshot (--snapshot ID, or latest: the newest bucket snapshot) into
--target (s3://BUCKET) at --target-endpoint, with their content type and user metadata. The objects as
they were when the snapshot was taken are written (the current version of each key; deleted keys are
not). --from-prefix selects the keys starting with it, --to-prefix replaces that start (e.g.
--from-prefix images/ --to-prefix restored/images/). An object already in the target with the same
size, ETag, content type and metadata is left alone; other objects of the target are never deleted.
--dry-run lists what would change (create, update) and writes nothing. When the repository holds
snapshots of several buckets (or prefixes), latest needs --bucket NAME, and then a single source.

Older versions, from a snapshot taken with bucket-backup --versions: --versions all recreates every
version kept of each key, oldest first, delete markers included, in a target bucket whose versioning
is enabled (refused otherwise); a key whose newest versions in the target already are these is left
alone. --as-of TIME writes each key as it was at TIME (the newest version kept modified at or before
TIME; a key deleted then, or not yet written, is not written). --dry-run lists what either would do.

A multipart object is written in parts of --part-size; its new ETag differs from the original's when
the part size differs (the content does not). Keys come from the environment variables or files the
--target-*-key-* options name, as for bucket-backup.

examples:
  python -m steps bucket-restore --repo s3://backups/buckets --snapshot latest \\
      --target-endpoint http://minio:9000 --target s3://shop-uploads --target-access-key-env KEY_ID \\
      --target-secret-key-env SECRET --dry-run
  python -m steps bucket-restore --repo s3://backups/buckets --bucket invoices --as-of 2026-11-26T19:40:00Z \\
      --target-endpoint http://minio:9000 --target s3://invoices-then --target-access-key-env KEY_ID \\
      --target-secret-key-env SECRET --create-bucket
"""


def configure(parser):
    add_repo_args(parser)
    parser.add_argument(
        "--snapshot", default="latest", metavar="ID", help="the bucket snapshot (default: latest)"
    )
    parser.add_argument(
        "--bucket",
        metavar="NAME",
        help="choose among the snapshots of this source bucket (needed for latest when the repository"
        " holds several buckets)",
    )
    add_bucket_args(parser, "target", "the bucket to restore into (s3://BUCKET)")
    parser.add_argument(
        "--from-prefix", default="", metavar="PREFIX", help="restore only keys starting with it"
    )
    parser.add_argument(
        "--to-prefix", metavar="PREFIX", help="write them with PREFIX in place of --from-prefix"
    )
    parser.add_argument(
        "--versions",
        choices=("latest", "all"),
        default="latest",
        help="latest: each key's current object (default); all: every version kept, delete markers"
        " included, oldest first (the target must have versioning enabled)",
    )
    parser.add_argument(
        "--as-of",
        dest="objects_as_of",  # the repository itself is read as it is now
        metavar="TIME",
        help="write each key as it was at TIME (ISO 8601, UTC unless a zone is given) from the versions kept"
        " (empty: each key's current object)",
    )
    parser.add_argument(
        "--create-bucket",
        action="store_true",
        help="create the target bucket if missing (with versioning for --versions all)",
    )
    parser.add_argument(
        "--part-size", type=int, default=16, metavar="MiB", help="multipart part size (default 16)"
    )
    parser.add_argument(
        "--writers", type=int, default=4, metavar="N", help="objects written at once (default 4)"
    )
    parser.add_argument("--dry-run", action="store_true", help="list what would change, write nothing")
    parser.add_argument("--json", action="store_true", help="print the plan and counts as JSON")
    parser.epilog = CONNECTION_EPILOG


def run(args) -> int:
    import sys

    from steps.commands._bucket import access_of
    from steps.drivers.bucket_source import BucketClient
    from steps.errors import UsageError
    from steps.repository.bucket_tree import apply_restore, bucket_snapshots, plan_restore

    if not 5 <= args.part_size <= 5120:
        raise UsageError(f"--part-size: expected MiB from 5 to 5120, got {args.part_size}")
    if not 1 <= args.writers <= 64:
        raise UsageError(f"--writers: expected a number from 1 to 64, got {args.writers}")
    access = access_of(args, "target")
    if access.prefix:
        raise UsageError(
            f"--target: expected s3://BUCKET (use --to-prefix for a prefix), got {args.target!r}"
        )
    when = None
    if args.objects_as_of:  # (empty: none, as a workflow parameter left empty gives it)
        from steps.repository.object_lock import parse_as_of

        if args.versions == "all":
            raise UsageError(
                "--versions all/--as-of: give one of them (every version, or the state at a time)"
            )
        when = parse_as_of(args.objects_as_of)
    target = BucketClient(access, "target")
    repo = open_repository(args)
    snapshots = bucket_snapshots(repo)
    if args.bucket:
        snapshots = [s for s in snapshots if (s.data.get("bucket") or {}).get("bucket") == args.bucket]
    if not snapshots:
        of = f" of the bucket {args.bucket!r}" if args.bucket else ""
        raise UsageError(f"--snapshot: the repository {args.repo} holds no bucket snapshot{of}")
    sources = sorted({str(s.data.get("source")) for s in snapshots})
    if args.snapshot == "latest" and len(sources) > 1:
        raise UsageError(
            f"--snapshot latest: the repository holds snapshots of {len(sources)} sources ({', '.join(sources)});"
            " give --bucket NAME or a snapshot ID"
        )
    snap = repo.find_snapshot(args.snapshot, snapshots=snapshots)
    if snap.data.get("source_type") != "bucket":
        raise UsageError(f"--snapshot: {snap.short_id} is not a bucket snapshot")
    if (args.versions == "all" or when is not None) and not (snap.data.get("bucket") or {}).get("versions"):
        option = "--versions all" if when is None else "--as-of"
        raise UsageError(
            f"{option}: the bucket snapshot {snap.short_id} kept only the current objects (it was taken"
            " without bucket-backup --versions)"
        )
    if args.versions == "all":
        return _restore_versions(args, repo, snap, target)
    if args.create_bucket and not args.dry_run:
        target.make_bucket()
    target.check_bucket()
    nodes = absent = None
    if when is not None:
        from steps.repository.bucket_tree import key_histories, state_as_of
        from steps.repository.records import parse_time

        nodes, absent = state_as_of(key_histories(repo, snap), when)
        taken = parse_time(snap.time)
        if taken is not None and when > taken:
            print(
                f"bucket-restore: --as-of is after the snapshot {snap.short_id} was taken ({snap.data.get('time')}):"
                " the objects are those it kept",
                file=sys.stderr,
            )
    plan = plan_restore(repo, snap, target, args.from_prefix, args.to_prefix, nodes=nodes)
    changes, summary = _carry_out(
        args, repo, snap, target, plan, apply_restore, ("create", "update", "same"),
        lambda p: (f"{p.node.get('size', 0)} bytes", {"size": p.node.get("size", 0)}),
    )  # fmt: skip
    if when is not None:
        summary.update(as_of=args.objects_as_of, absent=absent)
    verb = "would write" if args.dry_run else "wrote"
    print(
        f"bucket snapshot {snap.short_id} into {target.where}: {verb} {len(changes)} objects"
        f" ({summary['create']} new, {summary['update']} changed), {summary['same']} already equal",
        file=sys.stderr,
    )
    if args.json:
        print_json(summary)
    return 0


def snapshot_app(snap) -> dict | None:
    """The app a snapshot was taken of, as audit records name it (``cluster``, ``namespace``, ``name``)."""
    d = snap.data
    app = {k: d.get(k) for k in ("cluster", "namespace") if d.get(k)}
    if d.get("app"):
        app["name"] = d.get("app")
    return app or None


def _carry_out(args, repo, snap, target, plan, apply, actions, describe):
    """Print each change of ``plan`` (what it would be, on a dry run), apply it unless a dry run
    (:func:`_audited`), and return the changes and the summary: the plan's count of each of ``actions``
    and, per change, what ``describe(change)`` gives (its text for the line, its fields for JSON)."""
    import sys

    changes = [p for p in plan if p.action != "same"]
    for p in changes:
        print(
            ("would " if args.dry_run else "") + f"{p.action} {p.key!r} ({describe(p)[0]})", file=sys.stderr
        )
    written = 0
    if not args.dry_run:
        written = _audited(
            args,
            repo,
            snap,
            target,
            lambda: apply(repo, target, plan, args.writers, args.part_size * 1024 * 1024),
        )
    summary = {
        "snapshot": snap.id,
        "source": snap.data.get("source"),
        "target": target.where,
        "dry_run": args.dry_run,
        **{a: sum(p.action == a for p in plan) for a in actions},
        "written": written,
        "changes": [{"action": p.action, "key": p.key, **describe(p)[1]} for p in changes],
    }
    return changes, summary


def _audited(args, repo, snap, target, write):
    """``write()`` (the restore's writes; it returns how many objects it wrote), recorded in the audit
    trail: which snapshot and backup, into which bucket and prefix, and what was written."""
    from steps.commands.audit_trail import run_audited

    what = {
        "snapshot": snap.id,
        "backup_id": snap.backup_id,
        "source": snap.data.get("source"),
        "target": target.where,
        "from_prefix": args.from_prefix,
        "to_prefix": args.to_prefix,
        "versions": args.versions,
        "as_of": args.objects_as_of,
    }
    what = {k: v for k, v in what.items() if v not in (None, "")}
    return run_audited(
        repo,
        "bucket-restore",
        what,
        write,
        app=snapshot_app(snap),
        describe=lambda written: ({"written": written}, None, "ok"),
    )


def _restore_versions(args, repo, snap, target) -> int:
    """``--versions all``: every kept entry of each key, oldest first, into a versioned target."""
    import sys

    from steps.errors import PermanentError
    from steps.repository.bucket_tree import apply_versions, plan_versions

    if args.create_bucket and not args.dry_run:
        target.make_bucket(versioned=True)  # versioning only on a bucket it creates
    target.check_bucket()
    status = target.versioning_status()
    if status != "Enabled":
        raise PermanentError(
            f"{target.where}: --versions all recreates every version, but the target bucket's versioning is"
            f" {status}; enable versioning on it, or restore without --versions all"
        )
    plan = plan_versions(repo, snap, target, args.from_prefix, args.to_prefix)
    changes, summary = _carry_out(
        args, repo, snap, target, plan, apply_versions, ("create", "append", "same"),
        lambda p: (
            f"{len(p.nodes)} versions, {p.delete_markers} delete markers",
            {"versions": len(p.nodes), "delete_markers": p.delete_markers},
        ),
    )  # fmt: skip
    summary["versions"] = "all"
    verb = "would recreate" if args.dry_run else "recreated"
    print(
        f"bucket snapshot {snap.short_id} into {target.where}: {verb} the versions of {len(changes)} keys"
        f" ({summary['create']} new, {summary['append']} on top of the target's), {summary['same']} already"
        " equal",
        file=sys.stderr,
    )
    if args.json:
        print_json(summary)
    return 0
