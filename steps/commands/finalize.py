"""``finalize``: the backup's exit handler — thaw, clean up, and commit the backup record if it all passed."""

from __future__ import annotations

from steps.commands._kube import KUBE_EPILOG, add_kube_args

NAME = "finalize"
HELP = "exit handler: idempotent thaw, cleanup of clones/snapshots, commit of the backup record"
DESCRIPTION = """Runs whatever happened before (Argo's onExit), in this order:

1. thaw every target of the plan (idempotent: safe when nothing is frozen);
2. with --mover-namespace, first delete this backup's clones there, the VolumeSnapshots bound there
   and their pre-provisioned VolumeSnapshotContents (set back to deletionPolicy Retain first if anyone
   changed it; a content pointing elsewhere is left alone), never the app's snapshot data; then
   delete the clone PVCs of this backup, and its VolumeSnapshots / VolumeGroupSnapshots when the plan
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
   The record also says what changed (`changes`) and whether that is unusual for the app (`anomaly`,
   a warning: the backup is committed all the same; with --lock-last-good the newest unflagged backup
   is then kept locked; docs/user/anomalies.md).

4. with --notify (spec.notifications), post the outcome (commit or failure) to each webhook listening
   for it (docs/user/notifications.md); a failure to notify is one log line and a count in the summary
   and the notifications run record, and never changes the exit status.

With a source plan (etcd, registry, bucket: a policy with spec.source) there is nothing to thaw and
nothing in the cluster to clean up; the backup is committed when the newest snapshot of this backup of
the source's kind (tags kind=etcd|registry|bucket) was checked by the newest verify, which passed (no
consistent point: the source step's snapshot is the cut).

Exit status: 0 when the workflow did not succeed (nothing to commit) and the thaw worked; non-zero when
the thaw failed, or when the workflow succeeded but the backup could not be committed (so that the
workflow is not reported as a successful backup). Running it twice is harmless.

examples:
  python -m steps finalize --plan plan.json --backup-id backup-db-x7k2 --workflow-status Succeeded
  python -m steps finalize --plan plan.json --backup-id backup-db-x7k2 --workflow-status Failed
  python -m steps finalize --plan plan.json --backup-id backup-db-x7k2 --workflow-status Succeeded \
      --mover-namespace shop-movers
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
    parser.add_argument(
        "--mover-namespace",
        default="",
        metavar="NS",
        help="also delete what prepare-clone made in this namespace for the backup (default: none)",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    parser.add_argument(
        "--lock-last-good",
        metavar="DURATION",
        help="when the committed backup is flagged as anomalous, keep the newest unflagged backup of the"
        " app locked (S3 Object Lock) this long, e.g. 30d (docs/user/anomalies.md)",
    )
    parser.add_argument(
        "--notify",
        action="append",
        default=[],
        metavar="JSON",
        help="post the outcome to this webhook (repeatable; docs/user/notifications.md); a failure to"
        " notify is logged and counted, never changes the outcome",
    )
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


def cleanup_cluster(client, plan, backup_id: str, log, mover_namespace: str = "") -> dict[str, list[str]]:
    """Delete what this backup created in the mover namespace (if any), then in the app's namespace;
    every failure is reported, none stops.

    The mover side goes first: its contents are Retain copies of the app's snapshot handles, and the
    clones there must be gone before the app's snapshots (and, with deletionPolicy Delete, their data)
    may go."""
    from steps.drivers import kube_objects as render
    from steps.drivers.kube import KubeError
    from steps.drivers.snapshot_csi import SNAPSHOT_API, release_mover_objects

    ns = plan.app.namespace
    selector = f"{render.LABEL_BACKUP}={render.label_value(backup_id)}"
    done: dict[str, list[str]] = {"deleted": [], "errors": []}
    if mover_namespace:
        moved = release_mover_objects(client, mover_namespace, backup_id, [v.name for v in plan.volumes], log)
        done["deleted"] += moved["deleted"]
        done["errors"] += moved["errors"]

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
# Commit (the rule and the record: steps.repository.records)


def commit(plan, backup_id: str, log, lock_last_good_days=None) -> tuple[str | None, list[str], bool]:
    """(record ID, problems, already_committed) of :func:`steps.repository.records.commit_backup` in the
    plan's repository."""
    from steps.commands.audit_trail import commit_audited
    from steps.repository.opener import open_repository
    from steps.repository.records import commit_backup

    assert plan.repository is not None
    repo = open_repository(plan.repository.url, plan.repository.endpoint)
    out = commit_audited(
        repo, plan, backup_id, lambda: commit_backup(repo, plan, backup_id, log, lock_last_good_days)
    )
    if lock_last_good_days and out[0] and not out[2]:
        _audit_lock(repo, plan, backup_id)
    return out


