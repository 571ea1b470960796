"""CSI snapshots that fail: a clear one-line error, the app thawed, nothing committed, nothing left over."""

from __future__ import annotations

import json

from steps.drivers import kube_objects
from tests.fixtures.k8s_app import APP_NS, VOLUMES, run_step


def backup_objects(world, backup_id):
    selector = f"{kube_objects.LABEL_BACKUP}={backup_id}"
    with world.client() as c:
        snaps, _ = c.list("snapshot.storage.k8s.io/v1", "VolumeSnapshot", APP_NS, label_selector=selector)
        pvcs, _ = c.list("v1", "PersistentVolumeClaim", APP_NS, label_selector=selector)
    return sorted(s["metadata"]["name"] for s in snaps), sorted(p["metadata"]["name"] for p in pvcs)


def test_snapshot_that_never_becomes_ready_fails_clearly_and_leaves_nothing(k8s):
    # GIVEN an app whose WAL volume's snapshot is cut but never becomes ready to use
    k8s.deploy_app()
    k8s.server.snapshot_behavior(
        "never_ready", pvc=VOLUMES["wal"], error_message="out of space on the backing store"
    )
    plan = k8s.plan(timeout_s=3)
    assert (
        run_step("capture", "--repo", k8s.repo, "--namespace", APP_NS, "--backup-id", "backup-db-2").rc == 0
    )

    # WHEN the consistent point runs
    res = run_step("consistent-point", "--plan", plan, "--backup-id", "backup-db-2")

    # THEN it fails (not retryable: it had quiesced) with one line naming the snapshot, its PVC, its error
    # and its events
    assert res.rc == 4
    error = res.stderr.strip().splitlines()[-1]
    assert error.startswith(
        "error: snapshots cut but not ready (not retried): VolumeSnapshot "
        "shop/snapflow-backup-db-2-wal (PVC wal-db-0) not ready to use after 3s; "
        "error: out of space on the backing store;"
    ), error
    assert (
        "events: " in error and "SnapshotReadyFailed: out of space" in error and "readyToUse=False" in error
    )
    # ... and the app was released before the wait (it is not frozen)
    assert not k8s.frozen_marker.exists()

    # WHEN the copy of the healthy volume made its clone, the other copy waited for its snapshot in vain
    k8s.copy_volume("backup-db-2", "data", VOLUMES["data"])
    res = run_step(
        "prepare-clone",
        "--namespace",
        APP_NS,
        "--pvc",
        VOLUMES["wal"],
        "--volume",
        "wal",
        "--backup-id",
        "backup-db-2",
        "--timeout",
        "2",
    )
    assert res.rc == 3
    assert "not ready to use after 2s; error: out of space on the backing store" in res.stderr
    snaps, clones = backup_objects(k8s, "backup-db-2")
    assert snaps == ["snapflow-backup-db-2-data", "snapflow-backup-db-2-wal"] and len(clones) == 1

    # WHEN the exit handler runs for the failed workflow
    res = run_step(
        "finalize", "--plan", plan, "--backup-id", "backup-db-2", "--workflow-status", "Failed", "--json"
    )

    # THEN it succeeds, thaws, deletes the clone and the snapshots, and commits nothing
    assert res.rc == 0, res.stderr
    summary = json.loads(res.last_line)
    assert summary["committed"] is False
    assert sorted(summary["cleanup"]["deleted"]) == sorted(
        [f"PersistentVolumeClaim/{clones[0]}"] + [f"VolumeSnapshot/{s}" for s in snaps]
    )
    k8s.server.wait_for("persistentvolumeclaims", clones[0], APP_NS, timeout=60, gone=True)
    assert backup_objects(k8s, "backup-db-2") == ([], [])
    assert not k8s.frozen_marker.exists()
    # the app's own PVCs are untouched
    assert k8s.server.get("persistentvolumeclaims", VOLUMES["wal"], APP_NS) is not None
    res = run_step("snapshots", "--repo", k8s.repo, "--json")
    assert res.rc == 0
    res = run_step("restore-app", "--repo", k8s.repo, "--backup", "latest", "--mover", "none")
    assert res.rc == 2 and "no committed backup" in res.stderr


def test_a_successful_workflow_without_a_verify_record_is_not_committed(k8s):
    # GIVEN copies of every volume but no verify run
    k8s.deploy_app()
    plan = k8s.plan()
    assert run_step("consistent-point", "--plan", plan, "--backup-id", "backup-db-5").rc == 0
    for volume, pvc in VOLUMES.items():
        k8s.copy_volume("backup-db-5", volume, pvc)

    # WHEN finalize is told the workflow succeeded
    res = run_step("finalize", "--plan", plan, "--backup-id", "backup-db-5", "--workflow-status", "Succeeded")

    # THEN it refuses to commit and fails, so the workflow is not reported as a good backup
    assert res.rc == 3
    assert "backup backup-db-5 not committed: backup backup-db-5: no verify run record" in res.stderr
    assert backup_objects(k8s, "backup-db-5") == ([], [])

    # WHEN verify passes and finalize runs again (idempotent), it commits; a third run changes nothing
    assert run_step("verify", "--repo", k8s.repo, "--backup-id", "backup-db-5").rc == 0
    first = run_step(
        "finalize", "--plan", plan, "--backup-id", "backup-db-5", "--workflow-status", "Succeeded", "--json"
    )
    again = run_step(
        "finalize", "--plan", plan, "--backup-id", "backup-db-5", "--workflow-status", "Succeeded", "--json"
    )
    assert first.rc == 0 and again.rc == 0
    assert json.loads(first.last_line)["record"] == json.loads(again.last_line)["record"]
