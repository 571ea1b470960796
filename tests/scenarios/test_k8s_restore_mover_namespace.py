"""restore-app through a mover namespace, on the fake API server (Pod Security enforced) through the real
client, repository on SeaweedFS: the mover pods run in the mover namespace on staging claims, and each
filled volume is handed over to its claim in the target namespace, which enforces ``restricted``.
"""

from __future__ import annotations

import json
import os

import pytest

from steps.manifests import bundle
from tests.fixtures.k8s_app import StepPodKubelet, run_step, tree_state, write_app_data
from tests.fixtures.rendered import repository_secrets

SOURCE = "orders"
TARGET = "orders-restored"
MOVERS = "orders-movers"
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted"}


def restricted_pod_spec() -> dict:
    return {
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": "app",
                "image": "example/app:1",
                "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            }
        ],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
    }


def commit_backup(k8s, backup_id: str, data_dir) -> None:
    from steps.drivers.objectstore import open_store
    from steps.repository.repo import Repository
    from steps.repository.stored_files import store_files

    res = run_step(
        "copy", "--repo", k8s.repo, "--source", data_dir, "--backup-id", backup_id, "--volume", "data"
    )
    assert res.rc == 0, res.stderr
    objects = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SOURCE, "labels": RESTRICTED}},
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data", "namespace": SOURCE},
            "spec": {
                "storageClassName": "csi-hostpath-sc",
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": SOURCE},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": restricted_pod_spec()},
            },
        },
    ]
    repo = Repository.open(
        open_store(k8s.repo, os.environ.get("SNAPFLOW_S3_ENDPOINT")), os.environ["SNAPFLOW_PASSWORD"]
    )
    files = bundle.to_files(objects, {"backup_id": backup_id, "namespace": SOURCE})
    sid = store_files(repo, files, tags={"kind": "manifests", "backup": backup_id}, backup_id=backup_id)
    repo.save_record(
        "backups",
        {
            "version": 1,
            "backup_id": backup_id,
            "app": {"cluster": "x", "namespace": SOURCE, "name": "web"},
            "volumes": [{"name": "data", "pvc": "data", "snapshot": res.last_line}],
            "manifests": sid,
            "time": "2026-12-01T00:00:00Z",
        },
        key=backup_id,
    )


@pytest.fixture
def world(k8s, tmp_path):
    """A committed backup of one volume; Pod Security enforced; the mover namespace (baseline) holding the
    repository's Secrets; a kubelet running the mover pods and noting the namespace of each."""
    data, wal = tmp_path / "data", tmp_path / "unused-wal"
    data.mkdir(), wal.mkdir()
    write_app_data(data, wal)
    commit_backup(k8s, "backup-web-1", data)
    k8s.server.cluster.enforce_pod_security = True
    k8s.server.create(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": MOVERS, "labels": {"pod-security.kubernetes.io/enforce": "baseline"}},
        }
    )
    repository_secrets(k8s.server, MOVERS, password="repo-key", s3="s3")
    kubelet = StepPodKubelet(k8s.server, k8s.tmp)
    ran_in: list[str] = []

    def runner(pod: dict, mounts: dict[str, str]):
        if (pod["metadata"].get("labels") or {}).get("snapflow.io/role") == "mover":
            ran_in.append(pod["metadata"]["namespace"])
        return kubelet(pod, mounts)

    k8s.server.set_pod_runner(runner)
    k8s.ran_in, k8s.kubelet, k8s.data = ran_in, kubelet, data
    return k8s


def restore(k8s, *extra: str):
    return run_step(
        "restore-app", "--repo", k8s.repo, "--backup", "backup-web-1", "--target-namespace", TARGET,
        "--mover", "pod", "--image", "snapflow-steps:test", "--password-secret", "repo-key",
        "--credentials-secret", "s3", "--secrets-namespace", MOVERS, "--mover-namespace", MOVERS,
        "--restore-id", "restore-web-1", "--endpoint", os.environ["SNAPFLOW_S3_ENDPOINT"],
        "--timeout", "30", "--json", *extra,
    )  # fmt: skip


def assert_handed_over(k8s) -> dict:
    """The target claim bound to the handed-over volume, holding the backup's data, with the volume's own
    reclaim policy back and no mark of the restore left; nothing of the restore in the mover namespace."""
    claim = k8s.server.get("persistentvolumeclaims", "data", TARGET)
    assert claim["status"]["phase"] == "Bound"
    pv = k8s.server.get("persistentvolumes", claim["spec"]["volumeName"])
    assert (
        pv["spec"]["claimRef"]["namespace"] == TARGET
        and pv["spec"]["claimRef"]["uid"] == claim["metadata"]["uid"]
    )
    assert pv["status"]["phase"] == "Bound"
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete"
    assert "snapflow.io/restore-id" not in (pv["metadata"].get("labels") or {})
    assert not any(k.startswith("snapflow.io/") for k in pv["metadata"].get("annotations") or {})
    assert tree_state(k8s.server.volume_path(TARGET, "data")) == tree_state(k8s.data)
    assert [
        c
        for c in k8s.server.list("persistentvolumeclaims", MOVERS)
        if not c["metadata"].get("deletionTimestamp")
    ] == []
    assert k8s.server.list("pods", MOVERS) == []
    return pv


