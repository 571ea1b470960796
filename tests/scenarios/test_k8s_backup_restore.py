"""Back up an app with two PVCs through the Kubernetes data path, lose its namespace, restore it elsewhere.

Runs every step the backup and restore workflows run (capture, consistent-point with CSI snapshots,
prepare-clone, copy, verify, finalize, restore-app) through the real `kubernetes` client against the fake
API server, with the repository on a real S3 server (SeaweedFS).
"""

from __future__ import annotations

import json
import os

from steps.manifests.clean import select_objects
from steps.manifests.transforms import TransformSpec, transform_objects
from tests.fixtures.k8s_app import APP_NS, VOLUMES, run_step
from tests.fixtures.rendered import repository_secrets


def live_objects(world, namespace):
    from steps.manifests.export import collect

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
    res = run_step(
        "restore-app",
        "--repo",
        k8s.repo,
        "--backup",
        "backup-db-1",
        "--target-namespace",
        "shop-restored",
        "--mover",
        "local",
        "--volume-root",
        k8s.volume_root,
        "--json",
        "--timeout",
        "30",
        "--check-pod",
        "db-0",
        "--check-container",
        "postgres",
        "--check-command",
        "echo restored-ok",
    )

    # THEN every volume is byte- and metadata-identical, and the objects equal the captured ones but for the
    # namespace
    assert res.rc == 0, res.stderr
    report = json.loads(res.last_line)
    assert report["backup_id"] == "backup-db-1"
    assert [p["name"] for p in report["phases"]] == [
        "check-existing",
        "namespace",
        "config",
        "storage",
        "workloads",
        "fill",
        "release",
        "deferred",
        "ready",
        "check",
    ]
    assert all(p["duration_s"] >= 0 for p in report["phases"]) and report["rto_s"] > 0
    assert report["check"]["ok"] and report["check"]["stdout"].strip() == "restored-ok"
    assert sorted(v["pvc"] for v in report["volumes"]) == sorted(VOLUMES.values())
    assert k8s.volume_state("shop-restored") == before
    expected = transform_objects(
        objects_before, TransformSpec(namespace_map={APP_NS: "shop-restored"})
    ).objects
    assert live_objects(k8s, "shop-restored") == sorted(
        expected, key=lambda o: (o["kind"], o["metadata"]["name"])
    )
    # the workload was held at zero while its volumes were filled, then scaled back
    assert report["released"] == ["StatefulSet/db"]
    sts = k8s.server.get("statefulsets.apps", "db", "shop-restored")
    assert sts["spec"]["replicas"] == 1 and "annotations" not in sts["metadata"]


def test_restore_into_a_namespace_with_conflicting_objects_is_refused_then_replaced(k8s):
    # GIVEN a backup, and a namespace that already holds two of its objects
    k8s.deploy_app()
    k8s.backup("backup-db-3")
    k8s.server.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop-dr"}})
    k8s.server.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "db-config", "namespace": "shop-dr"},
            "data": {"postgresql.conf": "max_connections = 5\n"},
        }
    )
    k8s.server.create(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "db-client", "namespace": "shop-dr"},
            "spec": {"ports": [{"port": 1}]},
        }
    )
    restore = (
        "restore-app",
        "--repo",
        k8s.repo,
        "--backup",
        "backup-db-3",
        "--target-namespace",
        "shop-dr",
        "--mover",
        "local",
        "--volume-root",
        k8s.volume_root,
        "--timeout",
        "30",
        "--json",
    )

    # WHEN restoring without saying what to do with them
    res = run_step(*restore)

    # THEN the restore is refused with the list, and nothing was created
    assert res.rc == 3
    assert res.stderr.strip().splitlines()[-1] == (
        "error: restore refused: 2 objects already exist in namespace shop-dr: ConfigMap/db-config, "
        "Service/db-client (pass --existing=skip to keep them, or --existing=replace to overwrite them)"
    )
    assert k8s.server.get("statefulsets.apps", "db", "shop-dr") is None
    assert k8s.server.get("persistentvolumeclaims", "data-db-0", "shop-dr") is None

    # WHEN replacing them
    res = run_step(*restore, "--existing", "replace")

    # THEN they hold the backed-up content, and the app is complete
    assert res.rc == 0, res.stderr
    report = json.loads(res.last_line)
    assert sorted(report["replaced"]) == ["ConfigMap/db-config", "Service/db-client"]
    assert k8s.server.get("configmaps", "db-config", "shop-dr")["data"] == {
        "postgresql.conf": "max_connections = 50\n"
    }
    assert k8s.server.get("services", "db-client", "shop-dr")["spec"]["ports"][0]["port"] == 5432
    assert k8s.volume_state("shop-dr") == k8s.volume_state(APP_NS)

    # WHEN restoring once more, keeping what exists
    (k8s.server.volume_path("shop-dr", "data-db-0") / "PG_VERSION").write_text("17\n")
    res = run_step(*restore, "--existing", "skip")

    # THEN nothing is touched, not even the data of the kept PVCs
    assert res.rc == 0, res.stderr
    report = json.loads(res.last_line)
    assert report["created"] == [] and report["volumes"] == []
    assert "PersistentVolumeClaim/data-db-0" in report["skipped"]
    assert (k8s.server.volume_path("shop-dr", "data-db-0") / "PG_VERSION").read_text() == "17\n"


