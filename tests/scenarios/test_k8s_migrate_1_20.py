"""Disaster recovery from a Kubernetes 1.20 cluster to a current one (docs/user/restore.md, "another
cluster").

On the 1.20-profile fake API server an app has a CronJob (served only at batch/v1beta1, while batch
prefers v1) and an Ingress (one object, served by extensions/v1beta1 and networking.k8s.io/v1 with one
uid). `capture` must store each once — the CronJob via batch/v1beta1, the Ingress via networking.k8s.io/v1
with the extensions copy recorded as an alias — and `restore-app` into a current-profile server must
create them at batch/v1 and networking.k8s.io/v1. A bundle written by a capture that kept both Ingress
copies must be refused before anything is created, in one line naming both.

Both servers are the in-repo fake spoken to by the real `kubernetes` client; the repository is on
SeaweedFS. The backup record is committed the way `finalize` commits it (a manifests-only backup: the
app has no volumes).
"""

from __future__ import annotations

import json
import os

from kubernetes import client

from steps.manifests import bundle
from tests.fakes.kubeapi import FakeKubeAPI
from tests.fixtures.k8s_app import run_step

NS = "shop"


def _repository(url: str):
    from steps.drivers.objectstore import open_store
    from steps.repository.repo import Repository

    return Repository.open(
        open_store(url, os.environ.get("SNAPFLOW_S3_ENDPOINT")), os.environ["SNAPFLOW_PASSWORD"]
    )


def commit_backup(repo_url: str, backup_id: str, manifests: str) -> None:
    """The backup record finalize writes for a manifests-only backup."""
    _repository(repo_url).save_record(
        "backups",
        {
            "version": 1,
            "backup_id": backup_id,
            "app": {"cluster": "old", "namespace": NS, "name": "web"},
            "volumes": [],
            "manifests": manifests,
            "time": "2026-12-01T00:00:00Z",
        },
        key=backup_id,
    )


def deploy_old_app(server) -> None:
    """The app as it ran on 1.20: written with the API versions of the time."""
    server.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    server.create(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": NS},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80}]},
        }
    )
    server.create(
        {
            "apiVersion": "batch/v1beta1",
            "kind": "CronJob",
            "metadata": {"name": "nightly", "namespace": NS},
            "spec": {
                "schedule": "0 3 * * *",
                "jobTemplate": {
                    "spec": {
                        "template": {
                            "spec": {
                                "restartPolicy": "OnFailure",
                                "containers": [{"name": "report", "image": "busybox", "command": ["true"]}],
                            }
                        }
                    }
                },
            },
        }
    )
    server.create(
        {
            "apiVersion": "extensions/v1beta1",
            "kind": "Ingress",
            "metadata": {
                "name": "web",
                "namespace": NS,
                "annotations": {"kubernetes.io/ingress.class": "nginx"},
            },
            "spec": {
                "rules": [
                    {
                        "host": "shop.example.com",
                        "http": {
                            "paths": [{"path": "/", "backend": {"serviceName": "web", "servicePort": 80}}]
                        },
                    }
                ]
            },
        }
    )


def test_discovery_on_1_20_takes_each_kind_once_at_the_version_that_serves_it(kube_server_1_20):
    from steps.drivers.kube import KubeClient, KubeSettings

    with KubeClient(KubeSettings(), api=kube_server_1_20.api_client()) as kube:
        types = [(t.api_version, t.kind) for t in kube.namespaced_types()]

    assert len(types) == len(set(types))
    assert ("batch/v1beta1", "CronJob") in types and ("batch/v1", "Job") in types
    # per group and kind: the preferred version where it serves the kind
    assert [t for t in types if t[1] == "Ingress"] == [
        ("extensions/v1beta1", "Ingress"),
        ("networking.k8s.io/v1", "Ingress"),
    ]
    assert [t for t in types if t[1] == "HorizontalPodAutoscaler"] == [
        ("autoscaling/v1", "HorizontalPodAutoscaler")
    ]
    assert ("policy/v1beta1", "PodDisruptionBudget") in types


