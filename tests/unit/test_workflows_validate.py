"""Strict offline validation: every rendered manifest passes, and the validator really rejects
unknown keys, wrong types and broken references."""

from __future__ import annotations

import copy

import pytest

from workflows.validate import check_references, lint_rendering, validate_argo, validate_core


def _find(rendering, kind: str, name: str) -> dict:
    return copy.deepcopy(next(o.obj for o in rendering.objects if o.kind == kind and o.name == name))


@pytest.fixture
def backup(rendered_examples) -> dict:
    return _find(rendered_examples["postgresql-statefulset.yaml"], "WorkflowTemplate", "backup-orders-db")


def _template(wt: dict, name: str) -> dict:
    return next(t for t in wt["spec"]["templates"] if t["name"] == name)


def test_every_rendered_manifest_passes_strict_validation(rendered_examples):
    for name, rendering in rendered_examples.items():
        assert lint_rendering(rendering) == [], name


def test_a_rendered_template_is_valid_before_tampering(backup):
    assert validate_argo(backup) == []


@pytest.mark.parametrize(
    ("where", "key", "path"),
    [
        (lambda wt: wt["spec"], "onExitHandler", "spec.onExitHandler"),
        (lambda wt: wt["metadata"], "label", "metadata.label"),
        (
            lambda wt: _template(wt, "copy-data")["container"],
            "mountPropagation",
            "spec.templates[3].container.mountPropagation",
        ),
        (
            lambda wt: _template(wt, "consistent-point")["retryStrategy"],
            "retries",
            "spec.templates[2].retryStrategy.retries",
        ),
        (
            lambda wt: _template(wt, "main")["dag"]["tasks"][0],
            "dependsOn",
            "spec.templates[0].dag.tasks[0].dependsOn",
        ),
        (
            lambda wt: _template(wt, "copy-data")["volumes"][2]["persistentVolumeClaim"],
            "claim",
            "spec.templates[3].volumes[2].persistentVolumeClaim.claim",
        ),
        (
            lambda wt: wt["spec"]["metrics"]["prometheus"][0]["gauge"],
            "unit",
            "spec.metrics.prometheus[0].gauge.unit",
        ),
        (
            lambda wt: wt["spec"]["arguments"]["parameters"][0],
            "choices",
            "spec.arguments.parameters[0].choices",
        ),
    ],
    ids=["spec", "metadata", "container", "retryStrategy", "dag-task", "volume", "metric", "parameter"],
)
def test_an_injected_unknown_key_is_an_error(backup, where, key, path):
    # GIVEN a valid rendered template with one unknown key injected (pydantic alone would ignore it)
    where(backup)[key] = "x"
    # WHEN it is validated
    issues = validate_argo(backup)
    # THEN exactly that key is reported
    assert [(i.path, i.message.split(" (")[0]) for i in issues] == [(path, "unknown field")]


def test_an_unknown_key_in_a_cron_workflow_is_an_error(rendered_examples):
    cron = _find(rendered_examples["postgresql-statefulset.yaml"], "CronWorkflow", "backup-orders-db")
    assert validate_argo(cron) == []
    cron["spec"]["workflowSpec"]["workflowTemplateRef"]["namespace"] = "shop"
    cron["spec"]["concurrency"] = "Forbid"
    paths = sorted(i.path for i in validate_argo(cron))
    assert paths == ["spec.concurrency", "spec.workflowSpec.workflowTemplateRef.namespace"]


def test_a_wrong_type_is_an_error(backup):
    backup["spec"]["activeDeadlineSeconds"] = "six hours"
    issues = validate_argo(backup)
    assert [i.path for i in issues] == ["spec.activeDeadlineSeconds"]


def test_a_wrong_api_version_is_an_error(backup):
    backup["apiVersion"] = "argoproj.io/v1"
    assert [str(i) for i in validate_argo(backup, "backup.yaml")] == [
        "backup.yaml: apiVersion: expected argoproj.io/v1alpha1, got 'argoproj.io/v1'"
    ]


