"""Who started a workflow reaches the audit trail: every step that opens the repository reads the
Workflow's Argo labels through an expression with a default; lint refuses the simple tag Argo's
validation would refuse; a step run with the resolved values records who as claimed."""

from __future__ import annotations

import copy
import re

from steps import runtime
from steps.commands import audit_trail
from steps.repository import audit
from tests.fixtures.policies import MINIMAL_POLICY
from workflows import argo_rules
from workflows.hera_builder import build_workflow_template
from workflows.pipelines import pipelines_for
from workflows.policy import parse_policy

AUDIT_VARS = {var for var, _ in runtime.AUDIT_LABELS}
_DIG = re.compile(r"^\{\{=sprig\.dig\(((?:'[^']*', )+)'', workflow\.labels\)\}\}$")


def _argo_resolves(value: str, labels: dict[str, str]) -> str:
    """What Argo puts in the variable: the labels expanded on their dots into nested maps, walked by
    ``sprig.dig`` with an empty default (the form :func:`argo_rules.workflow_label` renders)."""
    match = _DIG.match(value)
    assert match, value
    keys = re.findall(r"'([^']*)'", match.group(1))
    tree: dict = {"json": "{}"}
    for name, text in labels.items():
        node = tree
        *parents, leaf = name.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = text
    node = tree
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return ""
        node = node[key]
    return node


def _templates():
    policy = parse_policy(copy.deepcopy(MINIMAL_POLICY), "p.yaml")
    for pipeline in pipelines_for(policy):
        wt = build_workflow_template(pipeline).to_dict()
        for template in wt["spec"]["templates"]:
            if "container" in template:
                yield wt, template


def test_every_step_with_a_repository_reads_the_workflow_labels_and_no_other_step_does():
    with_repo = without = 0
    for _, template in _templates():
        env = {e["name"]: e.get("value") for e in template["container"].get("env") or []}
        mounts = {v["name"] for v in template.get("volumes") or []}
        if "repository-password" in mounts:
            with_repo += 1
            assert {v: env.get(v) for v in AUDIT_VARS} == {
                var: argo_rules.workflow_label(label) for var, label in runtime.AUDIT_LABELS
            }, template["name"]
        else:
            without += 1
            assert not AUDIT_VARS & set(env), template["name"]
    assert with_repo and without


def test_rendered_templates_pass_the_label_rule_and_the_simple_tag_is_refused_unless_declared():
    for wt, _ in _templates():
        assert argo_rules.workflow_labels_through_expressions(wt) == []
    simple = "{{workflow.labels.workflows.argoproj.io/creator}}"
    wt = {
        "kind": "WorkflowTemplate",
        "metadata": {"name": "backup-db", "labels": {"team": "shop"}},
        "spec": {
            "templates": [
                {"name": "s", "container": {"env": [{"name": "A", "value": simple}]}},
                {"name": "t", "container": {"env": [{"name": "B", "value": "{{workflow.labels.team}}"}]}},
            ]
        },
    }
    (finding,) = argo_rules.workflow_labels_through_expressions(wt)
    assert finding in argo_rules.check(wt)  # lint and render apply it
    assert finding[0] == "spec.templates[0].container.env[0].value"
    assert "workflows.argoproj.io/creator" in finding[1] and "sprig.dig" in finding[1]
    wt["spec"]["templates"][0]["container"]["env"][0]["value"] = argo_rules.workflow_label(
        "workflows.argoproj.io/creator"
    )
    assert argo_rules.workflow_labels_through_expressions(wt) == []


def test_a_step_run_with_the_resolved_labels_records_who_as_claimed(mem_repo, monkeypatch):
    # GIVEN a Workflow submitted by alice (no email label) and the values Argo gives the step's env
    labels = {
        "workflows.argoproj.io/creator": "system-serviceaccount-argo-ui",
        "workflows.argoproj.io/creator-preferred-username": "alice",
        "workflows.argoproj.io/workflow-template": "backup-orders-db",
    }
    monkeypatch.setenv(runtime.ARGO_WORKFLOW_NAME, "backup-orders-db-x7k2q")
    for var, label in runtime.AUDIT_LABELS:
        monkeypatch.setenv(var, _argo_resolves(argo_rules.workflow_label(label), labels))

    # WHEN the step records its action
    rid = audit_trail.record(mem_repo, "backup.commit", what={"backup_id": "b1"})

    # THEN who is the claimed creator; the absent labels (email, cron) are unset, not empty strings
    who = audit.read_trail(mem_repo).entries[rid].who
    assert who == {
        "kind": "argo",
        "claimed": True,
        "creator": "system-serviceaccount-argo-ui",
        "username": "alice",
        "workflow": "backup-orders-db-x7k2q",
    }


def test_an_expression_argo_left_unresolved_is_recorded_as_unset(mem_repo, monkeypatch):
    monkeypatch.setenv(runtime.ARGO_WORKFLOW_NAME, "backup-orders-db-1")
    for var, label in runtime.AUDIT_LABELS:
        monkeypatch.setenv(var, argo_rules.workflow_label(label))
    monkeypatch.setenv(runtime.AUDIT_CREATOR_USERNAME, "bob")
    rid = audit_trail.record(mem_repo, "restore", what={"snapshot": "s"})
    who = audit.read_trail(mem_repo).entries[rid].who
    assert who == {"kind": "argo", "claimed": True, "username": "bob", "workflow": "backup-orders-db-1"}
    # ... and a scheduled run names its CronWorkflow
    labels = {"workflows.argoproj.io/cron-workflow": "backup-orders-db"}
    cron = _argo_resolves(argo_rules.workflow_label("workflows.argoproj.io/cron-workflow"), labels)
    monkeypatch.setenv(runtime.AUDIT_CRON_WORKFLOW, cron)
    rid = audit_trail.record(mem_repo, "restore", what={"snapshot": "s"})
    assert audit.read_trail(mem_repo).entries[rid].who == {
        "kind": "cron",
        "cron_workflow": "backup-orders-db",
        "workflow": "backup-orders-db-1",
    }
