"""The manifests the steps create: rendered from templates/manifests, validated strictly, no credentials."""

from __future__ import annotations

import json

import pytest
import yaml

from steps.drivers import kube_objects
from steps.errors import UsageError

BACKUP = "backup-orders-db-x7k2p"


def validate_strict(obj: dict) -> None:
    """kubernetes-validate in strict mode: an unknown or misplaced field is an error."""
    import kubernetes_validate

    kubernetes_validate.validate(obj, "1.33", strict=True)


def test_volume_snapshot():
    vs = kube_objects.volume_snapshot(
        name="s1",
        namespace="shop",
        pvc="data-db-0",
        labels=kube_objects.backup_labels(BACKUP, "db", "data", role="snapshot"),
        snapshot_class="csi-hostpath-snapclass",
    )
    assert vs == {
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshot",
        "metadata": {
            "name": "s1",
            "namespace": "shop",
            "labels": {
                "app.kubernetes.io/managed-by": "snapflow",
                "snapflow.io/backup-id": BACKUP,
                "snapflow.io/app": "db",
                "snapflow.io/volume": "data",
                "snapflow.io/role": "snapshot",
            },
        },
        "spec": {
            "volumeSnapshotClassName": "csi-hostpath-snapclass",
            "source": {"persistentVolumeClaimName": "data-db-0"},
        },
    }
    assert (
        "volumeSnapshotClassName"
        not in kube_objects.volume_snapshot(name="s1", namespace="shop", pvc="p", labels={})["spec"]
    )


def test_volume_group_snapshot_selects_by_label():
    vgs = kube_objects.volume_group_snapshot(
        name="g",
        namespace="shop",
        selector={"snapflow.io/group": BACKUP},
        labels={"a": "b"},
        group_snapshot_class="gclass",
        api_version="groupsnapshot.storage.k8s.io/v1beta2",
    )
    assert vgs["apiVersion"] == "groupsnapshot.storage.k8s.io/v1beta2"
    assert vgs["spec"] == {
        "volumeGroupSnapshotClassName": "gclass",
        "source": {"selector": {"matchLabels": {"snapflow.io/group": BACKUP}}},
    }


@pytest.mark.parametrize("mode", ["Filesystem", "Block"])
def test_clone_pvc_from_snapshot(mode):
    pvc = kube_objects.clone_pvc(
        name="c",
        namespace="shop",
        snapshot="s1",
        size="10Gi",
        labels={"x": "y"},
        storage_class="fast",
        volume_mode=mode,
    )
    validate_strict(pvc)
    assert pvc["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "volumeMode": mode,
        "storageClassName": "fast",
        "resources": {"requests": {"storage": "10Gi"}},
        "dataSource": {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "s1"},
    }


def test_clone_pvc_rejects_an_unknown_volume_mode():
    with pytest.raises(UsageError, match="volumeMode: expected Filesystem or Block"):
        kube_objects.clone_pvc(
            name="c", namespace="n", snapshot="s", size="1Gi", labels={}, volume_mode="Raw"
        )


SECRET_VALUES = ("AKIAEXAMPLE", "wJalrXUtnFEMI", "hunter2")


def mover(**kw):
    args = dict(
        name="m",
        namespace="shop",
        pvc="data-db-0",
        image="ghcr.io/example/snapflow:1.0",
        repository="s3://backups/shop",
        snapshot_id="3f2a9c1e",
        labels={"snapflow.io/role": "mover"},
        password_secret="repo-key",
        credentials_secret="s3-creds",
        endpoint="https://s3.example:9000",
        excludes=["*.tmp", "lost+found"],
    )
    args.update(kw)
    return kube_objects.mover_pod(**args)


