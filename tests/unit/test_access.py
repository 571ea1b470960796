"""spec.access (workflows/access.py): the policy fields and their one-line errors, the rbac-rule built
only from names that need no quoting, what is rendered where (Argo's namespace, delegated, mover
namespace), the warning for groups several policies map, and guardrail (c)'s restorer parameters run
by the Rego engine."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from workflows.access import (
    PRECEDENCE,
    RBAC_RULE,
    RBAC_RULE_PRECEDENCE,
    access_objects,
    access_warnings,
    quote,
)
from workflows.cli import main
from workflows.guardrails.evaluate import review, violations
from workflows.guardrails.settings import DEFAULTS, parameters
from workflows.policy import LoadedPolicy, PolicyError, parse_policy
from workflows.render import render_policies

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = yaml.safe_load((ROOT / "examples" / "self-service-access.yaml").read_text())
TEMPLATES = ["backup-catalog-db", "restore-app-catalog-db"]
# The grammar of the rules we write: terms joined by ||, each a group test or an email comparison.
TERM = re.compile(r"^(?:'([^'\\]*)' in groups|email == '([^'\\]*)')$")


def policy_with(**changes):
    doc = copy.deepcopy(EXAMPLE)
    doc["spec"].update(changes)
    return doc


def problems(doc) -> list[str]:
    try:
        parse_policy(doc, "p.yaml")
    except PolicyError as err:
        return err.problems
    return []


@pytest.mark.parametrize(
    ("access", "expected"),
    [
        (
            [{"role": "admin", "groups": ["g"]}],
            "p.yaml: spec.access[0].role: expected 'viewer', 'operator' or 'restorer', got 'admin'",
        ),
        ([{"role": "viewer"}], "p.yaml: spec.access[0].groups: expected at least one group or user"),
        (
            [{"role": "viewer", "groups": ["g'] || true || ['x"]}],
            "p.yaml: spec.access[0].groups[0]: expected letters",
        ),
        ([{"role": "viewer", "users": ["a\\b"]}], "p.yaml: spec.access[0].users[0]: expected letters"),
        ([{"role": "viewer", "groups": [""]}], "p.yaml: spec.access[0].groups[0]: expected letters"),
        (
            [{"role": "viewer", "groups": ["g", "g"]}],
            "p.yaml: spec.access[0].groups[1]: expected each name once",
        ),
        ([{"role": "viewer", "groups": ["g"], "team": "x"}], "p.yaml: spec.access[0].team: unknown field"),
        (
            [{"role": "restorer", "groups": ["g"]}],
            "p.yaml: spec.access[0].namespaces: required for a restorer",
        ),
        (
            [{"role": "operator", "groups": ["g"], "namespaces": ["x"]}],
            "p.yaml: spec.access[0].namespaces: expected no namespaces for a operator",
        ),
        (
            [{"role": "restorer", "groups": ["g"], "namespaces": ["shop"]}],
            "p.yaml: spec.access[0].namespaces[0]: expected another namespace than the policy's own 'shop'",
        ),
        (
            [{"role": "restorer", "groups": ["g"], "namespaces": ["Bad_NS"]}],
            "p.yaml: spec.access[0].namespaces[0]: expected a DNS-1123 label",
        ),
        (
            [{"role": "viewer", "groups": ["a"]}, {"role": "viewer", "groups": ["b"]}],
            "p.yaml: spec.access[1].role: expected each role once, 'viewer' is also spec.access[0]",
        ),
    ],
)
def test_bad_access_is_one_line_naming_the_field(access, expected):
    found = problems(policy_with(access=access))
    assert len(found) == 1, found
    assert found[0].startswith(expected), found[0]


def test_argo_server_without_access_and_restorer_with_own_account_are_refused():
    doc = policy_with(access=[])
    assert problems(doc) == [
        "p.yaml: spec.argoServer: expected spec.access with it (it places the access ServiceAccounts)"
    ]
    doc = policy_with(workflow={"serviceAccountName": "mine"})
    (line,) = [p for p in problems(doc) if "spec.access" in p]
    assert line.startswith(
        "p.yaml: spec.access[2].namespaces: expected no restorer with spec.workflow.serviceAccountName"
    )


def test_lint_names_an_unknown_role_in_one_line_and_exits_2(tmp_path, capsys):
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy_with(access=[{"role": "owner", "groups": ["shop"]}])))
    assert main(["lint", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"{path}: spec.access[0].role: expected 'viewer', 'operator' or 'restorer', got 'owner'"]


@settings(max_examples=150, derandomize=True, deadline=None)
@given(st.text(max_size=40))
@example("shop' in groups || 'x")
@example("a\\' || true")
@example("x\n")
@example('a" || "b')
def test_quote_refuses_what_could_leave_the_string_literal(name):
    try:
        quoted = quote(name)
    except ValueError as err:
        assert "expected letters" in str(err)
        return
    # THEN what is accepted is a single literal: no quote, backslash or line break inside
    assert quoted == f"'{name}'"
    assert not set(name) & {"'", '"', "\\", "\n", "\r", "`"}


def test_rbac_rule_holds_exactly_the_entry_names_and_precedence_orders_the_roles():
    policy = parse_policy(EXAMPLE, "p.yaml")
    objects = access_objects(policy, TEMPLATES)
    accounts = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ServiceAccount"}
    for entry in policy.spec.access:
        sa = accounts[f"snapflow.shop.catalog-db-{entry.role}"]
        rule = sa["metadata"]["annotations"][RBAC_RULE]
        groups, users = [], []
        for term in rule.split(" || "):
            m = TERM.match(term)
            assert m, term
            (groups if m.group(1) is not None else users).append(m.group(1) or m.group(2))
        assert groups == list(entry.groups) and users == list(entry.users)
        assert sa["metadata"]["annotations"][RBAC_RULE_PRECEDENCE] == str(PRECEDENCE[entry.role])
    assert PRECEDENCE["viewer"] < PRECEDENCE["operator"] < PRECEDENCE["restorer"]


def choose(accounts: list[dict], groups: list[str], email: str) -> str | None:
    """Argo Server's choice (docs/argo-server-sso.md): the matching account of highest precedence."""
    best: tuple[int, str] | None = None
    for sa in accounts:
        rule = sa["metadata"]["annotations"][RBAC_RULE]
        hit = any(
            (m.group(1) is not None and m.group(1) in groups)
            or (m.group(2) is not None and m.group(2) == email)
            for m in (TERM.match(t) for t in rule.split(" || "))
        )
        precedence = int(sa["metadata"]["annotations"][RBAC_RULE_PRECEDENCE])
        if hit and (best is None or precedence > best[0]):
            best = (precedence, sa["metadata"]["name"])
    return best and best[1]


