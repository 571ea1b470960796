"""Restore transforms: what changes between the captured objects and the ones a restore creates.

A :class:`TransformSpec` is built from a transforms file (YAML/JSON, the restore WorkflowTemplate passes
one) and/or ``restore-app`` flags, and :func:`transform_objects` applies it in a fixed order:

1. API-version migrations (:mod:`steps.manifests.migrations`), unless turned off;
2. namespace remap (``metadata.namespace``, the Namespace itself, RoleBinding subjects, NetworkPolicy
   namespace selectors on ``kubernetes.io/metadata.name``, pod affinity namespace lists);
3. storage class map (PVCs and StatefulSet ``volumeClaimTemplates``; ``*`` maps any class);
4. UID/GID remap of pod and container security contexts (``runAsUser``, ``runAsGroup``, ``fsGroup``,
   ``supplementalGroups``), ranges written ``FROM:TO[:COUNT]`` as in user-namespace ID maps (the same
   ranges are handed to the volume restore, which remaps the owners of the restored files);
5. image registry rewrite (``docker.io=mirror.example/hub``; ``postgres:16`` is
   ``docker.io/library/postgres:16`` for matching, and is left as written when no rule matches): the
   re-home rule of ``registry-restore --rehome`` (:mod:`steps.manifests.image_rehome`), tags and
   digests kept;
6. labels and annotations added / removed on every object's metadata (``*`` globs for removal);
7. RFC 6902 JSON patches, last, so that a patch sees (and has the final word over) everything above.

Example transforms file::

    namespaceMap: {shop: shop-restore}
    storageClassMap: {gp2: gp3, "*": standard}
    addLabels: {restored-by: snapflow}
    removeAnnotations: ["example.com/*"]
    imageRegistryMap: {docker.io: registry.internal/dockerhub}
    uidMap: ["1000:1000650000:1000"]
    gidMap: ["1000:1000650000:1000"]
    migrateApiVersions: true
    patches:
      - target: {kind: StatefulSet, name: db}
        patch: [{op: replace, path: /spec/template/spec/containers/0/resources/limits/memory, value: 2Gi}]
"""

from __future__ import annotations

import copy
import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steps.drivers.kube_objects import dig
from steps.errors import PermanentError, UsageError
from steps.idmap import IdRange, check_id_ranges
from steps.manifests.image_rehome import normalize_image as normalize_image
from steps.manifests.image_rehome import rehome_image
from steps.manifests.jsonpatch import apply_patch
from steps.manifests.migrations import migrate
from steps.manifests.objects import containers, gk, meta, pod_spec, ref


@dataclass(frozen=True)
class PatchRule:
    """JSON patch operations for the objects matching ``kind`` / ``name`` (a glob) / ``group``."""

    operations: tuple[dict, ...]
    kind: str | None = None
    name: str | None = None
    group: str | None = None
    where: str = "patches"

    def matches(self, obj: dict) -> bool:
        group, kind = gk(obj)
        if self.kind and self.kind != kind:
            return False
        if self.group is not None and self.group != group:
            return False
        return not (
            self.name and not fnmatch.fnmatchcase(dig(obj, "metadata", "name", default=""), self.name)
        )


