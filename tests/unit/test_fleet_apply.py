"""snapflow apply --fleet: each cluster's rendering on that cluster, Argo objects through its Argo Server
(token from a Secret read through the kube context, or a file), the rest through the kube context (a
fake API server, the real kubernetes client); a failing cluster does not stop the others."""

from __future__ import annotations

import base64
import json
import shutil
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import yaml

from tests.fixtures import policies
from tests.fixtures.http import serving
from tests.fixtures.kube import running_fake_kube
from workflows.cli import main

EXAMPLE = policies.EXAMPLES / "fleet"
TOKEN = "eyJhbGciOi-not-a-real-token"


class _ArgoServer(BaseHTTPRequestHandler):
    """Answers the Argo Server's create calls (nothing exists yet) and records them."""

    def log_message(self, *args):
        pass

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.server.requests.append(("GET", self.path, self.headers.get("Authorization"), None))
        self._reply(404, {"message": "not found"})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        self.server.requests.append(("POST", self.path, self.headers.get("Authorization"), body))
        self._reply(200, body.get("template") or body.get("cronWorkflow"))


@pytest.fixture
def world(tmp_path: Path):
    """prod-eu: a fake API server holding the Argo token in a Secret, and a recording Argo Server;
    prod-us: a fake API server only (no argoServer: everything goes through the kube context)."""
    fleet_dir = tmp_path / "fleet"
    shutil.copytree(EXAMPLE, fleet_dir)
    with ExitStack() as stack:
        kube = {n: stack.enter_context(running_fake_kube(tmp_path / n)) for n in ("prod-eu", "prod-us")}
        argo = stack.enter_context(serving(_ArgoServer, requests=[]))
        doc = yaml.safe_load((fleet_dir / "fleet.yaml").read_text())
        doc["spec"]["clusters"][0]["argoServer"]["url"] = f"http://127.0.0.1:{argo.server_address[1]}"
        del doc["spec"]["clusters"][1]["argoServer"]
        (fleet_dir / "fleet.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
        secret = {"token": base64.b64encode(TOKEN.encode()).decode()}
        kube["prod-eu"].create(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "snapflow-deployer", "namespace": "argo"},
                "data": secret,
            }
        )
        for server in kube.values():
            for ns in ("shop", "wiki"):
                server.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": n, "cluster": {"server": s.url}} for n, s in kube.items()],
            "users": [{"name": n, "user": {"token": s.token}} for n, s in kube.items()],
            "contexts": [{"name": n, "context": {"cluster": n, "user": n}} for n in kube],
            "current-context": "prod-eu",
        }
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump(config))
        yield fleet_dir / "fleet.yaml", kube, argo, kubeconfig


@pytest.mark.slow
def test_every_cluster_gets_its_rendering_and_then_reads_as_current(world, capsys):
    fleet_path, kube, argo, kubeconfig = world
    # WHEN the fleet is applied
    code = main(["apply", "--fleet", str(fleet_path), "--kubeconfig", str(kubeconfig)])
    out, err = capsys.readouterr()
    assert code == 0, err
    # THEN prod-eu's Argo objects went to its Argo Server with the token of the Secret
    posts = [r for r in argo.requests if r[0] == "POST"]
    assert {r[2] for r in argo.requests} == {f"Bearer {TOKEN}"}
    sent = {(b.get("template") or b.get("cronWorkflow"))["metadata"]["name"] for _, _, _, b in posts}
    assert {"backup-orders-db", "backup-wiki-db", "restore-app-wiki-db"} <= sent
    assert "prod-eu: created WorkflowTemplate shop/backup-orders-db" in out.splitlines()
    # AND prod-eu's other objects, and all of prod-us's, are on the clusters, stamped with the cluster
    plan = kube["prod-eu"].get("configmaps", "snapflow-plan-orders-db", "shop")
    assert plan["metadata"]["labels"]["snapflow.io/cluster"] == "prod-eu"
    assert kube["prod-eu"].get("workflowtemplates", "backup-orders-db", "shop") is None
    assert kube["prod-us"].get("workflowtemplates", "backup-orders-db", "shop") is not None
    # AND the token is never shown
    assert TOKEN not in out + err
    # AND prod-us reads as current; applied again, everything is updated in place
    assert (
        main(["fleet", "status", str(fleet_path), "--kubeconfig", str(kubeconfig)]) == 1
    )  # prod-eu's Argo objects live elsewhere
    assert (
        "prod-us (context prod-us): 49 current, 0 out of date, 0 missing, 0 unknown"
        in capsys.readouterr().out
    )
    assert main(["apply", "--fleet", str(fleet_path), "--kubeconfig", str(kubeconfig)]) == 0
    assert "prod-us: updated CronWorkflow shop/backup-orders-db" in capsys.readouterr().out.splitlines()


@pytest.mark.slow
def test_a_cluster_whose_token_cannot_be_read_fails_alone(world, capsys):
    fleet_path, kube, argo, kubeconfig = world
    kube["prod-eu"].delete("secrets", "snapflow-deployer", "argo")
    code = main(["apply", "--fleet", str(fleet_path), "--kubeconfig", str(kubeconfig)])
    _, err = capsys.readouterr()
    assert code == 1
    (line,) = [x for x in err.splitlines() if "cluster prod-eu" in x]
    assert line.startswith(f"{fleet_path}: cluster prod-eu: Secret/snapflow-deployer in namespace argo: ")
    assert "not applied: prod-eu" in err
    assert not [r for r in argo.requests if r[0] == "POST"]
    assert kube["prod-us"].get("workflowtemplates", "backup-orders-db", "shop") is not None


def test_apply_with_a_fleet_and_a_server_is_refused_in_one_line(capsys):
    code = main(["apply", "--fleet", str(EXAMPLE / "fleet.yaml"), "--server", "https://argo:2746"])
    assert code == 2
    assert (
        capsys.readouterr().err
        == "--server: expected none with --fleet (each cluster names its argoServer)\n"
    )


def test_a_dry_run_says_which_way_each_object_goes(capsys):
    assert main(["apply", "--fleet", str(EXAMPLE / "fleet.yaml"), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "prod-eu: would apply WorkflowTemplate shop/backup-orders-db (through the Argo Server)" in lines
    assert "prod-us: would apply ConfigMap shop/snapflow-plan-orders-db (through the kube context)" in lines
    assert (
        "prod-eu: would apply ClusterRole snapflow.shop.orders-db-capture (through the kube context)" in lines
    )
