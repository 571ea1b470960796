"""Object helpers shared by the fake Kubernetes API server: API errors as Status objects, label and
field selectors, merge / strategic-merge / JSON patches, quantities, names and timestamps.

Pure functions on plain dicts (the JSON form of Kubernetes objects); no I/O. Used by kube_store,
kube_http and the simulated controllers.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from typing import Any

# ---------------------------------------------------------------------------------------------------------
# Errors


class ApiError(Exception):
    """An error the fake answers with a `Status` object and an HTTP code, as the real API server does."""

    def __init__(self, code: int, reason: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict:
        body = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body


def _details(resource: str, group: str, name: str | None, **extra) -> dict:
    details: dict[str, Any] = {"kind": resource}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    details.update(extra)
    return details


def qualified(resource: str, group: str) -> str:
    return f"{resource}.{group}" if group else resource


def not_found(resource: str, group: str, name: str) -> ApiError:
    return ApiError(
        404, "NotFound", f'{qualified(resource, group)} "{name}" not found', _details(resource, group, name)
    )


def already_exists(resource: str, group: str, name: str) -> ApiError:
    return ApiError(
        409,
        "AlreadyExists",
        f'{qualified(resource, group)} "{name}" already exists',
        _details(resource, group, name),
    )


def conflict(resource: str, group: str, name: str, why: str | None = None) -> ApiError:
    why = why or "the object has been modified; please apply your changes to the latest version and try again"
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {qualified(resource, group)} "{name}": {why}',
        _details(resource, group, name),
    )


def invalid(kind: str, group: str, name: str, causes: list[dict]) -> ApiError:
    """422 Invalid; `causes` are {"field", "message"} (and optionally "reason")."""
    text = ", ".join(f"{c['field']}: {c['message']}" for c in causes)
    full = [
        {"reason": c.get("reason", "FieldValueInvalid"), "message": c["message"], "field": c["field"]}
        for c in causes
    ]
    return ApiError(
        422,
        "Invalid",
        f'{kind}{"." + group if group else ""} "{name}" is invalid: {text}',
        _details(kind, group, name, causes=full),
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def forbidden(resource: str, group: str, name: str, why: str) -> ApiError:
    return ApiError(
        403,
        "Forbidden",
        f'{qualified(resource, group)} "{name}" is forbidden: {why}',
        _details(resource, group, name),
    )


# ---------------------------------------------------------------------------------------------------------
# Time


def rfc3339(when: dt.datetime | float | None = None) -> str:
    """metav1.Time as the API server writes it: UTC, whole seconds, 'Z'."""
    if when is None:
        when = dt.datetime.now(dt.UTC)
    elif isinstance(when, int | float):
        when = dt.datetime.fromtimestamp(when, dt.UTC)
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_micro(when: dt.datetime | float | None = None) -> str:
    """metav1.MicroTime: UTC with microseconds."""
    if when is None:
        when = dt.datetime.now(dt.UTC)
    elif isinstance(when, int | float):
        when = dt.datetime.fromtimestamp(when, dt.UTC)
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def ns_to_rfc3339(nanoseconds: int) -> str:
    return rfc3339(nanoseconds / 1e9)


# ---------------------------------------------------------------------------------------------------------
# Names

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def random_suffix(length: int = 5) -> str:
    return "".join(secrets.choice(_GENERATE_ALPHABET) for _ in range(length))


def name_problem(name: str, rule: str) -> str | None:
    """Why `name` is not valid under `rule` ("subdomain", "label" or "path"), or None."""
    if rule == "path":
        if name in (".", "..") or "/" in name or "%" in name:
            return 'may not contain "/" or "%" and may not be "." or ".."'
        return None
    if rule == "label":
        if len(name) > 63 or not _LABEL.match(name):
            return (
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
                "must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', "
                "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
            )
        return None
    if len(name) > 253 or not _SUBDOMAIN.match(name):
        return (
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
            "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
            "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        )
    return None


# ---------------------------------------------------------------------------------------------------------
# Selectors


class SelectorError(ValueError):
    pass


_REQ_SET = re.compile(r"^\s*(!?)\s*([A-Za-z0-9_./-]+)\s+(in|notin)\s*\(([^)]*)\)\s*$")
_REQ_OP = re.compile(r"^\s*([A-Za-z0-9_./-]+)\s*(==|=|!=|>|<)\s*([A-Za-z0-9_.-]*)\s*$")
_REQ_EXISTS = re.compile(r"^\s*(!?)\s*([A-Za-z0-9_./-]+)\s*$")


def _split_requirements(text: str) -> list[str]:
    parts, depth, current = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p for p in parts if p.strip()]


def parse_label_selector(text: str | None) -> Callable[[Mapping[str, str]], bool]:
    """Compile a label selector string (=, ==, !=, in, notin, exists, !exists, gt, lt) into a predicate."""
    if not text or not text.strip():
        return lambda labels: True
    tests: list[Callable[[Mapping[str, str]], bool]] = []
    for req in _split_requirements(text):
        m = _REQ_SET.match(req)
        if m and not m.group(1):
            key, op = m.group(2), m.group(3)
            values = {v.strip() for v in m.group(4).split(",") if v.strip()}
            if op == "in":
                tests.append(lambda lb, k=key, vs=values: k in lb and lb[k] in vs)
            else:
                tests.append(lambda lb, k=key, vs=values: k not in lb or lb[k] not in vs)
            continue
        m = _REQ_OP.match(req)
        if m:
            key, op, value = m.groups()
            if op in ("=", "=="):
                tests.append(lambda lb, k=key, v=value: lb.get(k) == v)
            elif op == "!=":
                tests.append(lambda lb, k=key, v=value: lb.get(k) != v)
            else:
                try:
                    number = int(value)
                except ValueError:
                    raise SelectorError(
                        f"invalid label selector {text!r}: {value!r} is not an integer"
                    ) from None
                if op == ">":
                    tests.append(
                        lambda lb, k=key, n=number: (
                            _int_or_none(lb.get(k)) is not None and _int_or_none(lb.get(k)) > n
                        )
                    )
                else:
                    tests.append(
                        lambda lb, k=key, n=number: (
                            _int_or_none(lb.get(k)) is not None and _int_or_none(lb.get(k)) < n
                        )
                    )
            continue
        m = _REQ_EXISTS.match(req)
        if m:
            negate, key = m.groups()
            if negate:
                tests.append(lambda lb, k=key: k not in lb)
            else:
                tests.append(lambda lb, k=key: k in lb)
            continue
        raise SelectorError(f"unable to parse requirement {req.strip()!r} in label selector {text!r}")
    return lambda labels: all(t(labels or {}) for t in tests)


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def parse_field_selector(text: str | None) -> Callable[[dict], bool]:
    """Compile a field selector (path=value, path==value, path!=value; dotted paths into the object)."""
    if not text or not text.strip():
        return lambda obj: True
    tests: list[Callable[[dict], bool]] = []
    for req in text.split(","):
        req = req.strip()
        if not req:
            continue
        m = re.match(r"^([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*)$", req)
        if not m:
            raise SelectorError(f"invalid field selector {text!r}: {req!r} is not path=value or path!=value")
        path, op, value = m.groups()
        if op == "!=":
            tests.append(lambda o, p=path, v=value: _field_value(o, p) != v)
        else:
            tests.append(lambda o, p=path, v=value: _field_value(o, p) == v)
    return lambda obj: all(t(obj) for t in tests)


def _field_value(obj: dict, path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        if not isinstance(node, dict):
            return ""
        node = node.get(part)
    if node is None:
        return ""
    if isinstance(node, bool):
        return "true" if node else "false"
    return str(node)


def label_selector_matcher(selector: dict | None) -> Callable[[Mapping[str, str]], bool]:
    """Compile a metav1.LabelSelector dict (matchLabels, matchExpressions). An empty selector matches all."""
    selector = selector or {}
    match_labels = selector.get("matchLabels") or {}
    expressions = selector.get("matchExpressions") or []

    def matches(labels: Mapping[str, str]) -> bool:
        labels = labels or {}
        if any(labels.get(k) != v for k, v in match_labels.items()):
            return False
        for expr in expressions:
            key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
            if op == "In" and labels.get(key) not in values:
                return False
            if op == "NotIn" and key in labels and labels[key] in values:
                return False
            if op == "Exists" and key not in labels:
                return False
            if op == "DoesNotExist" and key in labels:
                return False
        return True

    return matches


def selector_to_string(selector: dict | None) -> str:
    """A metav1.LabelSelector as the string form used by the scale subresource's status.selector."""
    selector = selector or {}
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In":
            parts.append(f"{key} in ({','.join(sorted(values))})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(sorted(values))})")
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


