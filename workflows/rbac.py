"""The ServiceAccount, Role and RoleBinding a policy's workflows run with: least privilege.

The Role is the union of what the steps of the policy's pipelines use (:data:`STEP_PERMISSIONS`), and
nothing else: no Secrets, no wildcard. The cut time of a snapshot is read from its
VolumeSnapshotContent, which is cluster-scoped, so a ClusterRole granting only ``get`` on those
contents (and on VolumeGroupSnapshotContents for ``consistency: group``) is bound to the
ServiceAccount; it reveals snapshot metadata of other namespaces, never data.

Called by :mod:`workflows.render`. Objects are plain dicts (core Kubernetes kinds, not Argo).
"""

from __future__ import annotations

from typing import Any

from workflows.hera_builder import Names
from workflows.pipeline import Pipeline
from workflows.policy import Policy

Rule = tuple[str, str, tuple[str, ...]]  # (API group, resource, verbs)

SNAPSHOT_GROUP = "snapshot.storage.k8s.io"
GROUP_SNAPSHOT_GROUP = "groupsnapshot.storage.k8s.io"

# What capture exports (read-only): the app's workload and configuration objects. Secrets are not
# exported, so the step never needs to read them.
CAPTURE_RESOURCES: tuple[tuple[str, str], ...] = (
    ("", "configmaps"),
    ("", "persistentvolumeclaims"),
    ("", "serviceaccounts"),
    ("", "services"),
    ("apps", "daemonsets"),
    ("apps", "deployments"),
    ("apps", "statefulsets"),
    ("batch", "cronjobs"),
    ("policy", "poddisruptionbudgets"),
)

_EXEC: tuple[Rule, ...] = (("", "pods", ("get", "list")), ("", "pods/exec", ("create",)))

# Namespaced permissions of each step command (group snapshots add GROUP_RULES).
STEP_PERMISSIONS: dict[str, tuple[Rule, ...]] = {
    "capture": tuple((group, resource, ("get", "list")) for group, resource in CAPTURE_RESOURCES),
    "consistent-point": (
        *_EXEC,
        ("", "persistentvolumeclaims", ("get",)),
        ("", "events", ("list",)),
        (SNAPSHOT_GROUP, "volumesnapshots", ("create", "delete", "get", "list", "watch")),
    ),
    "prepare-clone": (
        ("", "persistentvolumeclaims", ("create", "get")),
        ("", "events", ("list",)),
        (SNAPSHOT_GROUP, "volumesnapshots", ("get", "list", "watch")),
    ),
    "finalize": (
        *_EXEC,
        ("", "persistentvolumeclaims", ("delete", "get", "list")),
        (SNAPSHOT_GROUP, "volumesnapshots", ("delete", "get", "list")),
    ),
}

GROUP_RULES: dict[str, tuple[Rule, ...]] = {
    # consistent-point labels the policy's PVCs so that one VolumeGroupSnapshot selects exactly them.
    "consistent-point": (
        ("", "persistentvolumeclaims", ("patch",)),
        (GROUP_SNAPSHOT_GROUP, "volumegroupsnapshots", ("create", "delete", "get", "list", "watch")),
    ),
    "finalize": ((GROUP_SNAPSHOT_GROUP, "volumegroupsnapshots", ("delete", "get", "list")),),
}

# Argo's executor reports each step's outputs through WorkflowTaskResults.
EXECUTOR_RULES: tuple[Rule, ...] = (("argoproj.io", "workflowtaskresults", ("create", "patch")),)


def _merge(rules: list[Rule]) -> list[dict[str, Any]]:
    verbs: dict[tuple[str, str], set[str]] = {}
    for group, resource, vs in rules:
        verbs.setdefault((group, resource), set()).update(vs)
    # One rule per (group, verb set): compact and stable.
    by_verbs: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for (group, resource), vs in sorted(verbs.items()):
        by_verbs.setdefault((group, tuple(sorted(vs))), []).append(resource)
    return [
        {"apiGroups": [group], "resources": sorted(resources), "verbs": list(vs)}
        for (group, vs), resources in sorted(by_verbs.items())
    ]


def namespaced_rules(policy: Policy, pipelines: list[Pipeline]) -> list[dict[str, Any]]:
    group = policy.spec.snapshot.consistency == "group"
    hooks_exec = any(t.hook != "none" and not t.local for t in policy.spec.quiesce)
    rules: list[Rule] = list(EXECUTOR_RULES)
    for pipeline in pipelines:
        for step in pipeline.all_steps():
            for rule in STEP_PERMISSIONS.get(step.command, ()):
                if rule in _EXEC and not hooks_exec:
                    continue
                rules.append(rule)
            if group:
                rules.extend(GROUP_RULES.get(step.command, ()))
    return _merge(rules)


def cluster_rules(policy: Policy, pipelines: list[Pipeline]) -> list[dict[str, Any]]:
    commands = {s.command for p in pipelines for s in p.all_steps()}
    if "consistent-point" not in commands:
        return []
    rules: list[Rule] = [(SNAPSHOT_GROUP, "volumesnapshotcontents", ("get",))]
    if policy.spec.snapshot.consistency == "group":
        rules.append((GROUP_SNAPSHOT_GROUP, "volumegroupsnapshotcontents", ("get",)))
    return _merge(rules)


def rbac_objects(policy: Policy, pipelines: list[Pipeline]) -> list[dict[str, Any]]:
    """ServiceAccount, Role, RoleBinding (and the snapshot-contents ClusterRole and its binding)."""
    names = Names(policy)
    if not names.renders_rbac:
        return []
    ns = policy.namespace

    def labels() -> dict[str, str]:
        return names.labels("rbac")

    subject = [{"kind": "ServiceAccount", "name": names.service_account, "namespace": ns}]
    objects: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": names.service_account, "namespace": ns, "labels": labels()},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": names.role, "namespace": ns, "labels": labels()},
            "rules": namespaced_rules(policy, pipelines),
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": names.role, "namespace": ns, "labels": labels()},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": names.role},
            "subjects": subject,
        },
    ]
    cluster = cluster_rules(policy, pipelines)
    if cluster:
        objects += [
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": names.cluster_role, "labels": labels()},
                "rules": cluster,
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": names.cluster_role, "labels": labels()},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": names.cluster_role,
                },
                "subjects": subject,
            },
        ]
    return objects