def test_restoring_a_backup_that_was_never_committed_is_refused(k8s):
    # GIVEN a backup whose workflow failed after the copies (finalize saw status Failed)
    k8s.deploy_app()
    plan = k8s.plan()
    assert (
        run_step("capture", "--repo", k8s.repo, "--namespace", APP_NS, "--backup-id", "backup-db-4").rc == 0
    )
    assert run_step("consistent-point", "--plan", plan, "--backup-id", "backup-db-4").rc == 0
    for volume, pvc in VOLUMES.items():
        k8s.copy_volume("backup-db-4", volume, pvc)
    res = run_step(
        "finalize", "--plan", plan, "--backup-id", "backup-db-4", "--workflow-status", "Failed", "--json"
    )
    assert res.rc == 0, res.stderr
    assert json.loads(res.last_line)["committed"] is False

    # WHEN restoring it
    res = run_step(
        "restore-app",
        "--repo",
        k8s.repo,
        "--backup",
        "backup-db-4",
        "--target-namespace",
        "x",
        "--mover",
        "local",
    )

    # THEN it is not a restore point
    assert res.rc == 3
    assert "backup backup-db-4 was never committed" in res.stderr
    assert k8s.server.get("namespaces", "x") is None


def test_group_snapshot_backup_is_restored_by_mover_pods(k8s):
    from tests.fixtures.k8s_app import StepPodKubelet

    # GIVEN an app backed up with one VolumeGroupSnapshot (consistency: group)
    k8s.deploy_app()
    before = k8s.volume_state()
    record = k8s.backup("backup-db-7", consistency="group")
    cuts = {s["volume"]: s for s in record["snapshots"]}
    assert cuts["data"]["cut_time"] == cuts["wal"]["cut_time"]  # one instant for both volumes
    assert cuts["data"]["handle"]["group"] == "snapflow-backup-db-7-group"
    assert record["verdict"] == "app-consistent"
    # the group and its members were deleted by finalize, and the PVCs carry no group label
    assert k8s.server.list("volumegroupsnapshots.groupsnapshot.storage.k8s.io", APP_NS) == []
    assert k8s.server.list("volumesnapshots.snapshot.storage.k8s.io", APP_NS) == []
    assert "snapflow.io/group" not in (
        k8s.server.get("persistentvolumeclaims", "data-db-0", APP_NS)["metadata"].get("labels") or {}
    )

    # AND the repository's Secrets live in the namespace Snapflow runs in
    k8s.server.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "snapflow"}})
    repository_secrets(k8s.server, "snapflow", password="repo-key", s3="s3")
    kubelet = StepPodKubelet(k8s.server, k8s.tmp)
    k8s.server.set_pod_runner(kubelet)

    # WHEN the namespace is lost and the app restored by mover pods
    k8s.delete_namespace(APP_NS)
    res = run_step(
        "restore-app",
        "--repo",
        k8s.repo,
        "--backup",
        "backup-db-7",
        "--target-namespace",
        "shop-2",
        "--mover",
        "pod",
        "--image",
        "snapflow-steps:test",
        "--password-secret",
        "repo-key",
        "--credentials-secret",
        "s3",
        "--secrets-namespace",
        "snapflow",
        "--endpoint",
        os.environ["SNAPFLOW_S3_ENDPOINT"],
        "--timeout",
        "60",
        "--json",
    )

    # THEN one mover pod per volume ran `python -m steps restore --target /data`, and the data is identical
    assert res.rc == 0, res.stderr + "\n".join(r["stderr"] for r in kubelet.runs)
    assert sorted(r["rc"] for r in kubelet.runs) == [0, 0]
    assert all(r["argv"][3] == "restore" for r in kubelet.runs)
    assert k8s.volume_state("shop-2") == before
    # the mover pods and the copied Secrets are gone
    assert [p["metadata"]["name"] for p in k8s.server.list("pods", "shop-2")] in ([], ["db-0"])
    assert {s["metadata"]["name"] for s in k8s.server.list("secrets", "shop-2")} == {"db-credentials"}


