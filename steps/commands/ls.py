"""``ls``: list the entries of a snapshot (below PATH)."""

from __future__ import annotations

from steps.commands._repo import CONNECTION_EPILOG, add_as_of_arg, add_repo_args, open_repository

NAME = "ls"
HELP = "list the files of a snapshot"
DESCRIPTION = """List every entry of --snapshot below PATH (default: everything), recursively.

examples:
  python -m steps ls --repo s3://backups/shop --snapshot latest
  python -m steps ls --repo s3://backups/shop --snapshot 3f2a9c1e pg_wal --json
"""

_TYPE_CHAR = {
    "file": "-",
    "dir": "d",
    "symlink": "l",
    "fifo": "p",
    "chardev": "c",
    "blockdev": "b",
    "socket": "s",
}


def configure(parser):
    add_repo_args(parser)
    parser.add_argument(
        "--snapshot", required=True, metavar="ID", help="snapshot ID, unique prefix, or 'latest'"
    )
    parser.add_argument("path", nargs="?", default="", metavar="PATH", help="only entries below this path")
    parser.add_argument("--json", action="store_true", help="one JSON object per entry")
    add_as_of_arg(parser)
    parser.epilog = CONNECTION_EPILOG


def _mode_string(node: dict) -> str:
    import stat

    return _TYPE_CHAR.get(node["type"], "?") + stat.filemode(node.get("mode", 0))[1:]


def run(args) -> int:
    import json
    import sys
    from datetime import UTC, datetime

    from steps.errors import UsageError
    from steps.repository.snapshot_read import iter_nodes

    repo = open_repository(args)
    snap = repo.find_snapshot(args.snapshot)
    prefix = args.path.strip("/")
    found = not prefix
    out = sys.stdout
    for rel, node in iter_nodes(repo, snap.data["tree"]):
        if prefix and rel != prefix and not rel.startswith(prefix + "/"):
            continue
        found = True
        if args.json:
            slim = {k: v for k, v in node.items() if k not in ("content", "subtree")}
            out.write(json.dumps({"path": "/" + rel, **slim}) + "\n")
            continue
        mtime = datetime.fromtimestamp(node.get("mtime_ns", 0) / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S")
        extra = f" -> {node['target']}" if node["type"] == "symlink" else ""
        out.write(
            f"{_mode_string(node)} {node.get('uid', 0):>5} {node.get('gid', 0):>5} {node.get('size', 0):>12}"
            f" {mtime} /{rel}{extra}\n"
        )
    if not found:
        raise UsageError(f"PATH: {args.path!r} is not in snapshot {snap.short_id}")
    return 0
