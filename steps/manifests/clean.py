"""What ``capture`` keeps of an application's objects, and what it strips from each.

:func:`select_objects` takes every object listed in the namespace (raw, as the API server returned
them) and returns the ones a restore should create:

1. with a label selector, the objects it matches, then — transitively — what they reference: the
   ConfigMaps, Secrets, ServiceAccounts and PersistentVolumeClaims of their pod templates (volumes,
   ``env``/``envFrom``, image pull secrets), a StatefulSet's governing Service and the PVCs made from
   its ``volumeClaimTemplates``, Services selecting their pods, a ServiceAccount's secrets, an
   Ingress's backends and TLS secrets, a RoleBinding's Role and ServiceAccounts;
2. minus runtime objects a restore would duplicate: Pods, ReplicaSets and Jobs that have an owner,
   Endpoints and EndpointSlices of Services with a selector, Events, ControllerRevisions, Leases,
   snapshots, Argo Workflow runs — and anything owned by another captured object (its owner recreates
   it). PersistentVolumeClaims are always kept: they carry the data;
3. minus what every namespace gets by itself (the ``default`` ServiceAccount, ``kube-root-ca.crt``,
   service-account token Secrets).

:func:`clean_object` then strips server-managed fields (status, uid, resourceVersion, managedFields,
creationTimestamp, generation, selfLink, owner references, a PVC's volumeName, dataSource and bind
annotations, a Service's clusterIP(s) and node ports, a Job's generated selector, ...).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from steps.drivers.kube_objects import dig
from steps.manifests.objects import (
    Ref,
    Requirement,
    containers,
    gk,
    pod_spec,
    pod_template,
    ref,
    selector_matches,
)

# Always dropped: objects the cluster makes at run time.
RUNTIME_KINDS: frozenset[tuple[str, str]] = frozenset(
    {
        ("", "Event"),
        ("events.k8s.io", "Event"),
        ("discovery.k8s.io", "EndpointSlice"),
        ("apps", "ControllerRevision"),
        ("coordination.k8s.io", "Lease"),
        ("metrics.k8s.io", "PodMetrics"),
        ("snapshot.storage.k8s.io", "VolumeSnapshot"),
        ("groupsnapshot.storage.k8s.io", "VolumeGroupSnapshot"),
        ("argoproj.io", "Workflow"),
        ("argoproj.io", "WorkflowTaskResult"),
        ("argoproj.io", "WorkflowTaskSet"),
        ("argoproj.io", "WorkflowArtifactGCTask"),
        ("authorization.k8s.io", "LocalSubjectAccessReview"),
    }
)
# Dropped when they have an owner (a controller made them); kept when a user created them bare.
OWNED_RUNTIME_KINDS: frozenset[tuple[str, str]] = frozenset(
    {("", "Pod"), ("apps", "ReplicaSet"), ("batch", "Job")}
)

AUTO_CONFIGMAPS = frozenset({"kube-root-ca.crt", "openshift-service-ca.crt"})
AUTO_SECRET_TYPES = frozenset({"kubernetes.io/service-account-token"})

STRIP_METADATA = (
    "uid",
    "resourceVersion",
    "managedFields",
    "creationTimestamp",
    "generation",
    "selfLink",
    "ownerReferences",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generateName",
)
STRIP_ANNOTATIONS = frozenset(
    {
        "kubectl.kubernetes.io/last-applied-configuration",
        "deployment.kubernetes.io/revision",
        "deployment.kubernetes.io/desired-replicas",
        "deployment.kubernetes.io/max-replicas",
        "pv.kubernetes.io/bind-completed",
        "pv.kubernetes.io/bound-by-controller",
        "pv.kubernetes.io/migrated-to",
        "volume.beta.kubernetes.io/storage-provisioner",
        "volume.kubernetes.io/storage-provisioner",
        "volume.kubernetes.io/selected-node",
        "control-plane.alpha.kubernetes.io/leader",
        "kubernetes.io/service-account.uid",
        "batch.kubernetes.io/job-tracking",
        "snapflow.io/restore-hold",
        "snapflow.io/restore-release",
    }
)
JOB_GENERATED_LABELS = frozenset(
    {"controller-uid", "batch.kubernetes.io/controller-uid", "job-name", "batch.kubernetes.io/job-name"}
)
NAMESPACE_GENERATED_LABELS = frozenset({"kubernetes.io/metadata.name"})
_SERVER_FINALIZERS = re.compile(r"^(kubernetes|foregroundDeletion$|orphan$)|kubernetes\.io/")


@dataclass
class Dropped:
    ref: Ref
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"object": str(self.ref), "reason": self.reason}


@dataclass
class Selection:
    """The result of :func:`select_objects`: cleaned objects to store, and what was left out and why."""

    objects: list[dict] = field(default_factory=list)
    dropped: list[Dropped] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------
# References


def references(obj: dict) -> set[Ref]:
    """The same-namespace objects ``obj`` names directly (ConfigMaps, Secrets, ServiceAccounts, PVCs,
    Services, Roles)."""
    ns = dig(obj, "metadata", "namespace", default="") or ""
    out: set[Ref] = set()

    def add(kind: str, name: object, group: str = "") -> None:
        if isinstance(name, str) and name:
            out.add(Ref(group, kind, ns, name))

    spec = pod_spec(obj)
    if spec is not None:
        add("ServiceAccount", spec.get("serviceAccountName") or spec.get("serviceAccount"))
        for s in spec.get("imagePullSecrets") or []:
            add("Secret", (s or {}).get("name"))
        for vol in spec.get("volumes") or []:
            add("ConfigMap", dig(vol, "configMap", "name"))
            add("Secret", dig(vol, "secret", "secretName"))
            add("PersistentVolumeClaim", dig(vol, "persistentVolumeClaim", "claimName"))
            for src in dig(vol, "projected", "sources", default=[]) or []:
                add("ConfigMap", dig(src, "configMap", "name"))
                add("Secret", dig(src, "secret", "name"))
            for key in ("cephfs", "rbd", "iscsi", "flexVolume", "csi", "azureFile", "scaleIO", "storageos"):
                add("Secret", dig(vol, key, "secretRef", "name"))
                add("Secret", dig(vol, key, "nodePublishSecretRef", "name"))
            add("Secret", dig(vol, "azureFile", "secretName"))
        for c in containers(spec):
            for env in c.get("env") or []:
                add("ConfigMap", dig(env, "valueFrom", "configMapKeyRef", "name"))
                add("Secret", dig(env, "valueFrom", "secretKeyRef", "name"))
            for src in c.get("envFrom") or []:
                add("ConfigMap", dig(src, "configMapRef", "name"))
                add("Secret", dig(src, "secretRef", "name"))
    group, kind = gk(obj)
    if (group, kind) == ("apps", "StatefulSet"):
        add("Service", dig(obj, "spec", "serviceName"))
    elif (group, kind) == ("", "ServiceAccount"):
        for s in obj.get("secrets") or []:
            add("Secret", (s or {}).get("name"))
        for s in obj.get("imagePullSecrets") or []:
            add("Secret", (s or {}).get("name"))
    elif kind == "Ingress":
        add("Service", dig(obj, "spec", "defaultBackend", "service", "name"))
        add("Service", dig(obj, "spec", "backend", "serviceName"))
        for rule in dig(obj, "spec", "rules", default=[]) or []:
            for p in dig(rule, "http", "paths", default=[]) or []:
                add("Service", dig(p, "backend", "service", "name"))
                add("Service", dig(p, "backend", "serviceName"))
        for tls in dig(obj, "spec", "tls", default=[]) or []:
            add("Secret", (tls or {}).get("secretName"))
    elif group == "rbac.authorization.k8s.io" and kind == "RoleBinding":
        if dig(obj, "roleRef", "kind") == "Role":
            add("Role", dig(obj, "roleRef", "name"), "rbac.authorization.k8s.io")
        for subj in obj.get("subjects") or []:
            if subj.get("kind") == "ServiceAccount" and (subj.get("namespace") or ns) == ns:
                add("ServiceAccount", subj.get("name"))
    elif kind == "HorizontalPodAutoscaler":
        target = dig(obj, "spec", "scaleTargetRef") or {}
        tgroup = (target.get("apiVersion") or "").rpartition("/")[0]
        add(target.get("kind", ""), target.get("name"), tgroup)
    return out


def _claim_template_pvcs(sts: dict, by_ref: dict[Ref, dict]) -> set[Ref]:
    """PVCs the StatefulSet made from its volumeClaimTemplates: ``<template>-<sts>-<ordinal>``."""
    ns = dig(sts, "metadata", "namespace", default="") or ""
    name = dig(sts, "metadata", "name", default="")
    out = set()
    for tpl in dig(sts, "spec", "volumeClaimTemplates", default=[]) or []:
        tname = dig(tpl, "metadata", "name", default="")
        pattern = re.compile(rf"^{re.escape(tname)}-{re.escape(name)}-\d+$")
        for r in by_ref:
            if (
                r.kind == "PersistentVolumeClaim"
                and r.group == ""
                and r.namespace == ns
                and pattern.match(r.name)
            ):
                out.add(r)
    return out


def _services_selecting(obj: dict, services: list[dict]) -> set[Ref]:
    tpl = pod_template(obj)
    if tpl is None:
        return set()
    labels = dig(tpl, "metadata", "labels", default={}) or {}
    if not labels:
        return set()
    out = set()
    for svc in services:
        sel = dig(svc, "spec", "selector")
        if sel and all(labels.get(k) == v for k, v in sel.items()):
            out.add(ref(svc))
    return out


# --------------------------------------------------------------------------------------------------
# Selection


def _auto_created(obj: dict) -> str | None:
    group, kind = gk(obj)
    name = dig(obj, "metadata", "name", default="")
    if (group, kind) == ("", "ServiceAccount") and name == "default":
        return "created by Kubernetes in every namespace"
    if (group, kind) == ("", "ConfigMap") and name in AUTO_CONFIGMAPS:
        return "created by Kubernetes in every namespace"
    if (group, kind) == ("", "Secret") and obj.get("type") in AUTO_SECRET_TYPES:
        return "service-account token, generated by Kubernetes"
    return None


def _runtime_reason(obj: dict, selector_services: set[str]) -> str | None:
    group, kind = gk(obj)
    if (group, kind) in RUNTIME_KINDS:
        return "runtime object"
    owners = dig(obj, "metadata", "ownerReferences", default=[]) or []
    if (group, kind) in OWNED_RUNTIME_KINDS and owners:
        o = owners[0]
        return f"made by {o.get('kind')}/{o.get('name')}"
    if (group, kind) == ("", "Endpoints"):
        name = dig(obj, "metadata", "name", default="")
        if name in selector_services:
            return f"maintained for Service/{name}"
    return None


def select_objects(
    objects: Iterable[dict],
    selector: tuple[Requirement, ...] = (),
) -> Selection:
    """Choose and clean what to store (see the module docstring). ``objects`` are raw API objects of
    one namespace, each with ``apiVersion`` and ``kind``; the Namespace object itself may be included."""
    raw = [o for o in objects if isinstance(o, dict) and o.get("kind")]
    by_ref: dict[Ref, dict] = {}
    for o in raw:
        by_ref.setdefault(ref(o), o)
    services = [o for o in raw if gk(o) == ("", "Service")]
    selector_services = {
        dig(s, "metadata", "name", default="") for s in services if dig(s, "spec", "selector")
    }

    if selector:
        chosen: set[Ref] = {
            r
            for r, o in by_ref.items()
            if r.kind == "Namespace" or selector_matches(selector, dig(o, "metadata", "labels"))
        }
        queue = list(chosen)
        while queue:
            r = queue.pop()
            o = by_ref[r]
            found = references(o) | _services_selecting(o, services)
            if gk(o) == ("apps", "StatefulSet"):
                found |= _claim_template_pvcs(o, by_ref)
            for nr in found:
                if nr not in chosen and nr in by_ref:
                    chosen.add(nr)
                    queue.append(nr)
    else:
        chosen = set(by_ref)

    sel = Selection()
    candidates = {r: by_ref[r] for r in chosen}
    uids = {dig(o, "metadata", "uid"): r for r, o in candidates.items() if dig(o, "metadata", "uid")}
    for r in sorted(candidates):
        o = candidates[r]
        reason = _auto_created(o) or _runtime_reason(o, selector_services)
        if reason is None and r.kind != "PersistentVolumeClaim":
            for owner in dig(o, "metadata", "ownerReferences", default=[]) or []:
                owner_ref = uids.get(owner.get("uid"))
                if owner_ref is not None and owner_ref != r:
                    reason = f"owned by {owner_ref}, which recreates it"
                    break
        if reason is not None:
            sel.dropped.append(Dropped(r, reason))
            continue
        sel.objects.append(clean_object(o))
    dropped_secrets = {d.ref.name for d in sel.dropped if d.ref.kind == "Secret"}
    for o in sel.objects:
        if gk(o) == ("", "ServiceAccount") and o.get("secrets"):
            kept = [s for s in o["secrets"] if (s or {}).get("name") not in dropped_secrets]
            if kept:
                o["secrets"] = kept
            else:
                o.pop("secrets")
    return sel


# --------------------------------------------------------------------------------------------------
# Cleaning


def _strip_meta(m: dict, extra_labels: frozenset[str] = frozenset()) -> None:
    for key in STRIP_METADATA:
        m.pop(key, None)
    ann = m.get("annotations")
    if isinstance(ann, dict):
        for key in list(ann):
            if key in STRIP_ANNOTATIONS:
                del ann[key]
        if not ann:
            m.pop("annotations")
    labels = m.get("labels")
    if isinstance(labels, dict) and extra_labels:
        for key in list(labels):
            if key in extra_labels:
                del labels[key]
        if not labels:
            m.pop("labels")
    fin = m.get("finalizers")
    if isinstance(fin, list):
        kept = [f for f in fin if not _SERVER_FINALIZERS.search(str(f))]
        if kept:
            m["finalizers"] = kept
        else:
            m.pop("finalizers")


def clean_object(obj: dict) -> dict:
    """A copy of ``obj`` without server-managed fields, ready to be created in another cluster."""
    o = copy.deepcopy(obj)
    o.pop("status", None)
    group, kind = gk(o)
    m = o.setdefault("metadata", {})
    _strip_meta(m, NAMESPACE_GENERATED_LABELS if (group, kind) == ("", "Namespace") else frozenset())
    spec = o.get("spec") if isinstance(o.get("spec"), dict) else None

    if (group, kind) == ("", "Namespace") and spec is not None:
        spec.pop("finalizers", None)
        if not spec:
            o.pop("spec")
    elif (group, kind) == ("", "PersistentVolumeClaim") and spec is not None:
        for key in ("volumeName", "dataSource", "dataSourceRef"):
            spec.pop(key, None)
    elif (group, kind) == ("", "Service") and spec is not None:
        if spec.get("clusterIP") != "None":
            spec.pop("clusterIP", None)
            spec.pop("clusterIPs", None)
        else:
            spec.pop("clusterIPs", None)
        spec.pop("healthCheckNodePort", None)
        for port in spec.get("ports") or []:
            if isinstance(port, dict):
                port.pop("nodePort", None)
    elif (group, kind) == ("batch", "Job") and spec is not None:
        if not spec.get("manualSelector"):
            spec.pop("selector", None)
            tm = dig(spec, "template", "metadata")
            if isinstance(tm, dict):
                _strip_meta(tm, JOB_GENERATED_LABELS)
    elif (group, kind) == ("apps", "StatefulSet") and spec is not None:
        for tpl in spec.get("volumeClaimTemplates") or []:
            if isinstance(tpl, dict):
                tpl.pop("status", None)
                _strip_meta(tpl.setdefault("metadata", {}))
    elif (group, kind) == ("batch", "CronJob") and spec is not None:
        jm = dig(spec, "jobTemplate", "metadata")
        if isinstance(jm, dict):
            _strip_meta(jm)
    elif (group, kind) == ("", "Pod") and spec is not None:
        spec.pop("nodeName", None)
        _drop_token_volumes(spec)

    tpl = pod_template(o) if kind != "Pod" else None
    if tpl is not None and isinstance(tpl.get("metadata"), dict):
        _strip_meta(tpl["metadata"])
        if not tpl["metadata"]:
            tpl.pop("metadata")
    return o


def _drop_token_volumes(spec: dict) -> None:
    """Remove the service-account token volume the API server injected (it is injected again)."""
    vols = spec.get("volumes") or []
    token = {v.get("name") for v in vols if str(v.get("name", "")).startswith("kube-api-access-")}
    if not token:
        return
    spec["volumes"] = [v for v in vols if v.get("name") not in token]
    if not spec["volumes"]:
        spec.pop("volumes")
    for c in containers(spec):
        mounts = [mt for mt in c.get("volumeMounts") or [] if mt.get("name") not in token]
        if mounts:
            c["volumeMounts"] = mounts
        else:
            c.pop("volumeMounts", None)