def test_an_app_captured_on_1_20_is_restored_on_a_current_cluster(
    kube_server_1_20, kubeconfig_1_20, kube_server, kubeconfig, s3_repo
):
    # GIVEN an app on a 1.20 cluster with a batch/v1beta1 CronJob and an Ingress served in two groups
    assert run_step("init", "--repo", s3_repo).rc == 0
    deploy_old_app(kube_server_1_20)

    # WHEN it is captured there
    res = run_step(
        "capture", "--repo", s3_repo, "--namespace", NS, "--backup-id", "backup-old-1",
        "--app", "web", "--cluster", "old", "--kubeconfig", kubeconfig_1_20, "--json",
    )  # fmt: skip

    # THEN each object is stored once: the CronJob via batch/v1beta1, the Ingress via networking.k8s.io/v1,
    # its extensions/v1beta1 copy recorded as an alias (not dropped, not unreadable)
    assert res.rc == 0, res.stderr
    summary = json.loads(res.last_line)
    assert summary["aliases"] == 1 and summary["unreadable"] == []
    from steps.repository.snapshot_read import load_files

    files = load_files(_repository(s3_repo), summary["id"])
    captured = bundle.from_files(files)
    kinds = sorted((o["kind"], o["apiVersion"], o["metadata"]["name"]) for o in captured.objects)
    assert ("CronJob", "batch/v1beta1", "nightly") in kinds
    assert [k for k in kinds if k[0] in ("Ingress", "CronJob")] == [
        ("CronJob", "batch/v1beta1", "nightly"),
        ("Ingress", "networking.k8s.io/v1", "web"),
    ]
    index = json.loads(files["capture.json"])
    uid = kube_server_1_20.get("ingresses.networking.k8s.io", "web", NS)["metadata"]["uid"]
    assert index["aliases"] == [
        {
            "object": "extensions/v1beta1 Ingress web",
            "apiVersion": "extensions/v1beta1",
            "kind": "Ingress",
            "namespace": NS,
            "name": "web",
            "uid": uid,
            "kept_apiVersion": "networking.k8s.io/v1",
        }
    ]
    assert not any("Ingress" in d["object"] or "CronJob" in d["object"] for d in index["dropped"])

    # WHEN the backup is restored into a current cluster (KUBECONFIG points at it)
    commit_backup(s3_repo, "backup-old-1", summary["id"])
    res = run_step(
        "restore-app", "--repo", s3_repo, "--backup", "backup-old-1", "--mover", "none",
        "--timeout", "20", "--json",
    )  # fmt: skip

    # THEN the objects exist there at the current API versions, migrated
    assert res.rc == 0, res.stderr
    report = json.loads(res.last_line)
    assert {"CronJob/nightly", "Ingress/web", "Service/web"} <= set(report["created"])
    assert any("CronJob/nightly: batch/v1beta1 → batch/v1" in n for n in report["notes"])
    api = kube_server.api_client()
    cronjob = client.BatchV1Api(api).read_namespaced_cron_job("nightly", NS)
    assert cronjob.api_version == "batch/v1" and cronjob.spec.schedule == "0 3 * * *"
    assert not cronjob.spec.suspend  # held during the restore, released at its end
    ingress = client.NetworkingV1Api(api).read_namespaced_ingress("web", NS)
    assert ingress.api_version == "networking.k8s.io/v1"
    # the kept copy is the server's networking.k8s.io/v1 view: the class annotation as the app set it
    assert ingress.metadata.annotations == {"kubernetes.io/ingress.class": "nginx"}
    backend = ingress.spec.rules[0].http.paths[0].backend.service
    assert (backend.name, backend.port.number) == ("web", 80)
    assert [i.metadata.name for i in client.NetworkingV1Api(api).list_namespaced_ingress(NS).items] == ["web"]
    api.close()


