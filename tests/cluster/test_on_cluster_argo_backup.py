"""The rendered workflows on a real Argo Workflows controller (3.7.x, 4.0.x or 4.1.x): what only a real
controller, kubelet and admission chain show.

Deselected by default; run with ``pytest -m on_cluster tests/cluster`` (docs/user/on-cluster-tests.md).
Each test renders a policy, creates every rendered object in its own namespace and creates Workflows
from the rendered WorkflowTemplates (no Argo Server needed).
"""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from tests.cluster.argo_world import (
    ARGO,
    DONE,
    committed_backups,
    controller_version,
    describe,
    exit_code,
    fingerprint,
    init_repository,
    metric,
    pod_nodes,
    run_cli,
    run_pod,
    scrape_metrics,
    setup_app,
)

pytestmark = pytest.mark.on_cluster

LAST_COMMITTED = "snapflow_last_committed_backup_timestamp_seconds"


def test_a_backup_without_a_quiesce_hook_succeeds_and_is_committed(real_cluster, tmp_path):
    # The backup's DAG outputs read nodes that a policy without hooks never runs: on Argo >= 3.7.16 /
    # 4.0.7 an output without valueFrom.default fails main, and finalize then refuses the commit.
    world = real_cluster
    init_repository(world)
    with world.client() as client:
        version = controller_version(client)
        app = setup_app(world, client, tmp_path, "sf-nohook", ["files-a", "files-b"])
        try:
            app.apply()

            wf = app.run("backup")

            assert wf["status"]["phase"] == "Succeeded", f"Argo {version}\n{describe(wf)}"
            record = committed_backups(world).get(wf["metadata"]["name"])
            assert record is not None, f"Argo {version}: no committed backup {wf['metadata']['name']}"
            assert sorted(v["name"] for v in record["volumes"]) == ["files-a", "files-b"]
            assert all(v["state"] == "ok" and v["snapshot"] for v in record["volumes"])
        finally:
            app.cleanup()


def test_a_refused_commit_does_not_move_the_last_committed_backup_metric(real_cluster, tmp_path):
    world = real_cluster
    init_repository(world)
    with world.client() as client:
        version = controller_version(client)
        app = setup_app(world, client, tmp_path, "sf-metrics", ["files-a"])
        try:
            app.apply()
            # GIVEN one committed backup: the gauge holds its start time
            first = app.run("backup")
            assert first["status"]["phase"] == "Succeeded", describe(first)
            started = first["metadata"]["creationTimestamp"]
            before = scrape_metrics(client)
            gauge = metric(before, LAST_COMMITTED, namespace=app.namespace, app=app.name)
            assert gauge is not None, f"Argo {version}: no {LAST_COMMITTED} for {app.namespace}/{app.name}"
            assert gauge == datetime.fromisoformat(started.replace("Z", "+00:00")).timestamp()
            failed_before = _failed_runs(before, app)

            # WHEN a second backup's every step passes but finalize must refuse: once the copies run, its
            # plan names a volume that has no snapshot in the repository
            second = app.submit("backup")
            client.wait_for(
                ARGO,
                "Workflow",
                second,
                app.namespace,
                lambda o: (
                    o is not None
                    and (bool(pod_nodes(o, "copy-files-a")) or (o.get("status") or {}).get("phase") in DONE)
                ),
                900,
            )
            cm = client.get("v1", "ConfigMap", f"snapflow-plan-{app.name}", app.namespace)
            key = next(iter(cm["data"]))
            plan = json.loads(cm["data"][key])
            plan["volumes"].append({**plan["volumes"][0], "name": "ghost", "pvc": "ghost"})
            client.patch(
                "v1",
                "ConfigMap",
                cm["metadata"]["name"],
                app.namespace,
                {"data": {key: json.dumps(plan)}},
            )
            wf = app.wait(second)

            # THEN finalize failed (the backup is not committed), and the gauge did not move
            finalize = pod_nodes(wf, "finalize")
            assert finalize and finalize[-1]["phase"] != "Succeeded", describe(wf)
            assert exit_code(finalize[-1]) == "3", describe(wf)
            assert wf["status"]["phase"] != "Succeeded", describe(wf)
            assert second not in committed_backups(world)
            after = scrape_metrics(client)
            assert metric(after, LAST_COMMITTED, namespace=app.namespace, app=app.name) == gauge, (
                f"Argo {version}: {LAST_COMMITTED} moved after a refused commit (first backup started "
                f"{started})"
            )
            assert _failed_runs(after, app) == failed_before + 1, "the refused backup is counted as Failed"
        finally:
            app.cleanup()


