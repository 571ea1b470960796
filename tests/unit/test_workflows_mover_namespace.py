"""A policy with a mover namespace (``spec.movers.namespace``): lint checks the field; the workflows, their
accounts and pods live in the mover namespace; the app's namespace gets only Roles bound to those
accounts, each with what its step does there; the copy's pod passes baseline where it runs and nothing
of Snapflow's needs more than restricted in the app's namespace; preflight reads both levels."""

from __future__ import annotations

import pytest

from steps.manifests.cluster_checks import (
    RESTORE_MOVER_CLUSTER_PERMISSIONS,
    RESTORE_MOVER_PERMISSIONS,
    Checks,
)
from steps.manifests.podsecurity import check
from workflows.cli import main
from workflows.names import Names
from workflows.pod_security import argo_pods, check_pod_security, mover_pod, pod_templates
from workflows.policy import PolicyError, load_policies
from workflows.rbac import EXECUTOR_RULES
from workflows.render import render_files

MOVERS = "shop-movers"


def _policy(minimal_policy, **movers) -> dict:
    minimal_policy["spec"]["movers"] = movers or {"namespace": MOVERS}
    minimal_policy["spec"]["schedule"] = {"cron": "15 3 * * *"}
    return minimal_policy


@pytest.mark.parametrize(
    ("movers", "expected"),
    [
        ({"namespace": "Shop_Movers"}, "spec.movers.namespace: expected a DNS-1123 label"),
        (
            {"namespace": "shop"},
            "spec.movers.namespace: expected a namespace other than the policy's own (shop)",
        ),
        ({"name": "x"}, "spec.movers.name: unknown field"),
    ],
)
def test_lint_checks_the_mover_namespace_in_one_line(minimal_policy, write_policy, capsys, movers, expected):
    # GIVEN a policy whose mover namespace is wrong
    path = write_policy(_policy(minimal_policy, **movers))
    # WHEN it is loaded and linted
    with pytest.raises(PolicyError) as err:
        load_policies([path])
    # THEN one line names the field and what was expected; lint exits non-zero without a traceback
    assert len(err.value.problems) == 1 and err.value.problems[0].startswith(f"{path}: {expected}")
    assert main(["lint", str(path)]) == 2
    out = capsys.readouterr()
    assert expected in out.err and "Traceback" not in out.err


def test_a_mover_namespace_is_refused_for_local_paths(minimal_policy, write_policy):
    minimal_policy["spec"]["volumes"] = [{"path": "/srv/data", "name": "data"}]
    minimal_policy["spec"]["quiesce"] = []
    minimal_policy["spec"]["movers"] = {"namespace": MOVERS}
    with pytest.raises(PolicyError) as err:
        load_policies([write_policy(minimal_policy)])
    assert any(
        "spec.movers.namespace: expected no mover namespace for local paths" in p for p in err.value.problems
    )


def _objects(minimal_policy, write_policy) -> list[dict]:
    return [o.obj for o in render_files([write_policy(_policy(minimal_policy))]).objects]


def _by(objects: list[dict], kind: str, namespace: str | None = None) -> dict[str, dict]:
    return {
        o["metadata"]["name"]: o
        for o in objects
        if o["kind"] == kind and o["metadata"].get("namespace") == namespace
    }


def _grants(role: dict) -> set[tuple[str, str, str]]:
    return {
        (g, r, v)
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }


