"""The guardrails' Rego, run by a real Rego engine (regopy) on admission reviews as Gatekeeper builds
them: for each rule, requests it must admit and requests it must refuse."""

from __future__ import annotations

import copy
import json

import pytest

from workflows.guardrails.evaluate import inventory, review, violations
from workflows.guardrails.rego import (
    PROTECTED_NAMESPACE,
    REPOSITORY_TENANT,
    RESTORE_TARGETS,
    SERVICE_ACCOUNTS,
    SUSPEND_REASON,
)
from workflows.guardrails.settings import Settings, parameters
from workflows.render import render_files

CONTROLLER = "system:serviceaccount:argo:argo"
SETTINGS = Settings(
    exempt_groups=("platform-admins",),
    argo_controller=CONTROLLER,
    restore_targets={"shop/orders-db": ("shop-restored", "shop-test-*")},
)


@pytest.fixture(scope="module")
def rendered():
    return [o.obj for o in render_files(["examples/postgresql-statefulset.yaml"]).objects]


@pytest.fixture(scope="module")
def params(rendered):
    return parameters(SETTINGS, rendered)


def by_name(objects, kind, name):
    return copy.deepcopy(next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name))


def messages(rule, admission, params, synced=None):
    return [v.message for v in violations(admission, params, synced, rules=[rule])]


def workflow(spec, name="run-1", namespace="shop"):
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def pod(service_account, labels=None):
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "shop", "labels": labels or {}},
        "spec": {"serviceAccountName": service_account, "containers": [{"name": "c", "image": "busybox"}]},
    }


# --- (a) protected namespaces ------------------------------------------------------------------------


def namespace(name="shop", protected=True):
    labels = {"snapflow.io/protected": "true"} if protected else {}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def test_protected_namespace_with_its_backup_cron_workflow_passes_the_audit(rendered, params):
    synced = inventory(o for o in rendered if o["kind"] == "CronWorkflow")
    assert messages(PROTECTED_NAMESPACE, review(namespace()), params, synced) == []


def test_protected_namespace_without_a_backup_cron_workflow_is_an_audit_finding(rendered, params):
    # GIVEN only the prune and check CronWorkflows of the policy in the inventory
    synced = inventory(
        o for o in rendered if o["kind"] == "CronWorkflow" and o["metadata"]["name"] != "backup-orders-db"
    )
    # THEN the protected namespace is named
    (msg,) = messages(PROTECTED_NAMESPACE, review(namespace()), params, synced)
    assert "namespace shop is labelled snapflow.io/protected=true" in msg
    # and an unlabelled namespace is not
    assert messages(PROTECTED_NAMESPACE, review(namespace(protected=False)), params, synced) == []


def test_a_suspended_backup_does_not_protect_a_namespace(rendered, params):
    cron = by_name(rendered, "CronWorkflow", "backup-orders-db")
    cron["spec"]["suspend"] = True
    assert messages(PROTECTED_NAMESPACE, review(namespace()), params, inventory([cron]))


def test_a_backup_in_a_mover_namespace_protects_the_namespace_it_names(rendered, params):
    cron = by_name(rendered, "CronWorkflow", "backup-orders-db")
    cron["metadata"]["namespace"] = "movers"
    synced = inventory([cron])
    assert messages(PROTECTED_NAMESPACE, review(namespace()), params, synced)
    cron["metadata"]["labels"]["snapflow.io/policy-namespace"] = "shop"
    assert messages(PROTECTED_NAMESPACE, review(namespace()), params, inventory([cron])) == []


# --- (b) Snapflow ServiceAccounts ---------------------------------------------------------------------


def test_a_bare_pod_with_a_snapflow_account_is_refused_even_with_argo_labels(params):
    labels = {"workflows.argoproj.io/workflow": "backup-orders-db-x7k2q"}
    (msg,) = messages(SERVICE_ACCOUNTS, review(pod("snapflow-orders-db-copy", labels)), params)
    assert "Pod shop/p uses Snapflow ServiceAccount snapflow-orders-db-copy" in msg


def test_the_argo_controller_creates_pods_with_snapflow_accounts(params):
    assert messages(SERVICE_ACCOUNTS, review(pod("snapflow-orders-db-copy"), user=CONTROLLER), params) == []


def test_pods_with_other_accounts_are_not_concerned(params):
    assert messages(SERVICE_ACCOUNTS, review(pod("app")), params) == []
    assert (
        messages(SERVICE_ACCOUNTS, review(pod("snapflow-orders-db-copy"), operation="DELETE"), params) == []
    )


