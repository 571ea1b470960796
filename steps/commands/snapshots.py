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
(a plain copy) or its backup run's record exists and opens; only committed snapshots are restore points.

Consistency is the verdict of the backup a snapshot belongs to, from its committed backup record
(app-consistent, crash-consistent); 'uncommitted' for a snapshot of a backup that was never committed,
'damaged' when its backup record does not open. A plain copy shows what the copy itself recorded.

Columns: C is y (committed), n (not committed) or ! (its backup record is damaged). Damaged snapshot
records are listed at the end (and as warnings): they are no restore points until `repair records`.

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


def consistency_of(snap, commits) -> tuple[str | None, list[str]]:
    """(verdict, reasons) of a snapshot: its committed backup's verdict; ``uncommitted`` or ``damaged``
    for a snapshot of a backup without a record that opens; a plain copy's own ``consistency``."""
    state = commits.state(snap)
    if state == "plain":
        own = snap.data.get("consistency")
        if isinstance(own, dict):
            return own.get("verdict") or own.get("level"), list(own.get("reasons") or [])
        return own, []
    if state != "committed":
        return state, []
    record = commits.record_for(snap.backup_id)
    verdict = ((record.data if record else {}).get("consistency") or {}) if record else {}
    if not isinstance(verdict, dict) or not verdict.get("verdict"):
        return "unknown", []
    return verdict["verdict"], [str(r) for r in verdict.get("reasons") or []]


def run(args) -> int:
    want = parse_tags(args.tag)
    repo = open_repository(args)
    snaps = repo.list_snapshots()
    commits = repo.commits()
    damaged = repo.damaged_records("snapshots")
    rows = []
    for s in snaps:
        if any(s.tags.get(k) != v for k, v in want.items()):
            continue
        if args.backup_id and s.backup_id != args.backup_id:
            continue
        rows.append((s, commits.state(s), *consistency_of(s, commits)))
    for w in dict.fromkeys(repo.warnings):
        warn(w)
    if args.json:
        out = []
        for s, state, verdict, reasons in rows:
            item = {"id": s.id, **s.data, "committed": state in ("committed", "plain"), "commit": state}
            item["consistency"] = verdict
            if reasons:
                item["consistency_reasons"] = reasons
            out.append(item)
        if not want and not args.backup_id:
            out += [{"id": d.id, "damaged": True, **d.to_dict()} for d in damaged]
        print_json(out)
        return 0
    print(f"{'ID':8}  {'TIME':20}  {'SIZE':>12}  {'C':1}  {'CONSISTENCY':17}  {'SOURCE':30}  TAGS")
    marks = {"committed": "y", "plain": "y", "uncommitted": "n", "damaged": "!"}
    for s, state, verdict, _reasons in rows:
        size = s.data.get("summary", {}).get("bytes_total", 0)
        tags = ",".join(f"{k}={v}" for k, v in sorted(s.tags.items()))
        print(
            f"{s.short_id:8}  {s.time[:19]:20}  {size:>12}  {marks[state]}  {verdict or '-':17}"
            f"  {s.data.get('source', ''):30}  {tags}"
        )
    print(f"{len(rows)} snapshot(s)")
    if damaged and not want and not args.backup_id:
        for d in damaged:
            print(f"DAMAGED   {d.key}: {d.problem}")
        print(f"{len(damaged)} damaged snapshot record(s): see `check`; `repair records` removes them")
    return 0
