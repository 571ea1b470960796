"""Argo's documented run-time semantics as lint rules: each rule rejects a tiny template reproducing a
defect Snapflow's manifests once had (or Argo 4.0 removed), accepts the fixed form, and every
rendered manifest passes them all."""

from __future__ import annotations

import copy

import pytest

from workflows import argo_rules
from workflows.validate import validate_argo


def _workflow_template(*templates: dict, **spec) -> dict:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "WorkflowTemplate",
        "metadata": {"name": "backup-uploads", "namespace": "media"},
        "spec": {"entrypoint": "main", "templates": list(templates), **spec},
    }


def _main_with_output(value_from: dict) -> dict:
    return {
        "name": "main",
        "dag": {"tasks": [{"name": "consistent-point", "template": "consistent-point"}]},
        "outputs": {"parameters": [{"name": "freeze-window-ms", "valueFrom": value_from}]},
    }


FREEZE_WINDOW = "jsonpath(tasks['consistent-point'].outputs.parameters.verdict, '$.freeze_window_ms')"


def test_a_computed_dag_output_without_a_default_is_refused():
    # GIVEN the old main DAG: an output whose expression is nil for a backup without a quiesce hook
    old = _workflow_template(_main_with_output({"expression": FREEZE_WINDOW}))
    # WHEN the rule runs THEN it names the output (Argo >= 3.7.16 / 4.0.7 would fail main)
    (finding,) = argo_rules.outputs_have_defaults(old)
    assert finding[0] == "spec.templates[0].outputs.parameters[0].valueFrom"
    assert "'freeze-window-ms'" in finding[1] and "valueFrom.default" in finding[1]
    # AND with an empty default it passes
    fixed = _workflow_template(_main_with_output({"expression": FREEZE_WINDOW, "default": ""}))
    assert argo_rules.outputs_have_defaults(fixed) == []


def test_a_container_output_read_from_a_file_needs_no_default():
    container = {
        "name": "copy",
        "container": {"image": "x"},
        "outputs": {"parameters": [{"name": "claim", "valueFrom": {"path": "/tmp/claim"}}]},
    }
    assert argo_rules.outputs_have_defaults(_workflow_template(container)) == []


def _with_metric(metric: dict) -> dict:
    return _workflow_template(
        {"name": "consistent-point", "container": {"image": "x"}, "metrics": {"prometheus": [metric]}}
    )


def test_a_gauge_that_can_be_empty_is_refused():
    # GIVEN the old freeze gauge: no `when`, a value that is null without a hook
    old = _with_metric(
        {
            "name": "snapflow_freeze_window_seconds",
            "help": "h",
            "gauge": {
                "realtime": False,
                "value": "{{=jsonpath(outputs.parameters.verdict, '$.freeze_window_ms') / 1000}}",
            },
        }
    )
    paths = [p for p, _ in argo_rules.gauges_cannot_be_empty(old)]
    assert paths == [
        "spec.templates[0].metrics.prometheus[0].when",
        "spec.templates[0].metrics.prometheus[0].gauge.value",
    ]
    # AND the rendered form (a `when` and a value with a fallback) passes
    window = "jsonpath(outputs.parameters.verdict, '$.freeze_window_ms')"
    fixed = _with_metric(
        {
            "name": "snapflow_freeze_window_seconds",
            "help": "h",
            "when": f"{{{{={window} != nil}}}}",
            "gauge": {"realtime": False, "value": f"{{{{={window} != nil ? {window} / 1000 : 0}}}}"},
        }
    )
    assert argo_rules.gauges_cannot_be_empty(fixed) == []


def test_a_gauge_of_plain_variables_needs_no_when():
    ok = _with_metric({"name": "d", "help": "h", "gauge": {"realtime": False, "value": "{{duration}}"}})
    assert argo_rules.gauges_cannot_be_empty(ok) == []
    empty = _with_metric({"name": "d", "help": "h", "gauge": {"realtime": False, "value": ""}})
    assert [m for _, m in argo_rules.gauges_cannot_be_empty(empty)] == ["gauge 'd' has an empty value"]


OLD_WORKFLOW_METRICS = {
    "prometheus": [
        {
            "name": "snapflow_workflow_runs_total",
            "help": "h",
            "labels": [{"key": "status", "value": "{{workflow.status}}"}],
            "counter": {"value": "1"},
        },
        {
            "name": "snapflow_last_success_timestamp_seconds",
            "help": "h",
            "when": "{{workflow.status}} == Succeeded",
            "gauge": {"realtime": False, "value": "{{workflow.creationTimestamp.s}}"},
        },
        {
            "name": "snapflow_workflow_duration_seconds",
            "help": "h",
            "gauge": {"realtime": False, "value": "{{workflow.duration}}"},
        },
    ]
}


def test_an_outcome_metric_at_workflow_level_is_refused_when_an_exit_handler_decides_the_outcome():
    # GIVEN the old backup: success counted at workflow level, before finalize ran
    main = {"name": "main", "dag": {"tasks": []}}
    finalize = {
        "name": "finalize",
        "container": {"image": "x", "args": ["--workflow-status", "{{workflow.status}}"]},
    }
    old = _workflow_template(main, finalize, onExit="finalize", metrics=copy.deepcopy(OLD_WORKFLOW_METRICS))
    # THEN both outcome metrics are refused, the plain duration is not
    assert [p for p, _ in argo_rules.no_outcome_metric_at_workflow_level(old)] == [
        "spec.metrics.prometheus[0]",
        "spec.metrics.prometheus[1]",
    ]
    # AND without an exit handler the entrypoint's status is the outcome: nothing to refuse
    no_exit = _workflow_template(main, metrics=copy.deepcopy(OLD_WORKFLOW_METRICS))
    assert argo_rules.no_outcome_metric_at_workflow_level(no_exit) == []