def test_a_user_in_several_entries_acts_with_the_strongest_role():
    objects = access_objects(parse_policy(EXAMPLE, "p.yaml"), TEMPLATES)
    accounts = [o for o in objects if o["kind"] == "ServiceAccount"]
    assert choose(accounts, ["shop-developers"], "bob@example.com") == "snapflow.shop.catalog-db-viewer"
    assert choose(accounts, ["shop-developers", "shop-oncall"], "") == "snapflow.shop.catalog-db-operator"
    assert choose(accounts, ["shop-developers"], "alice@example.com") == "snapflow.shop.catalog-db-operator"
    assert choose(accounts, ["shop-dba", "shop-oncall"], "") == "snapflow.shop.catalog-db-restorer"
    assert choose(accounts, ["billing"], "carol@example.com") is None


@pytest.mark.parametrize(
    ("argo_server", "movers", "sa_ns", "home"),
    [
        ({"namespace": "argo"}, None, "argo", "shop"),
        ({"namespace": "argo-system"}, None, "argo-system", "shop"),
        ({"delegateRbacToNamespace": True}, None, "shop", "shop"),
        ({"delegateRbacToNamespace": True}, "shop-movers", "shop-movers", "shop-movers"),
        ({}, "shop-movers", "argo", "shop-movers"),
    ],
)
def test_objects_are_placed_for_argo_server_and_the_workflow_namespace(argo_server, movers, sa_ns, home):
    doc = policy_with(argoServer=argo_server)
    if movers:
        doc["spec"]["movers"] = {"namespace": movers}
    objects = access_objects(parse_policy(doc, "p.yaml"), TEMPLATES)
    where = {(o["kind"], o["metadata"]["name"]): o["metadata"]["namespace"] for o in objects}
    for role in ("viewer", "operator", "restorer"):
        name = f"snapflow.shop.catalog-db-{role}"
        assert where[("ServiceAccount", name)] == sa_ns
        assert where[("Secret", f"{name}.service-account-token")] == sa_ns
        assert where[("Role", name)] == home
        binding = next(o for o in objects if o["kind"] == "RoleBinding" and o["metadata"]["name"] == name)
        assert binding["metadata"]["namespace"] == home
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": name, "namespace": sa_ns}]
    (target,) = [o for o in objects if o["metadata"]["namespace"] == "shop-staging"]
    assert target["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "snapflow.shop.catalog-db-restore",
    }
    assert target["subjects"] == [
        {"kind": "ServiceAccount", "name": "snapflow-catalog-db-restore", "namespace": home}
    ]


