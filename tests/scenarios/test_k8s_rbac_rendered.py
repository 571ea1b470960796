"""The rendered manifests and the steps fit together: with RBAC enforced, the rendered backup template
runs each step as its rendered ServiceAccount, and the rendered restore-app template, as the restore
ServiceAccount, brings the app back into another namespace where its ClusterRole was bound.

Each template runs task by task with its own arguments, mounts and env (tests/fixtures/rendered.py
plays the Argo controller), against the fake API server and a real S3 server.
"""

from __future__ import annotations

import base64
import json

import pytest
import yaml

from tests.fakes.csi import DRIVER
from tests.fixtures.k8s_app import APP_NS, VOLUMES, StepPodKubelet, run_step
from tests.fixtures.rendered import TemplateRunner, app_policy, apply_rendered, repository_secrets
from workflows.render import render_files


def manifests_of(k8s, backup_id: str) -> dict[tuple[str, str], dict]:
    """The objects capture stored with the backup, by (kind, name)."""
    res = run_step("snapshots", "--repo", k8s.repo, "--json")
    assert res.rc == 0, res.stderr
    snaps = json.loads(res.last_line)
    snaps = snaps if isinstance(snaps, list) else snaps.get("snapshots", [])
    (manifests,) = [
        s
        for s in snaps
        if (s.get("tags") or {}).get("kind") == "manifests"
        and (s.get("tags") or {}).get("backup") == backup_id
    ]
    target = k8s.tmp / f"manifests-{backup_id}"
    res = run_step("restore", "--repo", k8s.repo, "--snapshot", manifests["id"], "--target", target)
    assert res.rc == 0, res.stderr
    out = {}
    for path in (target / "objects").rglob("*.yaml"):
        obj = yaml.safe_load(path.read_text())
        out[(obj["kind"], obj["metadata"]["name"])] = obj
    return out


