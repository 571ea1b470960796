"""``bucket-backup``: back up an S3 bucket (or a prefix of it) from any S3-compatible endpoint."""

from __future__ import annotations

from steps.commands._bucket import add_bucket_args
from steps.commands._identity import add_app_args, run_identity, snapshot_identity
from steps.commands._repo import CONNECTION_EPILOG, add_repo_args, open_repository, parse_tags, print_json

NAME = "bucket-backup"
HELP = "back up an S3 bucket or prefix (any S3-compatible endpoint) as a snapshot of kind bucket"
DESCRIPTION = """List the objects of --source (s3://BUCKET or s3://BUCKET/PREFIX) at --source-endpoint and store
them in the repository as a snapshot tagged kind=bucket: each object's bytes, content type, user
metadata, ETag and last-modified time, under its exact key (docs/user/buckets.md gives the mapping of
keys to the snapshot's tree). With --versions, every version and delete marker is kept (the bucket must
have versioning). Incremental: an object whose size, ETag and last-modified time are those of the
previous snapshot of the same source is not read again; its content comes from that snapshot. Objects
are streamed (a large or multipart object is never held in memory).

The source's keys come from the environment variables or files the options name, never from the
command line: --source-access-key-env NAME / --source-secret-key-env NAME, or
--source-access-key-file FILE / --source-secret-key-file FILE (a mounted Secret); neither means
anonymous access. Exit 75 when the source does not answer (worth retrying), 3 for refused credentials,
a missing bucket or a bucket without versioning when --versions is given, 2 for bad arguments; nothing
is stored in any of these cases.

examples:
  python -m steps bucket-backup --repo s3://backups/buckets --source-endpoint https://s3.eu-west-1.amazonaws.com \\
      --source s3://shop-uploads/images/ --source-access-key-env UPLOADS_KEY_ID \\
      --source-secret-key-env UPLOADS_SECRET
  python -m steps bucket-backup --repo file:///backups --source-endpoint http://minio:9000 \\
      --source s3://invoices --source-access-key-file /creds/id --source-secret-key-file /creds/secret --versions
"""


def configure(parser):
    add_repo_args(parser)
    add_bucket_args(parser, "source", "the bucket (and prefix) to back up")
    parser.add_argument("--versions", action="store_true", help="keep every object version and delete marker")
    parser.add_argument(
        "--parent",
        metavar="ID",
        help="compare with this snapshot (default: the newest of the same source; 'none': read everything)",
    )
    parser.add_argument(
        "--readers", type=int, default=8, metavar="N", help="objects read at once (default 8)"
    )
    parser.add_argument("--tag", action="append", metavar="K=V", help="tag the snapshot (repeatable)")
    parser.add_argument("--backup-id", metavar="ID", help="the backup run this snapshot belongs to")
    parser.add_argument("--cluster", metavar="NAME", help="record the Kubernetes cluster's name")
    parser.add_argument("--policy", metavar="NAME", help="record the policy")
    add_app_args(parser)
    parser.add_argument("--json", action="store_true", help="print a JSON summary instead of the ID")
    parser.epilog = CONNECTION_EPILOG


def run(args) -> int:
    import sys
    from dataclasses import asdict

    from steps.commands._bucket import access_of
    from steps.drivers.bucket_source import BucketClient
    from steps.errors import UsageError
    from steps.progress import human_bytes
    from steps.repository.bucket_tree import backup_bucket

    tags = parse_tags(args.tag)
    if "kind" in tags and tags["kind"] != "bucket":
        raise UsageError(f"--tag: kind is bucket for a bucket snapshot, got kind={tags['kind']}")
    if not 1 <= args.readers <= 64:
        raise UsageError(f"--readers: expected a number from 1 to 64, got {args.readers}")
    client = BucketClient(access_of(args, "source"), "source")
    client.check_bucket()  # before the repository opens: a bad source costs no repository work
    repo = open_repository(args)
    tags.update({"kind": "bucket", "bucket": client.access.bucket})
    if args.backup_id:
        tags.setdefault("backup", args.backup_id)
    identity = snapshot_identity(args)
    parent = "auto" if args.parent is None else (None if args.parent == "none" else args.parent)
    result = backup_bucket(
        repo,
        client,
        versions=args.versions,
        tags=tags,
        backup_id=args.backup_id,
        identity=identity,
        parent=parent,
        readers=args.readers,
    )
    if args.backup_id:  # what finalize and the report read about this run
        from steps.repository.records import save_run_record

        save_run_record(
            repo,
            args.backup_id,
            "bucket",
            {
                "snapshot": result.snapshot_id,
                "source": f"{client.where}/{client.access.prefix}",
                "versions": args.versions,
                **run_identity(args),
                **{k: v for k, v in asdict(result).items() if k not in ("snapshot_id", "warnings")},
            },
        )
    print(
        f"bucket snapshot {result.snapshot_id[:8]} saved: {client.where} prefix {client.access.prefix!r},"
        f" {result.objects} objects ({human_bytes(result.bytes_total)}), {result.versions} versions kept;"
        f" {result.objects_read} read, {result.objects_unchanged} unchanged; added {result.bytes_added} bytes",
        file=sys.stderr,
    )
    if args.json:
        print_json({"snapshot": result.snapshot_id, **asdict(result), "gets": client.reads})
    else:
        print(result.snapshot_id)
    return 0
