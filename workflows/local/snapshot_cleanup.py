"""Deleting a backup's local snapshots after its run when the policy says ``snapshot.deleteAfterCopy``
(btrfs subvolumes, or copies, made by the ``local`` snapshot driver)."""

from __future__ import annotations

import contextlib
from pathlib import Path

from steps.api import CutResult, LocalSnapshotDriver, Plan, SnapflowError, fsfreeze_mounts, is_btrfs_subvolume
from workflows.local.run_context import LocalContext


def cleanup_local_snapshots(plan: Plan, ctx: LocalContext) -> list[str]:
    """Delete this backup's local snapshots when ``plan`` says deleteAfterCopy (whatever the
    outcome: a snapshot of a backup that was not committed is no restore point); a warning for
    each that could not be deleted."""
    if plan.snapshot.driver != "local" or not plan.snapshot.delete_after_copy:
        return []
    driver = LocalSnapshotDriver(local_dir=plan.snapshot.local_dir)
    driver.avoid_snapshots_under(fsfreeze_mounts(plan))
    paths: dict[str, str] = {}
    record = ctx.freeze_record() or {}
    for snap in record.get("snapshots") or []:
        paths[snap["volume"]] = snap["snapshot"]
    for v in plan.volumes:
        if v.name not in paths and v.path:
            try:
                root = driver.snapshot_root(v)[0]  # where consistent-point put it, or would have
            except SnapflowError:
                continue  # refused before anything was written
            paths[v.name] = str(root / f"{v.name}.{ctx.backup_id}")
    warnings = []
    for volume, path in paths.items():
        p = Path(path)
        if p.exists() or p.is_symlink():
            kind = "btrfs" if is_btrfs_subvolume(p) else "copy"
            driver.delete(CutResult(volume, path, kind == "btrfs", None, 0.0, 0.0, handle={"kind": kind}))
            if p.exists():
                warnings.append(f"local snapshot {p} of volume {volume} could not be deleted")
        if not plan.snapshot.local_dir:
            with contextlib.suppress(OSError):
                p.parent.rmdir()  # the default folder next to the volume, once empty
    return warnings
