"""A mover retried over its own half-written restore finishes it: restore-app's movers always pass
``--overwrite always`` (the PVC is one the restore created), so the restore step's refusal of a non-empty
target never strands a retried fill. Fake API server, real ``kubernetes`` client, repository on SeaweedFS.
"""

from __future__ import annotations

import json
import os

from steps.manifests import bundle
from tests.fixtures.k8s_app import run_step, tree_state, write_app_data

NS = "retry"


def commit_backup_with_a_volume(k8s, backup_id: str, data_dir) -> None:
    from steps.drivers.objectstore import open_store
    from steps.repository.repo import Repository
    from steps.repository.stored_files import store_files

    res = run_step(
        "copy", "--repo", k8s.repo, "--source", data_dir, "--backup-id", backup_id, "--volume", "data"
    )
    assert res.rc == 0, res.stderr
    snapshot = res.last_line
    objects = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}},
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data", "namespace": NS},
            "spec": {
                "storageClassName": "csi-hostpath-sc",
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    ]
    repo = Repository.open(
        open_store(k8s.repo, os.environ.get("SNAPFLOW_S3_ENDPOINT")), os.environ["SNAPFLOW_PASSWORD"]
    )
    files = bundle.to_files(objects, {"backup_id": backup_id, "namespace": NS})
    sid = store_files(repo, files, tags={"kind": "manifests", "backup": backup_id}, backup_id=backup_id)
    repo.save_record(
        "backups",
        {
            "version": 1,
            "backup_id": backup_id,
            "app": {"cluster": "x", "namespace": NS, "name": "app"},
            "volumes": [{"name": "data", "pvc": "data", "snapshot": snapshot}],
            "manifests": sid,
            "time": "2026-12-01T00:00:00Z",
        },
        key=backup_id,
    )


def test_fill_retried_over_a_half_written_volume_finishes_the_restore(k8s, tmp_path):
    # GIVEN a backup of one volume, restored up to its PVCs (the workflow's prepare phase)
    data, wal = tmp_path / "data", tmp_path / "unused-wal"
    data.mkdir(), wal.mkdir()
    write_app_data(data, wal)
    commit_backup_with_a_volume(k8s, "retry-1", data)
    common = ("--repo", k8s.repo, "--backup", "retry-1", "--timeout", "20")
    volumes = tmp_path / "volumes.json"
    prepared = run_step("restore-app", *common, "--phase", "prepare", "--mover", "none", "--out", volumes)
    assert prepared.rc == 0, prepared.stderr
    (item,) = json.loads(volumes.read_text())

    # AND a first fill that died half-way: a truncated file, a directory without its files
    pvc_dir = k8s.server.volume_path(NS, "data")
    (pvc_dir / "base" / "16384").mkdir(parents=True, exist_ok=True)
    (pvc_dir / "PG_VERSION").write_text("1")
    assert any(pvc_dir.iterdir())

    # WHEN the fill runs again
    filled = run_step(
        "restore-app", *common, "--phase", "fill", "--volumes", volumes,
        "--mover", "local", "--volume-root", k8s.volume_root,
    )  # fmt: skip

    # THEN it finishes the restore: the volume equals the backed-up data
    assert filled.rc == 0, filled.stderr
    assert item["pvc"] == "data" and item["restore_options"] == ["--overwrite", "always"]
    assert tree_state(pvc_dir) == tree_state(data)