def test_a_bundle_holding_one_ingress_twice_is_refused_before_anything_is_created(
    kube_server, kubeconfig, s3_repo
):
    # GIVEN a backup written by a capture that kept both copies of an Ingress served in two groups
    assert run_step("init", "--repo", s3_repo).rc == 0
    rule = {"host": "shop.example.com", "http": {"paths": [{"path": "/", "pathType": "Prefix"}]}}
    objects = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web-config", "namespace": NS}, "data": {}},
        {"apiVersion": "extensions/v1beta1", "kind": "Ingress", "metadata": {"name": "web", "namespace": NS},
         "spec": {"rules": [rule]}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "web", "namespace": NS},
         "spec": {"rules": [rule]}},
    ]  # fmt: skip
    from steps.repository.stored_files import store_files

    repo = _repository(s3_repo)
    files = bundle.to_files(objects, {"backup_id": "backup-twice", "namespace": NS, "cluster": "old"})
    sid = store_files(
        repo, files, tags={"kind": "manifests", "backup": "backup-twice"}, backup_id="backup-twice"
    )
    commit_backup(s3_repo, "backup-twice", sid)

    # WHEN it is restored (for real, and as a dry run)
    dry = run_step(
        "restore-app", "--repo", s3_repo, "--backup", "backup-twice", "--mover", "none", "--dry-run"
    )
    res = run_step(
        "restore-app", "--repo", s3_repo, "--backup", "backup-twice", "--mover", "none", "--timeout", "20"
    )

    # THEN both fail with exit 3 in one line naming both copies, and nothing was created
    for r in (dry, res):
        assert r.rc == 3, r.stderr
        (line,) = r.stderr.strip().splitlines()
        assert line.startswith("error: restore refused: the backup holds one object twice: "), line
        assert (
            "extensions/v1beta1 Ingress web (objects/shop/Ingress.extensions/web.yaml) and networking.k8s.io/v1 "
            "Ingress web (objects/shop/Ingress.networking.k8s.io/web.yaml) would both be created as "
            "networking.k8s.io/v1 Ingress web in namespace shop"
        ) in line
        assert "created nothing" in line
    assert kube_server.get("namespaces", NS) is None
    assert kube_server.get("configmaps", "web-config", NS) is None


def test_a_role_without_the_deprecated_group_still_captures_the_ingress_and_calls_nothing_unreadable(
    tmp_path,
):
    # GIVEN the app on a 1.20 cluster enforcing RBAC, and a capture identity that may list the core, batch
    # and networking.k8s.io groups only (as a Role written for current clusters would): extensions is
    # refused, and so is apps
    with FakeKubeAPI(tmp_path / "kube", profile="1.20", enforce_rbac=True) as server:
        deploy_old_app(server)
        server.create(
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "capture", "namespace": NS}}
        )
        server.create(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": "capture", "namespace": NS},
                "rules": [
                    {
                        "apiGroups": ["", "batch", "networking.k8s.io"],
                        "resources": ["*"],
                        "verbs": ["get", "list"],
                    }
                ],
            }
        )
        server.create(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": "capture", "namespace": NS},
                "subjects": [{"kind": "ServiceAccount", "name": "capture", "namespace": NS}],
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "capture"},
            }
        )
        kubeconfig = server.write_kubeconfig(
            tmp_path / "kc", token=server.service_account_token(NS, "capture")
        )

        # WHEN it captures (a dry run: the listing is what matters)
        res = run_step(
            "capture", "--repo", "s3://unused/repo", "--namespace", NS, "--backup-id", "t",
            "--kubeconfig", kubeconfig, "--dry-run", "--json",
        )  # fmt: skip

    # THEN the Ingress is kept once, from networking.k8s.io; the refused extensions group is not reported
    # unreadable (its objects are networking.k8s.io's), while the refused apps group still is
    assert res.rc == 0, res.stderr
    summary = json.loads(res.last_line)
    assert "ingresses.extensions" not in summary["unreadable"]
    assert "deployments.apps" in summary["unreadable"]
    assert summary["aliases"] == 0
    kept = [ln for ln in res.stdout.splitlines() if ln.startswith("keep ")]
    assert "keep shop/Ingress.networking.k8s.io/web.yaml" in kept
    assert "keep shop/CronJob.batch/nightly.yaml" in kept
    assert not [ln for ln in kept if "Ingress.extensions" in ln]