# ---------------------------------------------------------------------------------------------------------
# Patches


class PatchError(ValueError):
    pass


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


_STRATEGIC_MERGE_KEYS = ("name", "containerPort", "mountPath", "devicePath", "ip", "type", "port")


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """A practical subset of Kubernetes' strategic merge patch.

    Maps merge like a JSON merge patch; lists of objects that all carry the same identifying key (name,
    containerPort, mountPath, ...) merge item by item on that key; `$patch: delete` in such an item
    removes it and `$patch: replace` in a map replaces it. Other lists replace, as in a merge patch.
    """
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list) and isinstance(result.get(key), list):
            result[key] = _strategic_merge_list(result[key], value)
        else:
            result[key] = strategic_merge_patch(result.get(key), value)
    return result


def _merge_key(items: Iterable[Any]) -> str | None:
    items = list(items)
    if not items or not all(isinstance(i, dict) for i in items):
        return None
    for key in _STRATEGIC_MERGE_KEYS:
        if all(key in i for i in items):
            return key
    return None


def _strategic_merge_list(current: list, patch: list) -> list:
    key = _merge_key(list(current) + list(patch))
    if key is None:
        return copy.deepcopy(patch)
    result = copy.deepcopy(current)
    for item in patch:
        index = next((n for n, existing in enumerate(result) if existing.get(key) == item.get(key)), None)
        if item.get("$patch") == "delete":
            if index is not None:
                result.pop(index)
            continue
        if index is None:
            result.append({k: copy.deepcopy(v) for k, v in item.items() if k != "$patch"})
        else:
            result[index] = strategic_merge_patch(result[index], item)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"JSON pointer {path!r} must start with '/'")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc: Any, parts: list[str], path: str) -> Any:
    node = doc
    for part in parts:
        if isinstance(node, dict):
            if part not in node:
                raise PatchError(f"path {path!r} does not exist")
            node = node[part]
        elif isinstance(node, list):
            try:
                node = node[int(part)]
            except (ValueError, IndexError):
                raise PatchError(f"path {path!r} does not exist") from None
        else:
            raise PatchError(f"path {path!r} does not exist")
    return node


