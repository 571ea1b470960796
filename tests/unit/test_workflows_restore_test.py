"""The restore test of the check workflow: what a policy's ``verify.restoreTest`` renders (a parameter,
two alternative steps, a generic ephemeral scratch volume), validated strictly; and what it refuses."""

from __future__ import annotations

import pytest

from steps.manifests.podsecurity import violations
from tests.fixtures.policies import EXAMPLES
from workflows.hera_builder import SCRATCH_VOLUME_DIR
from workflows.pipeline import Needs, Pipeline, ScratchPath, Step
from workflows.pipelines import check_pipeline
from workflows.policy import PolicyError, load_policies, parse_policy
from workflows.render import render_files
from workflows.validate import lint_rendering, validate_argo, validate_core

COMMAND = 'test -s "$SNAPFLOW_RESTORE_DIR/data/PG_VERSION" && echo $$ $(date +%s)'


def _render(policy_doc: dict, write_policy):
    return render_files([write_policy(policy_doc)])


def _object(rendering, kind: str, name: str) -> dict:
    return next(o.obj for o in rendering.objects if o.kind == kind and o.name == name)


def _templates(wt: dict) -> dict[str, dict]:
    return {t["name"]: t for t in wt["spec"]["templates"]}


def _params(wt: dict) -> dict[str, dict]:
    return {p["name"]: p for p in wt["spec"]["arguments"]["parameters"]}


