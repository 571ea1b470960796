"""Helpers of the on-cluster tests that run the rendered workflows on a real Argo Workflows controller.

A policy is rendered exactly as ``snapflow render`` does, every object is created in the test's own
namespace (the ClusterRoles and their bindings too, deleted afterwards), and workflows are created
from the rendered WorkflowTemplates as Workflow objects (what ``argo submit --from`` and ``snapflow
submit`` send), so no Argo Server is needed: only the workflow controller.

Settings, besides those of ``real_cluster`` (tests/fixtures/cluster.py):

- ``SNAPFLOW_TEST_ARGO_NAMESPACE``: the controller's namespace (default ``argo``);
- ``SNAPFLOW_TEST_ARGO_METRICS``: the API server path of the controller's metrics (default: port
  9090 of each pod labelled ``app=workflow-controller`` through the API server's pod proxy, https
  then http, as ``kubectl get --raw``); ``kubectl`` must be on PATH.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.fixtures.k8s_app import StepResult, run_step

ARGO = "argoproj.io/v1alpha1"
CREDENTIALS_SECRET = "sf-s3"
PASSWORD_SECRET = "sf-password"
DONE = ("Succeeded", "Failed", "Error")
CLUSTER_KINDS = ("ClusterRole", "ClusterRoleBinding")


def argo_namespace() -> str:
    return os.environ.get("SNAPFLOW_TEST_ARGO_NAMESPACE", "argo")


def kubectl(*argv: str, check: bool = False, timeout: float = 60) -> subprocess.CompletedProcess:
    exe = shutil.which("kubectl")
    if exe is None:
        pytest.fail("on_cluster tests need kubectl on PATH (see docs/user/on-cluster-tests.md)")
    args = [exe, *argv]
    if os.environ.get("SNAPFLOW_KUBE_CONTEXT"):
        args += ["--context", os.environ["SNAPFLOW_KUBE_CONTEXT"]]
    res = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(argv)}: exit {res.returncode}: {res.stderr.strip()}")
    return res


def controller_version(client) -> str:
    """The workflow controller's image tag (``v3.7.16``); fails the test when there is no controller."""
    ns = argo_namespace()
    dep = client.get_or_none("apps/v1", "Deployment", "workflow-controller", ns)
    if dep is None:
        pytest.fail(
            f"on_cluster Argo tests need the Argo Workflows controller (Deployment workflow-controller in "
            f"namespace {ns}; set SNAPFLOW_TEST_ARGO_NAMESPACE), see docs/user/on-cluster-tests.md"
        )
    image = dep["spec"]["template"]["spec"]["containers"][0]["image"]
    return image.rpartition(":")[2] if ":" in image.rpartition("/")[2] else "latest"


def run_cli(*argv: str) -> StepResult:
    """``snapflow ARGV`` in this process."""
    from workflows import cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main([str(a) for a in argv])
    return StepResult(rc, out.getvalue(), err.getvalue())


@dataclass
class ArgoApp:
    """One policy of the test, rendered and applied in its namespace."""

    world: object
    client: object
    namespace: str
    name: str
    policy_file: Path
    cluster_objects: list[tuple[str, str, str]] = field(default_factory=list)

    def template(self, pipeline: str) -> str:
        return f"{pipeline}-{self.name}"

    def account(self, step: str) -> str:
        return f"snapflow-{self.name}-{step}"

    def rendered(self) -> list[dict]:
        from workflows.render import check_rendering, render_files

        rendering = render_files([self.policy_file])
        check_rendering(rendering)
        return [o.obj for o in rendering.ordered()]

    def apply(self) -> None:
        for obj in self.rendered():
            if obj["kind"] in CLUSTER_KINDS:
                self.cluster_objects.append((obj["apiVersion"], obj["kind"], obj["metadata"]["name"]))
            self.client.create(obj)

    def cleanup(self) -> None:
        for api_version, kind, name in self.cluster_objects:
            with contextlib.suppress(Exception):
                self.client.delete(api_version, kind, name)

    def submit(self, pipeline: str, **parameters: str) -> str:
        wf = self.client.create(
            {
                "apiVersion": ARGO,
                "kind": "Workflow",
                "metadata": {"generateName": f"{self.template(pipeline)}-", "namespace": self.namespace},
                "spec": {
                    "workflowTemplateRef": {"name": self.template(pipeline)},
                    "arguments": {"parameters": [{"name": k, "value": v} for k, v in parameters.items()]},
                },
            }
        )
        return wf["metadata"]["name"]

    def wait(self, workflow: str, timeout: float = 1200) -> dict:
        def done(o):
            return o is not None and (o.get("status") or {}).get("phase") in DONE

        return self.client.wait_for(ARGO, "Workflow", workflow, self.namespace, done, timeout)

    def run(self, pipeline: str, timeout: float = 1200, **parameters: str) -> dict:
        return self.wait(self.submit(pipeline, **parameters), timeout)


