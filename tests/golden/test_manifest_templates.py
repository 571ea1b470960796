"""Golden output of the manifests the steps create (templates/manifests) from fixed arguments.

Compared as YAML text with sorted mapping keys (YAML mappings have no order), so a change of a field,
a value or the order of a list (a container's ``env``) shows.
Regenerate with REGENERATE=1 after a deliberate change.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from steps import runtime
from steps.drivers import kube_objects

GOLDEN = Path(__file__).parent / "manifests"

MOVER = dict(
    name="restore-orders-db-data-0",
    namespace="shop-restored",
    pvc="data-orders-db-0",
    image="ghcr.io/example/snapflow:1.0",
    repository="s3://backups/shop",
    snapshot_id="3f2a9c1e" * 8,
    labels={"snapflow.io/role": "mover", "snapflow.io/restore-id": "r1"},
    password_secret="repo-key",
)

CASES = {
    "restore-mover-pod-minimal": lambda: kube_objects.mover_pod(**MOVER),
    "restore-mover-pod-full": lambda: kube_objects.mover_pod(
        **MOVER,
        password_secret_key="pw",
        credentials_secret="s3-creds",
        access_key_key="id",
        secret_key_key="secret",
        endpoint="https://s3.example:9000",
        excludes=["*.tmp"],
        ca_config_map="s3-ca",
        ca_key="bundle.pem",
        service_account="snapflow-mover",
        image_pull_policy="Always",
        resources={"requests": {"cpu": "1"}},
        extra_env={runtime.S3_REGION: "eu-1", runtime.S3_PATH_STYLE: "true"},
        extra_args=["--write-backup-label"],
    ),
    "restore-mover-pod-non-root-block": lambda: kube_objects.mover_pod(
        **MOVER, credentials_secret="s3-creds", volume_mode="Block", run_as_root=False
    ),
    "volumesnapshot": lambda: kube_objects.volume_snapshot(
        name="snapflow-b1-data",
        namespace="shop",
        pvc="data-orders-db-0",
        labels=kube_objects.backup_labels("b1", "orders-db", "data", role="snapshot"),
        snapshot_class="csi-hostpath-snapclass",
    ),
    "volumegroupsnapshot": lambda: kube_objects.volume_group_snapshot(
        name="snapflow-b1",
        namespace="shop",
        selector={"snapflow.io/group": "b1"},
        labels=kube_objects.backup_labels("b1", "orders-db", role="snapshot"),
        group_snapshot_class="csi-group",
    ),
    "clone-pvc-block": lambda: kube_objects.clone_pvc(
        name="snapflow-clone-b1-data",
        namespace="shop",
        snapshot="snapflow-b1-data",
        size="10Gi",
        labels=kube_objects.backup_labels("b1", "orders-db", "data", role="clone"),
        storage_class="csi-hostpath-sc",
        volume_mode="Block",
    ),
}


def dump(obj: dict) -> str:
    return yaml.safe_dump(obj, sort_keys=True, width=200)


@pytest.mark.parametrize("case", sorted(CASES))
def test_manifest_matches_its_golden_file(case):
    text = dump(CASES[case]())
    path = GOLDEN / f"{case}.yaml"
    if os.environ.get("REGENERATE") == "1":
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path}: no golden file (make regenerate-golden)"
    assert text == path.read_text()


def test_the_mover_pod_template_spells_nothing_of_the_step_runtime_contract():
    """Its environment, paths, capabilities and user come from steps.runtime through mover_pod()."""
    text = (
        Path(kube_objects.__file__).parents[2] / "templates/manifests/restore-mover-pod.yaml.j2"
    ).read_text()
    body = text.split("#}", 1)[1]  # the comment may name the contract
    spelled = [
        runtime.PASSWORD_FILE,
        runtime.AWS_ACCESS_KEY_ID,
        runtime.S3_CA_BUNDLE,
        runtime.MOVER_PASSWORD_DIR,
        runtime.MOVER_CA_DIR,
        str(runtime.STEP_USER),
        *runtime.MOVER_CAPABILITIES,
    ]
    assert [s for s in spelled if s in body] == []
