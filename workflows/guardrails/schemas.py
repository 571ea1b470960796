"""Strict schemas of the Gatekeeper and Kyverno fields the rendered guardrails use: an unknown or
misspelt key, a wrong type or an unknown enum value is an error (``additionalProperties: false``
everywhere). Written from the documented APIs (templates.gatekeeper.sh/v1,
constraints.gatekeeper.sh/v1beta1, syncset.gatekeeper.sh/v1alpha1, kyverno.io/v1 ClusterPolicy), only
the subset Snapflow renders: a field the project starts using must be added here first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any


def _obj(required: Iterable[str] = (), **properties: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": list(required),
        "properties": properties,
    }


STRING = {"type": "string", "minLength": 1}
STRINGS = {"type": "array", "items": {"type": "string"}}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
DNS_NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253}
METADATA = _obj(["name"], name=DNS_NAME, labels=STRING_MAP, annotations=STRING_MAP)


def _kind(api_version: str, kind: str | dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    return _obj(
        ["apiVersion", "kind", "metadata", "spec"],
        apiVersion={"const": api_version},
        kind={"const": kind} if isinstance(kind, str) else kind,
        metadata=METADATA,
        spec=spec,
    )


# Any openAPIV3Schema (the parameters' schema is free-form by design: Gatekeeper checks it).
_OPENAPI = {"type": "object"}

CONSTRAINT_TEMPLATE = _kind(
    "templates.gatekeeper.sh/v1",
    "ConstraintTemplate",
    _obj(
        ["crd", "targets"],
        crd=_obj(
            ["spec"],
            spec=_obj(
                ["names"],
                names=_obj(["kind"], kind={"type": "string", "pattern": "^[A-Z][A-Za-z0-9]*$"}),
                validation=_obj(["openAPIV3Schema"], openAPIV3Schema=_OPENAPI),
            ),
        ),
        targets={
            "type": "array",
            "minItems": 1,
            "maxItems": 1,
            "items": _obj(
                ["target", "rego"],
                target={"const": "admission.k8s.gatekeeper.sh"},
                rego=STRING,
                libs=STRINGS,
            ),
        },
    ),
)

CONSTRAINT = _kind(
    "constraints.gatekeeper.sh/v1beta1",
    {"type": "string", "pattern": "^[A-Z][A-Za-z0-9]*$"},
    _obj(
        ["match"],
        enforcementAction={"enum": ["deny", "dryrun", "warn"]},
        match=_obj(
            ["kinds"],
            kinds={
                "type": "array",
                "minItems": 1,
                "items": _obj(["apiGroups", "kinds"], apiGroups=STRINGS, kinds=STRINGS),
            },
            namespaces=STRINGS,
            excludedNamespaces=STRINGS,
        ),
        parameters={"type": "object"},
    ),
)

SYNC_SET = _kind(
    "syncset.gatekeeper.sh/v1alpha1",
    "SyncSet",
    _obj(
        ["gvks"],
        gvks={
            "type": "array",
            "items": _obj(
                ["group", "version", "kind"], group={"type": "string"}, version=STRING, kind=STRING
            ),
        },
    ),
)

_CONDITION = _obj(
    ["key", "operator"],
    key={},
    operator={
        "enum": [
            "Equals",
            "NotEquals",
            "AnyIn",
            "AllIn",
            "AnyNotIn",
            "AllNotIn",
            "GreaterThan",
            "GreaterThanOrEquals",
            "LessThan",
            "LessThanOrEquals",
        ]
    },
    value={},
    message=STRING,
)
_CONDITIONS = {"type": "array", "minItems": 1, "items": _CONDITION}
_SUBJECT = _obj(
    ["kind", "name"], kind={"enum": ["User", "Group", "ServiceAccount"]}, name=STRING, namespace=STRING
)
_MATCH = _obj(
    ["any"],
    any={
        "type": "array",
        "minItems": 1,
        "items": _obj(
            (),
            resources=_obj(
                ["kinds"],
                kinds={"type": "array", "minItems": 1, "items": STRING},
                operations={"type": "array", "items": {"enum": ["CREATE", "UPDATE", "DELETE", "CONNECT"]}},
            ),
            subjects={"type": "array", "minItems": 1, "items": _SUBJECT},
        ),
    },
)
_KYVERNO_RULE = _obj(
    ["name", "match", "validate"],
    name={"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
    match=_MATCH,
    exclude=_MATCH,
    context={
        "type": "array",
        "items": _obj(
            ["name", "apiCall"], name=STRING, apiCall=_obj(["urlPath"], urlPath=STRING, jmesPath=STRING)
        ),
    },
    preconditions=_obj((), all=_CONDITIONS, any=_CONDITIONS),
    validate=_obj(
        ["message", "deny"],
        failureAction={"enum": ["Audit", "Enforce"]},
        message=STRING,
        deny=_obj(["conditions"], conditions=_obj((), any=_CONDITIONS, all=_CONDITIONS)),
    ),
)
CLUSTER_POLICY = _kind(
    "kyverno.io/v1",
    "ClusterPolicy",
    _obj(
        ["rules"],
        background={"type": "boolean"},
        rules={"type": "array", "minItems": 1, "items": _KYVERNO_RULE},
    ),
)

BY_API_VERSION = {
    "templates.gatekeeper.sh/v1": CONSTRAINT_TEMPLATE,
    "constraints.gatekeeper.sh/v1beta1": CONSTRAINT,
    "syncset.gatekeeper.sh/v1alpha1": SYNC_SET,
    "kyverno.io/v1": CLUSTER_POLICY,
}


def check_objects(objects: Iterable[Mapping[str, Any]]) -> list[str]:
    """One line per problem: ``KIND NAME: PATH: what is wrong``."""
    from jsonschema import Draft7Validator

    problems: list[str] = []
    for obj in objects:
        schema = BY_API_VERSION.get(obj.get("apiVersion", ""))
        name = f"{obj.get('kind')} {obj.get('metadata', {}).get('name')}"
        if schema is None:
            problems.append(f"{name}: apiVersion: expected one of {', '.join(sorted(BY_API_VERSION))}")
            continue
        for error in sorted(Draft7Validator(schema).iter_errors(obj), key=lambda e: list(e.absolute_path)):
            path = ".".join(str(p) for p in error.absolute_path) or "(object)"
            problems.append(f"{name}: {path}: {error.message}")
        if obj.get("apiVersion") == "kyverno.io/v1":
            problems += [f"{name}: {path}: unbalanced {{{{ }}}}" for path in _unbalanced(obj)]
    return problems


def _unbalanced(value: Any, path: str = "") -> list[str]:
    """Paths of strings whose Kyverno variables ``{{ ... }}`` do not open and close in pairs."""
    if isinstance(value, str):
        depth = 0
        for token in re.findall(r"\{\{|\}\}", value):
            depth += 1 if token == "{{" else -1
            if depth not in (0, 1):
                return [path]
        return [path] if depth else []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    return [p for k, v in items for p in _unbalanced(v, f"{path}.{k}" if path else str(k))]
