"""Options shared by ``bucket-backup`` and ``bucket-restore``: a bucket's endpoint, name, prefix and
where its keys come from. The engine (key mapping, incremental backup, restore plans) is
:mod:`steps.repository.bucket_tree`."""

from __future__ import annotations

from steps.errors import UsageError


def add_bucket_args(parser, role: str, what: str) -> None:
    """The options of a bucket ``role`` (source or target): endpoint, bucket, and where its keys are."""
    g = parser.add_argument_group(f"{role} bucket")
    g.add_argument(f"--{role}-endpoint", required=True, metavar="URL", help=f"S3 endpoint of {what}")
    g.add_argument(f"--{role}", required=True, metavar="s3://BUCKET[/PREFIX]", help=f"{what}")
    for option, env_example, item in (
        ("access-key", "SOURCE_AWS_ACCESS_KEY_ID", "access key ID"),
        ("secret-key", "SOURCE_AWS_SECRET_ACCESS_KEY", "secret access key"),
    ):
        g.add_argument(
            f"--{role}-{option}-env",
            metavar="NAME",
            help=f"the environment variable holding the {item} (e.g. {env_example}); never the key itself",
        )
        g.add_argument(f"--{role}-{option}-file", metavar="FILE", help=f"a file holding the {item}")
    g.add_argument(f"--{role}-region", metavar="REGION", help="region to sign for (default: the server's)")
    g.add_argument(f"--{role}-ca-bundle", metavar="FILE", help="CA bundle for an https endpoint")


def access_of(args, role: str):
    """The :class:`~steps.drivers.bucket_source.BucketAccess` of ``--ROLE*`` options."""
    from steps.drivers.bucket_source import BucketAccess

    get = lambda option: getattr(args, f"{role}_{option}".replace("-", "_"))  # noqa: E731
    url = getattr(args, role)
    if not url.startswith("s3://") or not url[5:].split("/", 1)[0]:
        raise UsageError(f"--{role}: expected s3://BUCKET or s3://BUCKET/PREFIX, got {url!r}")
    bucket, _, prefix = url[5:].partition("/")
    from steps.drivers.repourl import check_endpoint

    return BucketAccess(
        endpoint=check_endpoint(get("endpoint"), f"--{role}-endpoint"),
        bucket=bucket,
        prefix=prefix,
        access_key_env=get("access_key_env"),
        secret_key_env=get("secret_key_env"),
        access_key_file=get("access_key_file"),
        secret_key_file=get("secret_key_file"),
        region=get("region"),
        ca_bundle=get("ca_bundle"),
    )
