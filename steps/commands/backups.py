"""``backups``: list the committed backups (restore points of applications), or describe one."""

from __future__ import annotations

from steps.commands._repo import CONNECTION_EPILOG, add_as_of_arg, add_repo_args, open_repository, print_json

NAME = "backups"
HELP = "list committed backups (or describe one with --id); damaged backup records are listed too"
DESCRIPTION = """List the committed backups, oldest first: one per application run that finalize
committed (every volume copied, verified, and a consistent point judged app- or crash-consistent).
Each shows its ID, commit time, app / namespace / cluster, consistency verdict, freeze window, size
and its volumes with their snapshot IDs (restore one with `restore --snapshot ID`); a verdict other
than app-consistent is followed by its reasons.

A backup record that does not open (its bytes do not match its name, or do not authenticate) is
listed as DAMAGED with its object key, not skipped; so is a volume whose snapshot record is damaged or
missing, and a damaged run record of a backup. `repair records` moves a renamed or swapped record
back under its own name and removes one that cannot be read; `check` tells what else is affected.

--id ID (or a unique prefix of it) describes one backup in detail: verdict and reasons, recovery per
target, freeze window (quiesced, released), verify, volumes and their snapshots, manifests, targets.

examples:
  python -m steps backups --repo s3://backups/shop
  python -m steps backups --repo s3://backups/shop --app orders-db --json
  python -m steps backups --repo s3://backups/shop --id backup-orders-db-x7k2q
  snapflow backups --repo s3://backups/shop --id backup-orders-db-x7k2q --json
"""


def configure(parser):
    add_repo_args(parser)
    parser.add_argument("--id", metavar="BACKUP", help="describe this backup (ID or unique prefix)")
    f = parser.add_argument_group("which backups (default: all)")
    for name in ("cluster", "namespace", "app", "policy"):
        f.add_argument(f"--{name}", metavar=name.upper(), help=f"only backups of this {name}")
    parser.add_argument("--json", action="store_true", help="print JSON (a list, or one object with --id)")
    add_as_of_arg(parser)
    parser.epilog = CONNECTION_EPILOG


def _ms(value) -> str:
    if not isinstance(value, int | float):
        return "-"
    return f"{value:.0f} ms" if value >= 100 else f"{value:.1f} ms"


def _size(value) -> str:
    from steps.progress import human_bytes

    return "-" if value is None else human_bytes(value)


def _short(sid) -> str:
    return sid[:8] if isinstance(sid, str) else "-"


def print_table(items: list[dict], out) -> None:
    out.write(
        f"{'BACKUP':32}  {'COMMITTED':19}  {'APP':18}  {'NAMESPACE':12}  {'CLUSTER':10}  {'CONSISTENCY':17}"
        f"  {'FREEZE':>8}  {'SIZE':>10}  VOLUMES (snapshot)\n"
    )
    for i in items:
        if i["damaged"] and i["backup_id"] is None:
            out.write(f"{'DAMAGED':32}  {i['record']}: {i['problem']}\n")
            continue
        vols = ", ".join(
            f"{v['name']}={_short(v['snapshot'])}"
            + ("" if v["state"] == "ok" else f" ({v['state'].upper()})")
            for v in i["volumes"]
        )
        name = ("DAMAGED " if i["damaged"] else "") + str(i["backup_id"])
        out.write(
            f"{name:32}  {str(i['time'] or '-')[:19].replace('T', ' '):19}  {i['app'] or '-':18}"
            f"  {i['namespace'] or '-':12}  {i['cluster'] or '-':10}  {i['consistency'] or '-':17}"
            f"  {_ms(i['freeze_window_ms']):>8}  {_size(i['size_bytes']):>10}  {vols or '-'}\n"
        )
        if i["consistency"] not in (None, "app-consistent") and i["reasons"]:
            out.write(f"{'':34}reason: {'; '.join(i['reasons'][:3])}\n")
        for p in i["problems"]:
            out.write(f"{'':34}problem: {p}\n")


