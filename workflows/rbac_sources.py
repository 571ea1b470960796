"""What the steps of a source policy (``spec.source``) do through the Kubernetes API, per namespace.

None of them calls the API (their Roles hold Argo's executor rule alone, see :mod:`workflows.rbac`),
except a registry backup with ``imagesOf``: ``registry-backup --images-of`` lists the selected pods
and reads their ``imageID``\\ s, so its account gets ``get`` and ``list`` on pods in each namespace
``imagesOf`` names — a Role there, bound to the account where the workflow runs — and nothing else:
no exec, no Secret, no other namespace. Its container then gets its token
(:mod:`workflows.pipeline_sources`). Called by :mod:`workflows.rbac`.
"""

from __future__ import annotations

from workflows.policy import Policy

Rule = tuple[str, str, tuple[str, ...]]  # (API group, resource, verbs), as in workflows.rbac

# registry-backup --images-of: the pods of a namespace listed (by label selector) and their status read
POD_IMAGE_RULES: tuple[Rule, ...] = (("", "pods", ("get", "list")),)
IMAGES_OF_STEP = "registry-backup"


def source_namespaces(policy: Policy, command: str) -> dict[str, tuple[Rule, ...]]:
    """Namespace → the rules one step command of a source policy uses there (empty: it uses none)."""
    source = policy.spec.source
    if source is None or source.registry is None or command != IMAGES_OF_STEP:
        return {}
    return {ns: POD_IMAGE_RULES for ns in sorted({sel.namespace for sel in source.registry.images_of})}


def source_rules_in(policy: Policy, command: str, namespace: str) -> tuple[Rule, ...]:
    """What the step does in ``namespace`` (where its pod runs, or another)."""
    return source_namespaces(policy, command).get(namespace, ())


def source_rules_elsewhere(policy: Policy, command: str, home: str) -> list[tuple[str, tuple[Rule, ...]]]:
    """``(namespace, rules)`` of the namespaces other than ``home`` where the step uses the API: each
    gets a Role of the step's name, bound to its account in ``home``."""
    return [(ns, rules) for ns, rules in source_namespaces(policy, command).items() if ns != home]


def shared_account_notes(policy: Policy, source: str, account: str) -> list[str]:
    """With ``spec.workflow.serviceAccountName`` nothing is rendered: say what the account must be
    granted for ``imagesOf`` (``get`` and ``list`` on pods in each namespace named)."""
    namespaces = sorted(source_namespaces(policy, IMAGES_OF_STEP))
    if not namespaces:
        return []
    return [
        f"{source}: spec.source.registry.imagesOf: registry-backup runs as {account!r}, which needs get and"
        f" list on pods in namespace{'s' if len(namespaces) > 1 else ''} {', '.join(namespaces)}"
        " (grant them: nothing is rendered for a shared account)"
    ]
