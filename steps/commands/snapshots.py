"""``snapshots``: list the repository's snapshots."""

from __future__ import annotations

from steps.commands._repo import (
    CONNECTION_EPILOG,
    add_as_of_arg,
    add_repo_args,
    open_repository,
    parse_tags,
    print_json,
    warn,
)

NAME = "snapshots"
HELP = "list snapshots"
DESCRIPTION = """List snapshots, oldest first. A snapshot is 'committed' when it belongs to no backup run
(a plain copy) or its backup run's record exists; only committed snapshots are restore points.

examples:
  python -m steps snapshots --repo s3://backups/shop
  python -m steps snapshots --repo s3://backups/shop --tag kind=manifests --json
"""


def configure(parser):
    add_repo_args(parser)
    parser.add_argument("--tag", action="append", metavar="K=V", help="only snapshots with this tag")
    parser.add_argument("--backup-id", metavar="ID", help="only snapshots of this backup run")
    parser.add_argument("--json", action="store_true", help="print a JSON list")
    add_as_of_arg(parser)
    parser.epilog = CONNECTION_EPILOG


def run(args) -> int:
    want = parse_tags(args.tag)
    repo = open_repository(args)
    snaps = repo.list_snapshots()
    committed = repo.committed_filter()
    rows = []
    for s in snaps:
        if any(s.tags.get(k) != v for k, v in want.items()):
            continue
        if args.backup_id and s.backup_id != args.backup_id:
            continue
        rows.append((s, committed(s)))
    for w in repo.warnings:
        warn(w)
    if args.json:
        print_json([{"id": s.id, "committed": c, **s.data} for s, c in rows])
        return 0
    print(f"{'ID':8}  {'TIME':20}  {'SIZE':>12}  {'C':1}  {'SOURCE':30}  TAGS")
    for s, c in rows:
        size = s.data.get("summary", {}).get("bytes_total", 0)
        tags = ",".join(f"{k}={v}" for k, v in sorted(s.tags.items()))
        print(
            f"{s.short_id:8}  {s.time[:19]:20}  {size:>12}  {'y' if c else 'n'}  {s.data.get('source', ''):30}  {tags}"
        )
    print(f"{len(rows)} snapshot(s)")
    return 0
