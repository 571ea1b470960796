"""An etcd policy on a managed cluster: lint refuses endpoints of a managed control plane, and preflight
fails a policy without endpoints on a cluster that shows no control-plane node, pointing to app-centric
protection."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import yaml

from steps.drivers.kube import KubeClient, KubeSettings
from workflows.cluster_preflight import preflight_policy
from workflows.policy import load_policies

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = yaml.safe_load((ROOT / "examples" / "sources" / "etcd.yaml").read_text())


def _write(tmp_path, doc) -> Path:
    path = tmp_path / "etcd.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_lint_refuses_the_endpoints_of_a_managed_control_plane(tmp_path):
    doc = copy.deepcopy(EXAMPLE)
    doc["spec"]["source"]["etcd"]["endpoints"] = ["https://ABC123.gr7.eu-west-1.eks.amazonaws.com:2379"]
    path = _write(tmp_path, doc)
    proc = subprocess.run(
        [sys.executable, "-m", "workflows", "lint", str(path)], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"{path}: spec.source.etcd.endpoints: ")
    assert "managed control plane (Amazon EKS)" in line and "app policies" in line


def _preflight(kube_server, tmp_path, policy) -> dict:
    kubeconfig = kube_server.write_kubeconfig(tmp_path / "kubeconfig")
    with KubeClient(KubeSettings.from_env(kubeconfig=str(kubeconfig))) as client:
        items = preflight_policy(client, policy, repository=False).items
    return {c["check"]: (c["status"], c["message"]) for c in items}


def test_preflight_tells_a_managed_cluster_from_one_with_a_control_plane(kube_server, tmp_path):
    # GIVEN an etcd policy without endpoints (the pod runs on a control-plane node) and a cluster that
    # shows only a worker node
    doc = copy.deepcopy(EXAMPLE)
    doc["spec"]["source"]["etcd"].pop("endpoints", None)
    policy = load_policies([_write(tmp_path, doc)])[0].policy
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": policy.workflow_namespace}}
    kube_server.create(namespace)
    kube_server.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "worker-1"}})
    # THEN preflight fails it as a managed cluster, pointing to app policies
    status, message = _preflight(kube_server, tmp_path, policy)["etcd"]
    assert status == "fail" and "managed cluster" in message and "app policies" in message
    # ... and passes once a control-plane node is there
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "cp-1"}}
    node["metadata"]["labels"] = {"node-role.kubernetes.io/control-plane": ""}
    kube_server.create(node)
    assert _preflight(kube_server, tmp_path, policy)["etcd"][0] == "ok"
