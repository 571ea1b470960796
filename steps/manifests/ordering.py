"""Restore order, workloads held until their data is in place, and conflicts with existing objects.

Phases, in order:

``namespace``  the Namespace (its labels carry Pod Security admission levels)
``cluster``    cluster-scoped objects a restore creates only when asked (``--cluster-resources``):
               CustomResourceDefinitions, ClusterRoles and their bindings, PriorityClasses,
               StorageClasses, PersistentVolumes
``config``     ServiceAccounts, Secrets, ConfigMaps, quotas, RBAC, NetworkPolicies, Services, PDBs, Ingresses
``storage``    PersistentVolumeClaims (then filled from the repository)
``workloads``  StatefulSets, Deployments, ReplicaSets, DaemonSets, Jobs, CronJobs — created *held*:
               zero replicas, suspended, or (DaemonSets) a node selector no node has, so nothing mounts
               a volume while it is being filled; :func:`release_patch` undoes the hold afterwards
``deferred``   bare Pods, HorizontalPodAutoscalers (one would scale a held workload up) and custom
               resources (an operator acting on them expects its data in place), created last

A held object carries its own release as the annotation ``snapflow.io/restore-release`` (a JSON merge
patch), so the release can run in a later step, from the cluster's state alone.
"""

from __future__ import annotations

import copy
import json

from steps.drivers.kube_objects import dig
from steps.manifests.objects import Ref, gk, meta, pod_template, ref

PHASES = ("namespace", "cluster", "config", "storage", "workloads", "deferred")

HOLD_ANNOTATION = "snapflow.io/restore-hold"
RELEASE_ANNOTATION = "snapflow.io/restore-release"
HOLD_NODE_LABEL = "snapflow.io/restore-hold"

_CLUSTER_ORDER = (
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("scheduling.k8s.io", "PriorityClass"),
    ("storage.k8s.io", "StorageClass"),
    ("", "PersistentVolume"),
)
_CONFIG_ORDER = (
    ("", "ServiceAccount"),
    ("", "Secret"),
    ("", "ConfigMap"),
    ("", "LimitRange"),
    ("", "ResourceQuota"),
    ("rbac.authorization.k8s.io", "Role"),
    ("rbac.authorization.k8s.io", "RoleBinding"),
    ("networking.k8s.io", "NetworkPolicy"),
    ("", "Service"),
    ("", "Endpoints"),
    ("policy", "PodDisruptionBudget"),
    ("networking.k8s.io", "Ingress"),
    ("", "PodTemplate"),
)
_WORKLOAD_ORDER = (
    ("apps", "StatefulSet"),
    ("apps", "Deployment"),
    ("apps", "ReplicaSet"),
    ("", "ReplicationController"),
    ("apps", "DaemonSet"),
    ("batch", "Job"),
    ("batch", "CronJob"),
)
_DEFERRED_ORDER = (("", "Pod"), ("autoscaling", "HorizontalPodAutoscaler"))
_RANK = {
    **{k: ("namespace", 0) for k in (("", "Namespace"),)},
    **{k: ("cluster", i) for i, k in enumerate(_CLUSTER_ORDER)},
    **{k: ("config", i) for i, k in enumerate(_CONFIG_ORDER)},
    ("", "PersistentVolumeClaim"): ("storage", 0),
    **{k: ("workloads", i) for i, k in enumerate(_WORKLOAD_ORDER)},
    **{k: ("deferred", i) for i, k in enumerate(_DEFERRED_ORDER)},
}


def phase_of(obj: dict) -> str:
    return _RANK.get(gk(obj), ("deferred", 99))[0]


def order_objects(objects: list[dict]) -> dict[str, list[dict]]:
    """Objects grouped by phase (every phase present, possibly empty), sorted within each phase."""
    out: dict[str, list[dict]] = {p: [] for p in PHASES}

    def key(o: dict) -> tuple:
        _, rank = _RANK.get(gk(o), ("deferred", 99))
        r = ref(o)
        return (rank, r.group, r.kind, r.namespace, r.name)

    for o in sorted(objects, key=key):
        out[phase_of(o)].append(o)
    return out


# --------------------------------------------------------------------------------------------------
# Holding workloads


def hold(obj: dict) -> dict:
    """A copy of a workload that will not start pods, annotated with how to release it.

    Objects that need no hold are returned unchanged (as a copy).
    """
    o = copy.deepcopy(obj)
    group, kind = gk(o)
    spec = o.get("spec") if isinstance(o.get("spec"), dict) else None
    if spec is None:
        return o
    release: dict | None = None
    if (group, kind) in (
        ("apps", "StatefulSet"),
        ("apps", "Deployment"),
        ("apps", "ReplicaSet"),
        ("", "ReplicationController"),
    ):
        replicas = spec.get("replicas", 1)
        if replicas == 0:
            return o
        spec["replicas"] = 0
        release = {"spec": {"replicas": replicas}}
    elif (group, kind) in (("batch", "CronJob"), ("batch", "Job")):
        if spec.get("suspend") is True:
            return o
        release = {"spec": {"suspend": spec.get("suspend")}}
        spec["suspend"] = True
    elif (group, kind) == ("apps", "DaemonSet"):
        tpl = pod_template(o)
        if tpl is None:
            return o
        ps = _mapping(tpl, "spec")
        _mapping(ps, "nodeSelector")[HOLD_NODE_LABEL] = "true"
        release = {"spec": {"template": {"spec": {"nodeSelector": {HOLD_NODE_LABEL: None}}}}}
    if release is None:
        return o
    ann = _mapping(meta(o), "annotations")
    ann[HOLD_ANNOTATION] = "true"
    ann[RELEASE_ANNOTATION] = json.dumps(release, sort_keys=True, separators=(",", ":"))
    return o


def _mapping(parent: dict, key: str) -> dict:
    """``parent[key]``, made a mapping when it is missing or null (a captured object is untrusted)."""
    if not isinstance(parent.get(key), dict):
        parent[key] = {}
    return parent[key]


def is_held(obj: dict) -> bool:
    return dig(obj, "metadata", "annotations", HOLD_ANNOTATION) == "true"


def release_patch(obj: dict) -> dict | None:
    """The JSON merge patch that releases a held object (and removes the hold annotations), or None."""
    raw = dig(obj, "metadata", "annotations", RELEASE_ANNOTATION)
    if not is_held(obj) or not isinstance(raw, str):
        return None
    try:
        patch = json.loads(raw)
    except ValueError:
        patch = {}
    if not isinstance(patch, dict):
        patch = {}
    ours = {HOLD_ANNOTATION, RELEASE_ANNOTATION}
    if set(dig(obj, "metadata", "annotations", default={})) <= ours:
        patch.setdefault("metadata", {})["annotations"] = None  # leave no empty map behind
    else:
        patch.setdefault("metadata", {}).setdefault("annotations", {}).update(dict.fromkeys(ours))
    return patch


# --------------------------------------------------------------------------------------------------
# Conflicts


def conflict_message(conflicts: list[Ref], namespace: str) -> str:
    names = ", ".join(str(r) for r in sorted(conflicts, key=lambda r: (r.kind, r.name)))
    n = len(conflicts)
    return (
        f"restore refused: {n} object{'s' if n != 1 else ''} already exist{'s' if n == 1 else ''} in namespace "
        f"{namespace}: {names} (pass --existing=skip to keep them, or --existing=replace to overwrite them)"
    )


EXISTING_POLICIES = ("refuse", "skip", "replace")