def test_workflow_templates_and_accounts_live_in_the_mover_namespace(minimal_policy, write_policy):
    objects = _objects(minimal_policy, write_policy)
    templates = _by(objects, "WorkflowTemplate", MOVERS)
    # every WorkflowTemplate is in the mover namespace, none in the app's
    assert {"backup-orders-db", "restore-app-orders-db", "restore-orders-db"} <= set(templates)
    assert not _by(objects, "WorkflowTemplate", "shop")
    # every step account is a ServiceAccount there, and every pod template names one of them
    accounts = set(_by(objects, "ServiceAccount", MOVERS))
    assert not _by(objects, "ServiceAccount", "shop")
    for wt in templates.values():
        for t in wt["spec"]["templates"]:
            if t.get("container") or t.get("script"):
                assert t["serviceAccountName"] in accounts, (wt["metadata"]["name"], t["name"])
    # prepare-clone makes the clone in the mover namespace; restore-app takes the Secrets from there
    backup = templates["backup-orders-db"]["spec"]["templates"]
    (clone,) = [t for t in backup if t["name"].startswith("prepare-clone-")]
    args = clone["container"]["args"]
    assert args[args.index("--namespace") + 1] == "shop"
    assert args[args.index("--mover-namespace") + 1] == MOVERS
    (restore,) = [t for t in templates["restore-app-orders-db"]["spec"]["templates"] if t.get("container")]
    args = restore["container"]["args"]
    assert args[args.index("--secrets-namespace") + 1] == MOVERS
    assert args[args.index("--source-namespace") + 1] == "shop"
    # ... and runs its mover pods there, handing each filled volume over to its target claim
    assert args[args.index("--mover-namespace") + 1] == MOVERS
    # one backup of the app at a time, whichever namespace's apps share the mover namespace
    mutexes = templates["backup-orders-db"]["spec"]["synchronization"]["mutexes"]
    assert mutexes == [{"name": "snapflow-app-shop-orders-db"}]


def test_rbac_is_least_privilege_in_both_namespaces(minimal_policy, write_policy):
    objects = _objects(minimal_policy, write_policy)
    names = Names.of(load_policies([write_policy(_policy(minimal_policy))])[0].policy)
    account = names.step_account
    home, app = _by(objects, "Role", MOVERS), _by(objects, "Role", "shop")
    executor = {(g, r, v) for g, r, vs in EXECUTOR_RULES for v in vs}
    # in the app's namespace: only the steps that act there, never Argo's executor rule, never a pod
    # or a claim created, no exec for the data movers
    assert set(app) == {account(s) for s in ("capture", "consistent-point", "prepare-clone", "finalize")}
    for role in app.values():
        grants = _grants(role)
        assert not grants & executor
        assert ("", "pods", "create") not in grants and ("", "persistentvolumeclaims", "create") not in grants
    assert _grants(app[account("prepare-clone")]) == {
        ("", "persistentvolumeclaims", "get"),
        ("", "events", "list"),
        ("snapshot.storage.k8s.io", "volumesnapshots", "get"),
        ("snapshot.storage.k8s.io", "volumesnapshots", "list"),
        ("snapshot.storage.k8s.io", "volumesnapshots", "watch"),
    }
    assert ("", "pods/exec", "create") in _grants(app[account("consistent-point")])
    # each app-side Role is bound to the step's account in the mover namespace
    for name, binding in _by(objects, "RoleBinding", "shop").items():
        assert (
            binding["subjects"] == [{"kind": "ServiceAccount", "name": name, "namespace": MOVERS}]
            or name == names.restore_binding
        )
    restore_binding = _by(objects, "RoleBinding", "shop")[names.restore_binding]
    assert restore_binding["subjects"][0]["namespace"] == MOVERS
    # in the mover namespace: the executor rule for every step, plus the clone and the bound snapshot
    # for prepare-clone (create) and finalize (delete); copy and verify hold nothing else
    for command in ("copy", "verify", "capture", "consistent-point"):
        assert _grants(home[account(command)]) == executor, command
    assert ("", "persistentvolumeclaims", "create") in _grants(home[account("prepare-clone")])
    assert ("snapshot.storage.k8s.io", "volumesnapshots", "create") in _grants(home[account("prepare-clone")])
    assert ("snapshot.storage.k8s.io", "volumesnapshots", "delete") in _grants(home[account("finalize")])
    assert not [
        g for g in _grants(home[account("finalize")]) if g[2] == "create" and g[1] != "workflowtaskresults"
    ]
    # restore-app reads only the repository's Secrets there, by name
    restore_home = home[names.restore_service_account]
    (secrets,) = [r for r in restore_home["rules"] if r["resources"] == ["secrets"]]
    assert secrets["verbs"] == ["get"] and secrets["resourceNames"] == ["snapflow-repository", "snapflow-s3"]
    # ... and creates its staging claims and mover pods there (what steps.manifests.cluster_checks
    # says restore-app with a mover namespace uses), nothing else beside the executor rule
    mover_side = {(g, f"{r}/{s}" if s else r, v) for v, r, g, s, _ in RESTORE_MOVER_PERMISSIONS}
    assert _grants(restore_home) - {("", "secrets", "get")} == executor | mover_side
    # cluster-wide it reads Namespaces and gets, lists and patches the volumes it hands over
    restore_cluster = _grants(_by(objects, "ClusterRole")[names.restore_namespaces_role])
    assert restore_cluster == {("", "namespaces", v) for v in ("get", "list", "watch")} | {
        (g, r, v) for v, r, g, _ in RESTORE_MOVER_CLUSTER_PERMISSIONS
    }
    assert {r for _g, r, v in restore_cluster if v == "patch"} == {"persistentvolumes"}
    # cluster-wide: the pre-provisioned contents, created by prepare-clone and deleted by finalize, by
    # name (no list)
    cluster = _by(objects, "ClusterRole")
    clone_cluster = _grants(cluster[names.step_cluster_role("prepare-clone")])
    assert clone_cluster == {
        ("snapshot.storage.k8s.io", "volumesnapshotcontents", "create"),
        ("snapshot.storage.k8s.io", "volumesnapshotcontents", "get"),
    }
    assert ("snapshot.storage.k8s.io", "volumesnapshotcontents", "list") not in _grants(
        cluster[names.step_cluster_role("finalize")]
    )
    for binding in _by(objects, "ClusterRoleBinding").values():
        assert binding["subjects"][0]["namespace"] == MOVERS