def _retried(deadline: int | None, max_duration: str) -> dict:
    template = {
        "name": "copy-uploads",
        "container": {"image": "x"},
        "retryStrategy": {
            "limit": 3,
            "retryPolicy": "OnFailure",
            "expression": "asInt(lastRetry.exitCode) == 75",
            "backoff": {"duration": "15s", "factor": 2, "maxDuration": max_duration},
        },
    }
    if deadline is not None:
        template["activeDeadlineSeconds"] = deadline
    return _workflow_template(template)


def test_a_retry_budget_that_cannot_hold_the_attempts_is_refused():
    # GIVEN the old copy: maxDuration 10m from the first attempt, no deadline per attempt
    (finding,) = argo_rules.retry_budget_holds_every_attempt(_retried(None, "10m"))
    assert finding[0] == "spec.templates[0].activeDeadlineSeconds"
    # AND a deadline whose attempts do not fit the budget: 4 x 600 + 105 > 10m
    (finding,) = argo_rules.retry_budget_holds_every_attempt(_retried(600, "10m"))
    assert finding[0].endswith("backoff.maxDuration") and "2505s" in finding[1]
    # THEN a budget of (limit + 1) x deadline + backoffs passes (Go durations and plain seconds)
    assert argo_rules.retry_budget_holds_every_attempt(_retried(600, "2505s")) == []
    assert argo_rules.retry_budget_holds_every_attempt(_retried(600, "41m45s")) == []
    assert argo_rules.retry_budget_holds_every_attempt(_retried(600, "2504")) != []


def test_retrying_every_failure_retries_oom_kills_and_is_refused():
    template = _retried(600, "1h")
    del template["spec"]["templates"][0]["retryStrategy"]["expression"]
    (finding,) = argo_rules.oom_kills_are_not_retried(template)
    assert "137" in finding[1]
    assert argo_rules.oom_kills_are_not_retried(_retried(600, "1h")) == []
    never = _workflow_template(
        {"name": "consistent-point", "container": {"image": "x"}, "retryStrategy": {"limit": 0}}
    )
    assert argo_rules.oom_kills_are_not_retried(never) == []


def test_workflow_status_outside_the_exit_handler_is_refused():
    verify = {"name": "verify", "container": {"image": "x", "args": ["--status", "{{workflow.status}}"]}}
    finalize = {"name": "finalize", "container": {"image": "x", "args": ["{{workflow.status}}"]}}
    main = {"name": "main", "dag": {"tasks": [{"name": "verify", "template": "verify"}]}}
    wt = _workflow_template(main, verify, finalize, onExit="finalize")
    assert argo_rules.exit_handler_variables(wt) == [
        (
            "spec.templates[1]",
            "template 'verify' reads workflow.status, which is only known in the exit handler (onExit)",
        )
    ]
    # an exit handler that is a DAG may pass it to the templates it calls
    exit_dag = {"name": "exit", "dag": {"tasks": [{"name": "verify", "template": "verify"}]}}
    assert argo_rules.exit_handler_variables(_workflow_template(main, verify, exit_dag, onExit="exit")) == []


def test_the_singular_forms_argo_4_removed_are_refused():
    wt = _workflow_template({"name": "main", "dag": {"tasks": []}}, synchronization={"mutex": {"name": "m"}})
    assert argo_rules.plural_synchronization_and_schedules(wt) == [
        ("spec.synchronization.mutex", "removed in Argo 4.0: use mutexes (a list)")
    ]
    cron = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "CronWorkflow",
        "metadata": {"name": "backup-uploads", "namespace": "media"},
        "spec": {
            "schedule": "0 2 * * *",
            "workflowSpec": {"templates": [{"name": "t", "synchronization": {"semaphore": {}}}]},
        },
    }
    assert [p for p, _ in argo_rules.plural_synchronization_and_schedules(cron)] == [
        "spec.workflowSpec.templates[0].synchronization.semaphore",
        "spec.schedule",
    ]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("10m", 600),
        ("1h30m", 5400),
        ("43785s", 43785),
        ("90", 90),
        (90, 90),
        ("1.5h", 5400),
        ("ten", None),
        ("", None),
    ],
)
def test_argo_durations_are_read_like_go_durations(text, seconds):
    assert argo_rules.duration_s(text) == seconds


def test_lint_reports_the_rules_on_the_old_backup_template():
    # GIVEN a template with the old defects WHEN validated like every rendered object THEN each is named
    old = _workflow_template(_main_with_output({"expression": FREEZE_WINDOW}))
    issues = validate_argo(old)
    assert [i.path for i in issues] == ["spec.templates[0].outputs.parameters[0].valueFrom"]


def test_every_rendered_manifest_follows_the_rules(rendered_examples):
    for name, rendering in rendered_examples.items():
        for obj in rendering.objects:
            if obj.kind in ("WorkflowTemplate", "CronWorkflow"):
                assert argo_rules.check(obj.obj) == [], (name, obj.name)


@pytest.mark.parametrize(
    ("query", "refused"),
    [("'$.bytes_added'", False), ("'$.items[0].name'", False), ("'bytes_added'", True), ("'$..x['", True),
     ("inputs.parameters.q", True)],
)  # fmt: skip
def test_a_malformed_jsonpath_query_is_refused(query, refused):
    # GIVEN an output whose jsonpath query Argo would panic on (no default or ?? can catch that)
    value_from = {"expression": f"jsonpath(tasks['copy-x'].outputs.result, {query})", "default": ""}
    found = argo_rules.jsonpath_queries_are_well_formed(_workflow_template(_main_with_output(value_from)))
    assert bool(found) is refused
    if refused:
        assert found[0][0] == "spec.templates[0].outputs.parameters[0].valueFrom.expression"
