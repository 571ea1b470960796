"""The Kubernetes data path on a real cluster: the scenarios of tests/scenarios/test_k8s_*.py with a real
CSI driver, real pods running the step image and a real snapshot controller.

Deselected by default; run with ``pytest -m on_cluster tests/cluster`` (docs/user/on-cluster-tests.md).
The copy steps run as pods of the step image mounting the clone PVC, exactly as the backup workflow's
copy steps do; the restore uses mover pods.
"""

from __future__ import annotations

import base64
import json
import os
import time

import pytest

from tests.fixtures.k8s_app import run_step

pytestmark = pytest.mark.on_cluster

VOLUMES = {"data": "data-db-0", "wal": "wal-db-0"}
SECRET = "snapflow-test"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def exec_in(namespace: str, pod: str, script: str, timeout: float = 60) -> str:
    from steps.drivers.runner_kube import KubeRunner

    result = KubeRunner(namespace=namespace, pod=pod, container="app").run(
        ["sh", "-c", script], timeout=timeout
    )
    assert result.ok, f"{script!r} in {namespace}/{pod}: exit {result.returncode}: {result.stderr}"
    return result.stdout


def wait_pod(client, namespace: str, name: str, phases: tuple[str, ...], timeout: float = 300) -> dict:
    def done(o):
        return o is not None and (o.get("status") or {}).get("phase") in phases

    return client.wait_for("v1", "Pod", name, namespace, done, timeout)


def deploy_app(world, client, namespace: str) -> None:
    client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    client.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "db-config", "namespace": namespace},
            "data": {"setting": "on"},
        }
    )
    client.create(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "db", "namespace": namespace},
            "spec": {"clusterIP": "None", "selector": {"app": "db"}, "ports": [{"port": 5432}]},
        }
    )
    claim = {
        "accessModes": ["ReadWriteOnce"],
        "storageClassName": world.storage_class,
        "resources": {"requests": {"storage": "256Mi"}},
    }
    client.create(
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": "db", "namespace": namespace},
            "spec": {
                "serviceName": "db",
                "replicas": 1,
                "selector": {"matchLabels": {"app": "db"}},
                "template": {
                    "metadata": {"labels": {"app": "db"}},
                    "spec": {
                        "terminationGracePeriodSeconds": 1,
                        "containers": [
                            {
                                "name": "app",
                                "image": "busybox:1.36",
                                "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 1000000 & wait"],
                                "volumeMounts": [
                                    {"name": "data", "mountPath": "/data"},
                                    {"name": "wal", "mountPath": "/wal"},
                                ],
                            }
                        ],
                    },
                },
                "volumeClaimTemplates": [
                    {"metadata": {"name": "data"}, "spec": claim},
                    {"metadata": {"name": "wal"}, "spec": claim},
                ],
            },
        }
    )
    wait_pod(client, namespace, "db-0", ("Running",))
    exec_in(
        namespace,
        "db-0",
        "mkdir -p /data/base /wal/pg_wal /data/empty && "
        "dd if=/dev/urandom of=/data/base/16384 bs=64k count=32 2>/dev/null && "
        "dd if=/dev/urandom of=/wal/pg_wal/000000010000000000000001 bs=64k count=16 2>/dev/null && "
        "echo 16 > /data/PG_VERSION && chmod 600 /data/PG_VERSION && ln -sf /wal/pg_wal /data/pg_wal && sync",
    )


def fingerprint(namespace: str) -> str:
    return exec_in(
        namespace,
        "db-0",
        "for d in /data /wal; do cd $d && find . | sort | while read f; do "
        'if [ -L "$f" ]; then echo "$f -> $(readlink "$f")"; elif [ -f "$f" ]; then '
        'echo "$f $(stat -c %a "$f") $(sha256sum < "$f")"; else echo "$f dir"; fi; done; done',
    )


def secrets(world, client, namespace: str) -> None:
    client.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": SECRET, "namespace": namespace},
            "data": {
                "password": b64(os.environ["SNAPFLOW_PASSWORD"]),
                "AWS_ACCESS_KEY_ID": b64(os.environ["AWS_ACCESS_KEY_ID"]),
                "AWS_SECRET_ACCESS_KEY": b64(os.environ["AWS_SECRET_ACCESS_KEY"]),
            },
        }
    )