def foreign_volume(k8s) -> dict:
    """A PersistentVolume the restore did not make, reserved for the very claim it restores (once the
    volume controller has made it Available)."""
    k8s.server.create(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": "someone-elses"},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "csi-hostpath-sc",
                "claimRef": {"namespace": TARGET, "name": "data"},
                "hostPath": {"path": "/nonexistent"},
            },
        }
    )
    return k8s.server.wait_for(
        "persistentvolumes",
        "someone-elses",
        None,
        lambda v: (v.get("status") or {}).get("phase") == "Available",
    )


def test_restore_into_a_restricted_namespace_runs_the_movers_in_the_mover_namespace(world):
    k8s = world
    # GIVEN a volume nobody made for this restore
    foreign = foreign_volume(k8s)
    # WHEN the app is restored into a new namespace enforcing restricted, through the mover namespace
    res = restore(k8s)
    # THEN the restore succeeds, every mover pod ran in the mover namespace, none in the target
    assert res.rc == 0, res.stderr + "\n".join(r["stderr"] for r in k8s.kubelet.runs)
    assert k8s.ran_in == [MOVERS]
    assert k8s.server.get("namespaces", TARGET)["metadata"]["labels"][
        "pod-security.kubernetes.io/enforce"
    ] == ("restricted")
    # AND the claim is bound to the volume filled there, byte for byte the backup's data
    pv = assert_handed_over(k8s)
    report = json.loads(res.last_line)
    (volume,) = report["volumes"]
    assert volume["mover_namespace"] == MOVERS and volume["persistent_volume"] == pv["metadata"]["name"]
    assert "hand-over" in [p["name"] for p in report["phases"]]
    # AND the app's workload was released; the foreign volume was never touched
    assert k8s.server.get("deployments.apps", "web", TARGET)["spec"]["replicas"] == 1
    assert (
        k8s.server.get("persistentvolumes", "someone-elses")["metadata"]["resourceVersion"]
        == (foreign["metadata"]["resourceVersion"])
    )


def test_without_a_mover_namespace_a_restricted_target_refuses_the_root_mover(world):
    k8s = world
    # WHEN restoring into a restricted namespace with the movers there (as before)
    res = run_step(
        "restore-app", "--repo", k8s.repo, "--backup", "backup-web-1", "--target-namespace", TARGET,
        "--mover", "pod", "--image", "snapflow-steps:test", "--password-secret", "repo-key",
        "--credentials-secret", "s3", "--secrets-namespace", MOVERS,
        "--endpoint", os.environ["SNAPFLOW_S3_ENDPOINT"], "--timeout", "30",
    )  # fmt: skip
    # THEN Pod Security refuses the mover pod
    assert res.rc != 0
    assert 'violates PodSecurity "restricted:latest"' in res.stderr
    assert "Traceback" not in res.stderr


# step: (method, resource, matching requests that pass, that fail), and what the interrupted run leaves:
# (reclaim policy and claimRef namespace of the volume marked for the target, the target claim's phase)
INTERRUPTIONS = {
    "retain-patch": (("PATCH", "persistentvolumes", 0, 1), (None, None, None)),
    "staging-delete": (("DELETE", "persistentvolumeclaims", 0, 2), ("Retain", MOVERS, None)),
    "claim-ref-patch": (("PATCH", "persistentvolumes", 1, 1), ("Retain", MOVERS, None)),
    "target-claim-create": (("POST", "persistentvolumeclaims", 1, 1), ("Retain", TARGET, None)),
    "reclaim-policy-patch": (("PATCH", "persistentvolumes", 2, 1), ("Retain", TARGET, "Bound")),
}


def interrupted_state(k8s) -> tuple:
    marked = k8s.server.list("persistentvolumes", label_selector="snapflow.io/restore-id=restore-web-1")
    assert len(marked) <= 1
    pv = marked[0] if marked else {}
    claim = k8s.server.get("persistentvolumeclaims", "data", TARGET)
    return (
        (pv.get("spec") or {}).get("persistentVolumeReclaimPolicy"),
        ((pv.get("spec") or {}).get("claimRef") or {}).get("namespace"),
        ((claim or {}).get("status") or {}).get("phase"),
    )


