"""Guardrail settings (who is exempt, the protected-namespace label, allowed restore targets, tenants'
repositories) and the Constraint parameters they and the rendered policies give.

A settings file (``snapflow render --guardrails --guardrail-settings FILE``)::

    apiVersion: snapflow.io/v1alpha1
    kind: GuardrailSettings
    spec:
      exempt:                      # the platform team: never refused (break-glass), at least one entry
        groups: [platform-admins]
        users: []
      argoController: system:serviceaccount:argo:argo   # the only creator of Snapflow step pods
      enforcement: deny            # deny | warn | dryrun (rule a is always warn: it audits)
      protectedLabel: snapflow.io/protected
      restoreTargets:              # POLICY-NAMESPACE/POLICY-NAME: namespaces restore-app may restore into
        shop/orders-db: [shop-restored, "shop-test-*"]
      tenantRepositories:          # NAMESPACE: repository URL prefixes of that tenant
        shop: ["s3://backups/shop"]

Without a file, :data:`DEFAULTS` apply (cluster admins exempt, Argo's default controller account).
Called by :mod:`workflows.guardrails.manifests` and ``snapflow lint``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from steps.api import UsageError

ENFORCEMENT = ("deny", "warn", "dryrun")
SERVICE_ACCOUNT_USER = re.compile(
    r"^system:serviceaccount:[a-z0-9]([-a-z0-9]*[a-z0-9])?:[a-z0-9]([-.a-z0-9]*[a-z0-9])?$"
)
# Identities every request carries: exempting them exempts everyone.
EVERYONE = ("system:authenticated", "system:unauthenticated", "system:serviceaccounts")
NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True)
class Settings:
    exempt_groups: tuple[str, ...] = ("system:masters",)
    exempt_users: tuple[str, ...] = ()
    argo_controller: str = "system:serviceaccount:argo:argo"
    enforcement: str = "deny"
    protected_label: str = "snapflow.io/protected"
    restore_targets: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    tenant_repositories: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    source: str = "defaults"


DEFAULTS = Settings()

_SPEC_KEYS = {
    "exempt",
    "argoController",
    "enforcement",
    "protectedLabel",
    "restoreTargets",
    "tenantRepositories",
}


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise UsageError(f"{where}: expected a list of non-empty strings")
    return tuple(value)


def _mapping_of_lists(value: Any, where: str) -> dict[str, tuple[str, ...]]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UsageError(f"{where}: expected a mapping of lists")
    return {str(k): _strings(v, f"{where}.{k}") for k, v in value.items()}


def load_settings(path: str | Path) -> Settings:
    """Read and check a settings file; a bad one is one :class:`UsageError` line naming the field."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as err:
        raise UsageError(f"{path}: cannot read the guardrail settings: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise UsageError(f"{path}: expected YAML guardrail settings: {str(err).splitlines()[0]}") from None
    if not isinstance(doc, dict) or doc.get("kind") != "GuardrailSettings":
        raise UsageError(f"{path}: kind: expected GuardrailSettings")
    if doc.get("apiVersion") != "snapflow.io/v1alpha1":
        raise UsageError(f"{path}: apiVersion: expected snapflow.io/v1alpha1")
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        raise UsageError(f"{path}: spec: expected a mapping")
    unknown = sorted(set(spec) - _SPEC_KEYS)
    if unknown:
        raise UsageError(
            f"{path}: spec.{unknown[0]}: unknown field (expected one of {', '.join(sorted(_SPEC_KEYS))})"
        )
    exempt = spec.get("exempt") or {}
    if not isinstance(exempt, dict) or set(exempt) - {"groups", "users"}:
        raise UsageError(f"{path}: spec.exempt: expected a mapping with groups and users")
    settings = Settings(
        exempt_groups=_strings(exempt.get("groups"), f"{path}: spec.exempt.groups"),
        exempt_users=_strings(exempt.get("users"), f"{path}: spec.exempt.users"),
        argo_controller=spec.get("argoController", DEFAULTS.argo_controller),
        enforcement=spec.get("enforcement", DEFAULTS.enforcement),
        protected_label=spec.get("protectedLabel", DEFAULTS.protected_label),
        restore_targets=_mapping_of_lists(spec.get("restoreTargets"), f"{path}: spec.restoreTargets"),
        tenant_repositories=_mapping_of_lists(
            spec.get("tenantRepositories"), f"{path}: spec.tenantRepositories"
        ),
        source=str(path),
    )
    check_settings(settings)
    return settings


def check_settings(settings: Settings) -> None:
    """Refuse settings that would lock the platform team (or Argo itself) out, or exempt everyone."""
    where = settings.source
    if not settings.exempt_groups and not settings.exempt_users:
        raise UsageError(
            f"{where}: spec.exempt: expected at least one group or user of the platform team; exempting "
            "no one leaves nobody able to repair a workflow or resume a suspended backup"
        )
    for name in (*settings.exempt_groups, *settings.exempt_users):
        if name in EVERYONE:
            raise UsageError(
                f"{where}: spec.exempt: {name} is every requester; exempting it disables the guardrails"
            )
    if not isinstance(settings.argo_controller, str) or not SERVICE_ACCOUNT_USER.match(
        settings.argo_controller
    ):
        raise UsageError(
            f"{where}: spec.argoController: expected the workflow controller's user, "
            "system:serviceaccount:NAMESPACE:NAME (without it no Snapflow step pod could start)"
        )
    if settings.enforcement not in ENFORCEMENT:
        raise UsageError(f"{where}: spec.enforcement: expected one of {', '.join(ENFORCEMENT)}")
    if not isinstance(settings.protected_label, str) or not settings.protected_label:
        raise UsageError(f"{where}: spec.protectedLabel: expected a label key")
    for key, targets in settings.restore_targets.items():
        for target in targets:
            if not NAMESPACE.match(target.removesuffix("*")):
                raise UsageError(
                    f"{where}: spec.restoreTargets.{key}: {target!r}: expected a namespace name or a prefix ending in *"
                )


def parameters(settings: Settings, objects: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each rule's Constraint parameters, from the settings and the rendered objects of the policies.

    Unknown policies in ``restoreTargets`` are refused: a typo would silently allow nothing."""
    from workflows.guardrails.rego import RULES

    accounts: set[str] = set()
    templates: set[str] = set()
    restore: dict[str, list[str]] = {}
    policies: dict[str, str] = {}  # NS/NAME of the policy -> restore-app template key
    repositories: dict[str, set[str]] = {}
    shared: set[str] = set()
    for obj in objects:
        meta = obj["metadata"]
        labels = meta.get("labels") or {}
        if labels.get("app.kubernetes.io/managed-by") != "snapflow":
            continue
        key = f"{meta.get('namespace')}/{meta['name']}"
        if obj["kind"] == "ServiceAccount" and labels.get("snapflow.io/step"):
            accounts.add(key)
        if obj["kind"] == "WorkflowTemplate":
            templates.add(key)
            if labels.get("app.kubernetes.io/component") == "restore-app":
                policy_ns = _argument(obj, "--source-namespace") or meta["namespace"]
                policies[f"{policy_ns}/{labels['snapflow.io/policy']}"] = key
                restore[key] = [policy_ns]
        if obj["kind"] == "ConfigMap" and labels.get("app.kubernetes.io/component") == "plan":
            import json

            plan = json.loads(obj["data"]["plan.json"])
            tenant = labels.get("snapflow.io/policy-namespace", meta["namespace"])
            repositories.setdefault(plan["repository"]["url"], set()).add(tenant)
    for url, tenants in repositories.items():
        if len(tenants) > 1:
            shared.add(url)  # the render already refused sharing without repository.shared: true
    for policy, targets in settings.restore_targets.items():
        if policy not in policies:
            known = ", ".join(sorted(policies)) or "none"
            raise UsageError(
                f"{settings.source}: spec.restoreTargets.{policy}: expected a rendered policy "
                f"NAMESPACE/NAME (rendered: {known})"
            )
        restore[policies[policy]] = sorted({*restore[policies[policy]], *targets})
    everything: dict[str, Any] = {
        "exemptGroups": sorted(settings.exempt_groups),
        "exemptUsers": sorted({*settings.exempt_users, settings.argo_controller}),
        "protectedLabel": settings.protected_label,
        "serviceAccounts": sorted(accounts),
        "templates": sorted(templates),
        "restoreTargets": restore,
        "repositories": {url: sorted(t) for url, t in sorted(repositories.items())},
        "sharedRepositories": sorted(shared),
        "tenantRepositories": {k: list(v) for k, v in sorted(settings.tenant_repositories.items())},
    }
    common = ("exemptGroups", "exemptUsers")
    out = {rule.kind: {k: everything[k] for k in (*common, *rule.parameters)} for rule in RULES}
    # spec.access restorers: who may restore where besides restoreTargets (only when a policy has some)
    from workflows.access import restorer_parameters
    from workflows.guardrails.rego import RESTORE_TARGETS

    restorers, restorer_namespaces = restorer_parameters(objects, policies)
    if restorers:
        out[RESTORE_TARGETS.kind].update(restorers=restorers, restorerNamespaces=restorer_namespaces)
    return out


def _argument(template: Mapping[str, Any], flag: str) -> str | None:
    for t in template["spec"].get("templates", []):
        args = (t.get("container") or {}).get("args") or []
        if flag in args[:-1]:
            return args[args.index(flag) + 1]
    return None
