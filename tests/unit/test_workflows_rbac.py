"""The rendered RBAC against what the steps say they use (``PERMISSIONS`` / ``CLUSTER_PERMISSIONS`` of
``python -m steps preflight``, which a scenario test proves sufficient for a whole backup)."""

from __future__ import annotations

import pytest

from steps.commands.preflight import required_cluster_permissions, required_permissions
from tests.fixtures.policies import example_files
from workflows.pipeline import backup_pipeline, plan_for
from workflows.policy import load_policies
from workflows.render import render_files

# What the steps' Role may hold beyond preflight's list, and why.
KNOWN_EXTRAS = {
    # capture lists every kind it may; these complete a typical app (preflight checks the main ones)
    ("list", "daemonsets", "apps", ""),
    ("list", "cronjobs", "batch", ""),
    ("list", "jobs", "batch", ""),
    ("list", "poddisruptionbudgets", "policy", ""),
    ("list", "horizontalpodautoscalers", "autoscaling", ""),
    ("list", "ingresses", "networking.k8s.io", ""),
    ("list", "networkpolicies", "networking.k8s.io", ""),
    # Argo's executor reports each step's outputs
    ("create", "workflowtaskresults", "argoproj.io", ""),
    ("patch", "workflowtaskresults", "argoproj.io", ""),
}
FORBIDDEN_VERBS = {"*", "update", "deletecollection", "escalate", "bind", "impersonate"}


def grants(rules: list[dict]) -> set[tuple[str, str, str, str]]:
    """(verb, resource, group, subresource) of every rule, like preflight's PERMISSIONS."""
    out = set()
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                plural, _, sub = resource.partition("/")
                for verb in rule["verbs"]:
                    out.add((verb, plural, group, sub))
    return out


def objects_of(rendering, policy) -> dict[tuple[str, str], dict]:
    return {
        (o.kind, o.name): o.obj
        for o in rendering.objects
        if o.policy == f"{policy.namespace}/{policy.name}" and o.kind in ("Role", "ClusterRole")
    }


def example_policies():
    return [(path, item.policy) for path in example_files() for item in load_policies([path])]


@pytest.mark.parametrize(
    ("path", "policy"), example_policies(), ids=lambda v: getattr(v, "name", None) or str(v)
)
def test_the_rendered_role_grants_what_preflight_checks_and_nothing_else(rendered_examples, path, policy):
    # GIVEN an example policy and what its plan's backup steps use, by preflight's own list
    plan = plan_for(policy)
    required = {(v, r, g, s) for v, r, g, s, _, _ in required_permissions(plan)}
    required_cluster = {(v, r, g, "") for v, r, g, _, _ in required_cluster_permissions(plan)}
    assert required, "preflight lists the permissions of every backup step"

    # WHEN its manifests are rendered
    roles = objects_of(rendered_examples[path.name], policy)
    role = grants(roles[("Role", f"snapflow-{policy.name}")]["rules"])
    cluster = grants(
        roles[("ClusterRole", f"snapflow-{policy.namespace}-{policy.name}-cluster-reads")]["rules"]
    )

    # THEN the Role grants at least that, and nothing outside the known set for the policy's features
    assert required <= role, f"missing: {sorted(required - role)}"
    assert role - required <= KNOWN_EXTRAS, f"not used by the steps: {sorted(role - required - KNOWN_EXTRAS)}"
    assert cluster == required_cluster
    assert not {v for v, *_ in role | cluster} & FORBIDDEN_VERBS
    group = policy.spec.snapshot.consistency == "group"
    assert any(g == "groupsnapshot.storage.k8s.io" for _, _, g, _ in role) == group
    assert (("list", "secrets", "", "") in role) == policy.spec.capture.secrets
    hooks = any(t.hook != "none" for t in policy.spec.quiesce)
    assert (("create", "pods", "", "exec") in role) == hooks


def test_capture_secrets_off_grants_no_secret_and_tells_capture(minimal_policy, write_policy):
    # GIVEN a policy that keeps Secrets out of its backups
    minimal_policy["spec"]["capture"] = {"secrets": False}
    path = write_policy(minimal_policy)
    policy = load_policies([path])[0].policy

    # WHEN rendered
    rendering = render_files([path])
    role = grants(objects_of(rendering, policy)[("Role", "snapflow-orders-db")]["rules"])

    # THEN its backup identity has no right on Secrets, and capture does not try to read them
    assert not {g for g in role if g[1] == "secrets"}
    required = {(v, r, g, s) for v, r, g, s, _, _ in required_permissions(plan_for(policy))}
    assert required <= role
    capture = backup_pipeline(policy).step("capture")
    assert "--no-secrets" in capture.args


def test_the_restore_identity_is_bound_only_in_the_policys_namespace(rendered_examples):
    # GIVEN the rendered manifests of the PostgreSQL example
    rendering = rendered_examples["postgresql-statefulset.yaml"]
    by_name = {(o.kind, o.name): o.obj for o in rendering.objects}
    restore_role = by_name[("ClusterRole", "snapflow-shop-orders-db-restore")]
    binding = by_name[("RoleBinding", "snapflow-orders-db-restore")]
    reader_binding = by_name[("ClusterRoleBinding", "snapflow-shop-orders-db-restore-namespaces")]
    reader = by_name[("ClusterRole", "snapflow-shop-orders-db-restore-namespaces")]

    # THEN its object-creating rules are granted by a RoleBinding in the policy's namespace only ...
    assert binding["metadata"]["namespace"] == "shop"
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "snapflow-shop-orders-db-restore",
    }
    subject = [{"kind": "ServiceAccount", "name": "snapflow-orders-db-restore", "namespace": "shop"}]
    assert binding["subjects"] == subject
    cluster_bindings = [o.obj for o in rendering.objects if o.kind == "ClusterRoleBinding"]
    assert not [b for b in cluster_bindings if b["roleRef"]["name"] == "snapflow-shop-orders-db-restore"]
    # ... and cluster-wide it only reads Namespaces (it never creates one)
    assert reader_binding["subjects"] == subject
    assert grants(reader["rules"]) == {
        ("get", "namespaces", "", ""),
        ("list", "namespaces", "", ""),
        ("watch", "namespaces", "", ""),
    }
    restore = grants(restore_role["rules"])
    assert not {v for v, *_ in restore} & FORBIDDEN_VERBS
    assert not {r for _, r, _, _ in restore} & {"roles", "rolebindings", "clusterroles", "namespaces"}
    # it creates the app's objects and its mover pods, and watches them
    for needed in [
        ("create", "statefulsets", "apps", ""),
        ("patch", "statefulsets", "apps", ""),
        ("create", "persistentvolumeclaims", "", ""),
        ("create", "pods", "", ""),
        ("watch", "pods", "", ""),
        ("get", "pods", "", "log"),
        ("create", "secrets", "", ""),
        ("create", "pods", "", "exec"),
    ]:
        assert needed in restore, needed
    # the restore runs as that identity, the backup does not
    templates = {o.name: o.obj for o in rendering.objects if o.kind == "WorkflowTemplate"}
    assert templates["restore-app-orders-db"]["spec"]["serviceAccountName"] == "snapflow-orders-db-restore"
    assert templates["backup-orders-db"]["spec"]["serviceAccountName"] == "snapflow-orders-db"
