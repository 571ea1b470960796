"""The rendered RBAC against what the steps say they use (``PERMISSIONS`` / ``CLUSTER_PERMISSIONS`` of
``python -m steps preflight``, which a scenario test proves sufficient for a whole backup): one
ServiceAccount, Role and RoleBinding per step kind, each with what that step uses."""

from __future__ import annotations

import pytest

from steps.manifests.cluster_checks import required_cluster_permissions, required_permissions, steps_using
from tests.fixtures.policies import example_files
from workflows.pipelines import backup_pipeline, plan_for
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


def step_roles(rendering, policy) -> dict[str, tuple[set, set]]:
    """Per step command: the grants of its Role and of its ClusterRole (empty when it has none)."""
    out: dict[str, tuple[set, set]] = {}
    roles = objects_of(rendering, policy)
    for (kind, _name), obj in roles.items():
        step = obj["metadata"]["labels"].get("snapflow.io/step")
        if step == "restore-app" or obj["metadata"]["labels"].get("snapflow.io/access"):
            continue  # restore-app's, and the SSO users' Roles of spec.access (tests/unit/test_access.py)
        namespaced, cluster = out.setdefault(step, (set(), set()))
        (namespaced if kind == "Role" else cluster).update(grants(obj["rules"]))
    return out


@pytest.mark.parametrize(
    ("path", "policy"), example_policies(), ids=lambda v: getattr(v, "name", None) or str(v)
)
def test_each_step_role_grants_what_preflight_checks_for_that_step_and_nothing_else(
    rendered_examples, path, policy
):
    # GIVEN an example policy and what its plan's backup steps use, by preflight's own list and its
    # mapping of each permission to the steps that use it
    plan = plan_for(policy)
    required = {(v, r, g, s) for v, r, g, s, _, _ in required_permissions(plan)}
    required_cluster = {(v, r, g, "") for v, r, g, _, _ in required_cluster_permissions(plan)}
    assert required, "preflight lists the permissions of every backup step"

    # WHEN its manifests are rendered
    by_step = step_roles(rendered_examples[path.name], policy)

    # THEN every step kind of the policy has its own Role, holding what preflight says that step uses
    assert set(by_step) == {"capture", "consistent-point", "prepare-clone", "copy", "verify", "finalize",
                            "restore", "check", "prune", "init"}  # fmt: skip
    for perm in required | required_cluster:
        for step in steps_using(*perm):
            role, cluster = by_step[step]
            assert perm in (cluster if perm in required_cluster else role), (step, perm)
    # ... and nothing outside preflight's list (and the known extras) in any of them
    for step, (role, cluster) in by_step.items():
        assert role - required <= KNOWN_EXTRAS, f"{step}: not used by the steps: {sorted(role - required)}"
        assert cluster <= required_cluster, step
        assert not {v for v, *_ in role | cluster} & FORBIDDEN_VERBS, step
        assert ("create", "workflowtaskresults", "argoproj.io", "") in role, step
    # the data steps hold nothing but the executor's rule
    for step in ("copy", "verify", "restore", "check", "prune", "init"):
        assert by_step[step] == (EXECUTOR, set()), step
    # exec only where a hook runs (and thaws), Secrets only for capture when it exports them
    hooks = any(t.hook != "none" and not t.local for t in policy.spec.quiesce)
    exec_steps = {s for s, (role, _) in by_step.items() if ("create", "pods", "", "exec") in role}
    assert exec_steps == ({"consistent-point", "finalize"} if hooks else set())
    secret_steps = {s for s, (role, _) in by_step.items() if {g for g in role if g[1] == "secrets"}}
    assert secret_steps == ({"capture"} if policy.spec.capture.secrets else set())
    group = policy.spec.snapshot.consistency == "group"
    group_steps = {s for s, (role, _) in by_step.items() if any(g == GROUP for _, _, g, _ in role)}
    assert group_steps == ({"consistent-point", "finalize"} if group else set())
    snapshot_steps = {
        s for s, (role, _) in by_step.items() if any(r == "volumesnapshots" for _, r, _, _ in role)
    }
    assert snapshot_steps == {"consistent-point", "prepare-clone", "finalize"}
    pvc_writers = {
        s for s, (role, _) in by_step.items()
        if {v for v, r, _, _ in role if r == "persistentvolumeclaims"} & {"create", "delete", "patch"}
    }  # fmt: skip
    assert pvc_writers == (
        {"consistent-point", "prepare-clone", "finalize"} if group else {"prepare-clone", "finalize"}
    )


