"""Object identity, label selectors and the pod templates inside workloads.

Used by capture (which objects a workload references), the restore transforms (every container image
and security context) and the restore engine (how a workload is held at zero replicas).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from steps.errors import UsageError


@dataclass(frozen=True, order=True)
class Ref:
    """An object's identity across API versions: group, kind, namespace, name."""

    group: str
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        kind = f"{self.kind}.{self.group}" if self.group and self.kind not in _UNIQUE_KINDS else self.kind
        return f"{kind}/{self.name}"


# Kinds whose name is unambiguous without the group in messages (Event exists in two groups but is never
# restored; Ingress is only shown once migrated).
_UNIQUE_KINDS = frozenset(
    {
        "Deployment",
        "StatefulSet",
        "DaemonSet",
        "ReplicaSet",
        "Job",
        "CronJob",
        "Ingress",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "Role",
        "RoleBinding",
        "EndpointSlice",
        "VolumeSnapshot",
        "VolumeGroupSnapshot",
        "ControllerRevision",
        "Lease",
    }
)


def api_group(api_version: str) -> str:
    """``apps/v1`` → ``apps``; ``v1`` → ``""`` (the core group)."""
    return api_version.rpartition("/")[0]


def api_version_of(group: str, version: str) -> str:
    return f"{group}/{version}" if group else version


def meta(obj: dict) -> dict:
    return obj.setdefault("metadata", {})


def ref(obj: dict) -> Ref:
    m = obj.get("metadata") or {}
    return Ref(
        api_group(obj.get("apiVersion", "")),
        obj.get("kind", ""),
        m.get("namespace") or "",
        m.get("name") or "",
    )


def gk(obj: dict) -> tuple[str, str]:
    """(group, kind) of an object."""
    return api_group(obj.get("apiVersion", "")), obj.get("kind", "")


# --------------------------------------------------------------------------------------------------
# Pod templates

# (group, kind) → path to the pod template (a dict with metadata + spec) inside the object.
POD_TEMPLATE_PATHS: dict[tuple[str, str], tuple[str, ...]] = {
    ("apps", "Deployment"): ("spec", "template"),
    ("apps", "StatefulSet"): ("spec", "template"),
    ("apps", "DaemonSet"): ("spec", "template"),
    ("apps", "ReplicaSet"): ("spec", "template"),
    ("extensions", "Deployment"): ("spec", "template"),
    ("extensions", "DaemonSet"): ("spec", "template"),
    ("extensions", "ReplicaSet"): ("spec", "template"),
    ("", "ReplicationController"): ("spec", "template"),
    ("batch", "Job"): ("spec", "template"),
    ("batch", "CronJob"): ("spec", "jobTemplate", "spec", "template"),
    ("", "PodTemplate"): ("template",),
    ("", "Pod"): (),
}
WORKLOAD_KINDS = frozenset(POD_TEMPLATE_PATHS) - {("", "PodTemplate")}


def pod_template(obj: dict) -> dict | None:
    """The pod template (``{"metadata", "spec"}``) of a workload, the pod itself for a Pod, else None.

    The returned dict is part of ``obj``: changing it changes the object.
    """
    path = POD_TEMPLATE_PATHS.get(gk(obj))
    if path is None:
        return None
    cur: Any = obj
    for p in path:
        if not isinstance(cur, dict) or not isinstance(cur.get(p), dict):
            return None
        cur = cur[p]
    return cur


def pod_spec(obj: dict) -> dict | None:
    tpl = pod_template(obj)
    if tpl is None:
        return None
    spec = tpl.get("spec")
    return spec if isinstance(spec, dict) else None


def containers(spec: dict) -> Iterator[dict]:
    """Every container of a pod spec: init, regular and ephemeral."""
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for c in spec.get(key) or []:
            if isinstance(c, dict):
                yield c


# --------------------------------------------------------------------------------------------------
# Label selectors

_REQ = re.compile(
    r"""^\s*(?:
        (?P<notexists>!\s*(?P<nkey>[^\s,!=()]+)) |
        (?P<setkey>[^\s,!=()]+)\s+(?P<op>in|notin)\s*\((?P<values>[^)]*)\) |
        (?P<key>[^\s,!=()]+)\s*(?P<eq>==|!=|=)\s*(?P<value>[^\s,!=()]*) |
        (?P<exists>[^\s,!=()]+)
    )\s*$""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "in", "notin", "exists", "!"
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        if self.op == "exists":
            return self.key in labels
        if self.op == "!":
            return self.key not in labels
        if self.op == "in":
            return labels.get(self.key) in self.values
        return self.key not in labels or labels[self.key] not in self.values


def _split_top(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return parts


def parse_selector(text: str, where: str = "--selector") -> tuple[Requirement, ...]:
    """A label selector as ``kubectl -l`` takes it: ``a=b,c!=d,e in (f,g),h notin (i),j,!k``."""
    if not text or not text.strip():
        return ()
    reqs = []
    for part in _split_top(text):
        m = _REQ.match(part)
        if not m:
            raise UsageError(
                f"{where}: cannot parse {part.strip()!r} (expected key=value, key!=value, "
                "key in (a,b), key notin (a,b), key or !key)"
            )
        if m.group("notexists"):
            reqs.append(Requirement(m.group("nkey"), "!"))
        elif m.group("setkey"):
            vals = tuple(v.strip() for v in m.group("values").split(",") if v.strip())
            reqs.append(Requirement(m.group("setkey"), m.group("op"), vals))
        elif m.group("key"):
            op = "notin" if m.group("eq") == "!=" else "in"
            reqs.append(Requirement(m.group("key"), op, (m.group("value"),)))
        else:
            reqs.append(Requirement(m.group("exists"), "exists"))
    return tuple(reqs)


def selector_matches(reqs: tuple[Requirement, ...], labels: dict[str, str] | None) -> bool:
    labels = labels or {}
    return all(r.matches(labels) for r in reqs)


def label_selector_matches(selector: dict | None, labels: dict[str, str] | None) -> bool:
    """A structured ``LabelSelector`` (matchLabels + matchExpressions); an empty one matches everything."""
    labels = labels or {}
    if not selector:
        return True
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        op = (expr.get("operator") or "").lower()
        req = Requirement(
            expr.get("key", ""),
            {"in": "in", "notin": "notin", "exists": "exists", "doesnotexist": "!"}.get(op, op),
            tuple(expr.get("values") or ()),
        )
        if not req.matches(labels):
            return False
    return True


def selector_to_string(selector: dict | None) -> str:
    """A structured LabelSelector as a query string (for list calls)."""
    parts = [f"{k}={v}" for k, v in sorted((selector or {}).get("matchLabels", {}).items())]
    for expr in (selector or {}).get("matchExpressions") or []:
        op, key, vals = expr.get("operator"), expr.get("key"), ",".join(expr.get("values") or [])
        parts.append(
            {
                "In": f"{key} in ({vals})",
                "NotIn": f"{key} notin ({vals})",
                "Exists": key,
                "DoesNotExist": f"!{key}",
            }.get(op, key)
        )
    return ",".join(parts)
