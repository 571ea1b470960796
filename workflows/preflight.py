"""Preflight of a policy against a live cluster, before its first backup (``snapflow preflight``).

Wraps the steps' own checks (:func:`steps.commands.preflight.preflight`: API, namespace, snapshot API
and classes per CSI driver, RBAC, Pod Security, repository) with the policy's plan and its rendered
ServiceAccount, and adds ``rbac-restore``: the restore identity may do what restore-app does in the
policy's namespace (:func:`workflows.rbac.restore_rules`). The access checks are SubjectAccessReviews,
so the caller needs the right to create them (a cluster administrator); ``current_identity`` checks
the caller instead of the ServiceAccounts.

The repository is opened only when the password is in this process's environment
(``SNAPFLOW_PASSWORD`` / ``SNAPFLOW_PASSWORD_FILE``, with ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` and ``SNAPFLOW_S3_*``): the policy names a Secret in the cluster, which
preflight does not read. Called by :mod:`workflows.cli.cmd_preflight`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from workflows.hera_builder import Names
from workflows.pipeline import plan_for
from workflows.policy import Policy
from workflows.rbac import RESTORE_CLUSTER_RULES, restore_rules

STATUS_WORDS = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}


@dataclass
class PolicyChecks:
    policy: Policy
    items: list[dict[str, str]]

    @property
    def failed(self) -> list[dict[str, str]]:
        return [c for c in self.items if c["status"] == "fail"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": f"{self.policy.namespace}/{self.policy.name}",
            "ok": not self.failed,
            "checks": self.items,
        }

    def lines(self) -> list[str]:
        return [f"{STATUS_WORDS[c['status']]} {c['check']:<15} {c['message']}" for c in self.items]


def password_in_environment() -> bool:
    return bool(os.environ.get("SNAPFLOW_PASSWORD") or os.environ.get("SNAPFLOW_PASSWORD_FILE"))


def check_restore_rbac(client, policy: Policy, checks) -> None:
    """``rbac-restore``: the restore ServiceAccount's rights in the policy's namespace."""
    from steps.commands.preflight import allowed
    from steps.drivers.kube import KubeError

    names = Names(policy)
    sa = f"{policy.namespace}/{names.restore_service_account}"
    missing: list[str] = []
    try:
        for rule in restore_rules(policy):
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    plural, _, sub = resource.partition("/")
                    for verb in rule["verbs"]:
                        if not allowed(client, sa, verb, plural, group, policy.namespace, sub):
                            missing.append(f"{verb} {resource}{'.' + group if group else ''}")
        for group, resource, verbs in RESTORE_CLUSTER_RULES:
            for verb in verbs:
                if not allowed(client, sa, verb, resource, group, None):
                    missing.append(f"{verb} {resource} (cluster)")
    except KubeError as err:
        checks.add("rbac-restore", "warn", f"access reviews not possible: {err}")
        return
    if missing:
        checks.add(
            "rbac-restore",
            "fail",
            f"ServiceAccount {sa} may not, in namespace {policy.namespace}: {'; '.join(missing)} "
            "(restore-app needs it; apply the rendered RBAC)",
        )
    else:
        checks.add("rbac-restore", "ok", f"ServiceAccount {sa} may restore the app into {policy.namespace}")


def preflight_policy(
    client,
    policy: Policy,
    *,
    service_account: str = "",
    current_identity: bool = False,
    repository: bool = True,
) -> PolicyChecks:
    """Every check for one policy. ``service_account`` (``NS/NAME``) overrides the policy's own."""
    from steps.commands.preflight import preflight

    plan = plan_for(policy)
    names = Names(policy)
    sa = "" if current_identity else service_account or f"{policy.namespace}/{names.service_account}"
    open_repository = repository and password_in_environment()
    checks = preflight(client, plan, service_account=sa, repository=open_repository)
    if repository and not open_repository:
        checks.add(
            "repository",
            "warn",
            "not checked: set SNAPFLOW_PASSWORD (or SNAPFLOW_PASSWORD_FILE) and the S3 credentials to open "
            f"{policy.spec.repository.url} from here, or pass --skip-repository",
        )
    api_ok = any(c["check"] == "api" and c["status"] == "ok" for c in checks.items)
    if api_ok and not current_identity and not service_account:
        check_restore_rbac(client, policy, checks)
    return PolicyChecks(policy, checks.items)