def policy_doc(
    world,
    namespace: str,
    name: str,
    pvcs: list[str],
    quiesce: list[dict] | None = None,
    workflow: dict | None = None,
) -> dict:
    spec: dict = {
        "app": name,
        "volumes": [{"pvc": p, "name": p} for p in pvcs],
        "snapshot": {"className": world.snapshot_class, "timeoutSeconds": 300},
        "repository": {
            "url": world.repo,
            "endpoint": world.endpoint,
            "pathStyle": os.environ.get("SNAPFLOW_S3_PATH_STYLE", "1") not in ("0", "false"),
            "credentialsSecret": {"name": CREDENTIALS_SECRET},
            "passwordSecret": {"name": PASSWORD_SECRET},
        },
        "image": world.image,
        "imagePullPolicy": "IfNotPresent",
        "verify": {"readDataPercent": 100},
    }
    if quiesce:
        spec["quiesce"] = quiesce
    if workflow:
        spec["workflow"] = workflow
    return {
        "apiVersion": "snapflow.io/v1alpha1",
        "kind": "ProtectionPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def create_namespace(client, namespace: str, labels: dict[str, str] | None = None) -> None:
    meta: dict = {"name": namespace}
    if labels:
        meta["labels"] = labels
    client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": meta})


def repository_secrets(client, namespace: str) -> None:
    client.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": CREDENTIALS_SECRET, "namespace": namespace},
            "stringData": {k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")},
        }
    )
    client.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": PASSWORD_SECRET, "namespace": namespace},
            "stringData": {"password": os.environ["SNAPFLOW_PASSWORD"]},
        }
    )


BASELINE_POD = {
    "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
    "terminationGracePeriodSeconds": 1,
}


def pvc(world, client, namespace: str, name: str) -> None:
    client.create(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": world.storage_class,
                "resources": {"requests": {"storage": "128Mi"}},
            },
        }
    )


def run_pod(client, namespace: str, name: str, claims: list[str], script: str, timeout: float = 300) -> str:
    """A busybox pod mounting ``claims`` at /v/CLAIM that runs ``script``; returns its log (asserts it
    succeeded) and deletes it."""
    client.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                **BASELINE_POD,
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "main",
                        "image": "busybox:1.36",
                        "command": ["sh", "-c", script],
                        "volumeMounts": [{"name": c, "mountPath": f"/v/{c}"} for c in claims],
                    }
                ],
                "volumes": [{"name": c, "persistentVolumeClaim": {"claimName": c}} for c in claims],
            },
        }
    )

    def done(o):
        return o is not None and (o.get("status") or {}).get("phase") in ("Succeeded", "Failed")

    pod = client.wait_for("v1", "Pod", name, namespace, done, timeout)
    log = client.pod_log(namespace, name, tail_lines=10000)
    client.delete("v1", "Pod", name, namespace)
    client.wait_for("v1", "Pod", name, namespace, lambda o: o is None, 120)
    assert pod["status"]["phase"] == "Succeeded", f"pod {namespace}/{name}: {log}"
    return log


def write_data(client, namespace: str, claims: list[str]) -> None:
    script = " && ".join(
        f"mkdir -p /v/{c}/dir && dd if=/dev/urandom of=/v/{c}/dir/blob bs=64k count=16 2>/dev/null && "
        f"echo {c} > /v/{c}/name && chmod 640 /v/{c}/name"
        for c in claims
    )
    run_pod(client, namespace, f"writer-{int(time.time())}", claims, script + " && sync")


def fingerprint(client, namespace: str, claim: str) -> dict[str, str]:
    """path -> 'MODE SHA256' of every file of the PVC (lost+found left out)."""
    log = run_pod(
        client,
        namespace,
        f"reader-{int(time.time() * 1000) % 10**9}",
        [claim],
        f"cd /v/{claim} && find . -type f ! -path './lost+found/*' | sort | "
        'while read f; do echo "$f $(stat -c %a "$f") $(sha256sum < "$f" | cut -d" " -f1)"; done',
    )
    out = {}
    for line in log.splitlines():
        path, _, rest = line.partition(" ")
        if path.startswith("./"):
            out[path] = rest
    return out


