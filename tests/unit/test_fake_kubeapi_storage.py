"""The fake API server's simulated storage: claims backed by directories, CSI snapshots cut at one
instant, clones from snapshots, injected failures, group snapshots, StatefulSet claims."""

from __future__ import annotations

import os
import time

import pytest
from kubernetes import client

from tests.fakes.kubeapi import FakeKubeAPI

SNAP = ("snapshot.storage.k8s.io", "v1")
GROUP = ("groupsnapshot.storage.k8s.io", "v1beta2")


def _snapshot(custom: client.CustomObjectsApi, namespace: str, name: str, pvc: str) -> dict:
    body = {
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshot",
        "metadata": {"name": name},
        "spec": {"source": {"persistentVolumeClaimName": pvc}},
    }
    return custom.create_namespaced_custom_object(*SNAP, namespace, "volumesnapshots", body)


def _get_snapshot(custom: client.CustomObjectsApi, namespace: str, name: str) -> dict:
    return custom.get_namespaced_custom_object(*SNAP, namespace, "volumesnapshots", name)


def _wait(predicate, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"{what} not reached within {timeout} s")


def _clone(core: client.CoreV1Api, namespace: str, name: str, snapshot: str, size: str = "1Gi") -> None:
    core.create_namespaced_persistent_volume_claim(
        namespace,
        {
            "metadata": {"name": name},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": size}},
                "dataSource": {
                    "apiGroup": "snapshot.storage.k8s.io",
                    "kind": "VolumeSnapshot",
                    "name": snapshot,
                },
            },
        },
    )


def test_claim_binds_to_a_volume_backed_by_a_directory(kube_server: FakeKubeAPI, kube_client):
    core = client.CoreV1Api(kube_client)
    core.create_namespaced_persistent_volume_claim(
        "default",
        {
            "metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}}},
        },
    )
    pvc = kube_server.wait_for("pvc", "data", "default", lambda p: p["status"]["phase"] == "Bound")
    pv = kube_server.get("pv", pvc["spec"]["volumeName"])
    assert pvc["spec"]["storageClassName"] == "csi-hostpath-sc" and pvc["status"]["capacity"] == {
        "storage": "2Gi"
    }
    assert pv["spec"]["claimRef"]["uid"] == pvc["metadata"]["uid"] and pv["status"]["phase"] == "Bound"
    path = kube_server.volume_path("default", "data")
    assert path.is_dir() and path.name == pv["spec"]["csi"]["volumeHandle"]
    assert kube_server.events("default", "data", "ProvisioningSucceeded")


def test_deleting_a_claim_waits_for_its_pods_then_deletes_the_volume(kube_server: FakeKubeAPI, kube_client):
    core = client.CoreV1Api(kube_client)
    kube_server.pvc("default", "used")
    path = kube_server.volume_path("default", "used")
    kube_server.pod(
        "default", "user", volumes=[{"name": "v", "persistentVolumeClaim": {"claimName": "used"}}]
    )
    core.delete_namespaced_persistent_volume_claim("used", "default")
    # pvc-protection: still there (Terminating) while a running pod uses it
    assert kube_server.get("pvc", "used", "default")["metadata"]["deletionTimestamp"]
    core.delete_namespaced_pod("user", "default")
    kube_server.wait_for("pvc", "used", "default", gone=True)
    _wait(lambda: not path.exists(), what="volume directory removed")


