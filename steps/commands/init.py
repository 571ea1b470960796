"""``init``: create a repository (and its bucket) with a first key; refuses to overwrite one."""

from __future__ import annotations

from steps.commands._repo import CONNECTION_EPILOG, add_repo_args, open_store

NAME = "init"
HELP = "create a new encrypted repository"
DESCRIPTION = """Create a new encrypted repository at --repo (and the bucket if missing).

With --object-lock-mode and --object-lock-days, a new bucket is created versioned with S3 Object Lock
enabled and that default retention, so that every object written later is locked without the writers
needing any retention permission (see docs/user/immutability.md).

examples:
  SNAPFLOW_PASSWORD_FILE=/secrets/repo-password python -m steps init --repo s3://backups/shop
  python -m steps init --repo s3://backups-locked/shop --object-lock-mode compliance --object-lock-days 30
"""


def configure(parser):
    add_repo_args(parser)
    parser.add_argument(
        "--object-lock-mode", metavar="MODE", help="governance or compliance (creates a locked bucket)"
    )
    parser.add_argument("--object-lock-days", metavar="DAYS", help="default retention of new objects")
    parser.epilog = CONNECTION_EPILOG


def run(args) -> int:
    from steps.drivers.objectstore import ObjectLock
    from steps.repository.repo import Repository
    from steps.secrets import repository_password

    lock = ObjectLock.parse(
        args.object_lock_mode, args.object_lock_days, "--object-lock-mode/--object-lock-days"
    )
    password = repository_password()
    repo = Repository.init(open_store(args), password, object_lock=lock)
    from steps.commands.audit_trail import record

    record(
        repo,
        "repository.init",
        what={"object_lock": {"mode": lock.mode, "days": lock.days} if lock else None},
    )
    extra = f", Object Lock {lock.mode} {lock.days:g} days" if lock else ""
    print(f"created repository {repo.config.id} at {repo.url} (key {repo.key_id[:8]}{extra})")
    return 0
