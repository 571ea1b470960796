"""Restore transforms against a live API: API-version migrations, storage class map, and the rest."""

from __future__ import annotations

import json
import os

from steps.manifests import bundle
from tests.fixtures.k8s_app import run_step, tree_state, write_app_data

LEGACY_OBJECTS = [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "legacy", "labels": {"team": "web"}}},
    {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data-web-0", "namespace": "legacy", "labels": {"app": "web"}},
        "spec": {
            "storageClassName": "legacy-ssd",
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}},
        },
    },
    {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "legacy"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
    },
    {
        "apiVersion": "apps/v1beta1",
        "kind": "StatefulSet",
        "metadata": {"name": "web", "namespace": "legacy"},
        "spec": {
            "serviceName": "web",
            "replicas": 1,
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.25"}]},
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {
                        "storageClassName": "legacy-ssd",
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "1Gi"}},
                    },
                }
            ],
        },
    },
    {
        "apiVersion": "extensions/v1beta1",
        "kind": "Ingress",
        "metadata": {
            "name": "web",
            "namespace": "legacy",
            "annotations": {"kubernetes.io/ingress.class": "nginx"},
        },
        "spec": {
            "rules": [
                {
                    "host": "web.example",
                    "http": {"paths": [{"path": "/", "backend": {"serviceName": "web", "servicePort": 80}}]},
                }
            ]
        },
    },
    {
        "apiVersion": "batch/v1beta1",
        "kind": "CronJob",
        "metadata": {"name": "cleanup", "namespace": "legacy"},
        "spec": {
            "schedule": "0 4 * * *",
            "jobTemplate": {
                "spec": {
                    "template": {
                        "spec": {
                            "restartPolicy": "OnFailure",
                            "containers": [{"name": "c", "image": "busybox"}],
                        }
                    }
                }
            },
        },
    },
    {
        "apiVersion": "policy/v1beta1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "web", "namespace": "legacy"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}},
    },
]


def commit_legacy_backup(k8s, backup_id, data_dir):
    """A backup as an older cluster's Snapflow left it: manifests, one volume, verify, commit."""
    from steps.drivers.objectstore import open_store
    from steps.repository.repo import Repository
    from steps.repository.stored_files import store_files

    repo = Repository.open(
        open_store(k8s.repo, os.environ.get("SNAPFLOW_S3_ENDPOINT")), os.environ["SNAPFLOW_PASSWORD"]
    )
    files = bundle.to_files(LEGACY_OBJECTS, {"backup_id": backup_id, "namespace": "legacy", "cluster": "old"})
    store_files(
        repo,
        files,
        tags={"kind": "manifests", "backup": backup_id},
        backup_id=backup_id,
        identity={"namespace": "legacy", "app": "web"},
    )
    # what consistent-point recorded there: an atomic CSI cut with no hook, crash-consistent
    repo.save_record(
        "runs",
        {
            "name": "consistent-point",
            "ok": True,
            "verdict": "crash-consistent",
            "reasons": ["volume data: no target quiesces it"],
            "freeze_window_ms": 0.0,
            "timeline": {"targets": []},
        },
        key=backup_id,
    )
    res = run_step(
        "copy",
        "--repo",
        k8s.repo,
        "--source",
        data_dir,
        "--backup-id",
        backup_id,
        "--namespace",
        "legacy",
        "--app",
        "web",
        "--volume",
        "data",
    )
    assert res.rc == 0, res.stderr
    assert run_step("verify", "--repo", k8s.repo, "--backup-id", backup_id).rc == 0
    plan = k8s.tmp / "legacy-plan.json"
    plan.write_text(
        json.dumps(
            {
                "app": {"namespace": "legacy", "name": "web", "cluster": "old"},
                "repository": {"url": k8s.repo, "endpoint": os.environ.get("SNAPFLOW_S3_ENDPOINT")},
                "snapshot": {"driver": "csi"},
                "targets": [],
                "volumes": [{"name": "data", "pvc": "data-web-0"}],
            }
        )
    )
    res = run_step("finalize", "--plan", plan, "--backup-id", backup_id, "--workflow-status", "Succeeded")
    assert res.rc == 0, res.stderr


def test_api_versions_are_migrated_and_storage_classes_mapped_on_restore(k8s, tmp_path):
    # GIVEN a backup from an old cluster (removed API versions, a storage class this cluster lacks)
    data, wal = tmp_path / "data", tmp_path / "unused-wal"
    data.mkdir(), wal.mkdir()
    write_app_data(data, wal)
    commit_legacy_backup(k8s, "old-1", data)

    # WHEN it is restored with a storage class map
    res = run_step(
        "restore-app",
        "--repo",
        k8s.repo,
        "--backup",
        "old-1",
        "--target-namespace",
        "modern",
        "--storage-class-map",
        "legacy-ssd=csi-hostpath-sc",
        "--mover",
        "local",
        "--volume-root",
        k8s.volume_root,
        "--timeout",
        "20",
        "--json",
    )

    # THEN every object exists in its current API version, with the converted spec
    assert res.rc == 0, res.stderr
    report = json.loads(res.last_line)
    s = k8s.server
    ing = s.get("ingresses.networking.k8s.io", "web", "modern")
    assert ing["spec"]["ingressClassName"] == "nginx"
    assert ing["spec"]["rules"][0]["http"]["paths"][0] == {
        "path": "/",
        "pathType": "ImplementationSpecific",
        "backend": {"service": {"name": "web", "port": {"number": 80}}},
    }
    sts = s.get("statefulsets.apps", "web", "modern")
    assert sts["spec"]["selector"] == {"matchLabels": {"app": "web"}}
    assert sts["spec"]["updateStrategy"] == {"type": "OnDelete"}  # apps/v1beta1's default, kept
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"] == "csi-hostpath-sc"
    assert s.get("cronjobs.batch", "cleanup", "modern") is not None
    assert s.get("poddisruptionbudgets.policy", "web", "modern")["spec"]["minAvailable"] == 1
    assert any("extensions/v1beta1 → networking.k8s.io/v1" in n for n in report["notes"])
    assert any("batch/v1beta1 → batch/v1" in n for n in report["notes"])
    # ... and the PVC got the mapped class, was provisioned and filled
    pvc = s.get("persistentvolumeclaims", "data-web-0", "modern")
    assert pvc["spec"]["storageClassName"] == "csi-hostpath-sc" and pvc["status"]["phase"] == "Bound"
    assert tree_state(s.volume_path("modern", "data-web-0")) == tree_state(data)
    assert report["transforms"]["storageClassMap"] == {"legacy-ssd": "csi-hostpath-sc"}