def test_snapshot_cut_copies_the_volume_at_that_instant(kube_server: FakeKubeAPI, kube_client):
    # GIVEN a bound claim with data, including a symlink and metadata worth keeping
    core, custom = client.CoreV1Api(kube_client), client.CustomObjectsApi(kube_client)
    kube_server.pvc("default", "data")
    volume = kube_server.volume_path("default", "data")
    (volume / "db").mkdir()
    (volume / "db" / "table").write_text("before")
    os.chmod(volume / "db" / "table", 0o640)
    os.utime(volume / "db" / "table", ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    (volume / "link").symlink_to("db/table")
    os.link(volume / "db" / "table", volume / "hardlink")
    with open(volume / "sparse", "wb") as f:
        f.truncate(8 * 2**20)
    requested = time.time_ns()
    # WHEN a snapshot is cut, and the volume is written to afterwards
    _snapshot(custom, "default", "snap", "data")
    cut = kube_server.wait_for("vs", "snap", "default", lambda s: s["status"]["creationTime"])
    (volume / "db" / "table").write_text("after")
    (volume / "new-file").write_text("after")
    ready = kube_server.wait_for("vs", "snap", "default", lambda s: s["status"]["readyToUse"])
    # THEN the snapshot holds the data as it was at the cut, metadata and symlinks preserved
    snap = kube_server.snapshot_path("default", "snap")
    assert (snap / "db" / "table").read_text() == "before" and not (snap / "new-file").exists()
    assert os.readlink(snap / "link") == "db/table"
    assert (snap / "hardlink").stat().st_ino == (snap / "db" / "table").stat().st_ino
    assert (snap / "sparse").stat().st_size == 8 * 2**20 and (snap / "sparse").stat().st_blocks * 512 < 2**20
    assert (snap / "db" / "table").stat().st_mode & 0o777 == 0o640
    assert (snap / "db" / "table").stat().st_mtime_ns == 1_600_000_000_000_000_000
    # and the content carries the cut time in nanoseconds, the snapshot in RFC 3339
    content = kube_server.get("vsc", ready["status"]["boundVolumeSnapshotContentName"])
    assert requested <= content["status"]["creationTime"] <= time.time_ns()
    assert content["status"]["readyToUse"] is True and content["status"]["restoreSize"] == 2**30
    assert content["spec"]["volumeSnapshotRef"]["uid"] == ready["metadata"]["uid"]
    assert cut["status"]["creationTime"].endswith("Z") and ready["status"]["restoreSize"] == "1Gi"
    reasons = [e["reason"] for e in kube_server.events("default", "snap")]
    assert reasons == ["CreatingSnapshot", "SnapshotCreated", "SnapshotReady"]
    # the API shows the same through the client
    assert _get_snapshot(custom, "default", "snap")["status"]["readyToUse"] is True
    del core


def test_claim_from_a_snapshot_starts_with_its_content(kube_server: FakeKubeAPI, kube_client):
    core, custom = client.CoreV1Api(kube_client), client.CustomObjectsApi(kube_client)
    kube_server.pvc("default", "source")
    (kube_server.volume_path("default", "source") / "file").write_text("snapshotted")
    _snapshot(custom, "default", "snap", "source")
    kube_server.wait_for("vs", "snap", "default", lambda s: s["status"]["readyToUse"])
    (kube_server.volume_path("default", "source") / "file").write_text("changed later")
    _clone(core, "default", "restored", "snap")
    restored = kube_server.wait_for("pvc", "restored", "default", lambda p: p["status"]["phase"] == "Bound")
    assert restored["spec"]["dataSourceRef"]["kind"] == "VolumeSnapshot"
    assert (kube_server.volume_path("default", "restored") / "file").read_text() == "snapshotted"


def test_clone_waits_for_a_snapshot_that_is_not_ready_yet(kube_server: FakeKubeAPI, kube_client):
    core, custom = client.CoreV1Api(kube_client), client.CustomObjectsApi(kube_client)
    kube_server.pvc("default", "source")
    kube_server.snapshot_behavior("ready", pvc="source", ready_delay=0.3)
    _snapshot(custom, "default", "slow", "source")
    _clone(core, "default", "early", "slow")
    assert kube_server.get("pvc", "early", "default")["status"]["phase"] == "Pending"
    kube_server.wait_for("pvc", "early", "default", lambda p: p["status"]["phase"] == "Bound")
    assert kube_server.get("vs", "slow", "default")["status"]["readyToUse"] is True


def test_never_ready_snapshot_is_cut_but_never_ready_and_says_why(kube_server: FakeKubeAPI, kube_client):
    core, custom = client.CoreV1Api(kube_client), client.CustomObjectsApi(kube_client)
    kube_server.pvc("default", "data")
    kube_server.snapshot_behavior("never_ready", pvc="data", error_message="driver lost the snapshot")
    _snapshot(custom, "default", "stuck", "data")
    vs = kube_server.wait_for("vs", "stuck", "default", lambda s: s["status"].get("error"))
    assert vs["status"]["creationTime"] and vs["status"]["readyToUse"] is False
    assert vs["status"]["error"]["message"] == "driver lost the snapshot"
    time.sleep(0.2)
    assert kube_server.get("vs", "stuck", "default")["status"]["readyToUse"] is False
    warnings = kube_server.events("default", "stuck")
    assert any(e["type"] == "Warning" and "driver lost the snapshot" in e["message"] for e in warnings)
    # a clone of it stays Pending and the claim's events say why
    _clone(core, "default", "blocked", "stuck")
    _wait(
        lambda: kube_server.events("default", "blocked", "ProvisioningFailed"),
        what="ProvisioningFailed event",
    )
    assert kube_server.get("pvc", "blocked", "default")["status"]["phase"] == "Pending"


def test_error_mode_sets_status_error_without_a_cut(kube_server: FakeKubeAPI, kube_client):
    custom = client.CustomObjectsApi(kube_client)
    kube_server.pvc("default", "data")
    kube_server.snapshot_behavior("error", name="broken", error_message="quota exceeded")
    _snapshot(custom, "default", "broken", "data")
    vs = kube_server.wait_for("vs", "broken", "default", lambda s: s["status"].get("error"))
    assert vs["status"]["error"]["message"] == "quota exceeded" and "creationTime" not in vs["status"]
    content = kube_server.get("vsc", vs["status"]["boundVolumeSnapshotContentName"])
    assert content["status"]["error"]["message"] == "quota exceeded"
    with pytest.raises(KeyError):
        kube_server.snapshot_path("default", "broken")


def test_late_cut_reports_a_cut_later_than_the_request(kube_server: FakeKubeAPI, kube_client):
    custom = client.CustomObjectsApi(kube_client)
    kube_server.pvc("default", "data")
    kube_server.snapshot_behavior("late_cut", pvc="data", late_by=0.3)
    requested = time.time_ns()
    _snapshot(custom, "default", "late", "data")
    first = kube_server.wait_for("vs", "late", "default", lambda s: s["status"].get("error"))
    assert "creationTime" not in first["status"]
    ready = kube_server.wait_for("vs", "late", "default", lambda s: s["status"]["readyToUse"])
    content = kube_server.get("vsc", ready["status"]["boundVolumeSnapshotContentName"])
    assert content["status"]["creationTime"] - requested >= 300_000_000
    assert "error" not in ready["status"]


def test_snapshot_of_an_unbound_claim_reports_an_error_until_it_binds(kube_server: FakeKubeAPI, kube_client):
    custom = client.CustomObjectsApi(kube_client)
    kube_server.storage.provision_delay = 0.3
    kube_server.pvc("default", "slow", wait=False)
    _snapshot(custom, "default", "early", "slow")
    vs = kube_server.wait_for("vs", "early", "default", lambda s: s["status"].get("error"))
    assert "not yet bound" in vs["status"]["error"]["message"]
    kube_server.wait_for("vs", "early", "default", lambda s: s["status"]["readyToUse"])


def test_deleting_a_snapshot_deletes_its_content_and_data(kube_server: FakeKubeAPI, kube_client):
    custom = client.CustomObjectsApi(kube_client)
    kube_server.pvc("default", "data")
    _snapshot(custom, "default", "temp", "data")
    vs = kube_server.wait_for("vs", "temp", "default", lambda s: s["status"]["readyToUse"])
    data = kube_server.snapshot_path("default", "temp")
    custom.delete_namespaced_custom_object(*SNAP, "default", "volumesnapshots", "temp")
    assert kube_server.get("vsc", vs["status"]["boundVolumeSnapshotContentName"]) is None
    _wait(lambda: not data.exists(), what="snapshot data removed")


def test_group_snapshot_cuts_all_selected_claims_at_one_instant(kube_server: FakeKubeAPI, kube_client):
    # GIVEN two labelled claims of one app, and one that is not selected
    core, custom = client.CoreV1Api(kube_client), client.CustomObjectsApi(kube_client)
    for name in ("pgdata", "pgwal"):
        kube_server.pvc("default", name, labels={"app": "pg"})
        (kube_server.volume_path("default", name) / "f").write_text(f"{name}-before")
    kube_server.pvc("default", "other", labels={"app": "other"})
    # WHEN a VolumeGroupSnapshot selects the app, and the volumes change after the cut
    custom.create_namespaced_custom_object(
        *GROUP,
        "default",
        "volumegroupsnapshots",
        {
            "apiVersion": "groupsnapshot.storage.k8s.io/v1beta2",
            "kind": "VolumeGroupSnapshot",
            "metadata": {"name": "pg-group"},
            "spec": {"source": {"selector": {"matchLabels": {"app": "pg"}}}},
        },
    )
    kube_server.wait_for("vgs", "pg-group", "default", lambda g: g["status"]["creationTime"])
    for name in ("pgdata", "pgwal"):
        (kube_server.volume_path("default", name) / "f").write_text("after")
    group = kube_server.wait_for("vgs", "pg-group", "default", lambda g: g["status"]["readyToUse"])
    # THEN one content lists both volumes, cut at the same nanosecond
    content = kube_server.get("vgsc", group["status"]["boundVolumeGroupSnapshotContentName"])
    infos = content["status"]["volumeSnapshotInfoList"]
    handles = {
        kube_server.get("pv", kube_server.get("pvc", n, "default")["spec"]["volumeName"])["spec"]["csi"][
            "volumeHandle"
        ]: n
        for n in ("pgdata", "pgwal")
    }
    assert {i["volumeHandle"] for i in infos} == set(handles)
    assert len({i["creationTime"] for i in infos}) == 1 and all(i["readyToUse"] for i in infos)
    # and one ready VolumeSnapshot per volume, owned by the group, holding the data of the cut
    members = [
        s
        for s in kube_server.list("vs", "default")
        if (s["metadata"].get("ownerReferences") or [{}])[0].get("name") == "pg-group"
    ]
    assert len(members) == 2
    for member in members:
        assert member["status"]["readyToUse"] and member["status"]["volumeGroupSnapshotName"] == "pg-group"
        vsc = kube_server.get("vsc", member["status"]["boundVolumeSnapshotContentName"])
        volume = handles[
            next(i["volumeHandle"] for i in infos if i["snapshotHandle"] == vsc["status"]["snapshotHandle"])
        ]
        data = kube_server.snapshot_path("default", member["metadata"]["name"])
        assert (data / "f").read_text() == f"{volume}-before"
        assert vsc["status"]["creationTime"] == infos[0]["creationTime"]
    # the older API version sees the v1beta1 field names
    old = custom.get_cluster_custom_object(
        "groupsnapshot.storage.k8s.io", "v1beta1", "volumegroupsnapshotcontents", content["metadata"]["name"]
    )
    assert {p["volumeHandle"] for p in old["status"]["volumeSnapshotHandlePairList"]} == set(handles)
    # deleting the group removes its member snapshots
    custom.delete_namespaced_custom_object(*GROUP, "default", "volumegroupsnapshots", "pg-group")
    assert [
        s for s in kube_server.list("vs", "default") if s["metadata"]["name"].startswith("snapshot-")
    ] == []
    del core


def test_group_snapshot_without_matching_claims_reports_an_error(kube_server: FakeKubeAPI, kube_client):
    custom = client.CustomObjectsApi(kube_client)
    custom.create_namespaced_custom_object(
        *GROUP,
        "default",
        "volumegroupsnapshots",
        {
            "apiVersion": "groupsnapshot.storage.k8s.io/v1beta2",
            "kind": "VolumeGroupSnapshot",
            "metadata": {"name": "empty"},
            "spec": {"source": {"selector": {"matchLabels": {"app": "none"}}}},
        },
    )
    vgs = kube_server.wait_for("vgs", "empty", "default", lambda g: g["status"].get("error"))
    assert "match the selector" in vgs["status"]["error"]["message"]


def test_statefulset_creates_claims_from_templates_and_pods_using_them(kube_server: FakeKubeAPI, kube_client):
    apps = client.AppsV1Api(kube_client)
    labels = {"app": "pg"}
    apps.create_namespaced_stateful_set(
        "default",
        {
            "metadata": {"name": "pg"},
            "spec": {
                "replicas": 2,
                "serviceName": "pg",
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [
                            {
                                "name": "postgres",
                                "image": "postgres:16",
                                "volumeMounts": [{"name": "data", "mountPath": "/var/lib/postgresql"}],
                            }
                        ]
                    },
                },
                "volumeClaimTemplates": [
                    {
                        "metadata": {"name": "data"},
                        "spec": {
                            "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": "1Gi"}},
                        },
                    }
                ],
            },
        },
    )
    kube_server.wait_for("statefulsets", "pg", "default", lambda s: s["status"]["readyReplicas"] == 2)
    assert (
        kube_server.get("pods", "pg-1", "default")["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
        == "data-pg-1"
    )
    assert kube_server.volume_path("default", "data-pg-0").is_dir()
    assert kube_server.get("pvc", "data-pg-0", "default")["metadata"]["labels"] == labels
    apps.patch_namespaced_stateful_set_scale("pg", "default", {"spec": {"replicas": 1}})
    kube_server.wait_for("pods", "pg-1", "default", gone=True)
    assert kube_server.get("pvc", "data-pg-1", "default") is not None


def test_block_mode_claim_is_a_sparse_file_of_the_requested_size(kube_server: FakeKubeAPI):
    kube_server.pvc("default", "raw", size="64Mi", volumeMode="Block")
    device = kube_server.volume_path("default", "raw")
    assert device.is_file() and device.stat().st_size == 64 * 2**20
    assert device.stat().st_blocks * 512 < 64 * 2**20


def test_pod_runner_runs_job_pods_with_claims_mounted(kube_server: FakeKubeAPI, kube_client):
    kube_server.pvc("default", "target")
    seen = {}

    def runner(pod: dict, mounts: dict[str, str]) -> int:
        seen.update(mounts)
        with open(os.path.join(mounts["/restore"], "restored"), "w") as f:
            f.write(pod["metadata"]["labels"]["job-name"])
        return 0

    kube_server.set_pod_runner(runner)
    client.BatchV1Api(kube_client).create_namespaced_job(
        "default",
        {
            "metadata": {"name": "mover"},
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [
                            {
                                "name": "mover",
                                "image": "snapflow",
                                "volumeMounts": [{"name": "t", "mountPath": "/restore"}],
                            }
                        ],
                        "volumes": [{"name": "t", "persistentVolumeClaim": {"claimName": "target"}}],
                    }
                },
            },
        },
    )
    job = kube_server.wait_for("jobs", "mover", "default", lambda j: j["status"].get("succeeded") == 1)
    assert any(c["type"] == "Complete" and c["status"] == "True" for c in job["status"]["conditions"])
    assert (kube_server.volume_path("default", "target") / "restored").read_text() == "mover"