def _add(doc: Any, path: str, value: Any) -> Any:
    parts = _pointer(path)
    if not parts:
        return copy.deepcopy(value)
    parent = _walk(doc, parts[:-1], path)
    last = parts[-1]
    if isinstance(parent, dict):
        parent[last] = copy.deepcopy(value)
    elif isinstance(parent, list):
        if last == "-":
            parent.append(copy.deepcopy(value))
        else:
            try:
                index = int(last)
            except ValueError:
                raise PatchError(f"invalid array index in {path!r}") from None
            if index < 0 or index > len(parent):
                raise PatchError(f"array index out of range in {path!r}")
            parent.insert(index, copy.deepcopy(value))
    else:
        raise PatchError(f"path {path!r} does not exist")
    return doc


def _remove(doc: Any, path: str) -> tuple[Any, Any]:
    parts = _pointer(path)
    if not parts:
        raise PatchError("cannot remove the whole document")
    parent = _walk(doc, parts[:-1], path)
    last = parts[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"unable to remove nonexistent key: {last}: missing value")
        return doc, parent.pop(last)
    if isinstance(parent, list):
        try:
            return doc, parent.pop(int(last))
        except (ValueError, IndexError):
            raise PatchError(f"array index out of range in {path!r}") from None
    raise PatchError(f"path {path!r} does not exist")


def json_patch(doc: Any, operations: list) -> Any:
    """RFC 6902 JSON patch (add, remove, replace, move, copy, test)."""
    if not isinstance(operations, list):
        raise PatchError("a JSON patch must be a list of operations")
    doc = copy.deepcopy(doc)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"invalid JSON patch operation {op!r}")
        kind, path = op["op"], op["path"]
        if kind == "add":
            doc = _add(doc, path, op.get("value"))
        elif kind == "remove":
            doc, _ = _remove(doc, path)
        elif kind == "replace":
            _walk(doc, _pointer(path), path)
            if _pointer(path):
                doc, _ = _remove(doc, path)
            doc = _add(doc, path, op.get("value"))
        elif kind == "move":
            doc, value = _remove(doc, op["from"])
            doc = _add(doc, path, value)
        elif kind == "copy":
            value = _walk(doc, _pointer(op["from"]), op["from"])
            doc = _add(doc, path, value)
        elif kind == "test":
            if _walk(doc, _pointer(path), path) != op.get("value"):
                raise PatchError(f"testing value {path} failed")
        else:
            raise PatchError(f"unknown JSON patch operation {kind!r}")
    return doc


# ---------------------------------------------------------------------------------------------------------
# Quantities

_SUFFIXES = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
    "m": 0.001,
}


def parse_quantity(value: str | int | float | None) -> int:
    """A resource quantity ("1Gi", "500M", "1.5Gi", 1024) in whole units (bytes for storage)."""
    if value is None:
        return 0
    if isinstance(value, int | float):
        return int(value)
    m = re.match(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$", str(value).strip())
    if not m or m.group(2) not in _SUFFIXES:
        raise ValueError(f"quantity {value!r} is not a Kubernetes quantity like 1Gi or 500M")
    return int(float(m.group(1)) * _SUFFIXES[m.group(2)])


def format_quantity(nbytes: int) -> str:
    for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
        unit = _SUFFIXES[suffix]
        if nbytes >= unit and nbytes % unit == 0:
            return f"{nbytes // unit}{suffix}"
    return str(nbytes)


# ---------------------------------------------------------------------------------------------------------
# Misc


def meta(obj: dict) -> dict:
    return obj.setdefault("metadata", {})


def get_path(obj: Any, *path: str, default: Any = None) -> Any:
    node = obj
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def owner_reference(owner: dict, controller: bool = True, block: bool = True) -> dict:
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": controller,
        "blockOwnerDeletion": block,
    }