def test_mover_pod_runs_the_restore_step_into_data():
    pod = mover()
    validate_strict(pod)
    c = pod["spec"]["containers"][0]
    assert c["command"] == ["python", "-m", "steps"]
    assert c["args"] == [
        "restore",
        "--repo",
        "s3://backups/shop",
        "--snapshot",
        "3f2a9c1e",
        "--target",
        "/data",
        "--overwrite",
        "always",
        "--endpoint",
        "https://s3.example:9000",
        "--exclude",
        "*.tmp",
        "--exclude",
        "lost+found",
    ]
    assert c["args"] == kube_objects.mover_args(
        "s3://backups/shop", "3f2a9c1e", "/data", "https://s3.example:9000", ["*.tmp", "lost+found"]
    )
    assert {"name": "target", "mountPath": "/data"} in c["volumeMounts"]
    assert pod["spec"]["volumes"][0] == {
        "name": "target",
        "persistentVolumeClaim": {"claimName": "data-db-0"},
    }
    assert pod["spec"]["restartPolicy"] == "Never"


def test_mover_pod_takes_credentials_from_secrets_only():
    pod = mover()
    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    assert env["SNAPFLOW_PASSWORD_FILE"]["value"] == "/var/run/snapflow/password/password"
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"] == {
        "secretKeyRef": {"name": "s3-creds", "key": "AWS_ACCESS_KEY_ID"}
    }
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "s3-creds"
    assert "value" not in env["AWS_ACCESS_KEY_ID"]
    text = yaml.safe_dump(pod)
    assert not any(v in text for v in SECRET_VALUES)


def test_block_mover_writes_the_device():
    pod = mover(volume_mode="Block")
    validate_strict(pod)
    c = pod["spec"]["containers"][0]
    assert c["volumeDevices"] == [{"name": "target", "devicePath": "/dev/snapflow-target"}]
    assert all(m["name"] != "target" for m in c["volumeMounts"])
    assert c["args"][c["args"].index("--target") + 1] == "/dev/snapflow-target"


def test_non_root_mover_fits_restricted_pod_security():
    from steps.manifests.podsecurity import violations

    assert violations(mover(run_as_root=False)["spec"], "restricted") == []
    assert violations(mover()["spec"], "baseline") == []
    assert violations(mover()["spec"], "restricted")  # root needs baseline


def test_values_are_quoted_not_interpreted():
    pod = mover(pvc="x\ny: 1", snapshot_id="{{ evil }}", extra_env={"A": "yes", "B": "0x1"})
    assert pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "x\ny: 1"
    assert "{{ evil }}" in pod["spec"]["containers"][0]["args"]
    env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"] if "value" in e}
    assert env["A"] == "yes" and env["B"] == "0x1"  # strings stay strings


def test_missing_template_variable_is_an_error():
    with pytest.raises(UsageError, match="undefined"):
        kube_objects.render("volumesnapshot.yaml.j2", name="x", namespace="y", labels={})


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (("snapflow", "b1", "data"), "snapflow-b1-data"),
        (("snapflow", "B_1", "Data"), None),
        (("snapflow-clone", "backup-orders-db-20240101-x7k2p", "data-orders-db-postgresql-primary-0"), None),
    ],
)
def test_k8s_names_are_valid_and_stable(parts, expected):
    import re

    name = kube_objects.k8s_name(*parts)
    assert len(name) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name)
    assert name == kube_objects.k8s_name(*parts)
    if expected:
        assert name == expected


def test_long_names_that_differ_at_the_end_do_not_collide():
    a = kube_objects.k8s_name("snapflow-clone", "b" * 40, "data-db-0")
    b = kube_objects.k8s_name("snapflow-clone", "b" * 40, "data-db-1")
    assert a != b


@pytest.mark.parametrize("value", ["backup-1", "x" * 80, "a/b:c", "-x-"])
def test_label_values_are_valid(value):
    import re

    v = kube_objects.label_value(value)
    assert len(v) <= 63 and re.fullmatch(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]", v)


def test_labels_identify_backup_app_and_volume():
    labels = kube_objects.backup_labels(BACKUP, "orders-db", "data", role="clone")
    assert json.dumps(labels, sort_keys=True) == json.dumps(
        {
            "app.kubernetes.io/managed-by": "snapflow",
            "snapflow.io/app": "orders-db",
            "snapflow.io/backup-id": BACKUP,
            "snapflow.io/role": "clone",
            "snapflow.io/volume": "data",
        },
        sort_keys=True,
    )