def test_dry_run_prints_the_transformed_objects_and_changes_nothing(k8s, tmp_path):
    import yaml

    data, wal = tmp_path / "data", tmp_path / "wal"
    data.mkdir(), wal.mkdir()
    write_app_data(data, wal)
    commit_legacy_backup(k8s, "old-2", data)
    patch = tmp_path / "patch.yaml"
    patch.write_text(
        "- target: {kind: StatefulSet}\n  patch: [{op: replace, path: /spec/replicas, value: 3}]\n"
    )

    res = run_step(
        "restore-app",
        "--repo",
        k8s.repo,
        "--backup",
        "old-2",
        "--target-namespace",
        "preview",
        "--image-registry",
        "docker.io=mirror.internal/hub",
        "--add-label",
        "restored-from=old-2",
        "--patch",
        patch,
        "--dry-run",
    )

    assert res.rc == 0, res.stderr
    objs = {o["kind"]: o for o in yaml.safe_load_all(res.stdout)}
    assert objs["StatefulSet"]["apiVersion"] == "apps/v1" and objs["StatefulSet"]["spec"]["replicas"] == 3
    assert (
        objs["StatefulSet"]["spec"]["template"]["spec"]["containers"][0]["image"]
        == "mirror.internal/hub/library/nginx:1.25"
    )
    assert all(o["metadata"]["labels"]["restored-from"] == "old-2" for o in objs.values())
    assert objs["Namespace"]["metadata"]["name"] == "preview"
    assert k8s.server.get("namespaces", "preview") is None


def test_dry_run_never_prints_secret_values(k8s, tmp_path):
    k8s.deploy_app()
    k8s.backup("backup-db-6")
    res = run_step(
        "restore-app", "--repo", k8s.repo, "--backup", "backup-db-6", "--target-namespace", "p", "--dry-run"
    )
    assert res.rc == 0, res.stderr
    assert "kind: Secret" in res.stdout and "<redacted>" in res.stdout
    import base64

    assert "s3cr3t-db-password" not in res.stdout
    assert base64.b64encode(b"s3cr3t-db-password").decode() not in res.stdout


def test_restore_in_phases_holds_workloads_until_finish(k8s, tmp_path):
    # GIVEN a committed backup
    data, wal = tmp_path / "data", tmp_path / "wal"
    data.mkdir(), wal.mkdir()
    write_app_data(data, wal)
    commit_legacy_backup(k8s, "old-3", data)
    common = (
        "--repo",
        k8s.repo,
        "--backup",
        "old-3",
        "--target-namespace",
        "phased",
        "--timeout",
        "20",
        "--storage-class-map",
        "legacy-ssd=csi-hostpath-sc",
    )
    volumes = tmp_path / "volumes.json"

    # WHEN a workflow runs prepare, then its own movers, then finish
    prepared = run_step("restore-app", *common, "--phase", "prepare", "--mover", "none", "--out", volumes)
    sts_held = k8s.server.get("statefulsets.apps", "web", "phased")
    filled = run_step(
        "restore-app",
        *common,
        "--phase",
        "fill",
        "--volumes",
        volumes,
        "--mover",
        "local",
        "--volume-root",
        k8s.volume_root,
    )
    finished = run_step("restore-app", *common, "--phase", "finish", "--json")

    # THEN the workload was held at zero until finish, the volume filled in between
    assert prepared.rc == 0 and filled.rc == 0 and finished.rc == 0, (
        prepared.stderr + filled.stderr + finished.stderr
    )
    assert json.loads(volumes.read_text()) == [
        {
            "namespace": "phased",
            "pvc": "data-web-0",
            "volume": "data",
            "snapshot": json.loads(volumes.read_text())[0]["snapshot"],
            "volume_mode": "Filesystem",
            "restore_options": ["--overwrite", "always"],
        }
    ]
    assert sts_held["spec"]["replicas"] == 0
    assert sts_held["metadata"]["annotations"]["snapflow.io/restore-hold"] == "true"
    assert json.loads(finished.last_line)["released"] == ["StatefulSet/web", "CronJob/cleanup"]
    assert "suspend" not in k8s.server.get("cronjobs.batch", "cleanup", "phased")["spec"]
    assert k8s.server.get("statefulsets.apps", "web", "phased")["spec"]["replicas"] == 1
    assert tree_state(k8s.server.volume_path("phased", "data-web-0")) == tree_state(data)