@pytest.mark.parametrize("step", sorted(INTERRUPTIONS))
def test_a_restore_run_again_after_an_interruption_at_each_hand_over_step_converges(world, step):
    k8s = world
    (method, resource, passing, failing), left = INTERRUPTIONS[step]
    foreign = foreign_volume(k8s)
    if passing:
        k8s.server.fail_next(method, resource, 0, count=passing)
    k8s.server.fail_next(method, resource, 503, count=failing, message="the API server is restarting")
    # WHEN the restore is interrupted at this step
    first = restore(k8s)
    assert first.rc != 0, first.stderr
    assert "the API server is restarting" in first.stderr and "Traceback" not in first.stderr
    assert interrupted_state(k8s) == left
    # AND run again with the same restore ID, keeping what the first run created
    second = restore(k8s, "--existing", "skip")
    # THEN it converges: the claim holds the data on the handed-over volume, the mover side is clean
    assert second.rc == 0, second.stderr + "\n".join(r["stderr"] for r in k8s.kubelet.runs)
    assert set(k8s.ran_in) == {MOVERS}
    assert_handed_over(k8s)
    assert not [
        pv
        for pv in k8s.server.list("persistentvolumes")
        if pv["spec"].get("persistentVolumeReclaimPolicy") == "Retain"
        and pv["metadata"]["name"] != "someone-elses"
    ]
    assert (
        k8s.server.get("persistentvolumes", "someone-elses")["metadata"]["resourceVersion"]
        == (foreign["metadata"]["resourceVersion"])
    )


def test_mover_namespace_must_not_be_the_target(world):
    res = run_step(
        "restore-app", "--repo", world.repo, "--backup", "backup-web-1", "--target-namespace", TARGET,
        "--mover-namespace", TARGET, "--image", "x", "--password-secret", "repo-key",
    )  # fmt: skip
    assert res.rc == 2
    assert "--mover-namespace: must differ from the namespaces restored into (orders-restored)" in res.stderr
    assert world.server.get("namespaces", TARGET) is None


def test_the_fake_volume_controller_binds_reserved_volumes_and_frees_cleared_ones(kube_server):
    def phase(kind: str, name: str, namespace: str | None = None):
        return kube_server.wait_for(
            kind, name, namespace, lambda o: bool((o.get("status") or {}).get("phase"))
        )

    def claim(name: str) -> None:
        kube_server.create(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": name, "namespace": "a"},
                "spec": {
                    "storageClassName": "manual",
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}},
                    "volumeName": "vol",
                },
            }
        )

    kube_server.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}})
    # GIVEN a free volume with reclaim policy Retain
    kube_server.create(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": "vol"},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "manual",
                "hostPath": {"path": "/nonexistent"},
            },
        }
    )
    assert phase("persistentvolumes", "vol")["status"]["phase"] == "Available"
    # WHEN a claim names it, THEN both are bound
    claim("first")
    kube_server.wait_for("persistentvolumeclaims", "first", "a", lambda c: c["status"]["phase"] == "Bound")
    pv = kube_server.wait_for("persistentvolumes", "vol", None, lambda v: v["status"]["phase"] == "Bound")
    assert pv["spec"]["claimRef"]["name"] == "first" and pv["spec"]["claimRef"]["uid"]
    # WHEN the claim is deleted, THEN the volume is Released and kept; another claim naming it stays Pending
    kube_server.delete("persistentvolumeclaims", "first", "a")
    kube_server.wait_for("persistentvolumes", "vol", None, lambda v: v["status"]["phase"] == "Released")
    claim("second")
    assert kube_server.get("persistentvolumeclaims", "second", "a")["status"]["phase"] == "Pending"
    # WHEN its claimRef is reserved for that claim, THEN they bind; cleared, a volume is Available again
    kube_server.patch(
        "persistentvolumes", "vol", {"spec": {"claimRef": {"namespace": "a", "name": "second", "uid": None}}}
    )
    kube_server.wait_for("persistentvolumeclaims", "second", "a", lambda c: c["status"]["phase"] == "Bound")
    kube_server.delete("persistentvolumeclaims", "second", "a")
    kube_server.wait_for("persistentvolumes", "vol", None, lambda v: v["status"]["phase"] == "Released")
    kube_server.patch("persistentvolumes", "vol", {"spec": {"claimRef": None}})
    kube_server.wait_for("persistentvolumes", "vol", None, lambda v: v["status"]["phase"] == "Available")


def test_mover_namespace_needs_the_pod_mover_in_one_run():
    res = run_step(
        "restore-app", "--repo", "/nonexistent", "--backup", "b", "--mover-namespace", MOVERS, "--mover", "local"
    )  # fmt: skip
    assert res.rc == 2 and "Traceback" not in res.stderr
    assert (
        "--mover-namespace: needs --mover pod and --phase all (got --mover local, --phase all)" in res.stderr
    )
