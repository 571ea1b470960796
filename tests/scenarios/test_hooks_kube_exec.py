"""Hooks through the pods/exec runner, against the fake Kubernetes API server whose exec WebSocket
runs the command locally (here: next to throw-away databases). The real ``kubernetes`` client is used."""

from __future__ import annotations

import base64
import json
import shutil

import pytest

from steps.drivers.runner_kube import KubeRunner
from steps.plan import plan_from_dict
from steps.quiesce.engine import Quiescer, build_hooks
from tests.fixtures.databases import PG_PASSWORD, make_workdir
from tests.fixtures.quiesce import run_step, wait_until

pytestmark = pytest.mark.slow

NS = "shop"


def _pod(server, name: str, password: str | None = None) -> None:
    env = []
    if password is not None:
        server.create(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": f"{name}-creds", "namespace": NS},
                "data": {"password": base64.b64encode(password.encode()).decode()},
            }
        )
        env = [
            {
                "name": "DB_PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": f"{name}-creds", "key": "password"}},
            }
        ]
    server.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"containers": [{"name": "db", "image": "postgres:15", "env": env}]},
        }
    )
    server.wait_for("pods", name, NS, lambda o: (o.get("status") or {}).get("phase") == "Running")


def _plan(targets, volumes, **freeze):
    return {
        "version": 1,
        "app": {"namespace": NS, "name": "orders"},
        "snapshot": {"driver": "local"},
        "freeze": {"deadline_s": 30, "keepalive_s": 1, **freeze},
        "targets": targets,
        "volumes": volumes,
    }


def _pg_target(pg, pod="pg-0"):
    params = {k: v for k, v in pg.conn_params.items() if k != "password_file"}
    return {
        "name": pod,
        "hook": "postgresql",
        "pod": pod,
        "container": "db",
        "params": {**params, "password_env": "DB_PASSWORD"},
    }


def test_consistent_point_holds_postgresql_backup_mode_through_pod_exec(
    kube_server, kubeconfig, postgres_server, tmp_path
):
    # GIVEN a pod whose exec reaches the database, its password only in a Secret-backed env variable
    _pod(kube_server, "pg-0", password=PG_PASSWORD)
    snaps = make_workdir("snapflow-kexec-", "postgres")
    plan = _plan([_pg_target(postgres_server)], [{"name": "data-pg-0", "path": str(postgres_server.datadir)}])
    plan["snapshot"]["local_dir"] = str(snaps)
    (tmp_path / "plan.json").write_text(json.dumps(plan))

    # WHEN consistent-point runs (targets are pods: hooks go through pods/exec)
    try:
        res = run_step("consistent-point", "--plan", str(tmp_path / "plan.json"), "--backup-id", "bk-k8s")
    finally:
        shutil.rmtree(snaps, ignore_errors=True)

    # THEN the session was held over the exec stream: backup mode, label returned, app-consistent
    assert res.returncode == 0, res.stderr
    record = json.loads(res.stdout)
    assert record["verdict"] == "app-consistent", record["reasons"]
    target = record["timeline"]["targets"][0]
    assert target["method"] == "backup" and "LABEL: snapflow bk-k8s" in target["backup_label"]
    sessions = [s for s in kube_server.exec_sessions if s.pod == "pg-0"]
    assert any(s.stdin for s in sessions), "the hold must use an interactive exec session"
    assert PG_PASSWORD not in json.dumps([s.command for s in sessions]) + res.stdout + res.stderr
    assert postgres_server.sql("SELECT count(*) FROM pg_replication_slots") == "0"


def test_dropped_exec_stream_makes_the_watcher_release(kube_server, kube_client, tmp_path):
    # GIVEN a paired hook held by a watcher running in the pod
    _pod(kube_server, "app-0")
    marker = tmp_path / "frozen"
    plan = plan_from_dict(
        _plan(
            [
                {
                    "name": "app-0",
                    "hook": "custom",
                    "pod": "app-0",
                    "params": {"freeze": [f"touch {marker}"], "thaw": [f"rm -f {marker}"]},
                }
            ],
            [{"name": "v", "path": str(tmp_path)}],
        )
    )
    hooks = build_hooks(
        plan,
        "bk",
        atomic=lambda _t: True,
        runner_factory=lambda p, t: KubeRunner(NS, t.pod, api_client=kube_client),
    )
    quiescer = Quiescer(hooks, deadline_s=60)
    quiescer.freeze_all()
    try:
        assert marker.exists()
        assert quiescer.check_all() == {}

        # WHEN the holder's exec stream is dropped (the holder pod died)
        hooks[0].session.kill()

        # THEN the watcher in the pod sees end of input and thaws
        wait_until(lambda: not marker.exists(), 5, "the watcher did not release on hangup")
    finally:
        quiescer.abort_all("test")
    assert not marker.exists()


def test_thaw_through_pod_exec_is_idempotent(kube_server, kubeconfig, postgres_server, tmp_path):
    _pod(kube_server, "pg-0", password=PG_PASSWORD)
    plan = _plan([_pg_target(postgres_server)], [{"name": "d", "path": str(tmp_path)}])
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    for _ in range(2):
        res = run_step("thaw", "--plan", str(tmp_path / "plan.json"))
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["thawed"] is False