def setup_app(
    world,
    client,
    tmp_path: Path,
    prefix: str,
    pvcs: list[str],
    labels: dict[str, str] | None = None,
    quiesce: list[dict] | None = None,
    workflow: dict | None = None,
    data: bool = True,
) -> ArgoApp:
    """A namespace with PVCs holding data, the repository's Secrets, and the rendered policy applied."""
    ns = world.namespace(prefix)
    name = prefix.removeprefix("sf-")
    create_namespace(client, ns, labels)
    repository_secrets(client, ns)
    for p in pvcs:
        pvc(world, client, ns, p)
    if data:
        write_data(client, ns, pvcs)
    path = tmp_path / f"policy-{ns}.yaml"
    path.write_text(yaml.safe_dump(policy_doc(world, ns, name, pvcs, quiesce, workflow)))
    app = ArgoApp(world, client, ns, name, path)
    return app


def init_repository(world) -> None:
    res = run_step("init", "--repo", world.repo)
    assert res.rc == 0, res.stderr


def committed_backups(world) -> dict[str, dict]:
    res = run_step("backups", "--repo", world.repo, "--json")
    assert res.rc == 0, res.stderr
    return {i["backup_id"]: i for i in json.loads(res.stdout) if not i.get("damaged")}


def pod_nodes(wf: dict, template: str | None = None) -> list[dict]:
    """The Pod nodes of a workflow (one per attempt), oldest first; only ``template``'s when given."""
    nodes = [
        n
        for n in ((wf.get("status") or {}).get("nodes") or {}).values()
        if n.get("type") == "Pod" and (template is None or n.get("templateName") == template)
    ]
    return sorted(nodes, key=lambda n: n.get("startedAt") or "")


def exit_code(node: dict) -> str | None:
    return (node.get("outputs") or {}).get("exitCode")


def describe(wf: dict) -> str:
    """One line per node, for assertion messages."""
    lines = [f"workflow {wf['metadata']['name']}: {(wf.get('status') or {}).get('phase')}"]
    for n in ((wf.get("status") or {}).get("nodes") or {}).values():
        lines.append(
            f"  {n.get('displayName')} [{n.get('templateName')}] {n.get('phase')} "
            f"exit={exit_code(n)} {n.get('message') or ''}"
        )
    return "\n".join(lines)


_SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def scrape_metrics(client) -> list[tuple[str, dict[str, str], float]]:
    """The workflow controller's metrics as (name, labels, value) samples, names without Argo's
    ``argo_workflows_`` prefix. Read through the API server's proxy from every controller pod (only the
    leader reports metrics), https then http, or from ``SNAPFLOW_TEST_ARGO_METRICS``."""
    if os.environ.get("SNAPFLOW_TEST_ARGO_METRICS"):
        groups = [[os.environ["SNAPFLOW_TEST_ARGO_METRICS"]]]
    else:
        pods, _ = client.list("v1", "Pod", argo_namespace(), label_selector="app=workflow-controller")
        groups = [
            [
                f"/api/v1/namespaces/{argo_namespace()}/pods/{scheme}:{p['metadata']['name']}:9090/proxy/metrics"
                for scheme in ("https", "http")
            ]
            for p in pods
        ]
    samples: list[tuple[str, dict[str, str], float]] = []
    errors: list[str] = []
    answered = False
    for paths in groups:
        for path in paths:
            res = kubectl("get", "--raw", path)
            if res.returncode != 0:
                errors.append(f"{path}: {res.stderr.strip()}")
                continue
            answered = True
            for line in res.stdout.splitlines():
                m = _SAMPLE.match(line)
                if m and not line.startswith("#"):
                    name = m.group(1).removeprefix("argo_workflows_")
                    samples.append((name, dict(_LABEL.findall(m.group(2) or "")), float(m.group(3))))
            break
    if not answered:
        pytest.fail(
            "cannot scrape the workflow controller's metrics (set SNAPFLOW_TEST_ARGO_METRICS): "
            + ("; ".join(errors) or f"no pod labelled app=workflow-controller in {argo_namespace()}")
        )
    return samples


def metric(samples, name: str, **labels: str) -> float | None:
    found = [v for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in labels.items())]
    return sum(found) if found else None
