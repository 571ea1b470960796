"""``finalize``: the backup's exit handler — thaw, clean up, and commit the backup record if it all passed."""

from __future__ import annotations

from steps.commands._kube import KUBE_EPILOG, add_kube_args

NAME = "finalize"
HELP = "exit handler: idempotent thaw, cleanup of clones/snapshots, commit of the backup record"
DESCRIPTION = """Runs whatever happened before (Argo's onExit), in this order:

1. thaw every target of the plan (idempotent: safe when nothing is frozen);
2. delete the clone PVCs of this backup, and its VolumeSnapshots / VolumeGroupSnapshots when the plan
   says snapshot.delete_after_copy — found by the label snapflow.io/backup-id, so this works after any
   failure; a leftover snapflow.io/group label is removed from the app's PVCs;
3. commit the backup record (the restore point) ONLY when --workflow-status is Succeeded, every volume
   of the plan has a snapshot of this backup in the repository (matched by volume name, or by PVC), the
   newest verify run record passed and checked every snapshot being committed, and the consistent-point
   run record says app-consistent or crash-consistent (an inconsistent copy is no restore point).
   A damaged record that may be part of this backup (a backup or run record in its group, a snapshot
   record of it, one the verify checked, or one that cannot be read and was stored since the backup
   began) stops the commit: exit 3, one line naming its object key; `repair records` fixes or removes
   it, then the backup runs again.

Exit status: 0 when the workflow did not succeed (nothing to commit) and the thaw worked; non-zero when
the thaw failed, or when the workflow succeeded but the backup could not be committed (so that the
workflow is not reported as a successful backup). Running it twice is harmless.

examples:
  python -m steps finalize --plan plan.json --backup-id backup-db-x7k2 --workflow-status Succeeded
  python -m steps finalize --plan plan.json --backup-id backup-db-x7k2 --workflow-status Failed
"""

STATUSES = ("Succeeded", "Failed", "Error", "Running", "Omitted", "Skipped")