def _failed_runs(samples, app) -> float:
    return sum(
        v
        for n, lab, v in samples
        if n.startswith("snapflow_workflow_runs")
        and lab.get("namespace") == app.namespace
        and lab.get("app") == app.name
        and lab.get("status") in ("Failed", "Error")
    )


def test_every_step_pod_is_admitted_under_baseline_and_the_backup_commits(real_cluster, tmp_path):
    world = real_cluster
    init_repository(world)
    with world.client() as client:
        app = setup_app(
            world,
            client,
            tmp_path,
            "sf-baseline",
            ["files-a"],
            labels={"pod-security.kubernetes.io/enforce": "baseline"},
        )
        try:
            app.apply()

            wf = app.run("backup")

            events, _ = client.list("v1", "Event", app.namespace)
            rejected = [e["message"] for e in events if "violates PodSecurity" in (e.get("message") or "")]
            assert not rejected, rejected
            assert wf["status"]["phase"] == "Succeeded", describe(wf)
            assert wf["metadata"]["name"] in committed_backups(world)
            ran = {n["templateName"] for n in pod_nodes(wf)}
            assert {"capture", "consistent-point", "copy-files-a", "verify", "finalize"} <= ran, ran
        finally:
            app.cleanup()


def test_preflight_names_the_copy_template_as_rejected_by_a_restricted_namespace(real_cluster, tmp_path):
    world = real_cluster
    with world.client() as client:
        app = setup_app(
            world,
            client,
            tmp_path,
            "sf-restricted",
            ["files-a"],
            labels={"pod-security.kubernetes.io/enforce": "restricted"},
            data=False,
        )
        try:
            app.apply()

            res = run_cli("preflight", str(app.policy_file), "--skip-repository", "--json")

            assert res.rc == 3, res.stdout + res.stderr
            checks = json.loads(res.stdout)["policies"][0]["checks"]
            rejected = [
                c["message"] for c in checks if c["check"] == "pod-security" and c["status"] == "fail"
            ]
            assert any(
                f"enforce=restricted rejects WorkflowTemplate {app.template('backup')}, template copy-files-a"
                in m
                for m in rejected
            ), rejected
            assert res.stderr.strip().splitlines()[-1].startswith("error: preflight: "), res.stderr
            # nothing ran: no workflow, no pod
            assert client.list(ARGO, "Workflow", app.namespace)[0] == []
            assert client.list("v1", "Pod", app.namespace)[0] == []
        finally:
            app.cleanup()


def test_the_volume_restore_refuses_a_non_empty_pvc_then_overwrites_it_when_told(real_cluster, tmp_path):
    world = real_cluster
    init_repository(world)
    with world.client() as client:
        app = setup_app(world, client, tmp_path, "sf-restore", ["files-a", "target"])
        try:
            app.apply()
            source = fingerprint(client, app.namespace, "files-a")
            backup = app.run("backup")
            assert backup["status"]["phase"] == "Succeeded", describe(backup)
            record = committed_backups(world)[backup["metadata"]["name"]]
            snapshot = next(v["snapshot"] for v in record["volumes"] if v["name"] == "files-a")
            # the target holds other data at the same paths
            run_pod(
                client,
                app.namespace,
                "overwrite-target",
                ["target"],
                "rm -rf /v/target/* && mkdir -p /v/target/dir && echo old > /v/target/dir/blob && "
                "echo old > /v/target/name && sync",
            )
            before = fingerprint(client, app.namespace, "target")

            refused = app.run("restore", snapshot=snapshot, **{"target-pvc": "target"})
            after_refusal = fingerprint(client, app.namespace, "target")
            replaced = app.run(
                "restore", snapshot=snapshot, **{"target-pvc": "target", "overwrite": "always"}
            )

            attempts = pod_nodes(refused, "restore")
            assert refused["status"]["phase"] == "Failed", describe(refused)
            assert len(attempts) == 1 and exit_code(attempts[0]) == "2", describe(refused)
            assert after_refusal == before
            assert replaced["status"]["phase"] == "Succeeded", describe(replaced)
            restored = fingerprint(client, app.namespace, "target")
            assert restored == source
        finally:
            app.cleanup()