def test_an_account_labelled_as_a_snapflow_step_in_the_inventory_is_protected_too(params):
    sa = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": "snapflow-other-copy",
            "namespace": "shop",
            "labels": {"snapflow.io/step": "copy"},
        },
    }
    assert messages(SERVICE_ACCOUNTS, review(pod("snapflow-other-copy")), params, inventory([sa]))
    assert messages(SERVICE_ACCOUNTS, review(pod("snapflow-other-copy")), params) == []


def test_a_hand_made_workflow_with_inline_templates_and_the_backup_account_is_refused(params):
    spec = {
        "entrypoint": "main",
        "templates": [
            {
                "name": "main",
                "serviceAccountName": "snapflow-orders-db-capture",
                "container": {"image": "busybox", "command": ["cat", "/var/run/secrets/x"]},
            }
        ],
    }
    (msg,) = messages(SERVICE_ACCOUNTS, review(workflow(spec)), params)
    assert "Workflow shop/run-1 names Snapflow ServiceAccount snapflow-orders-db-capture" in msg


def test_a_run_of_a_snapflow_template_with_arguments_only_is_admitted(params):
    spec = {
        "workflowTemplateRef": {"name": "backup-orders-db"},
        "arguments": {"parameters": [{"name": "x", "value": "1"}]},
    }
    assert messages(SERVICE_ACCOUNTS, review(workflow(spec)), params) == []


@pytest.mark.parametrize(
    "override",
    [
        {"podSpecPatch": '{"containers":[{"name":"main","image":"evil"}]}'},
        {"serviceAccountName": "snapflow-orders-db-copy"},
        {"templates": [{"name": "copy", "container": {"image": "evil"}}]},
        {"entrypoint": "copy"},
    ],
)
def test_a_run_of_a_snapflow_template_that_overrides_what_runs_is_refused(params, override):
    spec = {"workflowTemplateRef": {"name": "backup-orders-db"}, **override}
    found = messages(SERVICE_ACCOUNTS, review(workflow(spec)), params)
    assert any("runs Snapflow WorkflowTemplate backup-orders-db and overrides" in m for m in found)
    assert any(next(iter(override)) in m for m in found)


def test_a_workflow_template_naming_a_snapflow_account_only_from_the_platform_team(rendered, params):
    template = by_name(rendered, "WorkflowTemplate", "backup-orders-db")
    assert messages(SERVICE_ACCOUNTS, review(template), params)
    assert messages(SERVICE_ACCOUNTS, review(template, groups=["platform-admins"]), params) == []
    cluster = copy.deepcopy(template)
    cluster["kind"] = "ClusterWorkflowTemplate"
    del cluster["metadata"]["namespace"]
    assert messages(SERVICE_ACCOUNTS, review(cluster), params)


# --- (c) restore targets ------------------------------------------------------------------------------


def restore(target=None, value_from=False):
    parameter = {"name": "target-namespace"}
    if value_from:
        parameter["valueFrom"] = {"configMapKeyRef": {"name": "x", "key": "y"}}
    elif target is not None:
        parameter["value"] = target
    return workflow(
        {"workflowTemplateRef": {"name": "restore-app-orders-db"}, "arguments": {"parameters": [parameter]}}
    )


@pytest.mark.parametrize("target", ["shop", "shop-restored", "shop-test-1"])
def test_restores_into_allowed_namespaces_are_admitted(params, target):
    assert messages(RESTORE_TARGETS, review(restore(target)), params) == []


@pytest.mark.parametrize("target", ["kube-system", "payments", "shop-restored-2"])
def test_restores_into_other_namespaces_are_refused(params, target):
    (msg,) = messages(RESTORE_TARGETS, review(restore(target)), params)
    assert f"into namespace {target}: allowed are shop, shop-restored, shop-test-*" in msg


def test_a_restore_target_taken_from_elsewhere_cannot_be_checked_and_is_refused(params):
    assert messages(RESTORE_TARGETS, review(restore(value_from=True)), params)


def test_a_restore_into_the_template_default_is_admitted(params):
    run = workflow({"workflowTemplateRef": {"name": "restore-app-orders-db"}})
    assert messages(RESTORE_TARGETS, review(run), params) == []


# --- (d) repositories and tenants ---------------------------------------------------------------------


def plan_in(rendered, namespace, url=None):
    plan = by_name(rendered, "ConfigMap", "snapflow-plan-orders-db")
    plan["metadata"]["namespace"] = namespace
    if url:
        data = json.loads(plan["data"]["plan.json"])
        data["repository"]["url"] = url
        plan["data"]["plan.json"] = json.dumps(data)
    return plan


