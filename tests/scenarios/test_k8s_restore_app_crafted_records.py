"""A crafted backup record (a compromised writer can commit one) is refused by restore-app in one line
before anything is created: its volumes' snapshot IDs land on a mover's command line, its manifests
reference must be a snapshot ID. Fake API server, real ``kubernetes`` client, repository on SeaweedFS."""

from __future__ import annotations

import os

import pytest

from steps.manifests import bundle
from tests.fixtures.k8s_app import run_step

NS = "shop"
OBJECTS = [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}},
    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": NS}},
]


def commit_record(k8s, backup_id: str, **fields) -> None:
    from steps.drivers.objectstore import open_store
    from steps.repository.repo import Repository
    from steps.repository.stored_files import store_files

    repo = Repository.open(
        open_store(k8s.repo, os.environ.get("SNAPFLOW_S3_ENDPOINT")), os.environ["SNAPFLOW_PASSWORD"]
    )
    files = bundle.to_files(OBJECTS, {"backup_id": backup_id, "namespace": NS})
    sid = store_files(repo, files, tags={"kind": "manifests", "backup": backup_id}, backup_id=backup_id)
    record = {"version": 1, "backup_id": backup_id, "app": {"namespace": NS, "name": "app"}, "manifests": sid}
    repo.save_record("backups", {**record, **fields}, key=backup_id)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"volumes": [{"name": "data", "pvc": "c", "snapshot": "--delete"}]},
            "error: backup crafted: volumes[0]: expected a name, a PVC and a snapshot ID (hexadecimal)",
        ),
        ({"volumes": ["data"]}, "error: backup crafted: volumes[0]: expected a name"),
        ({"volumes": [{"name": "data", "snapshot": "latest"}]}, "error: backup crafted: volumes[0]:"),
        ({"manifests": 42}, "error: backup crafted: manifests: expected a snapshot ID"),
        ({"app": {"namespace": ["kube-system"]}}, "error: backup crafted: app.namespace: expected a string"),
    ],
)
def test_crafted_record_is_refused_before_anything_is_created(k8s, fields, message):
    # GIVEN a committed backup whose record was crafted
    commit_record(k8s, "crafted", **fields)

    # WHEN it is restored into a new namespace
    res = run_step(
        "restore-app", "--repo", k8s.repo, "--backup", "crafted", "--target-namespace", "restored",
        "--mover", "local", "--volume-root", k8s.volume_root, "--timeout", "20",
    )  # fmt: skip

    # THEN it fails in one line naming the field, and nothing was created
    assert res.rc == 3, res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith(message), res.stderr
    assert "Traceback" not in res.stderr
    assert k8s.server.get("namespaces", "restored") is None
