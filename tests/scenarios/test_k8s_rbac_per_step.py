"""Each step kind runs as a ServiceAccount of its own, and holds only what that step uses.

With the rendered RBAC applied to the fake API server and enforced, every template runs task by task,
each pod as the ServiceAccount its template names (tests/fixtures/rendered.py): the backup's capture,
consistent-point, prepare-clone, copy, verify and finalize, and the check, prune and restore templates.
Then the data movers' identities (copy, verify, ...) try what a compromised pod would: exec into the
database through the real consistent-point step, list the namespace's Secrets, read a Secret.
"""

from __future__ import annotations

import json

import yaml

from steps.drivers.kube import KubeClient, KubeError, KubeSettings
from tests.fixtures.k8s_app import APP_NS, VOLUMES
from tests.fixtures.rendered import TemplateRunner, app_policy, apply_rendered, repository_secrets
from workflows.render import render_files

DATA_STEPS = ("copy", "verify", "check", "prune", "restore-volume", "init")


def render_and_enforce(k8s, consistency: str = "volume", secrets: bool = True):
    """The app, the repository's Secrets, the policy rendered and its RBAC applied, RBAC enforced."""
    k8s.deploy_app()
    repository_secrets(k8s.server, APP_NS)
    path = k8s.tmp / "policy.yaml"
    path.write_text(yaml.safe_dump(app_policy(k8s, consistency, secrets)))
    objects = [o.obj for o in render_files([path]).ordered()]
    apply_rendered(k8s.server, objects)
    k8s.server.enforce_rbac = True
    templates = {o["metadata"]["name"]: o for o in objects if o["kind"] == "WorkflowTemplate"}
    return objects, templates, TemplateRunner(k8s.server, k8s.tmp, objects)


def client_as(k8s, account: str) -> KubeClient:
    token = k8s.server.service_account_token(APP_NS, account)
    kubeconfig = k8s.server.write_kubeconfig(k8s.tmp / f"kubeconfig-probe-{account}", token=token)
    return KubeClient(KubeSettings.from_env(kubeconfig=str(kubeconfig)))


def status_of(call) -> int | None:
    try:
        call()
    except KubeError as err:
        return err.status
    return 200


def pod_template(templates: dict, template: str, name: str) -> dict:
    (found,) = [t for t in templates[template]["spec"]["templates"] if t["name"] == name]
    return found


def test_every_step_kind_succeeds_as_its_own_account(k8s):
    # GIVEN the rendered policy with its RBAC applied and enforced (consistency: group runs as its
    # accounts in test_k8s_rbac_rendered.py)
    _objects, templates, runner = render_and_enforce(k8s, "volume", secrets=True)

    # WHEN the backup runs, every step as its own account
    backup = runner.run(templates["backup-db"], "backup-db-steps1")

    # THEN every step and the exit handler succeed without a refusal, and the backup is committed
    assert backup.status == "Succeeded", backup.stderr()
    assert backup.exit is not None and backup.exit.result.rc == 0, backup.stderr()
    assert "forbidden" not in backup.stderr().lower()
    assert "no permission to list them in namespace" not in backup.stderr()
    assert "finalize: backup backup-db-steps1: committed" in backup.exit.result.stderr
    assert not k8s.frozen_marker.exists()
    accounts = {
        t["metadata"]["labels"]["snapflow.io/step"]: t["serviceAccountName"]
        for t in templates["backup-db"]["spec"]["templates"]
        if "container" in t
    }
    assert accounts == {
        step: f"snapflow-db-{step}"
        for step in ("capture", "consistent-point", "prepare-clone", "copy", "verify", "finalize")
    }

    # WHEN the check and prune templates run as theirs
    check = runner.run(templates["check-db"], "check-db-steps1")
    prune = runner.run(templates["prune-db"], "prune-db-steps1")

    # ... and the single-volume restore runs as its own into a new PVC
    k8s.server.create(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "restored-data", "namespace": APP_NS},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "csi-hostpath-sc",
                "resources": {"requests": {"storage": "1Gi"}},
            },
        }
    )
    snapshot = json.loads(backup.tasks["copy-data"].result.last_line)["id"]
    restore = runner.run(
        templates["restore-db"], "restore-db-steps1", {"snapshot": snapshot, "target-pvc": "restored-data"}
    )

    # THEN they succeed too, the restore with the volume's data
    assert check.status == "Succeeded", check.stderr()
    assert prune.status == "Succeeded", prune.stderr()
    assert restore.status == "Succeeded", restore.stderr()
    assert "forbidden" not in (check.stderr() + prune.stderr() + restore.stderr()).lower()
    assert (
        pod_template(templates, "restore-db", "restore")["serviceAccountName"] == "snapflow-db-restore-volume"
    )
    restored = k8s.server.volume_path(APP_NS, "restored-data")
    assert sorted(p.name for p in restored.iterdir()) == sorted(
        p.name for p in k8s.server.volume_path(APP_NS, VOLUMES["data"]).iterdir()
    )


