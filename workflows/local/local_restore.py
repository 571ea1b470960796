"""Restoring a volume of a local policy (``snapflow restore --local``): choosing the snapshot
(``latest`` is the newest committed backup of the app), running the restore pipeline's step into an
empty target, then applying what the consistent point recorded (PostgreSQL's ``backup_label`` for a
copy made in backup mode)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steps.api import PermanentError, UsageError, labels_for_volume, write_backup_label
from workflows.local.local_policy import check_local, step_environment
from workflows.local.repository_access import open_policy_repository, steps_environ
from workflows.local.runner import LocalPipelineRunner, RunSettings, find_pipeline
from workflows.local.step_runs import RunResult, View
from workflows.policy import Policy


@dataclass
class RestoreChoice:
    snapshot_id: str
    volume: str
    backup_id: str | None
    backup: dict[str, Any] | None  # the committed backup record the snapshot belongs to


def refuse_damaged_backup_records(repo, policy: Policy) -> None:
    """``latest`` is the newest committed backup of the app: a backup record that does not open may be
    it (one that cannot be read may be any app's), so refuse rather than choose around it."""

    def mine(data: dict) -> bool:
        app = data.get("app") if isinstance(data.get("app"), dict) else {}
        return app.get("name") == policy.app and app.get("namespace") == policy.namespace

    repo.refuse_damaged_backups(
        "--snapshot latest", mine, way_out="pass --snapshot ID to restore a chosen one"
    )


def choose_snapshot(policy: Policy, env: dict[str, str], ref: str, volume: str | None) -> RestoreChoice:
    """The snapshot to restore: ``latest`` is the newest committed backup of this app (the chosen
    volume's snapshot in it); an ID or prefix must name a committed snapshot of this app."""
    names = [v.volume_name for v in policy.spec.volumes]
    if volume is not None and volume not in names:
        raise UsageError(f"--volume: expected one of {', '.join(names)}, got {volume!r}")
    with steps_environ(env):
        repo = open_policy_repository(policy, env)
        backups = [r.data for r in repo.list_records("backups")]
        snaps = repo.list_snapshots()
        committed = repo.committed_filter()
    mine = [
        b
        for b in backups
        if (b.get("app") or {}).get("name") == policy.app
        and (b.get("app") or {}).get("namespace") == policy.namespace
    ]
    if ref == "latest":
        if volume is None and len(names) > 1:
            raise UsageError(
                f"--volume: required with --snapshot latest, the policy has volumes {', '.join(names)}"
            )
        refuse_damaged_backup_records(repo, policy)
        want = volume or names[0]
        for backup in sorted(mine, key=lambda b: str(b.get("time", "")), reverse=True):
            for v in backup.get("volumes") or []:
                if v.get("name") == want and v.get("snapshot"):
                    return RestoreChoice(v["snapshot"], want, backup.get("backup_id"), backup)
        raise UsageError(f"--snapshot latest: no committed backup of {policy.app} holds volume {want}")
    with steps_environ(env):
        snap = repo.find_snapshot(ref, snaps)
    if not committed(snap):
        raise UsageError(
            f"--snapshot: {snap.short_id} belongs to backup {snap.backup_id}, which was never committed "
            "(not a restore point)"
        )
    backup = next((b for b in mine if b.get("backup_id") == snap.backup_id), None) if snap.backup_id else None
    vol = snap.data.get("volume") or snap.tags.get("volume") or volume or names[0]
    if snap.data.get("app") not in (None, policy.app):
        raise UsageError(
            f"--snapshot: {snap.short_id} is a snapshot of app {snap.data.get('app')}, not {policy.app}"
        )
    return RestoreChoice(snap.id, vol, snap.backup_id, backup)


def prepare_restored_volume(choice: RestoreChoice, target: str) -> list[str]:
    """What the consistent point recorded that a restore must apply (PostgreSQL's backup_label for a
    copy made in backup mode, in the data directory inside the volume where the steps' restore writes
    it: :func:`labels_for_volume` decides for both); returns notes for the user."""
    notes: list[str] = []
    record = choice.backup or {}
    labelled: set[str] = set()
    for sub, t in labels_for_volume(record, choice.volume):
        try:
            written = write_backup_label(target, t, sub)
        except OSError as err:
            raise PermanentError(
                f"backup_label: the data directory {sub or '.'} of target {t.get('name')} is not a directory"
                f" in the restored {target} ({err.strerror})"
            ) from None
        labelled.add(t.get("name"))
        notes.append(
            f"target {t['name']}: wrote {', '.join(f'{sub}/{n}'.lstrip('/') for n in written)}"
            " (copy in backup mode: recovery replays WAL from the backup start)"
        )
    timeline = (record.get("consistency") or {}).get("timeline") or {}
    owners: list[str] = []
    atomic = None
    for v in timeline.get("volumes") or []:
        if v.get("volume") == choice.volume:
            owners = list(v.get("targets") or [])
            atomic = v.get("atomic")
    for t in timeline.get("targets") or []:
        if (owners and t.get("name") not in owners) or t.get("name") in labelled:
            continue
        if t.get("recovery") == "crash" and atomic is False:
            notes.append(f"target {t['name']}: copied file by file while its hook held it; nothing to apply")
        elif t.get("recovery") == "crash":
            notes.append(
                f"target {t['name']}: atomic snapshot, crash recovery on first start (no backup_label)"
            )
    return notes


def restore_local(
    policy: Policy,
    snapshot: str,
    target: str,
    *,
    volume: str | None = None,
    settings: RunSettings | None = None,
    view: View | None = None,
) -> tuple[RunResult, RestoreChoice, list[str]]:
    """Restore one volume of a local policy into ``target`` with the restore pipeline's step."""
    settings = settings or RunSettings()
    if policy.spec.source is not None:
        raise UsageError(
            f"{policy.name}: spec.source: this restores an app's volumes; restore the {policy.spec.source.kind} "
            "with snapflow run POLICY --local --pipeline restore -p NAME=VALUE (the restore workflow's parameters)"
        )
    check_local(policy, policy.name)
    target_path = Path(target).absolute()
    if target_path.exists() and (not target_path.is_dir() or any(target_path.iterdir())):
        raise UsageError(
            f"--target: {target_path} is not an empty directory (restore into a new or empty one)"
        )
    env = step_environment(policy, settings.env)
    choice = choose_snapshot(policy, env, snapshot, volume)
    settings = dataclasses.replace(
        settings,
        params={**settings.params, "snapshot": choice.snapshot_id, "target-pvc": str(target_path)},
        store_record=False,
    )
    pipeline = find_pipeline(policy, "restore")
    runner = LocalPipelineRunner(policy, pipeline, settings, view)
    result = runner.run(restore_target=str(target_path))
    notes: list[str] = []
    if result.ok:
        notes = prepare_restored_volume(choice, str(target_path))
    return result, choice, notes
