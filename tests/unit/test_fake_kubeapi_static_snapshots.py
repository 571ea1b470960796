"""The fake snapshot controller's static binding: a pre-provisioned VolumeSnapshotContent naming an
existing snapshot handle, and a VolumeSnapshot in another namespace naming that content, as the
external-snapshotter documents pre-provisioned snapshots (how a mover namespace reaches an app's
snapshot without the alpha cross-namespace data source)."""

from __future__ import annotations

import time

import pytest
from kubernetes import client

from tests.fakes.kubeapi import FakeKubeAPI

SNAP = ("snapshot.storage.k8s.io", "v1")


def _wait(predicate, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"{what} not reached within {timeout} s")


def _app_snapshot(kube_server: FakeKubeAPI, custom) -> tuple[dict, dict]:
    """A cut and ready snapshot ``shop/snap`` of claim ``shop/data`` holding one file, and an empty
    namespace ``movers``; (snapshot, content)."""
    kube_server.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "movers"}})
    kube_server.pvc("shop", "data")
    (kube_server.volume_path("shop", "data") / "file").write_text("at the cut")
    custom.create_namespaced_custom_object(
        *SNAP,
        "shop",
        "volumesnapshots",
        {
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshot",
            "metadata": {"name": "snap"},
            "spec": {"source": {"persistentVolumeClaimName": "data"}},
        },
    )
    vs = kube_server.wait_for("vs", "snap", "shop", lambda s: s["status"]["readyToUse"])
    (kube_server.volume_path("shop", "data") / "file").write_text("after the cut")
    return vs, kube_server.get("vsc", vs["status"]["boundVolumeSnapshotContentName"])


def _static_content(name: str, handle: str, namespace: str, snapshot: str, policy: str = "Retain") -> dict:
    return {
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshotContent",
        "metadata": {"name": name},
        "spec": {
            "deletionPolicy": policy,
            "driver": "hostpath.csi.k8s.io",
            "source": {"snapshotHandle": handle},
            "volumeSnapshotRef": {"namespace": namespace, "name": snapshot},
        },
    }


def _static_snapshot(name: str, content: str) -> dict:
    return {
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshot",
        "metadata": {"name": name},
        "spec": {"source": {"volumeSnapshotContentName": content}},
    }


@pytest.mark.parametrize("content_first", [True, False], ids=["content-first", "snapshot-first"])
def test_static_snapshot_binds_both_ways_and_a_claim_is_provisioned_from_it(
    kube_server: FakeKubeAPI, kube_client, content_first: bool
):
    # GIVEN an app's ready snapshot in namespace shop
    custom, core = client.CustomObjectsApi(kube_client), client.CoreV1Api(kube_client)
    app_vs, app_content = _app_snapshot(kube_server, custom)
    handle = app_content["status"]["snapshotHandle"]
    content = _static_content("imported", handle, "movers", "snap")
    snapshot = _static_snapshot("snap", "imported")
    # WHEN a Retain content with the same handle and a snapshot in namespace movers naming it are created
    # (in either order: the controller binds once both exist)
    if content_first:
        custom.create_cluster_custom_object(*SNAP, "volumesnapshotcontents", content)
        custom.create_namespaced_custom_object(*SNAP, "movers", "volumesnapshots", snapshot)
    else:
        custom.create_namespaced_custom_object(*SNAP, "movers", "volumesnapshots", snapshot)
        _wait(
            lambda: (kube_server.get("vs", "snap", "movers").get("status") or {}).get("error"),
            what="an error while the content is missing",
        )
        custom.create_cluster_custom_object(*SNAP, "volumesnapshotcontents", content)
    bound = kube_server.wait_for("vs", "snap", "movers", lambda s: (s.get("status") or {}).get("readyToUse"))
    # THEN both are bound to each other, and the status comes from the content: the cut's time and size
    imported = kube_server.get("vsc", "imported")
    assert bound["status"]["boundVolumeSnapshotContentName"] == "imported" and "error" not in bound["status"]
    assert imported["spec"]["volumeSnapshotRef"]["uid"] == bound["metadata"]["uid"]
    assert imported["status"]["snapshotHandle"] == handle
    assert imported["status"]["creationTime"] == app_content["status"]["creationTime"]
    assert bound["status"]["restoreSize"] == app_vs["status"]["restoreSize"] == "1Gi"
    assert bound["status"]["creationTime"] == app_vs["status"]["creationTime"]
    # and a claim provisioned from it in namespace movers holds the data of the cut
    core.create_namespaced_persistent_volume_claim(
        "movers",
        {
            "metadata": {"name": "clone"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
                "dataSource": {
                    "apiGroup": "snapshot.storage.k8s.io",
                    "kind": "VolumeSnapshot",
                    "name": "snap",
                },
            },
        },
    )
    kube_server.wait_for("pvc", "clone", "movers", lambda p: p["status"]["phase"] == "Bound")
    assert (kube_server.volume_path("movers", "clone") / "file").read_text() == "at the cut"