def print_description(i: dict, out) -> None:
    """One backup in the manner of ``velero backup describe``: label, value; nested lines indented."""

    def line(label: str, value="") -> None:
        out.write(f"{label + ':':18}{value}\n" if value != "" else f"{label}:\n")

    line("Name", i["backup_id"] or "-")
    line("Record", i["record"] + ("  DAMAGED: " + i["problem"] if i["damaged"] else ""))
    line("Committed", i["time"] or "-")
    line("Cluster", i["cluster"] or "-")
    line("Namespace", i["namespace"] or "-")
    line("App", i["app"] or "-")
    line("Policy", i["policy"] or "-")
    out.write("\n")
    line("Consistency", i["consistency"] or "unknown")
    for r in i["reasons"]:
        out.write(f"  reason: {r}\n")
    for target, how in (i.get("recovery") or {}).items():
        out.write(f"  recovery of {target}: {how}\n")
    freeze = i.get("freeze") or {}
    window = _ms(i.get("freeze_window_ms"))
    span = f" (quiesced {freeze.get('quiesced')}, released {freeze.get('released')})" if freeze else ""
    line("Freeze window", window + span)
    v = i.get("verify") or {}
    if v:
        line(
            "Verify",
            f"{'passed' if v.get('ok') else 'FAILED'}, {v.get('read_data_percent', '-')}% of older packs read"
            f" back, {_size(v.get('bytes_read'))} read ({v.get('time') or '-'})",
        )
    else:
        line("Verify", "-")
    out.write("\n")
    line("Volumes")
    for vol in i["volumes"]:
        where = f"pvc {vol['pvc']}" if vol.get("pvc") else (f"path {vol['path']}" if vol.get("path") else "")
        state = "" if vol["state"] == "ok" else f"  {vol['state'].upper()}"
        out.write(
            f"  {vol['name']}:  snapshot {vol['snapshot']}  {vol['files'] if vol['files'] is not None else '-'}"
            f" file(s), {_size(vol['bytes'])}"
            + (f" ({_size(vol['bytes_added'])} added)" if vol.get("bytes_added") is not None else "")
            + (f", {where}" if where else "")
            + state
            + "\n"
        )
    m = i.get("manifests")
    line(
        "Manifests",
        f"snapshot {m['snapshot']}" + ("" if m["state"] == "ok" else f"  {m['state'].upper()}") if m else "-",
    )
    line("Size", f"{_size(i['size_bytes'])} ({_size(i.get('added_bytes'))} added to the repository)")
    line("Snapshot driver", i.get("snapshot_driver") or "-")
    if i.get("targets"):
        line("Targets")
        for t in i["targets"]:
            out.write(
                f"  {t.get('name')}: hook {t.get('hook')}"
                + (f", pgdata {t['pgdata']}" if t.get("pgdata") else "")
                + "\n"
            )
    if i["problems"]:
        out.write("\n")
        line("Problems")
        for p in i["problems"]:
            out.write(f"  {p}\n")


def run(args) -> int:
    import sys

    from steps.commands._repo import warn
    from steps.errors import DamagedRecordError, UsageError
    from steps.repository.catalog import list_backups, read_catalog
    from steps.repository.damage import repair_hint

    filters = {k: getattr(args, k) for k in ("cluster", "namespace", "app", "policy") if getattr(args, k)}
    repo = open_repository(args)
    catalog = read_catalog(repo)
    items = list_backups(catalog, filters)
    if args.id is not None:
        exact = [i for i in items if i["backup_id"] == args.id]
        found = exact or [i for i in items if (i["backup_id"] or "").startswith(args.id)] if args.id else []
        ids = {i["backup_id"] for i in found}
        if len(ids) > 1:
            raise UsageError(f"--id: {args.id!r} is ambiguous ({', '.join(sorted(ids)[:5])} match)")
        intact = [i for i in found if not i["damaged"]]
        if not intact:
            damaged = catalog.commits.damaged_for(args.id)
            if damaged or found:
                key = damaged[0].key if damaged else found[0]["record"]
                problem = damaged[0].problem if damaged else found[0]["problem"]
                raise DamagedRecordError(
                    f"--id {args.id}: the backup record {key} is damaged ({problem}); {repair_hint(repo.url)}",
                    [d.key for d in damaged] or [key],
                )
            runs = repo.list_records("runs", key=args.id)
            if runs:
                raise UsageError(
                    f"--id: backup {args.id} was never committed (it has {len(runs)} run record(s), no backup"
                    " record): no restore point"
                )
            raise UsageError(f"--id: no committed backup {args.id!r} in {repo.url}")
        item = intact[-1]
        if args.json:
            print_json(item)
        else:
            print_description(item, sys.stdout)
        return 0
    for w in dict.fromkeys(repo.warnings):
        warn(w)
    if args.json:
        print_json(items)
        return 0
    print_table(items, sys.stdout)
    damaged = sum(1 for i in items if i["damaged"])
    print(
        f"{len(items) - damaged} backup(s)"
        + (
            f", {damaged} DAMAGED backup record(s) (see `check`; `repair records` fixes or removes them)"
            if damaged
            else ""
        )
    )
    return 0