def test_roles_create_workflows_only_from_operator_up_and_read_templates_by_name():
    objects = access_objects(parse_policy(EXAMPLE, "p.yaml"), TEMPLATES)
    roles = {
        o["metadata"]["labels"]["snapflow.io/access"]: o["rules"] for o in objects if o["kind"] == "Role"
    }
    for role, rules in roles.items():
        grants = {
            (g, r, v)
            for rule in rules
            for g in rule["apiGroups"]
            for r in rule["resources"]
            for v in rule["verbs"]
        }
        assert (("argoproj.io", "workflows", "create") in grants) == (role != "viewer")
        assert not {v for _, _, v in grants} & {"update", "patch", "delete", "deletecollection", "*"}
        assert not {r for _, r, _ in grants} & {"secrets", "configmaps", "pods/exec", "workflowtaskresults"}
        (templates,) = [r for r in rules if r["resources"] == ["workflowtemplates"]]
        assert templates["resourceNames"] == sorted(TEMPLATES) and templates["verbs"] == ["get"]


def test_no_access_renders_nothing():
    doc = copy.deepcopy(EXAMPLE)
    del doc["spec"]["access"], doc["spec"]["argoServer"]
    assert access_objects(parse_policy(doc, "p.yaml"), TEMPLATES) == []


def test_a_group_mapped_by_two_policies_in_one_account_namespace_is_warned():
    first = parse_policy(EXAMPLE, "a.yaml")
    other = copy.deepcopy(EXAMPLE)
    other["metadata"]["name"] = "orders-db"
    other["spec"]["repository"]["url"] = "s3://backups/shop-orders"
    second = parse_policy(other, "b.yaml")
    warnings = access_warnings([LoadedPolicy(first, "a.yaml"), LoadedPolicy(second, "b.yaml")])
    assert len(warnings) == 4  # every group and user of the example
    assert warnings[0].startswith("a.yaml: spec.access[")
    assert "shop/catalog-db, shop/orders-db" in warnings[0] and "'argo'" in warnings[0]
    # delegated to different namespaces, Argo chooses per namespace: no warning
    other["metadata"]["namespace"] = "orders"
    other["spec"]["argoServer"] = {"delegateRbacToNamespace": True}
    first_delegated = policy_with(argoServer={"delegateRbacToNamespace": True})
    loaded = [
        LoadedPolicy(parse_policy(first_delegated, "a.yaml"), "a.yaml"),
        LoadedPolicy(parse_policy(other, "b.yaml"), "b.yaml"),
    ]
    assert access_warnings(loaded) == []


def rendered_objects(*docs) -> list[dict]:
    loaded = [LoadedPolicy(parse_policy(d, f"p{i}.yaml"), f"p{i}.yaml") for i, d in enumerate(docs)]
    return [o.obj for o in render_policies(loaded).objects]


