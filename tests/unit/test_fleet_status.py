"""snapflow fleet status: per cluster, read through its kube context with the real kubernetes client
(two fake API servers and one address nobody answers on), what is current, out of date by render-hash,
missing and unknown; a cluster that cannot be read is one line and the others are still shown."""

from __future__ import annotations

import json
import shutil
import socket
from contextlib import ExitStack
from pathlib import Path

import pytest
import yaml

from tests.fixtures import policies
from tests.fixtures.kube import running_fake_kube
from workflows.cli import main
from workflows.fleetdef.model import load_fleet
from workflows.fleetdef.render import CLUSTER_LABEL, render_fleet

EXAMPLE = policies.EXAMPLES / "fleet"


def _closed_port() -> int:
    """A port the OS just handed out and nobody listens on any more."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def world(tmp_path: Path):
    """The example fleet plus a third cluster 'dr'; prod-eu and prod-us are fake API servers, dr's
    context points at a closed port. One kubeconfig holds the three contexts."""
    fleet_dir = tmp_path / "fleet"
    shutil.copytree(EXAMPLE, fleet_dir)
    doc = yaml.safe_load((fleet_dir / "fleet.yaml").read_text())
    doc["spec"]["clusters"].append(
        {"name": "dr", "labels": {"env": "prod", "region": "eu"}, "kubeContext": "dr"}
    )
    (fleet_dir / "fleet.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    with ExitStack() as stack:
        servers = {
            name: stack.enter_context(running_fake_kube(tmp_path / name)) for name in ("prod-eu", "prod-us")
        }
        urls = {name: s.url for name, s in servers.items()} | {"dr": f"http://127.0.0.1:{_closed_port()}"}
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": n, "cluster": {"server": u}} for n, u in urls.items()],
            "users": [{"name": n, "user": {"token": servers[n].token} if n in servers else {}} for n in urls],
            "contexts": [{"name": n, "context": {"cluster": n, "user": n}} for n in urls],
            "current-context": "prod-eu",
        }
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump(config))
        yield fleet_dir / "fleet.yaml", servers, kubeconfig


def _deploy(server, fleet_path: Path, cluster: str) -> list[dict]:
    """What ``kubectl apply -k OUT/CLUSTER`` would create."""
    (result,) = [r for r in render_fleet(load_fleet(fleet_path)) if r.name == cluster]
    objects = [o.obj for o in result.rendering.ordered()]
    for obj in objects:
        server.create(obj)
    return objects


def _status(capsys, fleet_path: Path, kubeconfig: Path, *extra: str) -> tuple[int, str, str]:
    code = main(["fleet", "status", str(fleet_path), "--kubeconfig", str(kubeconfig), *extra])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_a_deployed_cluster_is_current_and_the_unreachable_one_does_not_hide_the_others(world, capsys):
    # GIVEN prod-eu runs what the fleet renders for it, prod-us runs nothing, dr does not answer
    fleet_path, servers, kubeconfig = world
    deployed = _deploy(servers["prod-eu"], fleet_path, "prod-eu")
    # WHEN the status is asked for
    code, out, err = _status(capsys, fleet_path, kubeconfig)
    lines = out.splitlines()
    # THEN prod-eu is fully current, prod-us misses everything, dr is one line saying it is unreachable
    assert f"prod-eu (context prod-eu): {len(deployed)} current, 0 out of date, 0 missing, 0 unknown" in lines
    us = next(line for line in lines if line.startswith("prod-us (context prod-us): "))
    assert us.startswith("prod-us (context prod-us): 0 current, 0 out of date, 49 missing, 0 unknown")
    assert "  missing      WorkflowTemplate shop/backup-orders-db" in lines
    (dr,) = [line for line in lines if line.startswith("dr")]
    assert dr.startswith("dr (context dr): unreachable: ")
    assert code == 1 and "not current: prod-us, dr" in err and "Traceback" not in err
    # AND no credential of the kubeconfig is shown
    assert all(s.token not in out + err for s in servers.values())


@pytest.mark.slow
def test_drift_is_told_apart_missing_out_of_date_and_unknown(world, capsys):
    fleet_path, servers, kubeconfig = world
    eu = servers["prod-eu"]
    _deploy(eu, fleet_path, "prod-eu")
    # GIVEN one template deleted, one Snapflow object the fleet does not render, and prod-eu's
    # schedule changed in the fleet file since the last deployment
    eu.delete("workflowtemplates", "restore-wiki-db", "wiki")
    eu.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "snapflow-plan-old-db",
                "namespace": "shop",
                "labels": {"app.kubernetes.io/managed-by": "snapflow", CLUSTER_LABEL: "prod-eu"},
            },
            "data": {"plan.json": "{}"},
        }
    )
    doc = yaml.safe_load(fleet_path.read_text())
    doc["spec"]["overrides"].append(
        {"cluster": "prod-eu", "policies": ["wiki/wiki-db"], "schedule": {"cron": "0 4 * * *"}}
    )
    fleet_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    # WHEN the status is asked for, as JSON
    code, out, _ = _status(capsys, fleet_path, kubeconfig, "--output", "json")
    report = json.loads(out)
    (eu_status,) = [c for c in report["clusters"] if c["cluster"] == "prod-eu"]
    not_current = {
        (o["state"], o["kind"], o["namespace"], o["name"])
        for o in eu_status["objects"]
        if o["state"] != "current"
    }
    # THEN each difference is named with its state
    assert ("missing", "WorkflowTemplate", "wiki", "restore-wiki-db") in not_current
    assert ("unknown", "ConfigMap", "shop", "snapflow-plan-old-db") in not_current
    assert ("out of date", "CronWorkflow", "wiki", "backup-wiki-db") in not_current
    # AND nothing of the shop's policy, whose rendering did not change, is out of date
    assert {o for o in not_current if o[2] == "shop"} == {
        ("unknown", "ConfigMap", "shop", "snapflow-plan-old-db")
    }
    assert eu_status["inSync"] is False and code == 1


@pytest.mark.slow
def test_a_context_the_kubeconfig_lacks_is_reported_for_that_cluster_only(world, capsys):
    fleet_path, servers, kubeconfig = world
    _deploy(servers["prod-us"], fleet_path, "prod-us")
    doc = yaml.safe_load(fleet_path.read_text())
    doc["spec"]["clusters"][0]["kubeContext"] = "prod-eu-typo"
    fleet_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    code, out, _ = _status(capsys, fleet_path, kubeconfig)
    lines = out.splitlines()
    (eu,) = [line for line in lines if line.startswith("prod-eu")]
    assert eu.startswith("prod-eu (context prod-eu-typo): cannot read: ") and "prod-eu-typo" in eu[30:]
    assert "prod-us (context prod-us): 49 current, 0 out of date, 0 missing, 0 unknown" in lines
    assert code == 1


def test_a_bad_fleet_file_is_one_line_and_exit_status_2(tmp_path, capsys):
    path = tmp_path / "fleet.yaml"
    path.write_text(
        "apiVersion: snapflow.io/v1alpha1\nkind: Fleet\nmetadata: {name: f}\nspec: {clusters: [], extra: 1}\n"
    )
    assert main(["fleet", "status", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert f"{path}: spec.extra: unknown field (expected one of: clusters, overrides, policies)" in err