def test_the_data_steps_cannot_exec_into_the_app_or_read_secrets(k8s):
    # GIVEN the rendered policy (Secrets captured: capture may list them) with its RBAC enforced, and a
    # committed backup whose snapshots are gone
    _objects, templates, runner = render_and_enforce(k8s, "volume", secrets=True)
    assert runner.run(templates["backup-db"], "backup-db-steps2").status == "Succeeded"
    snapshots_before = k8s.server.list("volumesnapshots.snapshot.storage.k8s.io", APP_NS)
    consistent_point = pod_template(templates, "backup-db", "consistent-point")

    for step in DATA_STEPS:
        account = f"snapflow-db-{step}"
        client = client_as(k8s, account)

        # WHEN its identity lists the namespace's Secrets, or reads one (the repository's or the app's)
        # THEN the API server refuses
        assert status_of(lambda c=client: c.list("v1", "Secret", APP_NS)) == 403, account
        for secret in ("snapflow-repository", "snapflow-s3", "db-credentials"):
            assert status_of(lambda c=client, s=secret: c.get("v1", "Secret", s, APP_NS)) == 403, (
                account,
                secret,
            )
        # ... nor may it get or exec into the database's pod
        assert status_of(lambda c=client: c.get("v1", "Pod", "db-0", APP_NS)) == 403, account
        assert not client.can_i("create", "pods", APP_NS, "", "exec"), account

        # WHEN the real consistent-point step runs as that identity (a pod whose template was changed)
        hijacked = {**consistent_point, "serviceAccountName": account}
        kubeconfig = k8s.server.write_kubeconfig(
            k8s.tmp / f"kubeconfig-hijack-{step}", token=k8s.server.service_account_token(APP_NS, account)
        )
        run = runner.run_container(
            hijacked,
            "consistent-point",
            APP_NS,
            {"workflow.name": f"backup-db-hijack-{step}"},
            kubeconfig,
        )

        # THEN it fails, refused, with the app never quiesced and no snapshot cut
        assert not run.ok, account
        assert "forbidden" in run.result.stderr.lower(), (account, run.result.stderr)
        assert not k8s.frozen_marker.exists(), account
        assert k8s.server.list("volumesnapshots.snapshot.storage.k8s.io", APP_NS) == snapshots_before

    # and only capture among the backup's steps may list Secrets, only consistent-point and finalize exec
    for step in ("consistent-point", "prepare-clone", "finalize"):
        assert (
            status_of(lambda s=step: client_as(k8s, f"snapflow-db-{s}").list("v1", "Secret", APP_NS)) == 403
        )
    capture = client_as(k8s, "snapflow-db-capture")
    assert status_of(lambda: capture.list("v1", "Secret", APP_NS)) == 200
    assert not capture.can_i("create", "pods", APP_NS, "", "exec")
    assert client_as(k8s, "snapflow-db-finalize").can_i("create", "pods", APP_NS, "", "exec")
    # prepare-clone creates clones, the copy step does not; the copy cannot delete a snapshot
    copy = client_as(k8s, "snapflow-db-copy")
    assert not copy.can_i("create", "persistentvolumeclaims", APP_NS)
    assert not copy.can_i("delete", "volumesnapshots", APP_NS, "snapshot.storage.k8s.io")
    assert client_as(k8s, "snapflow-db-prepare-clone").can_i("create", "persistentvolumeclaims", APP_NS)
    for pvc in VOLUMES.values():  # the app's PVCs are untouched by the refused attempts
        assert k8s.server.get("persistentvolumeclaims", pvc, APP_NS) is not None


def test_restore_app_reads_only_the_repository_secrets_when_secrets_are_not_captured(k8s):
    # GIVEN a policy that keeps Secrets out of its backups, rendered, applied and enforced
    render_and_enforce(k8s, "volume", secrets=False)
    restorer = client_as(k8s, "snapflow-db-restore")

    # THEN its restore identity may read the repository's Secrets by name, and no other Secret
    assert status_of(lambda: restorer.get("v1", "Secret", "snapflow-repository", APP_NS)) == 200
    assert status_of(lambda: restorer.get("v1", "Secret", "snapflow-s3", APP_NS)) == 200
    assert status_of(lambda: restorer.get("v1", "Secret", "db-credentials", APP_NS)) == 403
    assert status_of(lambda: restorer.list("v1", "Secret", APP_NS)) == 403
