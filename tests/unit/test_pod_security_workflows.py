"""Every pod the rendered workflows create, against Pod Security baseline and restricted: each example
renders pods baseline admits; restricted rejects exactly the ones that touch the app's files as root
(the copy and the single-volume restore). Preflight reads the namespace's enforce level from the API
(the fake API server) and reports each rejected template with its rule."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from steps.manifests.cluster_checks import Checks
from steps.manifests.podsecurity import check, violations
from tests.fixtures.policies import example_files
from workflows.pod_security import argo_pods, check_pod_security, mover_pod, pod_templates
from workflows.policy import load_policies
from workflows.render import render_files

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = example_files()


def _pods(path: Path) -> dict[tuple[str, str], tuple[dict, dict]]:
    """(WorkflowTemplate, template) → (pod spec, annotations), from the real rendering."""
    out = {}
    for o in render_files([path]).objects:
        if o.kind == "WorkflowTemplate":
            for name, spec, notes in argo_pods(o.obj):
                out[(o.name, name)] = (spec, notes)
    return out


def _touches_app_files(spec: dict) -> bool:
    """The pod mounts the app's data (the clone to copy, or the PVC to restore into)."""
    return any(v["name"] == "data" and "persistentVolumeClaim" in v for v in spec["volumes"])


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_pod_passes_baseline_and_only_the_data_movers_need_more(path):
    pods = _pods(path)
    assert len(pods) >= 10  # every pipeline's steps, not an empty rendering
    # baseline admits every pod
    assert {
        k: violations(s, "baseline", a) for k, (s, a) in pods.items() if violations(s, "baseline", a)
    } == {}
    # restricted rejects exactly the pods that touch the app's files, all of them root by design ...
    rejected = {k for k, (s, a) in pods.items() if check(s, "restricted", a)}
    assert rejected == {k for k, (s, _a) in pods.items() if _touches_app_files(s)}
    assert {t.split("-")[0] for _wt, t in rejected} == {"copy", "restore"}
    for key in rejected:
        spec, notes = pods[key]
        main = spec["containers"][0]["securityContext"]
        assert main["runAsUser"] == 0
        assert {v.control for v in check(spec, "restricted", notes)} == {
            "Running as Non-root",
            "Running as Non-root user",
            "Capabilities",
        }
        assert main["allowPrivilegeEscalation"] is False and main["capabilities"]["drop"] == ["ALL"]
    # ... and the copy adds only DAC_OVERRIDE (DAC_READ_SEARCH is not in baseline's set)
    copies = [pods[k][0] for k in rejected if k[1].startswith("copy-")]
    assert copies
    for spec in copies:
        assert spec["containers"][0]["securityContext"]["capabilities"]["add"] == ["DAC_OVERRIDE"]
        data = next(v for v in spec["volumes"] if v["name"] == "data")
        assert data["persistentVolumeClaim"]["readOnly"] is True


def test_the_postgresql_example_in_detail():
    pods = _pods(ROOT / "examples" / "postgresql-statefulset.yaml")
    rejected = sorted(k for k, (s, a) in pods.items() if check(s, "restricted", a))
    assert rejected == [("backup-orders-db", "copy-data"), ("restore-orders-db", "restore")]


def test_the_restore_mover_needs_baseline_as_root_and_passes_restricted_without():
    for path in EXAMPLES:
        for item in load_policies([path]):
            root = mover_pod(item.policy)["spec"]
            assert violations(root, "baseline") == []
            assert violations(root, "restricted")
            assert violations(mover_pod(item.policy, run_as_root=False)["spec"], "restricted") == []


def test_argo_pods_take_workflow_wide_volumes_security_and_sidecars():
    wt = {
        "metadata": {"name": "w"},
        "spec": {
            "securityContext": {"runAsNonRoot": True},
            "volumes": [{"name": "shared", "hostPath": {"path": "/var"}}],
            "podMetadata": {
                "annotations": {"container.apparmor.security.beta.kubernetes.io/main": "unconfined"}
            },
            "templates": [
                {"name": "main", "dag": {"tasks": []}},
                {
                    "name": "step",
                    "container": {"image": "i"},
                    "initContainers": [{"name": "fetch", "securityContext": {"privileged": True}}],
                    "sidecars": [{"name": "proxy", "ports": [{"containerPort": 1, "hostPort": 1}]}],
                },
                {"name": "script", "script": {"image": "i", "source": "true"}, "securityContext": {}},
            ],
        },
    }
    pods = {name: (spec, notes) for name, spec, notes in argo_pods(wt)}
    assert set(pods) == {"step", "script"}
    spec, notes = pods["step"]
    assert {(v.subject, v.control) for v in check(spec, "baseline", notes)} == {
        ("volume shared", "HostPath Volumes"),
        ("container fetch", "Privileged Containers"),
        ("container proxy", "Host Ports"),
        ("container main", "AppArmor"),
    }
    assert spec["securityContext"] == {"runAsNonRoot": True}
    assert "source" not in pods["script"][0]["containers"][0]
    # a template's securityContext, even an empty one, replaces the workflow's, as in Argo
    assert pods["script"][0]["securityContext"] == {}