def test_guardrail_c_allows_the_restorers_namespaces_to_the_restorers_only():
    plain = copy.deepcopy(EXAMPLE)
    plain["metadata"]["name"] = "orders-db"
    plain["spec"]["repository"]["url"] = "s3://backups/shop-orders"
    del plain["spec"]["access"], plain["spec"]["argoServer"]
    objects = rendered_objects(EXAMPLE, plain)
    params = parameters(DEFAULTS, objects)
    restore = params["SnapflowRestoreTargets"]
    assert restore["restorers"] == {
        "shop/restore-app-catalog-db": ["system:serviceaccount:argo:snapflow.shop.catalog-db-restorer"]
    }
    assert restore["restorerNamespaces"] == {"shop/restore-app-catalog-db": ["shop-staging"]}
    # without any restorer the parameters are what they were
    assert set(parameters(DEFAULTS, rendered_objects(plain))["SnapflowRestoreTargets"]) == {
        "exemptGroups",
        "exemptUsers",
        "restoreTargets",
    }

    def found(template: str, target: str, role: str) -> list[str]:
        wf = {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Workflow",
            "metadata": {"name": "r", "namespace": "shop"},
            "spec": {
                "workflowTemplateRef": {"name": template},
                "arguments": {"parameters": [{"name": "target-namespace", "value": target}]},
            },
        }
        user = f"system:serviceaccount:argo:snapflow.shop.catalog-db-{role}"
        return [v.message for v in violations(review(wf, user=user), params)]

    assert found("restore-app-catalog-db", "shop-staging", "restorer") == []
    assert found("restore-app-catalog-db", "shop", "operator") == []
    (message,) = found("restore-app-catalog-db", "shop-staging", "operator")
    assert message.endswith("into namespace shop-staging: allowed are shop; its restorers also: shop-staging")
    assert found("restore-app-catalog-db", "prod", "restorer")
    # another policy's restore-app is not widened by this policy's restorers
    (message,) = found("restore-app-orders-db", "shop-staging", "restorer")
    assert message.endswith("into namespace shop-staging: allowed are shop")


def test_kyverno_rule_c_gives_the_restorers_their_namespaces_and_stays_as_it_was_without():
    from workflows.guardrails.manifests import kyverno_objects
    from workflows.guardrails.schemas import check_objects

    plain = copy.deepcopy(EXAMPLE)
    del plain["spec"]["access"], plain["spec"]["argoServer"]

    def restore_rules(doc) -> list[dict]:
        objects = kyverno_objects(DEFAULTS, rendered_objects(doc))
        assert check_objects(objects) == []
        (policy,) = [o for o in objects if o["metadata"]["name"] == "snapflow-restore-targets"]
        return policy["spec"]["rules"]

    (only,) = restore_rules(plain)
    assert [c["key"] for c in only["preconditions"]["all"]] == [
        "{{ request.namespace }}/{{ request.object.spec.workflowTemplateRef.name || '' }}"
    ]
    everyone, restorers = restore_rules(EXAMPLE)
    user = "system:serviceaccount:argo:snapflow.shop.catalog-db-restorer"
    assert everyone["preconditions"]["all"][1] == {
        "key": "{{ request.userInfo.username }}",
        "operator": "AnyNotIn",
        "value": [user],
    }
    assert everyone["validate"]["deny"]["conditions"]["any"][0]["value"] == ["shop"]
    assert restorers["preconditions"]["all"][1]["operator"] == "AnyIn"
    assert restorers["preconditions"]["all"][1]["value"] == [user]
    assert restorers["validate"]["deny"]["conditions"]["any"][0]["value"] == ["shop", "shop-staging"]


def test_policies_whose_namespace_and_name_join_alike_get_accounts_of_their_own():
    # shop-eu/db and shop/eu-db would both be snapflow-shop-eu-db-ROLE with a dash after the namespace;
    # one account would carry one team's rule into the other's namespace
    names = set()
    for namespace, name in (("shop-eu", "db"), ("shop", "eu-db")):
        doc = copy.deepcopy(EXAMPLE)
        doc["metadata"].update(namespace=namespace, name=name)
        doc["spec"]["access"] = [e for e in doc["spec"]["access"] if e["role"] != "restorer"]
        policy = parse_policy(doc, "p.yaml")
        objects = [o.obj for o in render_policies([LoadedPolicy(policy, "p.yaml")]).objects]
        names |= {
            o["metadata"]["name"]
            for o in objects
            if o["kind"] == "ServiceAccount"
            and o["metadata"].get("annotations", {}).get("workflows.argoproj.io/rbac-rule")
        }
    assert len(names) == 4
    assert "snapflow.shop-eu.db-operator" in names and "snapflow.shop.eu-db-operator" in names