def configure(parser):
    parser.add_argument("--plan", required=True, metavar="FILE", help="plan JSON file")
    parser.add_argument(
        "--backup-id", required=True, metavar="ID", help="the backup run (Argo workflow name)"
    )
    parser.add_argument(
        "--workflow-status",
        required=True,
        metavar="STATUS",
        help="{{workflow.status}}: Succeeded, Failed or Error",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    add_kube_args(parser)
    parser.epilog = (
        KUBE_EPILOG
        + """\
repository: the plan's repository; SNAPFLOW_PASSWORD / SNAPFLOW_PASSWORD_FILE, AWS_ACCESS_KEY_ID,
  AWS_SECRET_ACCESS_KEY, SNAPFLOW_S3_* as for the other repository steps
"""
    )


# --------------------------------------------------------------------------------------------------
# Cleanup


def cleanup_cluster(client, plan, backup_id: str, log) -> dict[str, list[str]]:
    """Delete what this backup created in the app's namespace; every failure is reported, none stops."""
    from steps.drivers.kube import KubeError
    from steps.drivers.snapshot_csi import SNAPSHOT_API
    from steps.manifests import render

    ns = plan.app.namespace
    selector = f"{render.LABEL_BACKUP}={render.label_value(backup_id)}"
    done: dict[str, list[str]] = {"deleted": [], "errors": []}

    def delete_all(api_version: str, kind: str, extra: str = "") -> None:
        try:
            items, _ = client.list(api_version, kind, ns, label_selector=selector + extra)
        except KubeError as err:
            if getattr(err, "status", None) != 404:  # the kind is not served: nothing to delete
                done["errors"].append(f"list {kind}: {err}")
            return
        for item in items:
            name = item["metadata"]["name"]
            try:
                if client.delete(api_version, kind, name, ns):
                    done["deleted"].append(f"{kind}/{name}")
                    log(f"deleted {kind}/{name}")
            except KubeError as err:
                done["errors"].append(f"delete {kind}/{name}: {err}")

    delete_all("v1", "PersistentVolumeClaim", f",{render.LABEL_ROLE}=clone")
    group = plan.consistency == "group"
    if plan.snapshot.delete_after_copy:
        # Only a group plan makes VolumeGroupSnapshots (and its identity alone may delete them).
        for api_version in render.GROUP_SNAPSHOT_API_VERSIONS if group else ():
            before = len(done["deleted"])
            delete_all(api_version, "VolumeGroupSnapshot")
            if len(done["deleted"]) > before:
                break
        delete_all(SNAPSHOT_API, "VolumeSnapshot")
    # a group cut interrupted between labelling the PVCs and removing the label
    group_value = render.label_value(backup_id)
    for v in plan.volumes if group else ():
        if not v.pvc:
            continue
        try:
            pvc = client.get_or_none("v1", "PersistentVolumeClaim", v.pvc, ns)
            if pvc and (pvc["metadata"].get("labels") or {}).get(render.LABEL_GROUP) == group_value:
                client.patch(
                    "v1",
                    "PersistentVolumeClaim",
                    v.pvc,
                    ns,
                    {"metadata": {"labels": {render.LABEL_GROUP: None}}},
                )
        except KubeError as err:
            done["errors"].append(f"unlabel PersistentVolumeClaim/{v.pvc}: {err}")
    return done


# --------------------------------------------------------------------------------------------------
# Commit


def commit_checks(plan, backup_id: str, snapshots, runs) -> tuple[dict | None, list[str]]:
    """The backup record to commit, or the reasons it must not be. Pure: takes what the repository holds."""
    problems: list[str] = []
    mine = [s for s in snapshots if s.backup_id == backup_id or s.tags.get("backup") == backup_id]
    manifests = [s for s in mine if s.tags.get("kind") == "manifests"]
    data = [s for s in mine if s.tags.get("kind") != "manifests"]
    volumes = []
    for v in plan.volumes:
        # exactly this volume: by name, or by its PVC when it has one (a snapshot naming no volume, or a
        # plan volume without a PVC, must not match everything)
        names = {v.name, v.pvc} - {None, ""}
        found = [s for s in data if s.data.get("volume") in names or s.tags.get("volume") == v.name]
        if not found:
            problems.append(f"volume {v.name}: no snapshot of backup {backup_id} in the repository")
            continue
        snap = max(found, key=lambda s: s.time)
        summary = snap.data.get("summary") or {}
        volumes.append(
            {
                **v.to_dict(),
                "snapshot": snap.id,
                "files": summary.get("files"),
                "bytes": summary.get("bytes_total"),
            }
        )
    verifies = [r for r in runs if r.data.get("name") == "verify"]
    verify = verifies[-1].data if verifies else None
    if verify is None:
        problems.append(f"backup {backup_id}: no verify run record")
    elif not verify.get("ok"):
        problems.append(f"backup {backup_id}: verify failed ({'; '.join(verify.get('problems', [])[:3])})")
    else:
        # what is committed must be what the verify checked (not a copy written after it)
        checked = set(verify.get("snapshots") or ())
        committed = [(f"volume {v['name']}", v["snapshot"]) for v in volumes]
        if manifests:
            committed.append(("manifests", max(manifests, key=lambda s: s.time).id))
        for what, sid in committed:
            if sid not in checked:
                problems.append(
                    f"{what}: snapshot {sid[:8]} was not checked by the passing verify of backup {backup_id}"
                )
    cps = [r.data for r in runs if r.data.get("name") == "consistent-point"]
    cp = cps[-1] if cps else None
    if cp is None:
        if plan.targets or plan.volumes:
            problems.append(
                f"backup {backup_id}: no consistent-point run record (the cut of its volumes was never"
                " recorded, so nothing says what the copies are worth)"
            )
    elif cp.get("verdict") not in ("app-consistent", "crash-consistent"):
        why = "; ".join(str(r) for r in (cp.get("reasons") or [])[:3])
        problems.append(
            f"backup {backup_id}: its consistent point is {cp.get('verdict')!r}"
            + (f" ({why})" if why else "")
            + ", which is no restore point"
        )
    if problems:
        return None, problems
    record = {
        "version": 1,
        "backup_id": backup_id,
        "app": plan.app.to_dict(),
        "volumes": volumes,
        "manifests": max(manifests, key=lambda s: s.time).id if manifests else None,
        "snapshot_driver": plan.snapshot.driver,
        # where each target's data directory lies inside its volumes (a restore writes backup_label there)
        "targets": [
            {"name": t.name, "hook": t.hook, "pgdata": str(t.params.get("pgdata") or "")}
            for t in plan.targets
        ],
        "consistency": None
        if cp is None
        else {k: cp.get(k) for k in ("verdict", "reasons", "recovery", "freeze_window_ms", "timeline")},
        "verify": {k: verify.get(k) for k in ("ok", "read_data_percent", "snapshots", "bytes_read", "time")},
        "repository": plan.repository.url if plan.repository else None,
    }
    return record, []


def damage_in_the_way(repo, backup_id: str, runs, snapshots) -> list:
    """The damaged records that may be part of this backup, so that committing without them would
    choose around damage: any damaged record in its own ``backups`` or ``runs`` group (the commit
    itself, or the newest verify / consistent-point record), and each damaged snapshot record that is
    this backup's or may be: its intact content says so, the passing verify checked a snapshot of that
    name, or it cannot be read and was stored since this backup's first record (an older one that
    cannot be read belongs to an earlier backup, and the report and ``check`` flag it)."""
    from steps.repository.repo import CLOCK_SLACK

    found = list(repo.damaged_records("backups", key=backup_id))
    found += repo.damaged_records("runs", key=backup_id)
    verifies = [r for r in runs if r.data.get("name") == "verify"]
    checked = set(verifies[-1].data.get("snapshots") or ()) if verifies else set()
    mine = [s for s in snapshots if s.backup_id == backup_id or s.tags.get("backup") == backup_id]
    times = [r.modified for r in runs if r.modified is not None]
    first = min(times) if times and len(times) == len(runs) else None
    for d in repo.damaged_records("snapshots"):
        if d.id in checked:  # the name of a snapshot the verify checked: this backup's
            found.append(d)
        elif d.data is not None:
            tags = d.data.get("tags") if isinstance(d.data.get("tags"), dict) else {}
            if d.data.get("backup_id") == backup_id or tags.get("backup") == backup_id:
                found.append(d)
        else:
            unknown = first is None or d.modified is None or not mine
            if unknown or d.modified >= first - CLOCK_SLACK:
                found.append(d)
    return found


def commit(plan, backup_id: str, log) -> tuple[str | None, list[str], bool]:
    """(record ID, problems, already_committed). Writes nothing when there are problems. Refuses
    (DamagedRecordError naming the object key) when a damaged record may be part of this backup."""
    from steps.drivers.objectstore import open_store
    from steps.errors import DamagedRecordError
    from steps.repository.repo import Repository, describe_damage, repair_hint, utc_now_iso
    from steps.secrets import repository_password

    assert plan.repository is not None
    repo = Repository.open(open_store(plan.repository.url, plan.repository.endpoint), repository_password())
    existing = repo.list_records("backups", key=backup_id)
    runs = repo.list_records("runs", key=backup_id)
    snapshots = repo.list_snapshots()
    damaged = damage_in_the_way(repo, backup_id, runs, snapshots)
    if damaged and not existing:
        raise DamagedRecordError(
            f"backup {backup_id} not committed: {describe_damage(damaged, damaged[0].kind.rstrip('s'))},"
            " and it may be part of this backup (its commit, its newest verify or consistent-point record,"
            f" or one of its snapshots), so finalize will not commit around it; {repair_hint(repo.url)}, then run"
            " the backup again",
            [d.key for d in damaged],
        )
    if existing:
        for d in damaged:
            log(f"finalize: backup {backup_id} was committed, but {d.key} is damaged ({d.problem})")
        return existing[-1].id, [], True
    record, problems = commit_checks(plan, backup_id, snapshots, runs)
    if record is None:
        return None, problems, False
    record["time"] = utc_now_iso()
    record["workflow_status"] = "Succeeded"
    rid = repo.save_record("backups", record, key=backup_id)
    log(f"backup {backup_id} committed as record {rid[:8]}")
    return rid, [], False


def run(args) -> int:
    import json
    import sys

    from steps.commands._kube import log
    from steps.errors import ConsistencyError, PermanentError, SnapflowError, UsageError
    from steps.plan import load_plan

    if args.workflow_status not in STATUSES:
        raise UsageError(
            f"--workflow-status: expected one of {', '.join(STATUSES)}, got {args.workflow_status!r}"
        )
    plan = load_plan(args.plan)
    summary: dict = {"backup_id": args.backup_id, "workflow_status": args.workflow_status}

    # 1. thaw: first, and whatever else fails
    thaw_error = None
    try:
        from steps.quiesce.engine import thaw_plan

        results = thaw_plan(plan)
        summary["thaw"] = results
        failed = [r for r in results if r.get("error")]
        if failed:
            thaw_error = "thaw failed for " + "; ".join(f"{r.get('target')}: {r['error']}" for r in failed)
    except Exception as err:  # the thaw must never stop cleanup
        thaw_error = f"thaw failed: {err}"
    if thaw_error:
        log(f"finalize: {thaw_error}")

    # 2. cleanup of what the backup created in the cluster
    if plan.snapshot.driver == "csi" or any(v.pvc for v in plan.volumes):
        try:
            from steps.commands._kube import kube_client

            with kube_client(args) as client:
                summary["cleanup"] = cleanup_cluster(client, plan, args.backup_id, log)
            for e in summary["cleanup"]["errors"]:
                log(f"finalize: cleanup: {e}")
        except SnapflowError as err:
            summary["cleanup"] = {"deleted": [], "errors": [str(err)]}
            log(
                f"finalize: cleanup failed: {err} (leftovers carry the label snapflow.io/backup-id={args.backup_id})"
            )

    # 3. commit, only for a successful run
    commit_error: SnapflowError | None = None
    if args.workflow_status != "Succeeded":
        summary["committed"] = False
        log(f"finalize: workflow {args.workflow_status}: backup {args.backup_id} is not committed")
    elif plan.repository is None:
        summary["committed"] = False
        commit_error = UsageError("plan: repository: required to commit a backup")
    else:
        try:
            rid, problems, already = commit(plan, args.backup_id, log)
            summary["committed"] = rid is not None
            summary["record"] = rid
            if already:
                log(f"finalize: backup {args.backup_id} was already committed")
            if problems:
                summary["problems"] = problems
                commit_error = PermanentError(f"backup {args.backup_id} not committed: {'; '.join(problems)}")
        except SnapflowError as err:
            summary["committed"] = False
            commit_error = err
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    else:
        print(
            f"finalize: backup {args.backup_id}: {'committed' if summary.get('committed') else 'not committed'}",
            file=sys.stderr,
        )
    if thaw_error:
        raise ConsistencyError(thaw_error)
    if commit_error is not None:
        raise commit_error
    return 0