def _audit_lock(repo, plan, backup_id: str) -> None:
    """The audit record of the Object Lock a flagged backup put on the last good one, if it put one."""
    from steps.commands.audit_trail import record
    from steps.repository.anomaly_commit import lock_audit

    committed = repo.list_records("backups", key=backup_id)
    lock = lock_audit(committed[-1].data) if committed else None
    if lock is not None:
        record(repo, "object-lock.extend", what=lock[0], app=plan.app.to_dict(), result=lock[1])


def _lock_days(raw: str | None) -> float | None:
    """``--lock-last-good`` in days (None when not given); checked after the thaw, which comes first."""
    if not raw:
        return None
    from steps.commands._retention import parse_duration
    from steps.errors import UsageError

    seconds = parse_duration(raw, "--lock-last-good")
    if seconds <= 0:
        raise UsageError(f"--lock-last-good: expected a positive duration like 30d, got {raw!r}")
    return seconds / 86400


def run(args) -> int:
    import json
    import sys

    from steps.commands._kube import log
    from steps.drivers.files import load_plan
    from steps.errors import ConsistencyError, PermanentError, SnapflowError, UsageError

    if args.workflow_status not in STATUSES:
        raise UsageError(
            f"--workflow-status: expected one of {', '.join(STATUSES)}, got {args.workflow_status!r}"
        )
    plan = load_plan(args.plan)
    if args.mover_namespace and args.mover_namespace == plan.app.namespace:
        raise UsageError(f"--mover-namespace: must differ from the plan's namespace ({plan.app.namespace})")
    summary: dict = {"backup_id": args.backup_id, "workflow_status": args.workflow_status}

    # 1. thaw: first, and whatever else fails (a source's backup quiesces nothing)
    thaw_error = None
    try:
        from steps.quiesce.engine import thaw_plan

        results = thaw_plan(plan) if plan.source is None else []
        summary["thaw"] = results
        failed = [r for r in results if r.get("error")]
        if failed:
            thaw_error = "thaw failed for " + "; ".join(f"{r.get('target')}: {r['error']}" for r in failed)
    except Exception as err:  # the thaw must never stop cleanup
        thaw_error = f"thaw failed: {err}"
    if thaw_error:
        log(f"finalize: {thaw_error}")

    # 2. cleanup of what the backup created in the cluster
    if plan.source is None and (plan.snapshot.driver == "csi" or any(v.pvc for v in plan.volumes)):
        try:
            from steps.commands._kube import kube_client

            with kube_client(args) as client:
                summary["cleanup"] = cleanup_cluster(
                    client, plan, args.backup_id, log, mover_namespace=args.mover_namespace
                )
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
            rid, problems, already = commit(plan, args.backup_id, log, _lock_days(args.lock_last_good))
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
    if args.notify:  # 4. notifications (steps.manifests.notify): never change the outcome
        from steps.manifests.notify import notify

        error = str(commit_error or thaw_error or "") or None
        summary["notifications"] = notify(args.notify, {**summary, "error": error}, plan, log)
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