def test_a_policy_in_its_own_namespace_with_its_repository_is_admitted(rendered, params):
    synced = inventory([plan_in(rendered, "shop")])
    assert messages(REPOSITORY_TENANT, review(plan_in(rendered, "shop")), params, synced) == []


def test_another_namespace_using_a_rendered_tenants_repository_is_refused(rendered, params):
    (msg,) = messages(REPOSITORY_TENANT, review(plan_in(rendered, "payments")), params)
    assert "repository s3://backups/shop belongs to namespace(s) shop, not payments" in msg


def test_two_namespaces_sharing_a_repository_found_in_the_inventory_are_refused(rendered, params):
    url = "s3://backups/common"
    synced = inventory([plan_in(rendered, "billing", url)])
    (msg,) = messages(REPOSITORY_TENANT, review(plan_in(rendered, "payments", url)), params, synced)
    assert "already used by namespace billing" in msg
    shared = {
        **params,
        REPOSITORY_TENANT.kind: {**params[REPOSITORY_TENANT.kind], "sharedRepositories": [url]},
    }
    assert messages(REPOSITORY_TENANT, review(plan_in(rendered, "payments", url)), shared, synced) == []


def test_a_repository_outside_the_tenants_prefixes_is_refused(rendered):
    settings = Settings(
        exempt_groups=("platform-admins",), tenant_repositories={"shop": ("s3://backups/shop-",)}
    )
    params = parameters(settings, [plan_in(rendered, "shop")])
    (msg,) = messages(REPOSITORY_TENANT, review(plan_in(rendered, "shop")), params)
    assert "outside namespace shop's repositories (s3://backups/shop-)" in msg
    assert (
        messages(REPOSITORY_TENANT, review(plan_in(rendered, "shop", "s3://backups/shop-db")), params) == []
    )


def test_the_workflow_templates_repository_is_checked_too(rendered, params):
    template = by_name(rendered, "WorkflowTemplate", "backup-orders-db")
    template["metadata"]["namespace"] = "payments"
    assert messages(REPOSITORY_TENANT, review(template), params)


# --- (e) suspended backups ----------------------------------------------------------------------------


def suspended(rendered, **annotations):
    cron = by_name(rendered, "CronWorkflow", "backup-orders-db")
    cron["spec"]["suspend"] = True
    cron["metadata"]["annotations"].update(annotations)
    return cron


def test_suspending_a_backup_without_who_and_why_is_refused(rendered, params):
    (msg,) = messages(SUSPEND_REASON, review(suspended(rendered), operation="UPDATE"), params)
    assert "snapflow.io/suspended-by and snapflow.io/suspend-reason" in msg
    half = suspended(rendered, **{"snapflow.io/suspended-by": "alice"})
    (msg,) = messages(SUSPEND_REASON, review(half, operation="UPDATE"), params)
    assert "without snapflow.io/suspend-reason:" in msg


def test_suspending_a_backup_with_who_and_why_is_admitted(rendered, params):
    cron = suspended(
        rendered, **{"snapflow.io/suspended-by": "alice", "snapflow.io/suspend-reason": "storage migration"}
    )
    assert messages(SUSPEND_REASON, review(cron, operation="UPDATE"), params) == []


def test_running_backups_and_the_controller_are_not_concerned(rendered, params):
    assert (
        messages(SUSPEND_REASON, review(by_name(rendered, "CronWorkflow", "backup-orders-db")), params) == []
    )
    assert messages(SUSPEND_REASON, review(suspended(rendered), user=CONTROLLER), params) == []
    prune = by_name(rendered, "CronWorkflow", "prune-orders-db")
    prune["spec"]["suspend"] = True
    assert messages(SUSPEND_REASON, review(prune), params) == []


def test_a_hand_made_cron_workflow_running_the_backup_template_counts_as_a_backup(params):
    cron = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "CronWorkflow",
        "metadata": {"name": "my-backup", "namespace": "shop"},
        "spec": {
            "suspend": True,
            "schedules": ["0 * * * *"],
            "workflowSpec": {"workflowTemplateRef": {"name": "backup-orders-db"}},
        },
    }
    assert messages(SUSPEND_REASON, review(cron), params)


def test_a_quoted_target_is_still_refused_though_the_engine_cannot_print_it(params):
    (msg,) = messages(RESTORE_TARGETS, review(restore('x"y')), params)
    assert "holds a quote" in msg


def test_the_audit_of_existing_objects_reports_a_suspended_backup_and_a_bare_pod(rendered, params):
    assert messages(SUSPEND_REASON, review(suspended(rendered), operation=None), params)
    assert messages(SERVICE_ACCOUNTS, review(pod("snapflow-orders-db-copy"), operation=None), params)