def test_every_pod_runs_where_its_level_admits_it(minimal_policy, write_policy):
    # GIVEN the pods of a policy with a mover namespace
    policy = load_policies([write_policy(_policy(minimal_policy))])[0].policy
    templates = pod_templates(policy)
    assert {t.workflow_template for t in templates} >= {"backup-orders-db", "restore-app-orders-db"}
    # THEN baseline (the mover namespace) admits every one of them, restricted rejects only the data movers
    for t in templates:
        assert check(t.spec, "baseline", t.annotations) == [], t.where
    # restore-app's movers, the only pods Snapflow creates in the app's (restricted) namespace, pass
    # restricted when they run as non-root
    assert check(mover_pod(policy, run_as_root=False)["spec"], "restricted") == []
    assert {t.template.split("-")[0] for t in templates if check(t.spec, "restricted", t.annotations)} == {
        "copy",
        "restore",
    }
    # and the rendered WorkflowTemplates hold exactly these pods, all in the mover namespace
    objects = _objects(minimal_policy, write_policy)
    rendered = [
        (o["metadata"]["name"], name)
        for o in objects
        if o["kind"] == "WorkflowTemplate"
        for name, _spec, _notes in argo_pods(o)
    ]
    assert sorted(rendered) == sorted((t.workflow_template, t.template) for t in templates)


def _namespaces(kube_server, **levels) -> None:
    for name, level in levels.items():
        labels = {"pod-security.kubernetes.io/enforce": level} if level else {}
        kube_server.create(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}
        )


@pytest.fixture
def client(kube_server, kubeconfig):
    from steps.drivers.kube import KubeClient, KubeSettings

    with KubeClient(KubeSettings.from_env()) as c:
        yield c


def _policy_obj(minimal_policy, write_policy):
    return load_policies([write_policy(_policy(minimal_policy))])[0].policy