def plan_file(world, tmp_path, namespace: str, snapshot_class: str, timeout_s: float = 300) -> str:
    plan = {
        "app": {"cluster": "on-cluster", "namespace": namespace, "name": "db", "policy": "db"},
        "repository": {"url": world.repo, "endpoint": world.endpoint},
        "snapshot": {"driver": "csi", "class": snapshot_class, "timeout_s": timeout_s},
        "freeze": {"deadline_s": 60},
        "targets": [
            {
                "name": "db-0",
                "hook": "custom",
                "pod": "db-0",
                "container": "app",
                "params": {"freeze": ["touch /tmp/frozen"], "thaw": ["rm -f /tmp/frozen"]},
            }
        ],
        "volumes": [{"name": v, "pvc": pvc} for v, pvc in VOLUMES.items()],
    }
    path = tmp_path / f"plan-{namespace}.json"
    path.write_text(json.dumps(plan))
    return str(path)


def copy_pod(world, client, namespace: str, backup_id: str, volume: str, claim: str) -> None:
    """What the backup workflow's copy step is: the step image mounting the clone read-only."""
    name = f"copy-{volume}-{int(time.time())}"
    env = [{"name": "SNAPFLOW_PASSWORD", "valueFrom": {"secretKeyRef": {"name": SECRET, "key": "password"}}}]
    env += [
        {"name": k, "valueFrom": {"secretKeyRef": {"name": SECRET, "key": k}}}
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    ]
    env += [{"name": "SNAPFLOW_S3_PATH_STYLE", "value": os.environ.get("SNAPFLOW_S3_PATH_STYLE", "1")}]
    client.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "restartPolicy": "Never",
                "securityContext": {"runAsUser": 0},
                "containers": [
                    {
                        "name": "copy",
                        "image": world.image,
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["python", "-m", "steps"],
                        "args": [
                            "copy",
                            "--repo",
                            world.repo,
                            "--endpoint",
                            world.endpoint,
                            "--source",
                            "/data",
                            "--backup-id",
                            backup_id,
                            "--namespace",
                            namespace,
                            "--app",
                            "db",
                            "--volume",
                            volume,
                            "--json",
                        ],
                        "env": env,
                        "volumeMounts": [{"name": "source", "mountPath": "/data", "readOnly": True}],
                    }
                ],
                "volumes": [
                    {"name": "source", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
                ],
            },
        }
    )
    pod = wait_pod(client, namespace, name, ("Succeeded", "Failed"))
    assert pod["status"]["phase"] == "Succeeded", client.pod_log(namespace, name)


def backup(world, client, tmp_path, namespace: str, backup_id: str) -> None:
    plan = plan_file(world, tmp_path, namespace, world.snapshot_class)
    for argv in (
        ("capture", "--repo", world.repo, "--namespace", namespace, "--backup-id", backup_id, "--app", "db"),
        ("consistent-point", "--plan", plan, "--backup-id", backup_id),
    ):
        res = run_step(*argv)
        assert res.rc == 0, res.stderr
    secrets(world, client, namespace)
    for volume, pvc in VOLUMES.items():
        res = run_step(
            "prepare-clone",
            "--namespace",
            namespace,
            "--pvc",
            pvc,
            "--volume",
            volume,
            "--backup-id",
            backup_id,
            "--timeout",
            "300",
        )
        assert res.rc == 0, res.stderr
        copy_pod(world, client, namespace, backup_id, volume, res.last_line)
    res = run_step("verify", "--repo", world.repo, "--backup-id", backup_id, "--read-data", "100")
    assert res.rc == 0, res.stdout + res.stderr
    res = run_step("finalize", "--plan", plan, "--backup-id", backup_id, "--workflow-status", "Succeeded")
    assert res.rc == 0, res.stderr