# -- preflight against the fake API server -----------------------------------------------------------


@pytest.fixture
def client(kube_server, kubeconfig):
    from steps.drivers.kube import KubeClient, KubeSettings

    return KubeClient(KubeSettings.from_env())


def _namespace(server, name: str, level: str | None) -> None:
    labels = {"pod-security.kubernetes.io/enforce": level} if level else {}
    server.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})


def _policy(path: Path = ROOT / "examples" / "postgresql-statefulset.yaml"):
    (item,) = load_policies([path])
    return item.policy


def _run(client, policy) -> list[tuple[str, str]]:
    checks = Checks()
    check_pod_security(client, policy, checks)
    assert {c["check"] for c in checks.items} == {"pod-security"}
    return [(c["status"], c["message"]) for c in checks.items]


@pytest.mark.parametrize("level", [None, "privileged", "baseline"])
def test_preflight_admits_every_pod_below_restricted(kube_server, client, level):
    policy = _policy()
    _namespace(kube_server, policy.namespace, level)
    assert _run(client, policy) == [
        (
            "ok",
            f"enforce={level or 'privileged'} admits the 13 step pods of the workflows and the restore mover",
        )
    ]


def test_preflight_at_restricted_names_each_rejected_template_and_why_it_needs_baseline(kube_server, client):
    policy = _policy()
    _namespace(kube_server, policy.namespace, "restricted")
    found = _run(client, policy)
    fails = [m for s, m in found if s == "fail"]
    assert len(fails) == 2
    copy_line, restore_line = fails
    assert copy_line.startswith(
        "enforce=restricted rejects WorkflowTemplate backup-orders-db, template copy-data: it reads the files "
        "of every owner on the clone as root (DAC_OVERRIDE); it needs the baseline level ("
    )
    assert "only NET_BIND_SERVICE may be added (adds DAC_OVERRIDE) (restricted: Capabilities)" in copy_line
    assert restore_line.startswith(
        "enforce=restricted rejects WorkflowTemplate restore-orders-db, template restore: it restores the "
        "files' owners and modes as root"
    )
    warns = [m for s, m in found if s == "warn"]
    assert any(m.startswith("enforce=restricted rejects the restore mover as root") for m in warns)
    assert any("executor.securityContext" in m and "workflow-controller" in m for m in warns)
    assert not [m for s, m in found if s == "ok"]


def test_preflight_at_baseline_names_the_rule_a_template_breaks(kube_server, client):
    # GIVEN a copy step that adds DAC_READ_SEARCH (what the copy pod used to add)
    policy = _policy()
    templates = pod_templates(policy)
    for t in templates:
        caps = t.spec["containers"][0]["securityContext"]["capabilities"]
        if caps.get("add") == ["DAC_OVERRIDE"]:
            caps["add"] = ["DAC_READ_SEARCH"]
    _namespace(kube_server, policy.namespace, "baseline")
    # WHEN preflight checks the namespace THEN it fails, naming the template, the container and the rule
    checks = Checks()
    check_pod_security(client, policy, checks, templates)
    assert [c["message"] for c in checks.items if c["status"] == "fail"] == [
        "enforce=baseline rejects WorkflowTemplate backup-orders-db, template copy-data: container main: "
        "capabilities DAC_READ_SEARCH are not allowed (baseline: Capabilities)"
    ]
    assert not [c for c in checks.items if c["status"] == "ok"]


def test_preflight_warns_on_an_unknown_level(kube_server, client):
    policy = _policy()
    _namespace(kube_server, policy.namespace, "strict")
    assert _run(client, policy) == [
        ("warn", "namespace shop: unknown pod-security.kubernetes.io/enforce level 'strict'")
    ]


def test_argo_pods_do_not_change_the_workflow_template():
    (o,) = [o for o in render_files([EXAMPLES[0]]).objects if o.kind == "WorkflowTemplate"][:1]
    before = copy.deepcopy(o.obj)
    argo_pods(o.obj)
    assert o.obj == before


def test_snapflow_preflight_reports_every_workflow_pod_not_only_the_mover(kube_server, kubeconfig, capsys):
    # GIVEN the example's namespace enforcing restricted
    path = ROOT / "examples" / "postgresql-statefulset.yaml"
    _namespace(kube_server, _policy(path).namespace, "restricted")

    # WHEN snapflow preflight runs for the policy
    from workflows.cli import main

    rc = main(["preflight", str(path), "--json", "--skip-repository"])

    # THEN it fails, and its pod-security lines are the workflow pods' (the steps' mover-only one replaced)
    out = capsys.readouterr().out
    assert rc == 3
    (policy,) = json.loads(out.strip().splitlines()[-1])["policies"]
    lines = [(c["status"], c["message"]) for c in policy["checks"] if c["check"] == "pod-security"]
    assert [m.split(":")[0] for s, m in lines if s == "fail"] == [
        "enforce=restricted rejects WorkflowTemplate backup-orders-db, template copy-data",
        "enforce=restricted rejects WorkflowTemplate restore-orders-db, template restore",
    ]
    assert sum("restore mover as root" in m for _s, m in lines) == 1
    assert any("executor.securityContext" in m for s, m in lines if s == "warn")