def test_preflight_admits_a_restricted_app_namespace_with_a_baseline_mover_namespace(
    kube_server, client, minimal_policy, write_policy
):
    _namespaces(kube_server, shop="restricted", **{MOVERS: "baseline"})
    checks = Checks()
    check_pod_security(client, _policy_obj(minimal_policy, write_policy), checks)
    found = [(c["status"], c["message"]) for c in checks.items]
    assert not [m for s, m in found if s == "fail"], found
    assert any(
        s == "ok"
        and m.startswith(f"mover namespace {MOVERS}: enforce=baseline admits")
        and m.endswith("and the restore mover")
        for s, m in found
    ), found
    # restore-app's movers run in the mover namespace too: nothing of the workflows runs in the app's
    # namespace, so its restricted level rejects nothing there; Argo's executor matters only where the
    # workflows run
    assert not [m for _s, m in found if "namespace shop: enforce=restricted rejects" in m], found
    assert (
        "ok",
        f"namespace shop: enforce=restricted; no pod of the workflows runs there (step pods and "
        f"restore movers run in {MOVERS})",
    ) in found
    assert not [m for _s, m in found if "init and wait containers" in m]


def test_preflight_checks_the_restore_mover_against_the_mover_namespace(
    kube_server, client, minimal_policy, write_policy
):
    # a restricted mover namespace rejects the root mover (restores need mover-non-root), whatever
    # the app's namespace enforces
    _namespaces(kube_server, shop="privileged", **{MOVERS: "restricted"})
    checks = Checks()
    check_pod_security(client, _policy_obj(minimal_policy, write_policy), checks)
    found = [(c["status"], c["message"]) for c in checks.items]
    assert any(
        s == "warn"
        and m.startswith(f"mover namespace {MOVERS}: enforce=restricted rejects the restore mover as root")
        for s, m in found
    ), found
    assert not [m for _s, m in found if m.startswith("namespace shop: enforce=privileged rejects")]


def test_preflight_names_the_copy_when_the_mover_namespace_is_restricted(
    kube_server, client, minimal_policy, write_policy
):
    _namespaces(kube_server, shop="restricted", **{MOVERS: "restricted"})
    checks = Checks()
    check_pod_security(client, _policy_obj(minimal_policy, write_policy), checks)
    failed = [c["message"] for c in checks.items if c["status"] == "fail"]
    assert any(
        m.startswith(
            f"mover namespace {MOVERS}: enforce=restricted rejects WorkflowTemplate backup-orders-db, template copy-"
        )
        and "it needs the baseline level" in m
        for m in failed
    ), failed
    warned = [c["message"] for c in checks.items if c["status"] == "warn"]
    assert any(
        m.startswith(f"mover namespace {MOVERS}: enforce=restricted also rejects Argo's init") for m in warned
    )


def test_preflight_fails_when_the_mover_namespace_is_missing(
    kube_server, client, minimal_policy, write_policy
):
    _namespaces(kube_server, shop="restricted")
    checks = Checks()
    check_pod_security(client, _policy_obj(minimal_policy, write_policy), checks)
    failed = [c["message"] for c in checks.items if c["status"] == "fail"]
    assert failed == [
        f"mover namespace {MOVERS} (spec.movers.namespace) does not exist: create it, labelled "
        "pod-security.kubernetes.io/enforce=baseline, with the repository's Secrets"
    ]


def test_a_policy_with_a_mover_namespace_renders_everything_the_workflows_use_beside_them(
    minimal_policy, write_policy, capsys
):
    # GIVEN a scheduled policy with a mover namespace, rendered
    path = write_policy(_policy(minimal_policy))
    rendering = render_files([path])
    objects = [o.obj for o in rendering.objects]
    # THEN the plan and the CronWorkflow are beside the WorkflowTemplates, nothing of them in the app's
    assert set(_by(objects, "ConfigMap", MOVERS)) == {"snapflow-plan-orders-db"}
    assert set(_by(objects, "CronWorkflow", MOVERS)) == {"backup-orders-db"}
    assert not _by(objects, "ConfigMap", "shop") and not _by(objects, "CronWorkflow", "shop")
    # the repository's Secrets the pods mount are expected there too
    assert rendering.external and {e.namespace for e in rendering.external} == {MOVERS}
    # AND lint passes and names them
    assert main(["lint", str(path)]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert f"needs Secret {MOVERS}/" in out and "needs Secret shop/" not in out