@dataclass(frozen=True)
class TransformSpec:
    namespace_map: dict[str, str] = field(default_factory=dict)
    storage_class_map: dict[str, str] = field(default_factory=dict)
    add_labels: dict[str, str] = field(default_factory=dict)
    remove_labels: tuple[str, ...] = ()
    add_annotations: dict[str, str] = field(default_factory=dict)
    remove_annotations: tuple[str, ...] = ()
    image_registry_map: dict[str, str] = field(default_factory=dict)
    uid_map: tuple[IdRange, ...] = ()
    gid_map: tuple[IdRange, ...] = ()
    patches: tuple[PatchRule, ...] = ()
    migrate_api_versions: bool = True

    # -- construction ------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "transforms") -> TransformSpec:
        if not isinstance(d, dict):
            raise UsageError(f"{where}: expected a mapping of transforms")
        known = {
            "namespaceMap",
            "storageClassMap",
            "addLabels",
            "removeLabels",
            "addAnnotations",
            "removeAnnotations",
            "imageRegistryMap",
            "uidMap",
            "gidMap",
            "patches",
            "migrateApiVersions",
        }
        for key in d:
            if key not in known:
                raise UsageError(
                    f"{where}.{key}: unknown transform (expected one of {', '.join(sorted(known))})"
                )

        def mapping(key: str) -> dict[str, str]:
            v = d.get(key) or {}
            if not isinstance(v, dict) or not all(
                isinstance(k, str) and isinstance(x, str) for k, x in v.items()
            ):
                raise UsageError(f"{where}.{key}: expected a mapping of strings to strings")
            return dict(v)

        def strings(key: str) -> tuple[str, ...]:
            v = d.get(key) or []
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise UsageError(f"{where}.{key}: expected a list of strings")
            return tuple(v)

        patches = []
        raw_patches = d.get("patches") or []
        if not isinstance(raw_patches, list):
            raise UsageError(f"{where}.patches: expected a list of {{target, patch}} rules")
        for i, rule in enumerate(raw_patches):
            at = f"{where}.patches[{i}]"
            if not isinstance(rule, dict) or not isinstance(rule.get("patch"), list):
                raise UsageError(f"{at}: expected {{target: {{kind, name, group}}, patch: [operations]}}")
            target = rule.get("target") or {}
            if not isinstance(target, dict) or set(target) - {"kind", "name", "group"}:
                raise UsageError(f"{at}.target: expected a mapping with kind, name and/or group")
            for j, op in enumerate(rule["patch"]):
                if not isinstance(op, dict) or "op" not in op or "path" not in op:
                    raise UsageError(f"{at}.patch[{j}]: expected an operation with 'op' and 'path'")
            patches.append(
                PatchRule(
                    tuple(rule["patch"]), target.get("kind"), target.get("name"), target.get("group"), at
                )
            )
        migrate_flag = d.get("migrateApiVersions", True)
        if not isinstance(migrate_flag, bool):
            raise UsageError(f"{where}.migrateApiVersions: expected true or false")
        spec = cls(
            namespace_map=mapping("namespaceMap"),
            storage_class_map=mapping("storageClassMap"),
            add_labels=mapping("addLabels"),
            remove_labels=strings("removeLabels"),
            add_annotations=mapping("addAnnotations"),
            remove_annotations=strings("removeAnnotations"),
            image_registry_map=mapping("imageRegistryMap"),
            uid_map=tuple(IdRange.parse(x, f"{where}.uidMap[{i}]") for i, x in enumerate(strings("uidMap"))),
            gid_map=tuple(IdRange.parse(x, f"{where}.gidMap[{i}]") for i, x in enumerate(strings("gidMap"))),
            patches=tuple(patches),
            migrate_api_versions=migrate_flag,
        )
        spec.check()
        return spec

    @classmethod
    def load(cls, path: str | Path) -> TransformSpec:
        import yaml

        from steps.drivers import files

        p = Path(path)
        try:
            data = yaml.safe_load(files.read_text(p, "--transforms"))
        except yaml.YAMLError as err:
            raise UsageError(f"{p}: not valid YAML ({str(err).splitlines()[0]})") from None
        return cls.from_dict(data or {}, str(p))

    def merged(self, other: TransformSpec) -> TransformSpec:
        """``self`` with ``other``'s entries added (other wins on equal keys)."""
        return TransformSpec(
            namespace_map={**self.namespace_map, **other.namespace_map},
            storage_class_map={**self.storage_class_map, **other.storage_class_map},
            add_labels={**self.add_labels, **other.add_labels},
            remove_labels=self.remove_labels + other.remove_labels,
            add_annotations={**self.add_annotations, **other.add_annotations},
            remove_annotations=self.remove_annotations + other.remove_annotations,
            image_registry_map={**self.image_registry_map, **other.image_registry_map},
            uid_map=self.uid_map + other.uid_map,
            gid_map=self.gid_map + other.gid_map,
            patches=self.patches + other.patches,
            migrate_api_versions=self.migrate_api_versions and other.migrate_api_versions,
        )

    def check(self) -> None:
        for name, ranges in (("uidMap", self.uid_map), ("gidMap", self.gid_map)):
            check_id_ranges(ranges, f"transforms.{name}")
        for src, dst in self.namespace_map.items():
            if not _dns_label(dst):
                raise UsageError(f"transforms.namespaceMap.{src}: {dst!r} is not a valid namespace name")

    def map_namespace(self, ns: str) -> str:
        return self.namespace_map.get(ns, ns)


