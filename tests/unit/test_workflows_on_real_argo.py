"""What the rendered backup does on a real Argo (3.7.16+ / 4.0.7+): a backup without a quiesce hook
still reaches finalize with Succeeded, its outcome is counted by finalize (commit or refusal), a step
failing late is still retried, and memory limits come from the policy."""

from __future__ import annotations

import re

import pytest

from workflows.hera_builder import retry_budget_s
from workflows.policy import PolicyError, load_policies
from workflows.render import render_files


def _templates(wt: dict) -> dict[str, dict]:
    return {t["name"]: t for t in wt["spec"]["templates"]}


def _backup(rendering, name: str) -> dict:
    return next(o.obj for o in rendering.objects if o.kind == "WorkflowTemplate" and o.name == name)


def _render(write_policy, policy: dict):
    return render_files([write_policy(policy)])


def test_a_backup_without_a_hook_has_outputs_that_cannot_fail_main(rendered_examples):
    # GIVEN media-uploads: a volume without any quiesce hook (its freeze window is null)
    wt = _backup(rendered_examples["multi-volume-app.yaml"], "backup-media-uploads")
    templates = _templates(wt)
    # THEN every output of main has an empty default (Argo fails a nil output without one)
    outputs = templates["main"]["outputs"]["parameters"]
    assert outputs and all(p["valueFrom"]["default"] == "" for p in outputs)
    # AND no freeze gauge is emitted: there is no freeze window to report
    assert "metrics" not in templates["consistent-point"]


def test_the_freeze_gauge_is_emitted_only_when_the_hold_recorded_a_window(rendered_examples):
    wt = _backup(rendered_examples["postgresql-statefulset.yaml"], "backup-orders-db")
    point = _templates(wt)["consistent-point"]
    (gauge,) = point["metrics"]["prometheus"]
    assert gauge["when"] == "{{=jsonpath(outputs.parameters.verdict, '$.freeze_window_ms') != nil}}"
    assert re.fullmatch(r"\{\{=.+ != nil \? .+ / 1000 : 0\}\}", gauge["gauge"]["value"])
    # the verdict it reads is valid JSON holding the key even when consistent-point wrote none
    (verdict,) = point["outputs"]["parameters"]
    assert verdict["valueFrom"]["default"] == '{"verdict": null, "freeze_window_ms": null}'


def _when_holds(when: str, status: str, workflow_status: str) -> bool:
    """Argo's evaluation of a metric's simple `when` (NAME == VALUE joined by &&) after substitution."""
    text = when.replace("{{status}}", status).replace("{{workflow.status}}", workflow_status)
    results = []
    for clause in text.split("&&"):
        left, op, right = re.fullmatch(r"\s*(\S+)\s*(==|!=)\s*(\S+)\s*", clause).groups()
        results.append((left == right) if op == "==" else (left != right))
    return all(results)


@pytest.mark.parametrize(
    ("graph", "finalize", "expected_status", "committed"),
    [
        ("Succeeded", "Succeeded", "Succeeded", True),  # every step passed, finalize committed
        ("Succeeded", "Failed", "Failed", False),  # every step passed, finalize refused to commit
        ("Failed", "Succeeded", "Failed", False),  # a copy failed; finalize thawed and committed nothing
        ("Error", "Succeeded", "Error", False),
    ],
)
def test_the_backup_outcome_is_counted_by_finalize_from_the_commit(
    rendered_examples, graph, finalize, expected_status, committed
):
    wt = _backup(rendered_examples["multi-volume-app.yaml"], "backup-media-uploads")
    # GIVEN the workflow-level metrics: no outcome there (Argo evaluates them before finalize)
    for metric in wt["spec"]["metrics"]["prometheus"]:
        assert "workflow.status" not in str(metric) and "when" not in metric
    # WHEN finalize completes with `finalize` after a graph that ended `graph`
    emitted = [
        m
        for m in _templates(wt)["finalize"]["metrics"]["prometheus"]
        if _when_holds(m["when"], finalize, graph)
    ]
    # THEN exactly one run is counted, with the honest status
    runs = [m for m in emitted if m["name"] == "snapflow_workflow_runs_total"]
    assert len(runs) == 1
    status = {label["key"]: label["value"] for label in runs[0]["labels"]}["status"]
    assert status.replace("{{workflow.status}}", graph) == expected_status
    # AND the last-committed time moves only when the backup record was committed
    names = {m["name"] for m in emitted}
    assert ("snapflow_last_committed_backup_timestamp_seconds" in names) is committed
    assert ("snapflow_last_success_timestamp_seconds" in names) is committed


def test_every_retried_step_has_a_deadline_and_a_budget_holding_every_attempt(rendered_examples):
    for rendering in rendered_examples.values():
        for obj in rendering.objects:
            if obj.kind != "WorkflowTemplate":
                continue
            for template in obj.obj["spec"]["templates"]:
                strategy = template.get("retryStrategy") or {}
                if not strategy.get("limit"):
                    continue
                deadline = template["activeDeadlineSeconds"]
                budget = int(strategy["backoff"]["maxDuration"].removesuffix("s"))
                assert budget >= (strategy["limit"] + 1) * deadline + 15 + 30 + 60, template["name"]
                # only exit code 75 is retried: an OOM kill (137) or an integrity error (3) is not
                assert strategy["expression"] == "asInt(lastRetry.exitCode) == 75"


def test_step_timeouts_come_from_the_policy(write_policy, minimal_policy):
    # GIVEN copies that may take 5 hours and a snapshot wait of 30 minutes
    minimal_policy["spec"]["workflow"] = {"stepTimeouts": {"copy": 18000, "verify": 7200}}
    minimal_policy["spec"]["snapshot"] = {"timeoutSeconds": 1800}
    templates = _templates(_backup(_render(write_policy, minimal_policy), "backup-orders-db"))
    # THEN each attempt is bounded by its timeout, and the retry budget holds 4 such attempts
    assert templates["copy-data"]["activeDeadlineSeconds"] == 18000
    assert templates["copy-data"]["retryStrategy"]["backoff"]["maxDuration"] == f"{retry_budget_s(18000)}s"
    assert retry_budget_s(18000) >= 4 * 18000 + 105
    assert templates["verify"]["activeDeadlineSeconds"] == 7200
    assert templates["prepare-clone-data"]["activeDeadlineSeconds"] == 1800 + 600
    # AND the freeze step keeps its own bound and is never retried
    assert templates["consistent-point"]["retryStrategy"] == {"limit": 0}
    assert templates["consistent-point"]["activeDeadlineSeconds"] == 30 + 300


def test_the_small_steps_memory_limit_comes_from_the_policy(write_policy, minimal_policy):
    minimal_policy["spec"]["workflow"] = {"stepMemoryLimit": "1Gi"}
    templates = _templates(_backup(_render(write_policy, minimal_policy), "backup-orders-db"))
    for name in ("capture", "consistent-point", "prepare-clone-data", "finalize"):
        assert templates[name]["container"]["resources"]["limits"] == {"memory": "1Gi"}, name
    # the data mover keeps spec.resources
    assert templates["copy-data"]["container"]["resources"]["limits"] == {"memory": "2Gi"}


def test_a_memory_limit_below_the_request_is_one_line(write_policy, minimal_policy):
    minimal_policy["spec"]["workflow"] = {"stepMemoryLimit": "32Mi"}
    path = write_policy(minimal_policy)
    with pytest.raises(PolicyError) as err:
        load_policies([path])
    assert err.value.problems == [
        f"{path}: spec.workflow.stepMemoryLimit: expected a memory size of at least 64Mi (the steps' request), "
        "got '32Mi'"
    ]