def test_core_objects_are_validated_strictly(rendered_examples):
    rendering = rendered_examples["postgresql-statefulset.yaml"]
    role = _find(rendering, "Role", "snapflow-orders-db-consistent-point")
    assert validate_core(role) == []
    role["rules"][0]["verb"] = ["get"]
    issues = validate_core(role)
    assert len(issues) == 1 and issues[0].path == "rules[0]" and "verb" in issues[0].message
    config_map = _find(rendering, "ConfigMap", "snapflow-plan-orders-db")
    config_map["data"]["plan.json"] = {"not": "a string"}
    assert [i.path for i in validate_core(config_map)] == ["data.plan.json"]


def test_references_resolve_in_rendered_output(rendered_examples):
    rendering = rendered_examples["multi-volume-app.yaml"]
    objects = [o.obj for o in rendering.objects]
    external = [(e.kind, e.namespace, e.name) for e in rendering.external]
    assert check_references(objects, external) == []


def _issues_after(rendering, change) -> list[str]:
    objects = [copy.deepcopy(o.obj) for o in rendering.objects]
    change({(o["kind"], o["metadata"]["name"]): o for o in objects})
    external = [(e.kind, e.namespace, e.name) for e in rendering.external]
    return [f"{i.path}: {i.message}" for i in check_references(objects, external)]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda o: _template(o["WorkflowTemplate", "backup-orders-db"], "main")["dag"]["tasks"][4].update(
                template="verify-all"
            ),
            "spec.templates[0].dag.tasks[4].template: no template named 'verify-all'",
        ),
        (
            lambda o: _template(o["WorkflowTemplate", "backup-orders-db"], "main")["dag"]["tasks"][3].update(
                dependencies=["consistent-point"]
            ),
            "spec.templates[0].dag.tasks[3].arguments.parameters[0].value: reads outputs of task 'prepare-clone-data' without depending on it",
        ),
        (
            lambda o: _template(o["WorkflowTemplate", "backup-orders-db"], "verify")["container"][
                "args"
            ].append("{{workflow.parameters.read-all}}"),
            "spec.templates[6].container.args[10]: {{workflow.parameters.read-all}}: the workflow has no such parameter",
        ),
        (
            lambda o: _template(o["WorkflowTemplate", "backup-orders-db"], "copy-data")["inputs"][
                "parameters"
            ].clear(),
            "spec.templates[0].dag.tasks[3].arguments: template 'copy-data' has no input 'claim'",
        ),
        (
            lambda o: o["WorkflowTemplate", "backup-orders-db"]["spec"].update(onExit="cleanup"),
            "spec.onExit: no template named 'cleanup'",
        ),
        (
            lambda o: o["CronWorkflow", "backup-orders-db"]["spec"]["workflowSpec"][
                "workflowTemplateRef"
            ].update(name="backup-orders"),
            "spec.workflowSpec.workflowTemplateRef.name: no WorkflowTemplate 'backup-orders'",
        ),
        (
            lambda o: o["ConfigMap", "snapflow-plan-orders-db"]["metadata"].update(name="plan-orders-db"),
            "spec.templates[2].volumes: volume 'plan': no ConfigMap 'snapflow-plan-orders-db' rendered or provided",
        ),
        (
            lambda o: o["RoleBinding", "snapflow-orders-db-copy"]["roleRef"].update(name="snapflow-admin"),
            "roleRef: no Role 'snapflow-admin' rendered",
        ),
        (
            lambda o: o["ServiceAccount", "snapflow-orders-db-copy"]["metadata"].update(name="snapflow-copy"),
            "spec.templates[3].serviceAccountName: no ServiceAccount 'snapflow-orders-db-copy' rendered or provided",
        ),
    ],
    ids=[
        "template",
        "upstream",
        "parameter",
        "input",
        "on-exit",
        "cron-ref",
        "config-map",
        "role-ref",
        "step-account",
    ],
)
def test_a_broken_reference_is_reported(rendered_examples, change, expected):
    issues = _issues_after(rendered_examples["postgresql-statefulset.yaml"], change)
    assert expected in issues, issues