def _pod(template: dict) -> dict:
    """The pod Argo makes of a container template (its main container and the template's volumes)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "check-orders-db-x", "namespace": "shop"},
        "spec": {
            "containers": [{"name": "main", **template["container"]}],
            "volumes": template["volumes"],
            "securityContext": template["securityContext"],
        },
    }


@pytest.fixture
def restore_test_policy(minimal_policy) -> dict:
    minimal_policy["spec"]["schedule"] = {"cron": "@daily", "check": "0 5 * * 0"}
    minimal_policy["spec"]["verify"] = {
        "checkReadDataPercent": 5,
        "restoreTest": {
            "enabled": True,
            "scratchSize": "20Gi",
            "storageClassName": "fast-ssd",
            "checkCommand": COMMAND,
            "checkTimeoutSeconds": 120,
        },
    }
    return minimal_policy


def test_a_policy_without_a_restore_test_renders_the_plain_check(minimal_policy, write_policy):
    # GIVEN a policy without verify.restoreTest WHEN rendered
    wt = _object(_render(minimal_policy, write_policy), "WorkflowTemplate", "check-orders-db")
    # THEN the check is one unconditional step without a scratch volume, and there is no parameter for it
    (task,) = _templates(wt)["main"]["dag"]["tasks"]
    assert task == {"name": "check", "template": "check"}
    check = _templates(wt)["check"]
    assert "--restore-test" not in check["container"]["args"]
    assert not any("ephemeral" in v for v in check["volumes"])
    assert set(_params(wt)) == {"read-data-percent"}


def test_the_restore_test_is_a_parameter_defaulting_to_the_policy(restore_test_policy, write_policy):
    # GIVEN a policy enabling the restore test WHEN rendered
    rendering = _render(restore_test_policy, write_policy)
    wt = _object(rendering, "WorkflowTemplate", "check-orders-db")
    # THEN the Argo form has a restore-test switch, on by default
    param = _params(wt)["restore-test"]
    assert param["value"] == "true" and param["enum"] == ["false", "true"]
    assert "20Gi" in param["description"]
    # ... that picks one of two steps, exactly like a scheduled run (the CronWorkflow passes nothing)
    tasks = {t["name"]: t for t in _templates(wt)["main"]["dag"]["tasks"]}
    assert tasks["check"]["when"] == "{{workflow.parameters.restore-test}} == false"
    assert tasks["check-with-restore-test"]["when"] == "{{workflow.parameters.restore-test}} == true"
    cron = _object(rendering, "CronWorkflow", "check-orders-db")
    assert "arguments" not in cron["spec"]["workflowSpec"]
    assert cron["spec"]["workflowSpec"]["workflowTemplateRef"] == {"name": "check-orders-db"}
    assert (
        "with a restore test into a 20Gi scratch volume"
        in (cron["metadata"]["annotations"]["workflows.argoproj.io/description"])
    )

    # WHEN the policy only configures it (enabled: false)
    restore_test_policy["spec"]["verify"]["restoreTest"]["enabled"] = False
    rendering = _render(restore_test_policy, write_policy)
    # THEN runs started by hand may still ask for it, scheduled runs do not
    wt = _object(rendering, "WorkflowTemplate", "check-orders-db")
    assert _params(wt)["restore-test"]["value"] == "false"
    cron = _object(rendering, "CronWorkflow", "check-orders-db")
    assert "restore test" not in cron["metadata"]["annotations"]["workflows.argoproj.io/description"]


def test_the_restore_test_step_restores_into_an_ephemeral_volume_of_its_own(
    restore_test_policy, write_policy
):
    # GIVEN a policy enabling the restore test WHEN rendered
    wt = _object(_render(restore_test_policy, write_policy), "WorkflowTemplate", "check-orders-db")
    templates = _templates(wt)
    step = templates["check-with-restore-test"]
    # THEN the step restores this app's newest backup into the scratch volume and runs the check command
    args = step["container"]["args"]
    assert args[0] == "check"
    assert args[args.index("--scratch") + 1] == SCRATCH_VOLUME_DIR
    assert args[args.index("--read-data") + 1] == "{{workflow.parameters.read-data-percent}}"
    assert "--restore-test" in args and "--json" in args
    for option, value in (("--app", "orders-db"), ("--namespace", "shop"), ("--cluster", "default")):
        assert args[args.index(option) + 1] == value
    assert args[args.index("--restore-check-timeout") + 1] == "120"
    # ... the command reaches the shell as written: the kubelet turns $$ into $ (and expands $(NAME))
    assert args[args.index("--restore-check") + 1] == COMMAND.replace("$", "$$")
    # ... its pod mounts a generic ephemeral volume: a ReadWriteOnce claim of the policy's size and class
    (scratch,) = [v for v in step["volumes"] if "ephemeral" in v]
    claim = scratch["ephemeral"]["volumeClaimTemplate"]
    assert claim["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "20Gi"}},
        "storageClassName": "fast-ssd",
    }
    assert claim["metadata"]["labels"]["snapflow.io/policy"] == "orders-db"
    mounts = {m["name"]: m for m in step["container"]["volumeMounts"]}
    assert mounts[scratch["name"]] == {"name": scratch["name"], "mountPath": SCRATCH_VOLUME_DIR}
    # ... as the unprivileged step user, whose fsGroup makes the volume writable
    assert step["container"]["securityContext"]["runAsNonRoot"] is True
    assert step["securityContext"]["fsGroup"] == step["container"]["securityContext"]["runAsUser"]
    # ... while the plain check pays for no volume and restores nothing
    plain = templates["check"]
    assert not any("ephemeral" in v for v in plain["volumes"])
    assert "--restore-test" not in plain["container"]["args"]


def test_the_rendered_restore_test_passes_strict_validation(restore_test_policy, write_policy):
    # GIVEN a policy with every restore test field, without a storage class too
    for storage_class in ("fast-ssd", None):
        if storage_class is None:
            del restore_test_policy["spec"]["verify"]["restoreTest"]["storageClassName"]
        rendering = _render(restore_test_policy, write_policy)
        # WHEN validated against Argo's models and the Kubernetes schema (strict: unknown keys fail)
        # THEN nothing is reported
        assert lint_rendering(rendering) == []
        wt = _object(rendering, "WorkflowTemplate", "check-orders-db")
        assert validate_argo(wt) == []
        # ... and the step's pod is a valid Pod that Pod Security admits at the restricted level
        pod = _pod(_templates(wt)["check-with-restore-test"])
        assert validate_core(pod) == []
        assert violations(pod["spec"], "restricted") == []
        claim = next(v for v in pod["spec"]["volumes"] if "ephemeral" in v)["ephemeral"][
            "volumeClaimTemplate"
        ]
        assert claim["spec"].get("storageClassName") == storage_class


def test_the_validator_rejects_a_misspelt_scratch_volume(restore_test_policy, write_policy):
    # GIVEN the rendered restore test with a key the Kubernetes schema does not know
    wt = _object(_render(restore_test_policy, write_policy), "WorkflowTemplate", "check-orders-db")
    pod = _pod(_templates(wt)["check-with-restore-test"])
    scratch = next(v for v in pod["spec"]["volumes"] if "ephemeral" in v)
    scratch["ephemeral"]["volumeClaimTemplate"]["spec"]["storageClass"] = "fast-ssd"
    # WHEN validated THEN the key is named
    issues = validate_core(pod)
    assert len(issues) == 1 and "storageClass" in issues[0].message


def test_the_example_policy_runs_a_monthly_restore_test():
    (loaded,) = load_policies([EXAMPLES / "postgresql-statefulset.yaml"])
    test = loaded.policy.spec.verify.restore_test
    assert test is not None and test.enabled and test.check_command
    pipeline = check_pipeline(loaded.policy)
    step = pipeline.step("check-with-restore-test")
    assert step.scratch is not None and step.scratch.size == test.scratch_size


def test_defaults_of_the_restore_test(minimal_policy):
    minimal_policy["spec"]["verify"] = {"restoreTest": {}}
    test = parse_policy(minimal_policy).spec.verify.restore_test
    assert test is not None
    assert (test.enabled, test.scratch_size, test.storage_class_name, test.check_command) == (
        False,
        "10Gi",
        None,
        None,
    )
    assert test.check_timeout_seconds == 600
    step = check_pipeline(parse_policy(minimal_policy)).step("check-with-restore-test")
    assert "--restore-check" not in step.args


def test_a_step_cannot_use_scratch_space_it_does_not_have():
    # GIVEN a step that restores into scratch space without asking for any
    step = Step(
        name="check",
        command="check",
        args=("--restore-test", "--scratch", ScratchPath()),
        title="x",
        needs=frozenset({Needs.REPOSITORY}),
    )
    # WHEN the pipeline is checked THEN it is refused (a bug, never user input)
    with pytest.raises(ValueError, match="check uses scratch space it does not have"):
        Pipeline(name="check", title="x", description="x", steps=(step,)).check()


@pytest.mark.parametrize(
    ("restore_test", "expected"),
    [
        (
            {"scratchSize": "ten gigs"},
            "spec.verify.restoreTest.scratchSize: expected a storage size like 10Gi or 500G (a Kubernetes quantity), got 'ten gigs'",
        ),
        (
            {"scratchSize": "500m"},
            "spec.verify.restoreTest.scratchSize: expected a storage size like 10Gi or 500G (a Kubernetes quantity), got '500m'",
        ),
        (
            {"scratchSize": "10"},
            "spec.verify.restoreTest.scratchSize: expected at least 1Mi (a bare number counts bytes), got '10'",
        ),
        (
            {"storageClassName": "Fast_SSD"},
            "spec.verify.restoreTest.storageClassName: expected a Kubernetes object name (lowercase letters, digits, '-' and '.'), got 'Fast_SSD'",
        ),
        (
            {"checkCommand": "  "},
            "spec.verify.restoreTest.checkCommand: expected a shell command, got an empty string",
        ),
        (
            {"checkCommand": "echo {{workflow.name}}"},
            "spec.verify.restoreTest.checkCommand: expected no '{{' (Argo would read it as a template tag)",
        ),
        (
            {"enabled": "yes please"},
            "spec.verify.restoreTest.enabled: expected true or false, got 'yes please'",
        ),
        (
            {"checkTimeoutSeconds": 0},
            "spec.verify.restoreTest.checkTimeoutSeconds: expected a number > 0, got 0",
        ),
        (
            {"scratch": "10Gi"},
            "spec.verify.restoreTest.scratch: unknown field (expected one of: checkCommand, checkTimeoutSeconds, enabled, scratchSize, storageClassName)",
        ),
    ],
    ids=lambda v: str(v)[:40],
)
def test_a_bad_restore_test_is_one_line_naming_the_field(
    minimal_policy, write_policy, restore_test, expected
):
    # GIVEN a policy with one mistake in its restore test
    minimal_policy["spec"]["verify"] = {"restoreTest": restore_test}
    path = write_policy(minimal_policy)
    # WHEN it is loaded THEN exactly one line names the file, the field and what was expected
    with pytest.raises(PolicyError) as err:
        load_policies([path])
    assert err.value.problems == [f"{path}: {expected}"]