@pytest.mark.parametrize(("consistency", "secrets"), [("volume", True), ("group", False)])
def test_rendered_templates_back_up_and_restore_with_only_the_rendered_rbac(k8s, consistency, secrets):
    # GIVEN the app with the repository's Secrets in its namespace, and a policy for it rendered, its
    # RBAC applied, and RBAC enforced from now on
    k8s.deploy_app()
    repository_secrets(k8s.server, APP_NS)
    before = k8s.volume_state()
    path = k8s.tmp / "policy.yaml"
    path.write_text(yaml.safe_dump(app_policy(k8s, consistency, secrets)))
    rendering = render_files([path])
    objects = [o.obj for o in rendering.ordered()]
    apply_rendered(k8s.server, objects)
    templates = {o["metadata"]["name"]: o for o in objects if o["kind"] == "WorkflowTemplate"}
    k8s.server.enforce_rbac = True
    runner = TemplateRunner(k8s.server, k8s.tmp, objects)

    # WHEN the backup template runs with its defaults, each step as its own snapflow-db-STEP
    backup = runner.run(templates["backup-db"], "backup-db-rbac1")

    # THEN every step and the exit handler succeed, nothing was refused, and the backup is committed
    assert backup.status == "Succeeded", backup.stderr()
    assert backup.exit is not None and backup.exit.result.rc == 0, backup.stderr()
    assert "forbidden" not in backup.stderr().lower()
    assert "no permission to list them in namespace" not in backup.stderr()
    assert not k8s.frozen_marker.exists()
    verdict = json.loads(backup.tasks["consistent-point"].outputs["verdict"])
    assert verdict["verdict"] == "app-consistent"
    assert "finalize: backup backup-db-rbac1: committed" in backup.exit.result.stderr
    # capture stored the app's objects, its Secret only when the policy says so, never Snapflow's own
    stored = manifests_of(k8s, "backup-db-rbac1")
    assert {("StatefulSet", "db"), ("Service", "db"), ("ConfigMap", "db-config")} <= set(stored)
    assert (("Secret", "db-credentials") in stored) == secrets
    assert not [k for k in stored if k[1].startswith("snapflow-db") or k[1].startswith("snapflow-plan")]

    # WHEN an administrator prepares another namespace as the docs say (the namespace, and a RoleBinding
    # of the restore ClusterRole), with the app's Secret recreated there when backups leave it out
    k8s.server.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop-dr"}})
    k8s.server.create(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "snapflow.shop.db-restore", "namespace": "shop-dr"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "snapflow.shop.db-restore",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "snapflow-db-restore", "namespace": APP_NS}],
        }
    )
    if not secrets:
        live = k8s.server.get("secrets", "db-credentials", APP_NS)
        k8s.server.create(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "db-credentials", "namespace": "shop-dr"},
                "data": live["data"],
            }
        )
    k8s.server.create(
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": "fast"},
            "provisioner": DRIVER,
        }
    )
    kubelet = StepPodKubelet(k8s.server, k8s.tmp)
    k8s.server.set_pod_runner(kubelet)
    # ... and the restore-app template runs as snapflow-db-restore into it, with a storage class map
    restore = runner.run(
        templates["restore-app-db"],
        "restore-app-db-rbac1",
        {
            "target-namespace": "shop-dr",
            "storage-class-map": "csi-hostpath-sc=fast",
            "check-pod": "db-0",
            "check-command": "echo restored-ok",
        },
    )

    # THEN the app is back in shop-dr: data identical, workload released, the check passed; the mover
    # pods ran with the repository's Secrets (copied for the restore when not captured) and are gone
    assert restore.status == "Succeeded", restore.stderr() + "\n".join(r["stderr"] for r in kubelet.runs)
    assert "forbidden" not in restore.stderr().lower()
    assert sorted(r["rc"] for r in kubelet.runs) == [0, 0]
    assert k8s.volume_state("shop-dr") == before
    sts = k8s.server.get("statefulsets.apps", "db", "shop-dr")
    assert sts["spec"]["replicas"] == 1
    assert "restored backup backup-db-rbac1 into shop-dr" in restore.tasks["restore-app"].result.stderr
    pvc = k8s.server.get("persistentvolumeclaims", VOLUMES["data"], "shop-dr")
    assert pvc["spec"]["storageClassName"] == "fast"
    secrets_left = {s["metadata"]["name"] for s in k8s.server.list("secrets", "shop-dr")}
    assert ("snapflow-repository" in secrets_left) == secrets  # captured with the app, or copied and removed
    assert "db-credentials" in secrets_left
    pw = k8s.server.get("secrets", "db-credentials", "shop-dr")["data"]["password"]
    assert base64.b64decode(pw).decode() == "s3cr3t-db-password"


def test_restore_app_is_refused_in_a_namespace_where_its_role_is_not_bound(k8s):
    # GIVEN a committed backup made by the rendered backup template, and a namespace without the binding
    k8s.deploy_app()
    repository_secrets(k8s.server, APP_NS)
    path = k8s.tmp / "policy.yaml"
    path.write_text(yaml.safe_dump(app_policy(k8s, "volume", True)))
    objects = [o.obj for o in render_files([path]).ordered()]
    apply_rendered(k8s.server, objects)
    templates = {o["metadata"]["name"]: o for o in objects if o["kind"] == "WorkflowTemplate"}
    k8s.server.enforce_rbac = True
    runner = TemplateRunner(k8s.server, k8s.tmp, objects)
    assert runner.run(templates["backup-db"], "backup-db-rbac2").status == "Succeeded"
    k8s.server.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "elsewhere"}})

    # WHEN restore-app targets it
    restore = runner.run(
        templates["restore-app-db"], "restore-app-db-rbac2", {"target-namespace": "elsewhere"}
    )

    # THEN it fails with one line naming what was refused, and created nothing there
    assert restore.status == "Failed"
    last = restore.tasks["restore-app"].result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "forbidden" in last and "elsewhere" in last
    assert k8s.server.list("statefulsets.apps", "elsewhere") == []
