"""snapflow render --guardrails and snapflow lint: the Gatekeeper and Kyverno objects, their strict
schemas, guardrail settings that would lock the platform team out, and lint running the same rules."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft7Validator

from steps.errors import UsageError
from workflows.cli import main
from workflows.guardrails.manifests import gatekeeper_objects, guardrail_files, kyverno_objects
from workflows.guardrails.rego import RULES
from workflows.guardrails.schemas import check_objects
from workflows.guardrails.settings import DEFAULTS, Settings, check_settings, load_settings, parameters
from workflows.render import render_files

EXAMPLE = "examples/postgresql-statefulset.yaml"


@pytest.fixture(scope="module")
def rendered():
    return [o.obj for o in render_files([EXAMPLE]).objects]


def settings_file(tmp_path: Path, spec: dict) -> Path:
    path = tmp_path / "guardrails.yaml"
    path.write_text(
        yaml.safe_dump({"apiVersion": "snapflow.io/v1alpha1", "kind": "GuardrailSettings", "spec": spec})
    )
    return path


def test_gatekeeper_templates_carry_the_rules_rego_and_constraints_fit_their_schema(rendered):
    objects = gatekeeper_objects(DEFAULTS, rendered)
    templates = {
        o["spec"]["crd"]["spec"]["names"]["kind"]: o for o in objects if o["kind"] == "ConstraintTemplate"
    }
    constraints = {o["kind"]: o for o in objects if o["apiVersion"].startswith("constraints.")}
    assert sorted(templates) == sorted(constraints) == sorted(r.kind for r in RULES)
    for rule in RULES:
        template = templates[rule.kind]
        assert template["metadata"]["name"] == rule.kind.lower()  # Gatekeeper's naming requirement
        assert template["spec"]["targets"][0]["rego"] == rule.rego
        schema = template["spec"]["crd"]["spec"]["validation"]["openAPIV3Schema"]
        params = constraints[rule.kind]["spec"]["parameters"]
        assert set(params) == set(schema["properties"])
        assert list(Draft7Validator(schema).iter_errors(params)) == []
    assert constraints["SnapflowProtectedNamespace"]["spec"]["enforcementAction"] == "warn"
    assert constraints["SnapflowServiceAccounts"]["spec"]["enforcementAction"] == "deny"
    params = constraints["SnapflowServiceAccounts"]["spec"]["parameters"]
    assert "shop/snapflow-orders-db-copy" in params["serviceAccounts"]
    assert params["exemptUsers"] == ["system:serviceaccount:argo:argo"]


def test_every_rendered_guardrail_passes_the_strict_schemas(rendered):
    assert check_objects(gatekeeper_objects(DEFAULTS, rendered)) == []
    assert check_objects(kyverno_objects(DEFAULTS, rendered)) == []


def test_the_schemas_refuse_a_misspelt_key_a_wrong_enum_and_a_missing_field(rendered):
    policy = copy.deepcopy(kyverno_objects(DEFAULTS, rendered)[1])
    policy["spec"]["rules"][0]["validate"]["failureActon"] = "Enforce"
    policy["spec"]["rules"][1]["validate"]["deny"]["conditions"]["any"][0]["operator"] = "Contains"
    del policy["spec"]["rules"][2]["match"]
    problems = check_objects([policy])
    assert any(
        "spec.rules.0.validate: Additional properties are not allowed ('failureActon'" in p for p in problems
    )
    assert any(
        "spec.rules.1.validate.deny.conditions.any.0.operator: 'Contains' is not one of" in p
        for p in problems
    )
    assert any("spec.rules.2: 'match' is a required property" in p for p in problems)
    policy = copy.deepcopy(kyverno_objects(DEFAULTS, rendered)[0])
    policy["spec"]["rules"][0]["validate"]["message"] = "namespace {{ request.object.metadata.name is bad"
    assert check_objects([policy]) == [
        "ClusterPolicy snapflow-protected-namespace: spec.rules.0.validate.message: unbalanced {{ }}"
    ]
    constraint = copy.deepcopy(gatekeeper_objects(DEFAULTS, rendered)[-1])
    constraint["spec"]["enforcementAction"] = "block"
    assert check_objects([constraint])


def test_kyverno_policies_exempt_the_platform_team_and_the_controller_and_audit_rule_a(rendered):
    settings = Settings(
        exempt_groups=("platform-admins",),
        exempt_users=("alice",),
        argo_controller="system:serviceaccount:wf:ctl",
    )
    policies = {p["metadata"]["name"]: p for p in kyverno_objects(settings, rendered)}
    rule = policies["snapflow-service-accounts"]["spec"]["rules"][0]
    assert rule["exclude"]["any"][0]["subjects"] == [
        {"kind": "Group", "name": "platform-admins"},
        {"kind": "User", "name": "alice"},
        {"kind": "ServiceAccount", "name": "ctl", "namespace": "wf"},
    ]
    assert [r["name"] for r in policies["snapflow-service-accounts"]["spec"]["rules"]] == [
        "pods-of-snapflow-accounts",
        "workflows-naming-snapflow-accounts",
        "cron-workflows-naming-snapflow-accounts",
        "runs-of-snapflow-templates-set-only-arguments",
        "cron-runs-of-snapflow-templates-set-only-arguments",
    ]
    audit = policies["snapflow-protected-namespace"]
    assert audit["spec"]["background"] is True
    assert audit["spec"]["rules"][0]["validate"]["failureAction"] == "Audit"
    restore = policies["snapflow-restore-targets"]["spec"]["rules"][0]
    assert restore["validate"]["deny"]["conditions"]["any"][0]["value"] == ["shop"]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            {"exempt": {"groups": [], "users": []}},
            "spec.exempt: expected at least one group or user of the platform team",
        ),
        ({}, "spec.exempt: expected at least one group or user"),
        (
            {"exempt": {"groups": ["system:authenticated"]}},
            "spec.exempt: system:authenticated is every requester",
        ),
        (
            {"exempt": {"groups": ["ops"]}, "argoController": "argo"},
            "spec.argoController: expected the workflow controller's user",
        ),
        (
            {"exempt": {"groups": ["ops"]}, "enforcement": "block"},
            "spec.enforcement: expected one of deny, warn, dryrun",
        ),
        ({"exempt": {"groups": ["ops"]}, "exemptions": []}, "spec.exemptions: unknown field"),
        ({"exempt": {"groups": "ops"}}, "spec.exempt.groups: expected a list of non-empty strings"),
        (
            {"exempt": {"groups": ["ops"]}, "restoreTargets": {"shop/orders-db": ["Bad_NS"]}},
            "spec.restoreTargets.shop/orders-db: 'Bad_NS'",
        ),
    ],
)
def test_settings_that_lock_the_platform_team_out_or_are_malformed_name_the_field(tmp_path, spec, expected):
    path = settings_file(tmp_path, spec)
    with pytest.raises(UsageError) as err:
        load_settings(path)
    assert str(err.value).startswith(f"{path}: ")
    assert expected in str(err.value)


def test_restore_targets_of_a_policy_not_rendered_are_refused(rendered):
    settings = Settings(exempt_groups=("ops",), restore_targets={"shop/order-db": ("x",)}, source="g.yaml")
    check_settings(settings)
    with pytest.raises(
        UsageError,
        match=r"g.yaml: spec.restoreTargets.shop/order-db: expected a rendered policy .*shop/orders-db",
    ):
        parameters(settings, rendered)


def test_render_guardrails_writes_both_engines_and_refuses_a_foreign_directory(tmp_path, capsys):
    out = tmp_path / "guardrails"
    settings = settings_file(
        tmp_path,
        {"exempt": {"groups": ["platform-admins"]}, "restoreTargets": {"shop/orders-db": ["shop-restored"]}},
    )
    assert (
        main(["render", "--guardrails", "--guardrail-settings", str(settings), EXAMPLE, "-o", str(out)]) == 0
    )
    gatekeeper = yaml.safe_load((out / "gatekeeper" / "kustomization.yaml").read_text())["resources"]
    kyverno = yaml.safe_load((out / "kyverno" / "kustomization.yaml").read_text())["resources"]
    assert len(gatekeeper) == 11 and len(kyverno) == 5
    for rel in gatekeeper:
        assert (out / "gatekeeper" / rel).is_file()
    constraint = yaml.safe_load(
        (out / "gatekeeper" / "snapflowrestoretargets-snapflow-restore-targets.yaml").read_text()
    )
    assert constraint["spec"]["parameters"]["restoreTargets"] == {
        "shop/restore-app-orders-db": ["shop", "shop-restored"]
    }
    # again into its own output: replaced
    assert main(["render", "--guardrails", EXAMPLE, "-o", str(out)]) == 0
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    assert main(["render", "--guardrails", EXAMPLE, "-o", str(foreign)]) == 2
    assert (foreign / "notes.txt").read_text() == "keep"
    assert "refusing to replace files it did not write" in capsys.readouterr().err


def test_render_guardrails_needs_an_output_and_settings_need_guardrails(capsys):
    assert main(["render", "--guardrails", EXAMPLE]) == 2
    assert "--guardrails: expected policy files and -o DIR" in capsys.readouterr().err
    assert main(["render", "--guardrail-settings", "x.yaml", EXAMPLE]) == 2
    assert "--guardrail-settings: expected only with --guardrails" in capsys.readouterr().err


def test_guardrail_files_are_the_same_for_the_same_input(rendered):
    assert guardrail_files(DEFAULTS, rendered) == guardrail_files(DEFAULTS, rendered)


@pytest.mark.slow
def test_lint_runs_the_guardrails_on_the_rendered_output(tmp_path, capsys):
    # GIVEN settings that give namespace shop only repositories under another prefix
    settings = settings_file(
        tmp_path, {"exempt": {"groups": ["ops"]}, "tenantRepositories": {"shop": ["s3://backups/shop-"]}}
    )
    # WHEN the example is linted with them
    assert main(["lint", "--guardrail-settings", str(settings), EXAMPLE]) == 1
    err = capsys.readouterr().err
    # THEN the plan ConfigMap and every WorkflowTemplate naming the repository are reported
    assert (
        "guardrail d (SnapflowRepositoryTenant): ConfigMap shop/snapflow-plan-orders-db: repository s3://backups/shop is outside namespace shop's repositories"
        in err
    )
    assert main(["lint", EXAMPLE]) == 0


@pytest.mark.slow
def test_lint_warns_of_a_policy_without_a_backup_schedule(tmp_path, capsys):
    policy = yaml.safe_load(Path(EXAMPLE).read_text())
    del policy["spec"]["schedule"]
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    assert main(["lint", str(path)]) == 0
    err = capsys.readouterr().err
    assert (
        "warning: guardrail a (SnapflowProtectedNamespace): namespace shop is labelled snapflow.io/protected=true"
        in err
    )


def test_with_a_mover_namespace_restores_are_keyed_by_the_template_there_and_allow_the_apps_namespace(
    tmp_path,
):
    # GIVEN the example with its workflows in a mover namespace
    policy = yaml.safe_load(Path(EXAMPLE).read_text())
    policy["spec"]["movers"] = {"namespace": "snapflow-movers"}
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    objects = [o.obj for o in render_files([path]).objects]
    # WHEN the parameters are made
    settings = Settings(exempt_groups=("ops",), restore_targets={"shop/orders-db": ("shop-restored",)})
    params = parameters(settings, objects)
    # THEN restore-app's template in the mover namespace may restore into the app's namespace and the
    # allowed one, and the step accounts are those of the mover namespace
    assert params["SnapflowRestoreTargets"]["restoreTargets"] == {
        "snapflow-movers/restore-app-orders-db": ["shop", "shop-restored"]
    }
    assert "snapflow-movers/snapflow-orders-db-copy" in params["SnapflowServiceAccounts"]["serviceAccounts"]
