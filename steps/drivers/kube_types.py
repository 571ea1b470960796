"""Kubernetes resource types as the steps address them: group, version, kind, plural and scope; the
types every cluster serves (:data:`KNOWN_TYPES`, so a client needs no discovery for them) and
Kubernetes' order of API versions (:func:`version_priority`). Used by :mod:`steps.drivers.kube`.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass


@dataclass(frozen=True)
class ResourceType:
    api_version: str
    kind: str
    plural: str
    namespaced: bool = True

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    def path(
        self, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        base = f"/api/{self.api_version}" if not self.group else f"/apis/{self.api_version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{urllib.parse.quote(namespace, safe='')}"
        base += f"/{self.plural}"
        if name:
            base += f"/{urllib.parse.quote(name, safe='')}"
            if subresource:
                base += f"/{subresource}"
        return base


def _rt(api_version: str, kind: str, plural: str, namespaced: bool = True) -> ResourceType:
    return ResourceType(api_version, kind, plural, namespaced)


KNOWN_TYPES: tuple[ResourceType, ...] = (
    _rt("v1", "Namespace", "namespaces", False),
    _rt("v1", "ConfigMap", "configmaps"),
    _rt("v1", "Secret", "secrets"),
    _rt("v1", "ServiceAccount", "serviceaccounts"),
    _rt("v1", "Service", "services"),
    _rt("v1", "Endpoints", "endpoints"),
    _rt("v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
    _rt("v1", "PersistentVolume", "persistentvolumes", False),
    _rt("v1", "Pod", "pods"),
    _rt("v1", "ReplicationController", "replicationcontrollers"),
    _rt("v1", "Event", "events"),
    _rt("v1", "LimitRange", "limitranges"),
    _rt("v1", "ResourceQuota", "resourcequotas"),
    _rt("v1", "PodTemplate", "podtemplates"),
    _rt("apps/v1", "Deployment", "deployments"),
    _rt("apps/v1", "StatefulSet", "statefulsets"),
    _rt("apps/v1", "DaemonSet", "daemonsets"),
    _rt("apps/v1", "ReplicaSet", "replicasets"),
    _rt("apps/v1", "ControllerRevision", "controllerrevisions"),
    _rt("batch/v1", "Job", "jobs"),
    _rt("batch/v1", "CronJob", "cronjobs"),
    _rt("networking.k8s.io/v1", "Ingress", "ingresses"),
    _rt("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies"),
    _rt("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
    _rt("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers"),
    _rt("autoscaling/v1", "HorizontalPodAutoscaler", "horizontalpodautoscalers"),
    _rt("rbac.authorization.k8s.io/v1", "Role", "roles"),
    _rt("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings"),
    _rt("rbac.authorization.k8s.io/v1", "ClusterRole", "clusterroles", False),
    _rt("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "clusterrolebindings", False),
    _rt("discovery.k8s.io/v1", "EndpointSlice", "endpointslices"),
    _rt("events.k8s.io/v1", "Event", "events"),
    _rt("coordination.k8s.io/v1", "Lease", "leases"),
    _rt("storage.k8s.io/v1", "StorageClass", "storageclasses", False),
    _rt("storage.k8s.io/v1", "CSIDriver", "csidrivers", False),
    _rt("apiextensions.k8s.io/v1", "CustomResourceDefinition", "customresourcedefinitions", False),
    _rt("authorization.k8s.io/v1", "SelfSubjectAccessReview", "selfsubjectaccessreviews", False),
    _rt("authorization.k8s.io/v1", "SubjectAccessReview", "subjectaccessreviews", False),
    _rt("snapshot.storage.k8s.io/v1", "VolumeSnapshot", "volumesnapshots"),
    _rt("snapshot.storage.k8s.io/v1", "VolumeSnapshotContent", "volumesnapshotcontents", False),
    _rt("snapshot.storage.k8s.io/v1", "VolumeSnapshotClass", "volumesnapshotclasses", False),
    *(
        t
        for v in ("v1", "v1beta2", "v1beta1")
        for t in (
            _rt(f"groupsnapshot.storage.k8s.io/{v}", "VolumeGroupSnapshot", "volumegroupsnapshots"),
            _rt(
                f"groupsnapshot.storage.k8s.io/{v}",
                "VolumeGroupSnapshotContent",
                "volumegroupsnapshotcontents",
                False,
            ),
            _rt(
                f"groupsnapshot.storage.k8s.io/{v}",
                "VolumeGroupSnapshotClass",
                "volumegroupsnapshotclasses",
                False,
            ),
        )
    ),
    _rt("argoproj.io/v1alpha1", "Workflow", "workflows"),
    _rt("argoproj.io/v1alpha1", "WorkflowTemplate", "workflowtemplates"),
)
KNOWN = {(t.api_version, t.kind): t for t in KNOWN_TYPES}


def version_priority(version: str) -> tuple:
    """Kubernetes' order of API versions, as a sort key (higher is newer): GA before beta before alpha,
    each by major then minor number; anything else last. ``v2 > v1 > v2beta1 > v1beta2 > v1beta1 >
    v1alpha1 > foo``."""
    m = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version or "")
    if not m:
        return (0, 0, 0, 0)
    stability = {"alpha": 1, "beta": 2, None: 3}[m.group(2)]
    return (1, stability, int(m.group(1)), int(m.group(3) or 0))


def guess_plural(kind: str) -> str:
    low = kind.lower()
    if low.endswith("y") and not low.endswith(("ay", "ey", "oy", "uy")):
        return low[:-1] + "ies"
    if low.endswith(("s", "x", "ch", "sh")):
        return low + "es"
    return low + "s"
