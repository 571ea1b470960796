"""What ``restore-app`` may create from a backup: the restore's scope.

A repository may have been written by a compromised writer, so the captured objects are untrusted
input, checked after the transforms (which are the user's own) and before anything is created:

- a namespaced object only in one of the restore's namespaces: the one the backup's namespace maps to
  (``--target-namespace``, or the backup's own) and every target of ``--namespace-map``; an object in
  any other namespace, or with none, is refused — even with ``cluster_resources``;
- the Namespace objects of those namespaces, unless one would create its namespace with the Pod
  Security level ``privileged`` enforced (``pod-security.kubernetes.io/enforce``: it would admit
  privileged pods, host namespaces and hostPath volumes, i.e. the nodes) — a namespace that already
  exists is never changed by a restore, so its object is then harmless; every other cluster-scoped object (another Namespace,
  ClusterRoles, ClusterRoleBindings, CustomResourceDefinitions, PersistentVolumes, StorageClasses,
  webhook configurations, ...) only with ``cluster_resources``;
- a RoleBinding only when every subject is a ServiceAccount in one of the restore's namespaces (a
  subject without a namespace is in the binding's), and its role is a Role or one of the standard
  namespace ClusterRoles ``admin``, ``edit``, ``view``; anything else (a User, a Group, a
  ServiceAccount of another namespace, ``cluster-admin`` or any other ClusterRole, which the backup
  cannot vouch for: capture never stores ClusterRoles, and the name may mean anything in the target
  cluster) only with ``cluster_resources``.

Whether a kind is namespaced comes from the API server (``namespaced(api_version, kind)``, the client's
discovery), never from the object itself: a ClusterRoleBinding that names a namespace is still
cluster-scoped, and the namespace it names is dropped from an allowed one so that the restore never
creates that namespace for it.

Called by ``restore-app`` (:mod:`steps.commands.restore_app`); pure functions, no I/O.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from steps.manifests.objects import Ref, gk, ref

RBAC_GROUP = "rbac.authorization.k8s.io"
# The user-facing ClusterRoles every cluster has, meant to be bound inside one namespace.
NAMESPACE_CLUSTER_ROLES = frozenset({"admin", "edit", "view"})
FLAG = "--cluster-resources"
PSA_ENFORCE = "pod-security.kubernetes.io/enforce"


@dataclass(frozen=True)
class Refusal:
    """One object the restore will not create, and why."""

    ref: Ref
    reason: str

    def __str__(self) -> str:
        where = f" in namespace {self.ref.namespace}" if self.ref.namespace else ""
        return f"{self.ref}{where}: {self.reason}"

    def to_dict(self) -> dict:
        return {"object": str(self.ref), "namespace": self.ref.namespace or None, "reason": self.reason}


@dataclass(frozen=True)
class Scope:
    """The namespaces a restore may create objects in, and whether cluster-scoped objects (and bindings
    reaching outside those namespaces) are allowed."""

    namespaces: frozenset[str]
    cluster_resources: bool = False
    # those of ``namespaces`` that exist already (a restore goes into them and never changes them)
    existing: frozenset[str] = frozenset()

    @classmethod
    def of(
        cls,
        target: str,
        mapped: Iterable[str] = (),
        cluster_resources: bool = False,
        exists: Callable[[str], bool] = lambda _ns: False,
    ) -> Scope:
        """``target``: the namespace the backup's namespace maps to; ``mapped``: the targets of the
        namespace map (each one named by the user); ``exists(ns)``: whether a namespace exists."""
        names = frozenset(n for n in (target, *mapped) if n)
        return cls(names, cluster_resources, frozenset(n for n in names if exists(n)))


@dataclass
class ScopeResult:
    allowed: list[dict]
    refused: list[Refusal]


def check_scope(objects: list[dict], scope: Scope, namespaced: Callable[[str, str], bool]) -> ScopeResult:
    """Split ``objects`` (transformed) into those the restore may create and the refused ones."""
    result = ScopeResult([], [])
    targets = ", ".join(sorted(scope.namespaces)) or "none"
    for obj in objects:
        r = ref(obj)
        api_version, kind = obj.get("apiVersion", ""), obj.get("kind", "")
        if not isinstance(api_version, str) or not isinstance(kind, str) or not api_version or not kind:
            result.refused.append(Refusal(r, "no apiVersion or kind"))
            continue
        if namespaced(api_version, kind):
            reason = _namespaced_refusal(obj, r, scope, targets)
            if reason:
                result.refused.append(Refusal(r, reason))
            else:
                result.allowed.append(obj)
            continue
        if gk(obj) == ("", "Namespace") and r.name in scope.namespaces and not scope.cluster_resources:
            if r.name not in scope.existing and _enforced_level(obj) == "privileged":
                result.refused.append(
                    Refusal(Ref(r.group, r.kind, "", r.name), f"would create the namespace with Pod Security "
                            f"{PSA_ENFORCE}=privileged (admitting privileged pods); created only with {FLAG}, "
                            "or create the namespace first")
                )  # fmt: skip
            else:
                result.allowed.append(_without_namespace(obj))
            continue
        if scope.cluster_resources:
            result.allowed.append(_without_namespace(obj))
            continue
        what = "a namespace the restore does not target" if gk(obj) == ("", "Namespace") else "cluster-scoped"
        result.refused.append(
            Refusal(Ref(r.group, r.kind, "", r.name), f"{what} (restore's namespaces: {targets}); "
                    f"created only with {FLAG}")
        )  # fmt: skip
    return result


def _namespaced_refusal(obj: dict, r: Ref, scope: Scope, targets: str) -> str:
    if not r.namespace:
        return "namespaced kind without a namespace"
    if r.namespace not in scope.namespaces:
        return (
            f"outside the restore's namespaces ({targets}); name it with --target-namespace or "
            "--namespace-map to restore it"
        )
    if gk(obj) == (RBAC_GROUP, "RoleBinding") and not scope.cluster_resources:
        return _binding_refusal(obj, r.namespace, scope)
    return ""


def _binding_refusal(obj: dict, namespace: str, scope: Scope) -> str:
    """Why a RoleBinding reaches outside the restore's namespaces, or ``""``."""
    reasons = []
    subjects = obj.get("subjects") or []
    if not isinstance(subjects, list):
        subjects = [subjects]
    for subj in subjects:
        if not isinstance(subj, dict):
            reasons.append("a subject that is not an object")
            continue
        kind, name = subj.get("kind"), subj.get("name")
        if kind != "ServiceAccount" or subj.get("apiGroup") not in (None, ""):
            reasons.append(f"subject {kind} {name}")
            continue
        ns = subj.get("namespace") or namespace
        if ns not in scope.namespaces:
            reasons.append(f"subject ServiceAccount {ns}/{name}")
    role = obj.get("roleRef") or {}
    role_kind, role_name = (role.get("kind"), role.get("name")) if isinstance(role, dict) else (None, None)
    if role_kind == "ClusterRole" and role_name not in NAMESPACE_CLUSTER_ROLES:
        reasons.append(f"ClusterRole {role_name}")
    elif role_kind not in ("Role", "ClusterRole"):
        reasons.append(f"role {role_kind} {role_name}")
    if not reasons:
        return ""
    return (
        f"reaches outside the restore's namespaces: {'; '.join(reasons)} (allowed: their ServiceAccounts, "
        f"bound to a Role or to ClusterRole {', '.join(sorted(NAMESPACE_CLUSTER_ROLES))}); "
        f"created only with {FLAG}"
    )


def _enforced_level(namespace: dict) -> str:
    labels = (namespace.get("metadata") or {}).get("labels")
    level = labels.get(PSA_ENFORCE) if isinstance(labels, dict) else None
    return level.strip().lower() if isinstance(level, str) else ""


def _without_namespace(obj: dict) -> dict:
    """A cluster-scoped object as the API server stores it: a namespace in it would be ignored."""
    if not (obj.get("metadata") or {}).get("namespace"):
        return obj
    out = copy.deepcopy(obj)
    out["metadata"].pop("namespace", None)
    return out
