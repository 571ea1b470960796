"""The backup steps need no more than the permissions preflight checks: a backup with RBAC enforced."""

from __future__ import annotations

import json

import pytest

from steps.manifests.cluster_checks import CLUSTER_PERMISSIONS, PERMISSIONS
from tests.fixtures.k8s_app import APP_NS, run_step


def grant(server, namespace: str, sa: str, consistency: str) -> str:
    """A Role and ClusterRole of exactly preflight's rules, bound to ServiceAccount ``sa``."""
    rules = [
        {"apiGroups": [group], "resources": [f"{res}/{sub}" if sub else res], "verbs": [verb]}
        for verb, res, group, sub, _, group_only in PERMISSIONS
        if consistency == "group" or not group_only
    ]
    cluster_rules = [
        {"apiGroups": [group], "resources": [res], "verbs": [verb]}
        for verb, res, group, _, group_only in CLUSTER_PERMISSIONS
        if consistency == "group" or not group_only
    ]
    rbac = "rbac.authorization.k8s.io/v1"
    server.create(
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa, "namespace": namespace}}
    )
    server.create(
        {"apiVersion": rbac, "kind": "Role", "metadata": {"name": sa, "namespace": namespace}, "rules": rules}
    )
    server.create(
        {
            "apiVersion": rbac,
            "kind": "RoleBinding",
            "metadata": {"name": sa, "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": sa},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": namespace}],
        }
    )
    server.create(
        {
            "apiVersion": rbac,
            "kind": "ClusterRole",
            "metadata": {"name": f"{namespace}-{sa}"},
            "rules": cluster_rules,
        }
    )
    server.create(
        {
            "apiVersion": rbac,
            "kind": "ClusterRoleBinding",
            "metadata": {"name": f"{namespace}-{sa}"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": f"{namespace}-{sa}",
            },
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": namespace}],
        }
    )
    return server.service_account_token(namespace, sa)


@pytest.mark.parametrize("consistency", ["volume", "group"])
def test_backup_works_with_exactly_the_permissions_preflight_checks(k8s, monkeypatch, consistency):
    # GIVEN the app, and the step ServiceAccount holding only preflight's rules, with RBAC enforced
    k8s.deploy_app()
    token = grant(k8s.server, APP_NS, "snapflow-db", consistency)
    k8s.server.enforce_rbac = True

    # WHEN an administrator's preflight checks the ServiceAccount, and the whole backup runs as it
    res = run_step(
        "preflight",
        "--plan",
        k8s.plan(consistency=consistency),
        "--service-account",
        f"{APP_NS}/snapflow-db",
        "--json",
    )
    assert res.rc == 0, res.stdout + res.stderr
    assert ("rbac", "ok") in {(c["check"], c["status"]) for c in json.loads(res.last_line)["checks"]}
    monkeypatch.setenv("KUBECONFIG", str(k8s.server.write_kubeconfig(k8s.tmp / "sa-kubeconfig", token=token)))
    record = k8s.backup(f"backup-rbac-{consistency}", consistency=consistency)

    # THEN the backup is committed, app-consistent, with the content's cut time
    assert record["verdict"] == "app-consistent"
    res = run_step("snapshots", "--repo", k8s.repo, "--json")
    assert res.rc == 0
    assert not k8s.frozen_marker.exists()
    assert "no permission" not in json.dumps(record)
