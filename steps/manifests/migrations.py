"""The built-in table of API-version migrations for removed and deprecated kinds.

A backup taken on an old cluster may hold ``extensions/v1beta1`` Ingresses or ``batch/v1beta1``
CronJobs that a current cluster no longer serves. :func:`migrate` rewrites such an object to the stable
version, converting the spec where the schema changed, and returns notes for the restore report.
Kinds removed without a successor (PodSecurityPolicy) are reported and not restored.

=========================================================  =====================================
from                                                       to
=========================================================  =====================================
extensions/v1beta1, networking.k8s.io/v1beta1 Ingress      networking.k8s.io/v1 (backend shape,
                                                           pathType, ingressClassName)
networking.k8s.io/v1beta1 IngressClass                     networking.k8s.io/v1
extensions/v1beta1 NetworkPolicy                           networking.k8s.io/v1
extensions/v1beta1, apps/v1beta1, apps/v1beta2             apps/v1 (selector made explicit,
Deployment, StatefulSet, DaemonSet, ReplicaSet             old default update strategies kept)
batch/v1beta1, batch/v2alpha1 CronJob                      batch/v1
policy/v1beta1 PodDisruptionBudget                         policy/v1
autoscaling/v2beta1 HorizontalPodAutoscaler                autoscaling/v2 (metric targets)
autoscaling/v2beta2 HorizontalPodAutoscaler                autoscaling/v2
rbac.authorization.k8s.io/v1beta1, v1alpha1 (all kinds)    rbac.authorization.k8s.io/v1
storage.k8s.io/v1beta1 (all kinds)                         storage.k8s.io/v1
scheduling.k8s.io/v1beta1 PriorityClass                    scheduling.k8s.io/v1
coordination.k8s.io/v1beta1 Lease                          coordination.k8s.io/v1
node.k8s.io/v1beta1 RuntimeClass                           node.k8s.io/v1
snapshot.storage.k8s.io/v1beta1 (all kinds)                snapshot.storage.k8s.io/v1
extensions/v1beta1, policy/v1beta1 PodSecurityPolicy       removed (not restored, reported)
=========================================================  =====================================
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

from steps.drivers.kube_objects import dig
from steps.manifests.objects import pod_template

Converter = Callable[[dict, list[str]], dict]


@dataclass(frozen=True)
class Migration:
    source: str  # apiVersion
    kind: str  # "*" for every kind of the group version
    target: str | None  # apiVersion; None: removed without a successor
    convert: Converter | None = None
    note: str = ""


def _ingress(obj: dict, notes: list[str]) -> dict:
    spec = obj.get("spec") or {}

    def backend(b: dict) -> dict:
        if not isinstance(b, dict) or "serviceName" not in b:
            return b
        out = {k: v for k, v in b.items() if k not in ("serviceName", "servicePort")}
        port = b.get("servicePort")
        svc: dict = {"name": b["serviceName"]}
        if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
            svc["port"] = {"number": int(port)}
        elif port is not None:
            svc["port"] = {"name": port}
        out["service"] = svc
        return out

    if "backend" in spec:
        spec["defaultBackend"] = backend(spec.pop("backend"))
    for rule in spec.get("rules") or []:
        for p in dig(rule, "http", "paths", default=[]) or []:
            if "backend" in p:
                p["backend"] = backend(p["backend"])
            p.setdefault("pathType", "ImplementationSpecific")
    ann = dig(obj, "metadata", "annotations") or {}
    cls = ann.get("kubernetes.io/ingress.class")
    if cls and not spec.get("ingressClassName"):
        spec["ingressClassName"] = cls
        del ann["kubernetes.io/ingress.class"]
        if not ann:
            obj["metadata"].pop("annotations", None)
        notes.append(f"annotation kubernetes.io/ingress.class={cls} became spec.ingressClassName")
    obj["spec"] = spec
    return obj


def _apps(obj: dict, notes: list[str], source: str) -> dict:
    spec = obj.setdefault("spec", {})
    tpl = pod_template(obj) or {}
    if not spec.get("selector"):
        labels = dig(tpl, "metadata", "labels") or {}
        spec["selector"] = {"matchLabels": dict(labels)}
        notes.append("spec.selector made explicit from the pod template's labels (required by apps/v1)")
    for key in ("rollbackTo", "templateGeneration"):
        if spec.pop(key, None) is not None:
            notes.append(f"spec.{key} dropped (not in apps/v1)")
    kind = obj.get("kind")
    # Old versions defaulted to OnDelete; apps/v1 defaults to RollingUpdate. Keep the behaviour.
    if "updateStrategy" not in spec and (
        (kind == "DaemonSet" and source == "extensions/v1beta1")
        or (kind == "StatefulSet" and source == "apps/v1beta1")
    ):
        spec["updateStrategy"] = {"type": "OnDelete"}
        notes.append("spec.updateStrategy OnDelete (the old default) made explicit")
    return obj


def _pdb(obj: dict, notes: list[str]) -> dict:
    sel = dig(obj, "spec", "selector")
    if sel == {}:
        notes.append(
            "empty spec.selector matched no pods in policy/v1beta1 but matches every pod in policy/v1"
        )
    return obj


def _hpa_v2beta1(obj: dict, notes: list[str]) -> dict:
    spec = obj.get("spec") or {}
    out = []
    for m in spec.get("metrics") or []:
        t = m.get("type")
        src = dict(m.get(_lower_first(t), {}) or {})
        if t == "Resource":
            target = {}
            if "targetAverageUtilization" in src:
                target = {"type": "Utilization", "averageUtilization": src.pop("targetAverageUtilization")}
            elif "targetAverageValue" in src:
                target = {"type": "AverageValue", "averageValue": src.pop("targetAverageValue")}
            out.append({"type": t, "resource": {"name": src.get("name"), "target": target}})
        elif t == "Pods":
            metric = {"name": src.pop("metricName", None)}
            if "selector" in src:
                metric["selector"] = src.pop("selector")
            out.append(
                {
                    "type": t,
                    "pods": {
                        "metric": metric,
                        "target": {"type": "AverageValue", "averageValue": src.get("targetAverageValue")},
                    },
                }
            )
        elif t == "Object":
            metric = {"name": src.pop("metricName", None)}
            if "selector" in src:
                metric["selector"] = src.pop("selector")
            target = (
                {"type": "AverageValue", "averageValue": src["averageValue"]}
                if "averageValue" in src
                else {"type": "Value", "value": src.get("targetValue")}
            )
            out.append(
                {
                    "type": t,
                    "object": {"describedObject": src.get("target"), "metric": metric, "target": target},
                }
            )
        elif t == "External":
            metric = {"name": src.get("metricName")}
            if "metricSelector" in src:
                metric["selector"] = src["metricSelector"]
            target = (
                {"type": "AverageValue", "averageValue": src["targetAverageValue"]}
                if "targetAverageValue" in src
                else {"type": "Value", "value": src.get("targetValue")}
            )
            out.append({"type": t, "external": {"metric": metric, "target": target}})
        else:
            out.append(m)
    if out:
        spec["metrics"] = out
        notes.append("spec.metrics converted to autoscaling/v2 targets")
    return obj


def _lower_first(s: str | None) -> str:
    return (s[:1].lower() + s[1:]) if s else ""


def _identity(obj: dict, notes: list[str]) -> dict:
    return obj


_APPS_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet")

MIGRATIONS: tuple[Migration, ...] = (
    Migration("extensions/v1beta1", "Ingress", "networking.k8s.io/v1", _ingress),
    Migration("networking.k8s.io/v1beta1", "Ingress", "networking.k8s.io/v1", _ingress),
    Migration("networking.k8s.io/v1beta1", "IngressClass", "networking.k8s.io/v1"),
    Migration("extensions/v1beta1", "NetworkPolicy", "networking.k8s.io/v1"),
    *(
        Migration(src, kind, "apps/v1", lambda o, n, s=src: _apps(o, n, s))
        for src in ("extensions/v1beta1", "apps/v1beta1", "apps/v1beta2")
        for kind in _APPS_KINDS
    ),
    Migration("batch/v1beta1", "CronJob", "batch/v1"),
    Migration("batch/v2alpha1", "CronJob", "batch/v1"),
    Migration("policy/v1beta1", "PodDisruptionBudget", "policy/v1", _pdb),
    Migration("autoscaling/v2beta1", "HorizontalPodAutoscaler", "autoscaling/v2", _hpa_v2beta1),
    Migration("autoscaling/v2beta2", "HorizontalPodAutoscaler", "autoscaling/v2"),
    Migration("rbac.authorization.k8s.io/v1beta1", "*", "rbac.authorization.k8s.io/v1"),
    Migration("rbac.authorization.k8s.io/v1alpha1", "*", "rbac.authorization.k8s.io/v1"),
    Migration("storage.k8s.io/v1beta1", "*", "storage.k8s.io/v1"),
    Migration("scheduling.k8s.io/v1beta1", "PriorityClass", "scheduling.k8s.io/v1"),
    Migration("scheduling.k8s.io/v1alpha1", "PriorityClass", "scheduling.k8s.io/v1"),
    Migration("coordination.k8s.io/v1beta1", "Lease", "coordination.k8s.io/v1"),
    Migration("node.k8s.io/v1beta1", "RuntimeClass", "node.k8s.io/v1"),
    Migration("snapshot.storage.k8s.io/v1beta1", "*", "snapshot.storage.k8s.io/v1"),
    Migration(
        "policy/v1beta1",
        "PodSecurityPolicy",
        None,
        note="removed in Kubernetes 1.25 without a successor; use Pod Security admission labels on the namespace",
    ),
    Migration(
        "extensions/v1beta1",
        "PodSecurityPolicy",
        None,
        note="removed in Kubernetes 1.25 without a successor; use Pod Security admission labels on the namespace",
    ),
)
_BY_KEY = {(m.source, m.kind): m for m in MIGRATIONS}


def find_migration(api_version: str, kind: str) -> Migration | None:
    return _BY_KEY.get((api_version, kind)) or _BY_KEY.get((api_version, "*"))


@dataclass
class MigrationResult:
    obj: dict | None  # None: the kind was removed without a successor (not restored)
    notes: list[str]
    migrated: bool


def migrate(obj: dict) -> MigrationResult:
    """``obj`` rewritten to its stable API version (a copy), or unchanged when no migration applies."""
    m = find_migration(obj.get("apiVersion", ""), obj.get("kind", ""))
    if m is None:
        return MigrationResult(obj, [], False)
    name = dig(obj, "metadata", "name", default="")
    head = f"{obj.get('kind')}/{name}: {m.source}"
    if m.target is None:
        return MigrationResult(None, [f"{head} {m.note}; not restored"], True)
    out = copy.deepcopy(obj)
    out["apiVersion"] = m.target
    notes: list[str] = []
    out = (m.convert or _identity)(out, notes)
    return MigrationResult(out, [f"{head} → {m.target}" + (f" ({'; '.join(notes)})" if notes else "")], True)
