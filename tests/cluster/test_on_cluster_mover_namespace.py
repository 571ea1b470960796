"""The mover namespace's static binding on a real cluster: a real snapshot controller binds the
pre-provisioned VolumeSnapshotContent (same snapshotHandle, deletionPolicy Retain) to a VolumeSnapshot
in the mover namespace, a real CSI provisioner makes the clone there, and the clean-up leaves the
app's snapshot usable.

Deselected by default; run with ``pytest -m on_cluster tests/cluster`` (docs/user/on-cluster-tests.md).
The same code runs against the fake API server in the default suite
(tests/scenarios/test_k8s_mover_namespace.py::test_static_binding_as_on_a_real_cluster).
"""

from __future__ import annotations

import time

import pytest

from steps.commands.prepare_clone import prepare_clone
from steps.drivers.snapshot_csi import SNAPSHOT_API, release_mover_objects

pytestmark = pytest.mark.on_cluster


def _wait(client, api_version: str, kind: str, name: str, namespace: str | None, ok, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        obj = client.get_or_none(api_version, kind, name, namespace)
        if obj is not None and ok(obj):
            return obj
        time.sleep(1)
    raise AssertionError(f"{kind} {namespace or ''}/{name} not as expected after {timeout:g}s: {obj}")


def _claim(name: str, namespace: str, storage_class: str, snapshot: str | None = None) -> dict:
    spec: dict = {
        "accessModes": ["ReadWriteOnce"],
        "storageClassName": storage_class,
        "resources": {"requests": {"storage": "64Mi"}},
    }
    if snapshot:
        spec["dataSource"] = {
            "apiGroup": "snapshot.storage.k8s.io",
            "kind": "VolumeSnapshot",
            "name": snapshot,
        }
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def _consume(client, world, namespace: str, claim: str) -> None:
    """A pod using ``claim``, so that a WaitForFirstConsumer class provisions it (restricted-compliant)."""
    sc = client.get_or_none("storage.k8s.io/v1", "StorageClass", world.storage_class)
    if (sc or {}).get("volumeBindingMode") != "WaitForFirstConsumer":
        return
    client.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"use-{claim}"[:63], "namespace": namespace},
            "spec": {
                "restartPolicy": "Never",
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": 65532,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [
                    {
                        "name": "use",
                        "image": world.image,
                        "command": ["python", "-c", "import time; time.sleep(600)"],
                        "securityContext": {
                            "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]},
                        },
                        "volumeMounts": [{"name": "v", "mountPath": "/v", "readOnly": True}],
                    }
                ],
                "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}],
            },
        }
    )


def bind_clone_and_release(world) -> None:
    """GIVEN a ready snapshot of a claim in an app namespace enforcing restricted; WHEN prepare-clone makes
    its clone in a mover namespace and the mover side is released; THEN the clone was provisioned there,
    from a Retain content with the app content's handle, and afterwards the app's snapshot still clones."""
    app, movers = world.namespace("mv-app"), world.namespace("mv-movers")
    with world.client() as client:
        for ns, level in ((app, "restricted"), (movers, "baseline")):
            client.create(
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": ns, "labels": {"pod-security.kubernetes.io/enforce": level}},
                }
            )
        client.create(_claim("data", app, world.storage_class))
        _consume(client, world, app, "data")
        _wait(
            client, "v1", "PersistentVolumeClaim", "data", app, lambda p: p["status"].get("phase") == "Bound"
        )
        client.create(
            {
                "apiVersion": SNAPSHOT_API,
                "kind": "VolumeSnapshot",
                "metadata": {
                    "name": "snap-data",
                    "namespace": app,
                    "labels": {"snapflow.io/backup-id": "backup-mv-1", "snapflow.io/volume": "data"},
                },
                "spec": {
                    "volumeSnapshotClassName": world.snapshot_class,
                    "source": {"persistentVolumeClaimName": "data"},
                },
            }
        )
        app_snap = _wait(
            client,
            SNAPSHOT_API,
            "VolumeSnapshot",
            "snap-data",
            app,
            lambda s: (s.get("status") or {}).get("readyToUse"),
        )
        app_content = client.get(
            SNAPSHOT_API, "VolumeSnapshotContent", app_snap["status"]["boundVolumeSnapshotContentName"]
        )

        claim = prepare_clone(
            client, namespace=app, pvc="data", backup_id="backup-mv-1", volume="data", app="mv", timeout=300,
            mover_namespace=movers,
        )  # fmt: skip

        _consume(client, world, movers, claim)
        clone = _wait(
            client,
            "v1",
            "PersistentVolumeClaim",
            claim,
            movers,
            lambda p: p["status"].get("phase") == "Bound",
        )
        mover_snap = client.get(SNAPSHOT_API, "VolumeSnapshot", clone["spec"]["dataSource"]["name"], movers)
        content = client.get(
            SNAPSHOT_API, "VolumeSnapshotContent", mover_snap["status"]["boundVolumeSnapshotContentName"]
        )
        assert content["spec"]["deletionPolicy"] == "Retain"
        assert content["spec"]["source"]["snapshotHandle"] == app_content["status"]["snapshotHandle"]
        assert content["spec"]["volumeSnapshotRef"]["uid"] == mover_snap["metadata"]["uid"]
        assert client.get_or_none("v1", "PersistentVolumeClaim", claim, app) is None

        done = release_mover_objects(client, movers, "backup-mv-1", ["data"])
        assert not done["errors"], done
        deadline = time.monotonic() + 120
        while (
            client.get_or_none(SNAPSHOT_API, "VolumeSnapshotContent", content["metadata"]["name"]) is not None
        ):
            assert time.monotonic() < deadline, "the mover content was not deleted"
            time.sleep(1)
        # the storage snapshot is still there: the app's snapshot stays ready and still clones
        assert client.get(SNAPSHOT_API, "VolumeSnapshot", "snap-data", app)["status"]["readyToUse"] is True
        client.create(_claim("again", app, world.storage_class, snapshot="snap-data"))
        _consume(client, world, app, "again")
        _wait(
            client, "v1", "PersistentVolumeClaim", "again", app, lambda p: p["status"].get("phase") == "Bound"
        )


def test_clone_in_the_mover_namespace_from_a_statically_bound_snapshot(real_cluster):
    bind_clone_and_release(real_cluster)