def test_capture_with_a_selector_keeps_the_app_and_what_it_references(k8s):
    # GIVEN the app and, in the same namespace, an unrelated one
    k8s.deploy_app()
    k8s.server.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "other-config", "namespace": APP_NS, "labels": {"app": "other"}},
            "data": {"x": "y"},
        }
    )

    # WHEN capturing with the app's selector (dry run: list, store nothing)
    res = run_step(
        "capture",
        "--repo",
        k8s.repo,
        "--namespace",
        APP_NS,
        "--selector",
        "app=db",
        "--backup-id",
        "b",
        "--dry-run",
    )

    # THEN the ServiceAccount (unlabelled, referenced by the pod template) is kept, the other app is not,
    # and runtime objects are left out with their reason
    assert res.rc == 0, res.stderr
    kept = {ln.split()[1].removesuffix(".yaml") for ln in res.stdout.splitlines() if ln.startswith("keep ")}
    assert kept == {
        "_cluster/Namespace/shop",
        "shop/ConfigMap/db-config",
        "shop/Secret/db-credentials",
        "shop/ServiceAccount/db",
        "shop/Service/db",
        "shop/Service/db-client",
        "shop/StatefulSet.apps/db",
        "shop/PersistentVolumeClaim/data-db-0",
        "shop/PersistentVolumeClaim/wal-db-0",
    }
    assert "drop Pod/db-0 (made by StatefulSet/db)" in res.stdout


def test_capture_survives_a_broken_add_on_api_but_not_a_missing_core_kind(k8s):
    # GIVEN the app and a custom resource whose API server is down
    k8s.deploy_app()
    k8s.server.register_kind("example.com", "v1", "Dashboard", "dashboards")
    k8s.server.create(
        {"apiVersion": "example.com/v1", "kind": "Dashboard", "metadata": {"name": "db", "namespace": APP_NS}}
    )
    k8s.server.fail_next("GET", "dashboards", 503, message="the add-on API is unavailable")
    capture = ("capture", "--repo", k8s.repo, "--namespace", APP_NS, "--backup-id", "b", "--dry-run")

    # WHEN capturing, THEN the rest is captured and the gap is reported
    res = run_step(*capture)
    assert res.rc == 0, res.stderr
    assert "cannot list dashboards.example.com in namespace shop" in res.stderr
    assert "keep shop/StatefulSet.apps/db.yaml" in res.stdout

    # WHEN Secrets cannot be listed because the API server fails, THEN the capture fails, retryably
    k8s.server.fail_next("GET", "secrets", 503, message="etcdserver: request timed out")
    res = run_step(*capture)
    assert res.rc == 75
    assert "etcdserver: request timed out" in res.stderr
