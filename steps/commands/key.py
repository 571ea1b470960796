"""``key``: list, add, remove keys or change the password; data is never rewritten.

New passwords come from SNAPFLOW_NEW_PASSWORD or SNAPFLOW_NEW_PASSWORD_FILE, never from arguments.
"""

from __future__ import annotations

from steps.commands._repo import CONNECTION_EPILOG, add_repo_args, open_repository, print_json

NAME = "key"
HELP = "manage the repository's keys (list, add, remove, passwd)"
DESCRIPTION = """Manage the keys that wrap the repository's master key. Every key opens all data; adding,
removing or changing a password rewrites only a small key file.

examples:
  SNAPFLOW_NEW_PASSWORD_FILE=/secrets/new python -m steps key add --repo s3://backups/shop
  python -m steps key remove --repo s3://backups/shop --key 81901ab4
  SNAPFLOW_NEW_PASSWORD_FILE=/secrets/new python -m steps key passwd --repo s3://backups/shop
"""


def configure(parser):
    sub = parser.add_subparsers(dest="key_action", metavar="ACTION", parser_class=type(parser))
    sub.required = True
    for action, text in (
        ("list", "list keys"),
        ("add", "add a key for $SNAPFLOW_NEW_PASSWORD"),
        ("remove", "remove a key"),
        ("passwd", "replace the current key by one for $SNAPFLOW_NEW_PASSWORD"),
    ):
        p = sub.add_parser(action, help=text, description=text)
        add_repo_args(p)
        p.epilog = (
            CONNECTION_EPILOG
            + "  SNAPFLOW_NEW_PASSWORD / SNAPFLOW_NEW_PASSWORD_FILE   the new password (add, passwd)\n"
        )
        if action == "remove":
            p.add_argument("--key", required=True, metavar="ID", help="key ID or unique prefix")
        if action == "list":
            p.add_argument("--json", action="store_true")


def run(args) -> int:
    from steps.commands.audit_trail import record
    from steps.errors import UsageError
    from steps.secrets import new_password

    repo = open_repository(args)
    if args.key_action == "list":
        keys = repo.list_keys()
        if args.json:
            print_json(keys)
        else:
            for k in keys:
                if k.get("damaged"):
                    print(f"! {k['id'][:8]}  damaged: {k['damaged']} (keys/{k['id']})")
                    continue
                kdf = k["kdf"]
                print(
                    f"{'*' if k['current'] else ' '} {k['id'][:8]}  {k['created']}  {k['user']}@{k['host']}"
                    f"  scrypt n={kdf.get('n')} r={kdf.get('r')} p={kdf.get('p')}"
                )
        return 0
    if args.key_action == "add":
        kid = repo.add_key(new_password())
        record(repo, "key.add", what={"key": kid})
        print(f"added key {kid[:8]}")
        return 0
    if args.key_action == "remove":
        kid = repo.resolve_key_id(args.key)
        if kid == repo.key_id:
            raise UsageError(
                "--key: refusing to remove the key in use; open the repository with another key first"
            )
        repo.remove_key(kid)
        record(repo, "key.remove", what={"key": kid})
        print(f"removed key {kid[:8]}")
        return 0
    if args.key_action == "passwd":
        kid = repo.add_key(new_password())
        repo.store.delete(f"keys/{repo.key_id}")
        record(repo, "key.passwd", what={"key": kid, "replaced": repo.key_id})
        print(f"password changed: key {repo.key_id[:8]} replaced by {kid[:8]}")
        return 0
    raise UsageError(f"ACTION: expected list, add, remove or passwd, got {args.key_action!r}")
