"""``init``: create a repository (and its bucket) with a first key; refuses to overwrite one."""

from __future__ import annotations

from steps.commands._repo import CONNECTION_EPILOG, add_repo_args, open_store

NAME = "init"
HELP = "create a new encrypted repository"
DESCRIPTION = """Create a new encrypted repository at --repo (and the bucket if missing).

example:
  SNAPFLOW_PASSWORD_FILE=/secrets/repo-password python -m steps init --repo s3://backups/shop
"""


def configure(parser):
    add_repo_args(parser)
    parser.epilog = CONNECTION_EPILOG


def run(args) -> int:
    from steps.repository.repo import Repository
    from steps.secrets import repository_password

    password = repository_password()
    repo = Repository.init(open_store(args), password)
    print(f"created repository {repo.config.id} at {repo.url} (key {repo.key_id[:8]})")
    return 0