def restore_args(world, backup_id: str, target: str, secrets_ns: str) -> list[str]:
    return [
        "restore-app",
        "--repo",
        world.repo,
        "--backup",
        backup_id,
        "--target-namespace",
        target,
        "--mover",
        "pod",
        "--image",
        world.image,
        "--password-secret",
        SECRET,
        "--credentials-secret",
        SECRET,
        "--secrets-namespace",
        secrets_ns,
        "--wait-ready",
        "--timeout",
        "600",
        "--json",
    ]


def test_app_deleted_and_restored_into_a_new_namespace_is_identical(real_cluster, tmp_path):
    world = real_cluster
    ns, target, keep = (
        world.namespace("sf-app"),
        world.namespace("sf-restored"),
        world.namespace("sf-secrets"),
    )
    assert run_step("init", "--repo", world.repo).rc == 0
    with world.client() as client:
        deploy_app(world, client, ns)
        before = fingerprint(ns)
        backup(world, client, tmp_path, ns, f"backup-{world.run_id}")
        exec_in(ns, "db-0", "test ! -e /tmp/frozen")  # thawed
        client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": keep}})
        secrets(world, client, keep)
        client.delete("v1", "Namespace", ns)
        client.wait_for("v1", "Namespace", ns, None, lambda o: o is None, 300)

        res = run_step(*restore_args(world, f"backup-{world.run_id}", target, keep))

        assert res.rc == 0, res.stderr
        assert fingerprint(target) == before
        assert client.get("v1", "ConfigMap", "db-config", target)["data"] == {"setting": "on"}


def test_snapshot_that_is_never_cut_fails_clearly_and_leaves_the_app_thawed(real_cluster, tmp_path):
    world = real_cluster
    ns = world.namespace("sf-fail")
    assert run_step("init", "--repo", world.repo).rc == 0
    with world.client() as client:
        deploy_app(world, client, ns)
        cls = f"sf-nodriver-{world.run_id}"
        client.create(
            {
                "apiVersion": "snapshot.storage.k8s.io/v1",
                "kind": "VolumeSnapshotClass",
                "metadata": {"name": cls},
                "driver": "nonexistent.snapflow.io",
                "deletionPolicy": "Delete",
            }
        )
        try:
            plan = plan_file(world, tmp_path, ns, cls, timeout_s=20)
            res = run_step("consistent-point", "--plan", plan, "--backup-id", f"fail-{world.run_id}")
            assert res.rc == 4
            assert (
                "VolumeSnapshot" in res.stderr and "not cut after" in res.stderr and "events:" in res.stderr
            )
            exec_in(ns, "db-0", "test ! -e /tmp/frozen")
            res = run_step(
                "finalize",
                "--plan",
                plan,
                "--backup-id",
                f"fail-{world.run_id}",
                "--workflow-status",
                "Failed",
                "--json",
            )
            assert res.rc == 0, res.stderr
            assert json.loads(res.last_line)["committed"] is False
            items, _ = client.list(
                "snapshot.storage.k8s.io/v1",
                "VolumeSnapshot",
                ns,
                label_selector=f"snapflow.io/backup-id=fail-{world.run_id}",
            )
            assert all((i["metadata"].get("deletionTimestamp")) for i in items)
        finally:
            client.delete("snapshot.storage.k8s.io/v1", "VolumeSnapshotClass", cls)


def test_restore_into_a_namespace_with_conflicts_is_refused_then_replaced(real_cluster, tmp_path):
    world = real_cluster
    ns, target = world.namespace("sf-src"), world.namespace("sf-dst")
    assert run_step("init", "--repo", world.repo).rc == 0
    with world.client() as client:
        deploy_app(world, client, ns)
        backup(world, client, tmp_path, ns, f"conflict-{world.run_id}")
        client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": target}})
        client.create(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "db-config", "namespace": target},
                "data": {"setting": "off"},
            }
        )
        args = restore_args(world, f"conflict-{world.run_id}", target, ns)

        refused = run_step(*args)
        replaced = run_step(*args, "--existing", "replace")

        assert refused.rc == 3 and "ConfigMap/db-config" in refused.stderr
        assert replaced.rc == 0, replaced.stderr
        assert client.get("v1", "ConfigMap", "db-config", target)["data"] == {"setting": "on"}
        assert fingerprint(target) == fingerprint(ns)