def _dns_label(name: str) -> bool:
    return bool(re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", name))


def parse_pairs(values: list[str] | None, flag: str) -> dict[str, str]:
    """``["a=b", "c=d"]`` → ``{"a": "b", "c": "d"}`` with a one-line error naming the flag."""
    out: dict[str, str] = {}
    for v in values or []:
        key, sep, val = v.partition("=")
        if not sep or not key:
            raise UsageError(f"{flag}: expected KEY=VALUE, got {v!r}")
        out[key] = val
    return out


# --------------------------------------------------------------------------------------------------
# Applying


@dataclass
class TransformResult:
    objects: list[dict]
    notes: list[str] = field(default_factory=list)
    # the captured object each of ``objects`` was made from (same order)
    origins: list[dict] = field(default_factory=list)


def transform_objects(objects: list[dict], spec: TransformSpec) -> TransformResult:
    """Apply ``spec`` to copies of ``objects`` (see the module docstring for the order)."""
    result = TransformResult([])
    used_patches: set[int] = set()
    for original in objects:
        obj = copy.deepcopy(original)
        try:
            if spec.migrate_api_versions:
                mig = migrate(obj)
                result.notes.extend(mig.notes)
                if mig.obj is None:
                    continue
                obj = mig.obj
            _remap_namespace(obj, spec)
            _map_storage_class(obj, spec)
            _remap_ids(obj, spec)
            _rewrite_images(obj, spec)
            _labels_annotations(obj, spec)
        except (AttributeError, TypeError, ValueError, KeyError, IndexError) as err:
            # a captured object is untrusted input: a field of an unexpected type is damage, named
            raise PermanentError(
                f"{ref(original)}: a field has an unexpected type or shape ({type(err).__name__}: {err}); "
                "the backup's manifests are damaged or crafted"
            ) from None
        for i, rule in enumerate(spec.patches):
            if rule.matches(obj):
                used_patches.add(i)
                obj = apply_patch(obj, list(rule.operations), where=f"{rule.where}.patch")
        result.objects.append(obj)
        result.origins.append(original)
    for i, rule in enumerate(spec.patches):
        if i not in used_patches:
            result.notes.append(f"{rule.where}: matched no object")
    return result


def _remap_namespace(obj: dict, spec: TransformSpec) -> None:
    if not spec.namespace_map:
        return
    m = meta(obj)
    group, kind = gk(obj)
    if (group, kind) == ("", "Namespace"):
        m["name"] = spec.map_namespace(m.get("name", ""))
        return
    if m.get("namespace"):
        m["namespace"] = spec.map_namespace(m["namespace"])
    if group == "rbac.authorization.k8s.io" and kind in ("RoleBinding", "ClusterRoleBinding"):
        for subj in obj.get("subjects") or []:
            if subj.get("namespace"):
                subj["namespace"] = spec.map_namespace(subj["namespace"])
    if (group, kind) == ("networking.k8s.io", "NetworkPolicy"):
        for direction in ("ingress", "egress"):
            for rule in dig(obj, "spec", direction, default=[]) or []:
                for peer in rule.get("from") or rule.get("to") or []:
                    labels = dig(peer, "namespaceSelector", "matchLabels")
                    if isinstance(labels, dict) and "kubernetes.io/metadata.name" in labels:
                        labels["kubernetes.io/metadata.name"] = spec.map_namespace(
                            labels["kubernetes.io/metadata.name"]
                        )
    ps = pod_spec(obj)
    if ps is not None:
        for aff in ("podAffinity", "podAntiAffinity"):
            a = dig(ps, "affinity", aff) or {}
            terms = list(a.get("requiredDuringSchedulingIgnoredDuringExecution") or [])
            terms += [
                t.get("podAffinityTerm") or {}
                for t in a.get("preferredDuringSchedulingIgnoredDuringExecution") or []
            ]
            for term in terms:
                if term.get("namespaces"):
                    term["namespaces"] = [spec.map_namespace(n) for n in term["namespaces"]]


def _map_class(value: str | None, mapping: dict[str, str]) -> str | None:
    if value is None:
        return None
    if value in mapping:
        return mapping[value]
    return mapping.get("*", value)


def _map_storage_class(obj: dict, spec: TransformSpec) -> None:
    if not spec.storage_class_map:
        return
    group, kind = gk(obj)
    claims: list[dict] = []
    if (group, kind) == ("", "PersistentVolumeClaim"):
        claims.append(obj)
    elif (group, kind) == ("apps", "StatefulSet"):
        claims.extend(
            t for t in dig(obj, "spec", "volumeClaimTemplates", default=[]) or [] if isinstance(t, dict)
        )
    for claim in claims:
        s = claim.get("spec") or {}
        if s.get("storageClassName") is not None:
            s["storageClassName"] = _map_class(s["storageClassName"], spec.storage_class_map)
        ann = dig(claim, "metadata", "annotations") or {}
        if "volume.beta.kubernetes.io/storage-class" in ann:
            ann["volume.beta.kubernetes.io/storage-class"] = _map_class(
                ann["volume.beta.kubernetes.io/storage-class"], spec.storage_class_map
            )


def _map_id(value: Any, ranges: tuple[IdRange, ...]) -> Any:
    if not isinstance(value, int) or isinstance(value, bool):
        return value
    for r in ranges:
        mapped = r.map(value)
        if mapped is not None:
            return mapped
    return value


def _remap_ids(obj: dict, spec: TransformSpec) -> None:
    if not spec.uid_map and not spec.gid_map:
        return
    ps = pod_spec(obj)
    if ps is None:
        return
    contexts = [ps.get("securityContext")] + [c.get("securityContext") for c in containers(ps)]
    for ctx in contexts:
        if not isinstance(ctx, dict):
            continue
        if "runAsUser" in ctx:
            ctx["runAsUser"] = _map_id(ctx["runAsUser"], spec.uid_map)
        for key in ("runAsGroup", "fsGroup"):
            if key in ctx:
                ctx[key] = _map_id(ctx[key], spec.gid_map)
        if isinstance(ctx.get("supplementalGroups"), list):
            ctx["supplementalGroups"] = [_map_id(g, spec.gid_map) for g in ctx["supplementalGroups"]]


def rewrite_image(image: str, mapping: dict[str, str]) -> str:
    """Re-home ``image`` by ``mapping`` (the longest matching registry or registry/path prefix; tag and
    digest kept): the rule registry-restore --rehome pushes images by (:mod:`steps.manifests.image_rehome`)."""
    return rehome_image(image, mapping)


def _rewrite_images(obj: dict, spec: TransformSpec) -> None:
    if not spec.image_registry_map:
        return
    ps = pod_spec(obj)
    if ps is None:
        return
    for c in containers(ps):
        if isinstance(c.get("image"), str):
            c["image"] = rewrite_image(c["image"], spec.image_registry_map)


def _labels_annotations(obj: dict, spec: TransformSpec) -> None:
    m = meta(obj)
    for key, add, remove in (
        ("labels", spec.add_labels, spec.remove_labels),
        ("annotations", spec.add_annotations, spec.remove_annotations),
    ):
        if not add and not remove:
            continue
        cur = dict(m.get(key) or {})
        for k in list(cur):
            if any(fnmatch.fnmatchcase(k, pat) for pat in remove):
                del cur[k]
        cur.update(add)
        if cur:
            m[key] = cur
        else:
            m.pop(key, None)


def describe(spec: TransformSpec) -> dict[str, Any]:
    """A JSON-able summary of the transforms (for the restore report)."""
    return {
        "namespaceMap": spec.namespace_map,
        "storageClassMap": spec.storage_class_map,
        "addLabels": spec.add_labels,
        "removeLabels": list(spec.remove_labels),
        "addAnnotations": spec.add_annotations,
        "removeAnnotations": list(spec.remove_annotations),
        "imageRegistryMap": spec.image_registry_map,
        "uidMap": [str(r) for r in spec.uid_map],
        "gidMap": [str(r) for r in spec.gid_map],
        "patches": len(spec.patches),
        "migrateApiVersions": spec.migrate_api_versions,
    }