EXECUTOR = {
    ("create", "workflowtaskresults", "argoproj.io", ""),
    ("patch", "workflowtaskresults", "argoproj.io", ""),
}
GROUP = "groupsnapshot.storage.k8s.io"


def test_each_step_template_runs_as_its_own_labelled_account(rendered_examples):
    # GIVEN the rendered manifests of the PostgreSQL example
    rendering = rendered_examples["postgresql-statefulset.yaml"]
    objects = [o.obj for o in rendering.objects]
    templates = {o["metadata"]["name"]: o for o in objects if o["kind"] == "WorkflowTemplate"}

    # THEN every pod template names the account of its step, which exists with a Role and binding of
    # the same name, all labelled with the step kind; no template relies on a workflow-wide account
    rbac = {(o["kind"], o["metadata"]["name"]): o for o in objects if o["kind"] != "WorkflowTemplate"}
    seen = set()
    for name, wt in templates.items():
        assert "serviceAccountName" not in wt["spec"], name
        for t in wt["spec"]["templates"]:
            if "dag" in t:
                assert "serviceAccountName" not in t
                continue
            step = t["metadata"]["labels"]["snapflow.io/step"]
            sa = t["serviceAccountName"]
            seen.add((step, sa))
            assert rbac[("ServiceAccount", sa)]["metadata"]["labels"]["snapflow.io/step"] == step
            if step != "restore-app":
                binding = rbac[("RoleBinding", sa)]
                assert binding["roleRef"] == {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": sa,
                }
                assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": "shop"}]
                assert rbac[("Role", sa)]["metadata"]["labels"]["snapflow.io/step"] == step
                assert binding["metadata"]["labels"]["snapflow.io/step"] == step
    assert dict(seen) == {
        "capture": "snapflow-orders-db-capture",
        "consistent-point": "snapflow-orders-db-consistent-point",
        "prepare-clone": "snapflow-orders-db-prepare-clone",
        "copy": "snapflow-orders-db-copy",
        "verify": "snapflow-orders-db-verify",
        "finalize": "snapflow-orders-db-finalize",
        "restore": "snapflow-orders-db-restore-volume",
        "restore-app": "snapflow-orders-db-restore",
        "check": "snapflow-orders-db-check",
        "prune": "snapflow-orders-db-prune",
        "init": "snapflow-orders-db-init",
    }
    # every RBAC object carries the step label guardrails match on
    for (kind, name), obj in rbac.items():
        if kind in ("ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"]["labels"].get("snapflow.io/step"), (kind, name)


def test_step_account_names_do_not_collide_between_policies_of_a_namespace(minimal_policy, write_policy):
    # GIVEN two policies whose names could run into each other's step suffixes
    first = dict(minimal_policy, metadata={**minimal_policy["metadata"], "name": "db"})
    second = dict(minimal_policy, metadata={**minimal_policy["metadata"], "name": "db-restore"})
    first["spec"] = {**minimal_policy["spec"], "app": "one"}
    second["spec"] = {**minimal_policy["spec"], "app": "two", "repository": {
        **minimal_policy["spec"]["repository"], "url": minimal_policy["spec"]["repository"]["url"] + "-two"}}  # fmt: skip
    names = []
    for doc in (first, second):
        for o in render_files([write_policy(doc)]).objects:
            if o.kind in ("ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"):
                names.append((o.kind, o.obj["metadata"].get("namespace"), o.name))

    # THEN no object name is rendered twice
    assert len(names) == len(set(names))


