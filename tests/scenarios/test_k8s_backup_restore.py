"""Back up an app with two PVCs through the Kubernetes data path, lose its namespace, restore it elsewhere.

Runs every step the backup and restore workflows run (capture, consistent-point with CSI snapshots,
prepare-clone, copy, verify, finalize, restore-app) through the real `kubernetes` client against the fake
API server, with the repository on a real S3 server (SeaweedFS).
"""

from __future__ import annotations

import json

from steps.manifests.clean import select_objects
from steps.manifests.transforms import TransformSpec, transform_objects
from tests.fixtures.k8s_app import APP_NS, VOLUMES, run_step


def live_objects(world, namespace):
    from steps.commands.capture import collect

    with world.client() as client:
        objects, _ = collect(client, namespace, lambda _m: None)
    return sorted(select_objects(objects).objects, key=lambda o: (o["kind"], o["metadata"]["name"]))


def test_app_deleted_and_restored_into_a_new_namespace_is_identical(k8s):
    # GIVEN a running app with data on two PVCs, backed up
    k8s.deploy_app()
    before = k8s.volume_state()
    objects_before = live_objects(k8s, APP_NS)
    record = k8s.backup("backup-db-1")
    assert record["verdict"] == "app-consistent"
    assert not k8s.frozen_marker.exists()

    # WHEN the namespace is deleted and the app restored into another one
    k8s.delete_namespace(APP_NS)
    res = run_step("restore-app", "--repo", k8s.repo, "--backup", "backup-db-1", "--target-namespace", "shop-restored",
                   "--mover", "local", "--volume-root", k8s.volume_root, "--json", "--timeout", "30")

    # THEN every volume is byte- and metadata-identical, and the objects equal the captured ones but for the
    # namespace
    assert res.rc == 0, res.stderr
    report = json.loads(res.last_line)
    assert report["backup_id"] == "backup-db-1"
    assert [p["name"] for p in report["phases"]][:6] == ["check-existing", "namespace", "config", "storage",
                                                        "workloads", "fill"]
    assert sorted(v["pvc"] for v in report["volumes"]) == sorted(VOLUMES.values())
    assert k8s.volume_state("shop-restored") == before
    expected = transform_objects(objects_before, TransformSpec(namespace_map={APP_NS: "shop-restored"})).objects
    assert live_objects(k8s, "shop-restored") == sorted(expected, key=lambda o: (o["kind"], o["metadata"]["name"]))
    # the workload was held at zero while its volumes were filled, then scaled back
    assert report["released"] == ["StatefulSet/db"]
    sts = k8s.server.get("statefulsets.apps", "db", "shop-restored")
    assert sts["spec"]["replicas"] == 1 and "annotations" not in sts["metadata"]
    k8s.server.wait_for("pods", "db-0", "shop-restored", lambda p: p["status"]["phase"] == "Running")
