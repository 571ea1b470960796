"""Resource types known to the fake Kubernetes API server: the built-in kinds, the CSI snapshot and group
snapshot kinds, Argo's kinds, and any kind registered by a test or by creating a
CustomResourceDefinition. Drives URL routing, discovery documents and per-kind behaviour flags.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.fakes.kube_objects import get_path

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")

_VERSION_ORDER = {"alpha": 0, "beta": 1, "": 2}


def version_priority(version: str) -> tuple:
    """Kubernetes version ordering: GA before beta before alpha, each by major then minor version,
    descending: v2 > v1 > v2beta2 > v1beta2 > v1beta1 > v1alpha1 > anything else."""
    import re

    m = re.match(r"^v(\d+)(?:(alpha|beta)(\d+))?$", version)
    if not m:
        return (-1, 0, 0, 0, version)
    return (1, _VERSION_ORDER[m.group(2) or ""], int(m.group(1)), int(m.group(3) or 0), "")


@dataclass
class ResourceType:
    """One REST resource (group + plural), served at one or more versions, stored once.

    Converters translate between the stored form (at `storage_version`) and another served version;
    `validate(new, old)` returns causes [{"field", "message"}] that make the request 422 Invalid.
    """

    group: str
    versions: tuple[str, ...]
    kind: str
    plural: str
    namespaced: bool = True
    singular: str = ""
    short_names: tuple[str, ...] = ()
    status: bool = False
    scale: bool = False
    builtin: bool = True
    name_rule: str = "subdomain"
    delete_returns_object: bool = False
    extra_subresources: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    storage_version: str = ""
    categories: tuple[str, ...] = ()
    to_version: Callable[[dict, str], dict] | None = None
    from_version: Callable[[dict, str], dict] | None = None
    validate: Callable[[dict, dict | None], list[dict]] | None = None
    scale_replicas_path: tuple[str, ...] = ("spec", "replicas")
    scale_status_path: tuple[str, ...] = ("status", "replicas")
    scale_selector_path: tuple[str, ...] = ("spec", "selector")
    immutable: Callable[[dict, dict], list[dict]] | None = field(default=None, repr=False)
    # Another group serving the same objects (extensions/v1beta1 Ingresses are networking.k8s.io's): the
    # group whose storage this type shares; None for a type with its own storage.
    storage_group: str | None = None

    def __post_init__(self):
        self.versions = tuple(sorted(self.versions, key=version_priority, reverse=True))
        if not self.storage_version:
            self.storage_version = self.versions[0]
        if not self.singular:
            self.singular = self.kind.lower()

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)

    @property
    def storage_key(self) -> tuple[str, str]:
        """Where the objects live: the key of the type whose storage this one shares, else its own."""
        return (self.storage_group if self.storage_group is not None else self.group, self.plural)

    @property
    def is_alias(self) -> bool:
        return self.storage_group is not None and self.storage_key != self.key

    @property
    def preferred_version(self) -> str:
        return self.versions[0]

    def api_version(self, version: str | None = None) -> str:
        """The apiVersion of this type at ``version``; without one, the stored form's (for a type
        sharing another group's storage: that group's)."""
        group = self.group
        if version is None and self.storage_group is not None:
            group = self.storage_group
        version = version or self.storage_version
        return f"{group}/{version}" if group else version

    @property
    def qualified(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def to_served(self, obj: dict, version: str) -> dict:
        """The stored object as seen at `version`."""
        out = copy.deepcopy(obj)
        if self.to_version and version != self.storage_version:
            out = self.to_version(out, version)
        out["apiVersion"] = self.api_version(version)
        out["kind"] = self.kind
        return out

    def to_storage(self, obj: dict, version: str) -> dict:
        out = copy.deepcopy(obj)
        if self.from_version and version != self.storage_version:
            out = self.from_version(out, version)
        out["apiVersion"] = self.api_version(self.storage_version)
        out["kind"] = self.kind
        return out

    def subresources(self) -> list[str]:
        subs = list(self.extra_subresources)
        if self.status:
            subs.append("status")
        if self.scale:
            subs.append("scale")
        return subs

    def discovery_entries(self) -> list[dict]:
        entry = {
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(self.verbs),
        }
        if self.short_names:
            entry["shortNames"] = list(self.short_names)
        if self.categories:
            entry["categories"] = list(self.categories)
        entries = [entry]
        for sub in self.subresources():
            if sub == "scale":
                kind, group, version, verbs = "Scale", "autoscaling", "v1", ["get", "patch", "update"]
            elif sub == "status":
                kind, group, version, verbs = self.kind, None, None, ["get", "patch", "update"]
            elif sub == "exec":
                kind, group, version, verbs = "PodExecOptions", None, None, ["create", "get"]
            elif sub == "log":
                kind, group, version, verbs = "Pod", None, None, ["get"]
            else:
                kind, group, version, verbs = self.kind, None, None, ["get"]
            sub_entry = {
                "name": f"{self.plural}/{sub}",
                "singularName": "",
                "namespaced": self.namespaced,
                "kind": kind,
                "verbs": verbs,
            }
            if group:
                sub_entry["group"], sub_entry["version"] = group, version
            entries.append(sub_entry)
        return entries


class Registry:
    """Every resource type the server serves, indexed for routing and lookup."""

    def __init__(self):
        self._types: dict[tuple[str, str], ResourceType] = {}

    def register(self, rtype: ResourceType) -> ResourceType:
        self._types[rtype.key] = rtype
        return rtype

    def unregister(self, group: str, plural: str) -> None:
        self._types.pop((group, plural), None)

    def all(self) -> list[ResourceType]:
        """Every stored type once (types serving another group's objects are left out)."""
        return [r for r in self._types.values() if not r.is_alias]

    def served(self) -> list[ResourceType]:
        """Every served type, those sharing another group's storage included."""
        return list(self._types.values())

    def canonical(self, rtype: ResourceType) -> ResourceType:
        """The type that owns the storage ``rtype`` serves (``rtype`` itself unless it is an alias)."""
        if not rtype.is_alias:
            return rtype
        return self._types.get(rtype.storage_key, rtype)

    def by_key(self, key: tuple[str, str]) -> ResourceType | None:
        return self._types.get(key)

    def route(self, group: str, version: str, plural: str) -> ResourceType | None:
        rtype = self._types.get((group, plural))
        if rtype is None or version not in rtype.versions:
            return None
        return rtype

    def groups(self) -> dict[str, list[str]]:
        """group -> served versions, highest priority first (core group excluded)."""
        found: dict[str, set[str]] = {}
        for rtype in self._types.values():
            if rtype.group:
                found.setdefault(rtype.group, set()).update(rtype.versions)
        return {g: sorted(v, key=version_priority, reverse=True) for g, v in sorted(found.items())}

    def in_group_version(self, group: str, version: str) -> list[ResourceType]:
        return [r for r in self._types.values() if r.group == group and version in r.versions]

    def resolve(self, name: str) -> ResourceType:
        """Find a type by 'plural', 'plural.group', 'Kind', 'Kind.group', 'group/version/Kind',
        'v1/Kind' or a short name, the way kubectl resolves resource arguments."""
        if "/" in name:
            api_version, _, kind = name.rpartition("/")
            group = api_version.rpartition("/")[0] if "/" in api_version else ""
            version = api_version.rpartition("/")[2]
            for rtype in self._types.values():
                if rtype.group == group and version in rtype.versions and kind in (rtype.kind, rtype.plural):
                    return rtype
            raise KeyError(f"no resource type {name!r}")
        matches = []
        for rtype in self._types.values():
            names = {rtype.plural, rtype.singular, rtype.kind, rtype.kind.lower(), *rtype.short_names}
            if name in names:
                matches.append(rtype)
            elif "." in name:
                head, _, group = name.partition(".")
                if group == rtype.group and head in names:
                    return rtype
        if len(matches) > 1:
            # the same objects served by a second group: the name means the type owning them
            matches = [m for m in matches if not m.is_alias] or matches
        if len(matches) == 1:
            return matches[0]
        core = [m for m in matches if m.group == ""]
        if len(core) == 1:
            return core[0]
        if not matches:
            raise KeyError(f"no resource type {name!r}")
        raise KeyError(f"resource type {name!r} is ambiguous: {', '.join(m.qualified for m in matches)}")

    def register_crd(self, crd: dict) -> ResourceType:
        """Register the kind a CustomResourceDefinition (apiextensions.k8s.io/v1) describes."""
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        served = [v for v in spec.get("versions") or [] if v.get("served", True)]
        if not served:
            raise ValueError("CustomResourceDefinition spec.versions has no served version")
        storage = next((v["name"] for v in served if v.get("storage")), served[0]["name"])
        subresources = served[0].get("subresources") or {}
        scale = subresources.get("scale") or {}
        rtype = ResourceType(
            group=spec["group"],
            versions=tuple(v["name"] for v in served),
            kind=names["kind"],
            plural=names["plural"],
            singular=names.get("singular", ""),
            short_names=tuple(names.get("shortNames") or ()),
            categories=tuple(names.get("categories") or ()),
            namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            status="status" in subresources,
            scale=bool(scale) or "scale" in subresources,
            builtin=False,
            delete_returns_object=True,
            storage_version=storage,
        )
        if scale:
            rtype.scale_replicas_path = tuple(
                scale.get("specReplicasPath", ".spec.replicas").lstrip(".").split(".")
            )
            rtype.scale_status_path = tuple(
                scale.get("statusReplicasPath", ".status.replicas").lstrip(".").split(".")
            )
            if scale.get("labelSelectorPath"):
                rtype.scale_selector_path = tuple(scale["labelSelectorPath"].lstrip(".").split("."))
        return self.register(rtype)


# ---------------------------------------------------------------------------------------------------------
# Validation of the kinds whose mistakes matter to callers


def _require(obj: dict, *path: str) -> list[dict]:
    if get_path(obj, *path) in (None, "", [], {}):
        return [{"field": ".".join(path), "message": "Required value", "reason": "FieldValueRequired"}]
    return []


def _validate_pod(obj: dict, old: dict | None) -> list[dict]:
    causes = _require(obj, "spec", "containers")
    for n, container in enumerate(get_path(obj, "spec", "containers") or []):
        for key in ("name", "image"):
            if not container.get(key):
                causes.append(
                    {
                        "field": f"spec.containers[{n}].{key}",
                        "message": "Required value",
                        "reason": "FieldValueRequired",
                    }
                )
    return causes


def _validate_pvc(obj: dict, old: dict | None) -> list[dict]:
    causes = _require(obj, "spec", "accessModes")
    causes += _require(obj, "spec", "resources", "requests", "storage")
    return causes


def _immutable_pvc(new: dict, old: dict) -> list[dict]:
    """A claim's spec is immutable after creation except resources.requests and the binding."""
    keep = ("resources", "volumeName", "volumeAttributesClassName")
    strip = lambda spec: {k: v for k, v in (spec or {}).items() if k not in keep}  # noqa: E731
    if strip(new.get("spec")) != strip(old.get("spec")):
        return [
            {
                "field": "spec",
                "message": "Forbidden: spec is immutable after creation except resources.requests and "
                "volumeAttributesClassName for bound claims",
                "reason": "FieldValueForbidden",
            }
        ]
    return []


def _validate_workload(obj: dict, old: dict | None) -> list[dict]:
    causes = _require(obj, "spec", "selector")
    causes += _require(obj, "spec", "template", "spec", "containers")
    selector = get_path(obj, "spec", "selector", "matchLabels") or {}
    labels = get_path(obj, "spec", "template", "metadata", "labels") or {}
    if selector and any(labels.get(k) != v for k, v in selector.items()):
        causes.append(
            {
                "field": "spec.template.metadata.labels",
                "message": f"Invalid value: {labels!r}: `selector` does not match template `labels`",
            }
        )
    return causes


def _immutable_selector(new: dict, old: dict) -> list[dict]:
    if get_path(new, "spec", "selector") != get_path(old, "spec", "selector"):
        return [
            {
                "field": "spec.selector",
                "message": "Invalid value: field is immutable",
                "reason": "FieldValueInvalid",
            }
        ]
    return []


def _immutable_statefulset(new: dict, old: dict) -> list[dict]:
    allowed = (
        "replicas",
        "ordinals",
        "template",
        "updateStrategy",
        "persistentVolumeClaimRetentionPolicy",
        "minReadySeconds",
    )
    strip = lambda spec: {k: v for k, v in (spec or {}).items() if k not in allowed}  # noqa: E731
    if strip(new.get("spec")) != strip(old.get("spec")):
        return [
            {
                "field": "spec",
                "message": "Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', "
                "'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
                "reason": "FieldValueForbidden",
            }
        ]
    return []


def _validate_volume_snapshot(obj: dict, old: dict | None) -> list[dict]:
    source = get_path(obj, "spec", "source") or {}
    if bool(source.get("persistentVolumeClaimName")) == bool(source.get("volumeSnapshotContentName")):
        return [
            {
                "field": "spec.source",
                "message": "Invalid value: exactly one of volumeSnapshotContentName and persistentVolumeClaimName must be set",
            }
        ]
    return []


def _immutable_source(new: dict, old: dict) -> list[dict]:
    if get_path(new, "spec", "source") != get_path(old, "spec", "source"):
        return [{"field": "spec.source", "message": "Invalid value: spec.source is immutable"}]
    return []


def _validate_group_snapshot(obj: dict, old: dict | None) -> list[dict]:
    source = get_path(obj, "spec", "source") or {}
    if ("selector" in source) == bool(source.get("volumeGroupSnapshotContentName")):
        return [
            {
                "field": "spec.source",
                "message": "Invalid value: exactly one of selector and volumeGroupSnapshotContentName must be set",
            }
        ]
    return []


def _validate_configmap(obj: dict, old: dict | None) -> list[dict]:
    causes = []
    for key, value in (obj.get("data") or {}).items():
        if not isinstance(value, str):
            causes.append({"field": f"data[{key}]", "message": f"Invalid value: {value!r}: must be a string"})
    return causes


def _combine(*checks):
    return lambda new, old: [c for check in checks for c in check(new, old)]


# ---------------------------------------------------------------------------------------------------------
# Group snapshot contents: v1beta1 spells the per-volume list differently from v1beta2 / v1.


def _group_content_to_version(obj: dict, version: str) -> dict:
    if version == "v1beta1":
        status = obj.get("status") or {}
        infos = status.pop("volumeSnapshotInfoList", None)
        if infos is not None:
            status["volumeSnapshotHandlePairList"] = [
                {"volumeHandle": i.get("volumeHandle", ""), "snapshotHandle": i.get("snapshotHandle", "")}
                for i in infos
            ]
    return obj


def _group_content_from_version(obj: dict, version: str) -> dict:
    if version == "v1beta1":
        status = obj.get("status") or {}
        pairs = status.pop("volumeSnapshotHandlePairList", None)
        if pairs is not None:
            status["volumeSnapshotInfoList"] = [dict(p) for p in pairs]
    return obj


def builtin_types() -> list[ResourceType]:
    rt = ResourceType
    return [
        # core/v1
        rt(
            "",
            ("v1",),
            "Namespace",
            "namespaces",
            namespaced=False,
            short_names=("ns",),
            status=True,
            name_rule="label",
            delete_returns_object=True,
            extra_subresources=("finalize",),
        ),
        rt(
            "",
            ("v1",),
            "Pod",
            "pods",
            short_names=("po",),
            status=True,
            delete_returns_object=True,
            extra_subresources=("exec", "log"),
            validate=_validate_pod,
            categories=("all",),
        ),
        rt("", ("v1",), "ConfigMap", "configmaps", short_names=("cm",), validate=_validate_configmap),
        rt("", ("v1",), "Secret", "secrets"),
        rt(
            "",
            ("v1",),
            "ServiceAccount",
            "serviceaccounts",
            short_names=("sa",),
            delete_returns_object=True,
            extra_subresources=("token",),
        ),
        rt(
            "",
            ("v1",),
            "Service",
            "services",
            short_names=("svc",),
            status=True,
            name_rule="label",
            delete_returns_object=True,
            categories=("all",),
        ),
        rt(
            "",
            ("v1",),
            "PersistentVolumeClaim",
            "persistentvolumeclaims",
            short_names=("pvc",),
            status=True,
            delete_returns_object=True,
            validate=_validate_pvc,
            immutable=_immutable_pvc,
        ),
        rt(
            "",
            ("v1",),
            "PersistentVolume",
            "persistentvolumes",
            namespaced=False,
            short_names=("pv",),
            status=True,
            delete_returns_object=True,
        ),
        rt("", ("v1",), "Event", "events", short_names=("ev",)),
        rt("", ("v1",), "Endpoints", "endpoints", short_names=("ep",)),
        rt("", ("v1",), "Node", "nodes", namespaced=False, short_names=("no",), status=True),
        rt("", ("v1",), "LimitRange", "limitranges", short_names=("limits",)),
        rt(
            "",
            ("v1",),
            "ResourceQuota",
            "resourcequotas",
            short_names=("quota",),
            status=True,
            delete_returns_object=True,
        ),
        rt(
            "",
            ("v1",),
            "ReplicationController",
            "replicationcontrollers",
            short_names=("rc",),
            status=True,
            scale=True,
        ),
        rt("", ("v1",), "PodTemplate", "podtemplates", delete_returns_object=True),
        # apps/v1
        rt(
            "apps",
            ("v1",),
            "Deployment",
            "deployments",
            short_names=("deploy",),
            status=True,
            scale=True,
            validate=_validate_workload,
            immutable=_immutable_selector,
            categories=("all",),
        ),
        rt(
            "apps",
            ("v1",),
            "StatefulSet",
            "statefulsets",
            short_names=("sts",),
            status=True,
            scale=True,
            validate=_validate_workload,
            immutable=_combine(_immutable_selector, _immutable_statefulset),
            categories=("all",),
        ),
        rt(
            "apps",
            ("v1",),
            "ReplicaSet",
            "replicasets",
            short_names=("rs",),
            status=True,
            scale=True,
            categories=("all",),
        ),
        rt(
            "apps",
            ("v1",),
            "DaemonSet",
            "daemonsets",
            short_names=("ds",),
            status=True,
            validate=_validate_workload,
            immutable=_immutable_selector,
            categories=("all",),
        ),
        rt("apps", ("v1",), "ControllerRevision", "controllerrevisions"),
        # batch/v1
        rt("batch", ("v1",), "Job", "jobs", status=True, categories=("all",)),
        rt("batch", ("v1",), "CronJob", "cronjobs", short_names=("cj",), status=True, categories=("all",)),
        # rbac
        rt("rbac.authorization.k8s.io", ("v1",), "Role", "roles", name_rule="path"),
        rt("rbac.authorization.k8s.io", ("v1",), "RoleBinding", "rolebindings", name_rule="path"),
        rt(
            "rbac.authorization.k8s.io",
            ("v1",),
            "ClusterRole",
            "clusterroles",
            namespaced=False,
            name_rule="path",
        ),
        rt(
            "rbac.authorization.k8s.io",
            ("v1",),
            "ClusterRoleBinding",
            "clusterrolebindings",
            namespaced=False,
            name_rule="path",
        ),
        # storage, networking, policy, discovery, autoscaling, coordination, scheduling
        rt(
            "storage.k8s.io",
            ("v1",),
            "StorageClass",
            "storageclasses",
            namespaced=False,
            short_names=("sc",),
            delete_returns_object=True,
        ),
        rt(
            "storage.k8s.io", ("v1",), "CSIDriver", "csidrivers", namespaced=False, delete_returns_object=True
        ),
        rt(
            "storage.k8s.io",
            ("v1",),
            "VolumeAttachment",
            "volumeattachments",
            namespaced=False,
            status=True,
            delete_returns_object=True,
        ),
        rt("networking.k8s.io", ("v1",), "Ingress", "ingresses", short_names=("ing",), status=True),
        rt("networking.k8s.io", ("v1",), "NetworkPolicy", "networkpolicies", short_names=("netpol",)),
        rt(
            "policy",
            ("v1",),
            "PodDisruptionBudget",
            "poddisruptionbudgets",
            short_names=("pdb",),
            status=True,
        ),
        rt("discovery.k8s.io", ("v1",), "EndpointSlice", "endpointslices"),
        rt(
            "autoscaling",
            ("v2", "v1"),
            "HorizontalPodAutoscaler",
            "horizontalpodautoscalers",
            short_names=("hpa",),
            status=True,
            storage_version="v2",
        ),
        rt("coordination.k8s.io", ("v1",), "Lease", "leases"),
        rt(
            "scheduling.k8s.io",
            ("v1",),
            "PriorityClass",
            "priorityclasses",
            namespaced=False,
            short_names=("pc",),
        ),
        rt(
            "apiextensions.k8s.io",
            ("v1",),
            "CustomResourceDefinition",
            "customresourcedefinitions",
            namespaced=False,
            short_names=("crd", "crds"),
            status=True,
            delete_returns_object=True,
        ),
        # CSI snapshots (external-snapshotter CRDs)
        rt(
            "snapshot.storage.k8s.io",
            ("v1",),
            "VolumeSnapshot",
            "volumesnapshots",
            short_names=("vs",),
            status=True,
            builtin=False,
            delete_returns_object=True,
            validate=_validate_volume_snapshot,
            immutable=_immutable_source,
        ),
        rt(
            "snapshot.storage.k8s.io",
            ("v1",),
            "VolumeSnapshotContent",
            "volumesnapshotcontents",
            namespaced=False,
            short_names=("vsc", "vscs"),
            status=True,
            builtin=False,
            delete_returns_object=True,
        ),
        rt(
            "snapshot.storage.k8s.io",
            ("v1",),
            "VolumeSnapshotClass",
            "volumesnapshotclasses",
            namespaced=False,
            short_names=("vsclass", "vsclasses"),
            builtin=False,
            delete_returns_object=True,
        ),
        rt(
            "groupsnapshot.storage.k8s.io",
            ("v1beta2", "v1beta1", "v1"),
            "VolumeGroupSnapshot",
            "volumegroupsnapshots",
            short_names=("vgs",),
            status=True,
            builtin=False,
            delete_returns_object=True,
            storage_version="v1beta2",
            validate=_validate_group_snapshot,
            immutable=_immutable_source,
        ),
        rt(
            "groupsnapshot.storage.k8s.io",
            ("v1beta2", "v1beta1", "v1"),
            "VolumeGroupSnapshotContent",
            "volumegroupsnapshotcontents",
            namespaced=False,
            short_names=("vgsc", "vgscs"),
            status=True,
            builtin=False,
            delete_returns_object=True,
            storage_version="v1beta2",
            to_version=_group_content_to_version,
            from_version=_group_content_from_version,
        ),
        rt(
            "groupsnapshot.storage.k8s.io",
            ("v1beta2", "v1beta1", "v1"),
            "VolumeGroupSnapshotClass",
            "volumegroupsnapshotclasses",
            namespaced=False,
            short_names=("vgsclass", "vgsclasses"),
            builtin=False,
            delete_returns_object=True,
            storage_version="v1beta2",
        ),
        # Argo Workflows
        rt(
            "argoproj.io",
            ("v1alpha1",),
            "Workflow",
            "workflows",
            short_names=("wf",),
            builtin=False,
            delete_returns_object=True,
        ),
        rt(
            "argoproj.io",
            ("v1alpha1",),
            "WorkflowTemplate",
            "workflowtemplates",
            short_names=("wftmpl",),
            builtin=False,
            delete_returns_object=True,
        ),
        rt(
            "argoproj.io",
            ("v1alpha1",),
            "ClusterWorkflowTemplate",
            "clusterworkflowtemplates",
            namespaced=False,
            short_names=("clusterwftmpl", "cwft"),
            builtin=False,
            delete_returns_object=True,
        ),
        rt(
            "argoproj.io",
            ("v1alpha1",),
            "CronWorkflow",
            "cronworkflows",
            short_names=("cwf", "cronwf"),
            builtin=False,
            delete_returns_object=True,
        ),
        rt(
            "argoproj.io",
            ("v1alpha1",),
            "WorkflowTaskResult",
            "workflowtaskresults",
            builtin=False,
            delete_returns_object=True,
        ),
        rt(
            "argoproj.io",
            ("v1alpha1",),
            "WorkflowTaskSet",
            "workflowtasksets",
            short_names=("wfts",),
            status=True,
            builtin=False,
            delete_returns_object=True,
        ),
        rt(
            "argoproj.io",
            ("v1alpha1",),
            "WorkflowArtifactGCTask",
            "workflowartifactgctasks",
            short_names=("wfat",),
            status=True,
            builtin=False,
            delete_returns_object=True,
        ),
        rt(
            "argoproj.io",
            ("v1alpha1",),
            "WorkflowEventBinding",
            "workfloweventbindings",
            short_names=("wfeb",),
            builtin=False,
            delete_returns_object=True,
        ),
    ]


def create_only_types() -> list[ResourceType]:
    """Review kinds that are only ever created (answered, not stored)."""
    return [
        ResourceType(
            "authentication.k8s.io",
            ("v1",),
            "TokenReview",
            "tokenreviews",
            namespaced=False,
            verbs=("create",),
        ),
        ResourceType(
            "authorization.k8s.io",
            ("v1",),
            "SelfSubjectAccessReview",
            "selfsubjectaccessreviews",
            namespaced=False,
            verbs=("create",),
        ),
        ResourceType(
            "authorization.k8s.io",
            ("v1",),
            "SubjectAccessReview",
            "subjectaccessreviews",
            namespaced=False,
            verbs=("create",),
        ),
        ResourceType(
            "authorization.k8s.io",
            ("v1",),
            "LocalSubjectAccessReview",
            "localsubjectaccessreviews",
            namespaced=True,
            verbs=("create",),
        ),
    ]


# ---------------------------------------------------------------------------------------------------------
# Server profiles: the kinds and versions a given Kubernetes release serves.

PROFILES = ("current", "1.20")


def _backend_to_v1beta1(backend: object) -> object:
    if not isinstance(backend, dict) or "service" not in backend:
        return backend
    out = {k: v for k, v in backend.items() if k != "service"}
    service = backend.get("service") or {}
    out["serviceName"] = service.get("name", "")
    port = service.get("port") or {}
    out["servicePort"] = port["number"] if "number" in port else port.get("name", "")
    return out


def _backend_from_v1beta1(backend: object) -> object:
    if not isinstance(backend, dict) or "serviceName" not in backend:
        return backend
    out = {k: v for k, v in backend.items() if k not in ("serviceName", "servicePort")}
    port = backend.get("servicePort")
    service: dict = {"name": backend["serviceName"]}
    if isinstance(port, int):
        service["port"] = {"number": port}
    elif isinstance(port, str) and port:
        service["port"] = {"number": int(port)} if port.isdigit() else {"name": port}
    out["service"] = service
    return out


def _ingress_paths(spec: dict):
    for rule in spec.get("rules") or []:
        yield from get_path(rule, "http", "paths", default=[]) or []


def _ingress_to_version(obj: dict, version: str) -> dict:
    """networking.k8s.io/v1 (stored) → v1beta1 (served by networking.k8s.io and extensions in 1.19-1.21)."""
    if version != "v1beta1":
        return obj
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return obj
    if "defaultBackend" in spec:
        spec["backend"] = _backend_to_v1beta1(spec.pop("defaultBackend"))
    for path in _ingress_paths(spec):
        if "backend" in path:
            path["backend"] = _backend_to_v1beta1(path["backend"])
    return obj


def _ingress_from_version(obj: dict, version: str) -> dict:
    if version != "v1beta1":
        return obj
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return obj
    if "backend" in spec:
        spec["defaultBackend"] = _backend_from_v1beta1(spec.pop("backend"))
    for path in _ingress_paths(spec):
        if "backend" in path:
            path["backend"] = _backend_from_v1beta1(path["backend"])
        path.setdefault("pathType", "ImplementationSpecific")
    return obj


VERSION_INFO_1_20 = {
    "major": "1",
    "minor": "20",
    "gitVersion": "v1.20.15",
    "gitCommit": "0" * 40,
    "gitTreeState": "clean",
    "buildDate": "2022-01-19T17:23:01Z",
    "goVersion": "go1.15.15",
    "compiler": "gc",
    "platform": "linux/amd64",
}


def profile_types(profile: str = "current") -> list[ResourceType]:
    """The built-in kinds as a release serves them.

    ``current``: the latest release (one version per kind but autoscaling and the group snapshots).
    ``1.20``: what changed for a backup's sake, as a real 1.20 served it:

    - batch: ``batch/v1`` serves Jobs only; CronJobs are served only at ``batch/v1beta1`` (preferred
      version of batch: v1, so a client reading preferred versions only never sees a CronJob);
    - Ingresses at ``networking.k8s.io/v1`` and ``v1beta1``, and at ``extensions/v1beta1`` sharing the
      same storage: one object, one uid, visible in two groups (v1beta1 in the old backend shape);
    - PodDisruptionBudgets at ``policy/v1beta1`` only; EndpointSlices at ``discovery.k8s.io/v1beta1``
      only; HorizontalPodAutoscalers at ``autoscaling/v1``, ``v2beta2`` and ``v2beta1`` (preferred v1).

    The preferred version of each group is the highest in Kubernetes' version order (GA over beta over
    alpha), which is what a 1.20 API server listed in ``/apis``.
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown server profile {profile!r}; expected one of {', '.join(PROFILES)}")
    types = builtin_types()
    if profile == "current":
        return types
    replaced = {
        ("batch", "cronjobs"): dict(versions=("v1beta1",), storage_version="v1beta1"),
        ("policy", "poddisruptionbudgets"): dict(versions=("v1beta1",), storage_version="v1beta1"),
        ("discovery.k8s.io", "endpointslices"): dict(versions=("v1beta1",), storage_version="v1beta1"),
        ("autoscaling", "horizontalpodautoscalers"): dict(
            versions=("v1", "v2beta2", "v2beta1"), storage_version="v1"
        ),
        ("networking.k8s.io", "ingresses"): dict(
            versions=("v1", "v1beta1"),
            storage_version="v1",
            to_version=_ingress_to_version,
            from_version=_ingress_from_version,
        ),
    }
    out = []
    for rtype in types:
        change = replaced.get(rtype.key)
        if change is not None:
            rtype = dataclasses.replace(rtype, **change)
        out.append(rtype)
        if rtype.key == ("networking.k8s.io", "ingresses"):
            out.append(
                dataclasses.replace(
                    rtype, group="extensions", versions=("v1beta1",), storage_group="networking.k8s.io"
                )
            )
    return out