def test_static_snapshot_bound_to_another_snapshots_content_reports_an_error(
    kube_server: FakeKubeAPI, kube_client
):
    # GIVEN a content whose volumeSnapshotRef names movers/other
    custom = client.CustomObjectsApi(kube_client)
    _, app_content = _app_snapshot(kube_server, custom)
    custom.create_cluster_custom_object(
        *SNAP,
        "volumesnapshotcontents",
        _static_content("theirs", app_content["status"]["snapshotHandle"], "movers", "other"),
    )
    # WHEN a snapshot movers/mine names it
    custom.create_namespaced_custom_object(
        *SNAP, "movers", "volumesnapshots", _static_snapshot("mine", "theirs")
    )
    # THEN it is not bound, never ready, and says why
    failed = kube_server.wait_for("vs", "mine", "movers", lambda s: (s.get("status") or {}).get("error"))
    assert "bound to snapshot movers/other" in failed["status"]["error"]["message"]
    assert not failed["status"].get("readyToUse") and not failed["status"].get(
        "boundVolumeSnapshotContentName"
    )
    assert "uid" not in kube_server.get("vsc", "theirs")["spec"]["volumeSnapshotRef"]
    assert kube_server.events("movers", "mine", "SnapshotBindFailed")


def test_content_of_a_handle_the_driver_does_not_hold_is_an_error(kube_server: FakeKubeAPI, kube_client):
    custom = client.CustomObjectsApi(kube_client)
    kube_server.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "movers"}})
    custom.create_cluster_custom_object(
        *SNAP, "volumesnapshotcontents", _static_content("lost", "snap-missing", "movers", "lost")
    )
    custom.create_namespaced_custom_object(
        *SNAP, "movers", "volumesnapshots", _static_snapshot("lost", "lost")
    )
    failed = kube_server.wait_for("vs", "lost", "movers", lambda s: (s.get("status") or {}).get("error"))
    assert "snap-missing not found" in failed["status"]["error"]["message"]
    assert not failed["status"].get("readyToUse")


def test_deleting_a_retain_content_and_its_snapshot_keeps_the_data(kube_server: FakeKubeAPI, kube_client):
    # GIVEN an app snapshot bound statically in namespace movers through a Retain content
    custom = client.CustomObjectsApi(kube_client)
    _, app_content = _app_snapshot(kube_server, custom)
    handle = app_content["status"]["snapshotHandle"]
    data = kube_server.snapshot_path("shop", "snap")
    custom.create_cluster_custom_object(
        *SNAP, "volumesnapshotcontents", _static_content("imported", handle, "movers", "snap")
    )
    custom.create_namespaced_custom_object(
        *SNAP, "movers", "volumesnapshots", _static_snapshot("snap", "imported")
    )
    kube_server.wait_for("vs", "snap", "movers", lambda s: (s.get("status") or {}).get("readyToUse"))
    # WHEN the mover side is deleted, snapshot first, then content
    custom.delete_namespaced_custom_object(*SNAP, "movers", "volumesnapshots", "snap")
    assert kube_server.get("vsc", "imported") is not None  # Retain: the content outlives its snapshot
    custom.delete_cluster_custom_object(*SNAP, "volumesnapshotcontents", "imported")
    time.sleep(0.2)  # a deletion of the data would run in the background
    # THEN the app's snapshot and its data are untouched
    assert (data / "file").read_text() == "at the cut"
    assert kube_server.get("vs", "snap", "shop")["status"]["readyToUse"] is True


def test_deleting_a_delete_content_deletes_the_shared_data(kube_server: FakeKubeAPI, kube_client):
    # GIVEN a static content with deletionPolicy Delete pointing at the app snapshot's handle
    custom = client.CustomObjectsApi(kube_client)
    _, app_content = _app_snapshot(kube_server, custom)
    data = kube_server.snapshot_path("shop", "snap")
    custom.create_cluster_custom_object(
        *SNAP,
        "volumesnapshotcontents",
        _static_content("dangerous", app_content["status"]["snapshotHandle"], "movers", "x", "Delete"),
    )
    _wait(lambda: (kube_server.get("vsc", "dangerous").get("status") or {}).get("readyToUse"), what="import")
    # WHEN it is deleted
    custom.delete_cluster_custom_object(*SNAP, "volumesnapshotcontents", "dangerous")
    # THEN the driver deletes the snapshot, whichever content cut it: what a mover clean-up must avoid
    _wait(lambda: not data.exists(), what="snapshot data removed")