def test_a_shared_service_account_runs_every_step_and_is_warned_about(minimal_policy, write_policy):
    # GIVEN a policy naming its own ServiceAccount
    minimal_policy["spec"]["workflow"] = {"serviceAccountName": "platform-backup"}
    path = write_policy(minimal_policy)

    # WHEN rendered
    rendering = render_files([path])

    # THEN no RBAC is rendered, every template runs as that account workflow-wide, and a warning says
    # what it gives up
    assert not [o for o in rendering.objects if o.kind in ("ServiceAccount", "Role", "RoleBinding")]
    for o in rendering.objects:
        if o.kind == "WorkflowTemplate":
            assert o.obj["spec"]["serviceAccountName"] == "platform-backup"
            assert not [t for t in o.obj["spec"]["templates"] if "serviceAccountName" in t]
    (warning,) = [w for w in rendering.warnings if "serviceAccountName" in w]
    assert "platform-backup" in warning and "copy and verify" in warning


def test_capture_secrets_off_grants_no_secret_and_tells_capture(minimal_policy, write_policy):
    # GIVEN a policy that keeps Secrets out of its backups
    minimal_policy["spec"]["capture"] = {"secrets": False}
    path = write_policy(minimal_policy)
    policy = load_policies([path])[0].policy

    # WHEN rendered
    rendering = render_files([path])
    by_step = step_roles(rendering, policy)

    # THEN no backup identity has a right on Secrets, and capture does not try to read them
    assert not {g for role, _ in by_step.values() for g in role if g[1] == "secrets"}
    capture = backup_pipeline(policy).step("capture")
    assert "--no-secrets" in capture.args
    # ... and the restore identity reads only the repository's Secrets, by name
    restore_role = objects_of(rendering, policy)[("ClusterRole", "snapflow.shop.orders-db-restore")]
    secret_rules = [r for r in restore_role["rules"] if "secrets" in r["resources"]]
    named = [r for r in secret_rules if r.get("resourceNames")]
    assert [r["verbs"] for r in secret_rules if not r.get("resourceNames")] == [["create"]]
    assert [(r["resourceNames"], r["verbs"]) for r in named] == [
        (sorted({"snapflow-repository", "snapflow-s3"}), ["delete", "get"])
    ]


def test_the_restore_identity_is_bound_only_in_the_policys_namespace(rendered_examples):
    # GIVEN the rendered manifests of the PostgreSQL example
    rendering = rendered_examples["postgresql-statefulset.yaml"]
    by_name = {(o.kind, o.name): o.obj for o in rendering.objects}
    restore_role = by_name[("ClusterRole", "snapflow.shop.orders-db-restore")]
    binding = by_name[("RoleBinding", "snapflow.shop.orders-db-restore")]
    reader_binding = by_name[("ClusterRoleBinding", "snapflow.shop.orders-db-restore-namespaces")]
    reader = by_name[("ClusterRole", "snapflow.shop.orders-db-restore-namespaces")]

    # THEN its object-creating rules are granted by a RoleBinding in the policy's namespace only ...
    assert binding["metadata"]["namespace"] == "shop"
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "snapflow.shop.orders-db-restore",
    }
    subject = [{"kind": "ServiceAccount", "name": "snapflow-orders-db-restore", "namespace": "shop"}]
    assert binding["subjects"] == subject
    cluster_bindings = [o.obj for o in rendering.objects if o.kind == "ClusterRoleBinding"]
    assert not [b for b in cluster_bindings if b["roleRef"]["name"] == "snapflow.shop.orders-db-restore"]
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
    # the restore runs as that identity, the backup's steps do not
    templates = {o.name: o.obj for o in rendering.objects if o.kind == "WorkflowTemplate"}

    def accounts(name: str) -> set[str]:
        return {t["serviceAccountName"] for t in templates[name]["spec"]["templates"] if "container" in t}

    assert accounts("restore-app-orders-db") == {"snapflow-orders-db-restore"}
    assert "snapflow-orders-db-restore" not in accounts("backup-orders-db")
