"""The field formats of a policy and how a problem with a policy is told: one line per problem,
``FILE: field.path: what was expected``, from pydantic's errors (:func:`describe_errors`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, get_args, get_origin

from pydantic import BaseModel

from steps.errors import UsageError

DNS_LABEL_RE = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_RE = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
QUANTITY_RE = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$"
STORAGE_RE = r"^[0-9]+(\.[0-9]+)?(k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$"
SECRET_KEY_RE = r"^[-._a-zA-Z0-9]+$"
REPOSITORY_URL_RE = r"^(s3://[a-z0-9][-a-z0-9.]{1,61}[a-z0-9](/[^\s]*)?|file:///[^\s]*|mem://[^\s/]+)$"
ENDPOINT_RE = r"^https?://[^\s/]+(/[^\s]*)?$"
DURATION_RE = r"^([1-9][0-9]*(\.[0-9]+)?|0\.[0-9]*[1-9][0-9]*)[smhdw]$"

PATTERN_MEANING = {
    DNS_LABEL_RE: "a DNS-1123 label (lowercase letters, digits and '-', starting and ending alphanumeric)",
    DNS_SUBDOMAIN_RE: "a Kubernetes object name (lowercase letters, digits, '-' and '.')",
    QUANTITY_RE: "a Kubernetes quantity like 500m, 2, 512Mi or 4Gi",
    STORAGE_RE: "a storage size like 10Gi or 500G (a Kubernetes quantity)",
    SECRET_KEY_RE: "a Secret or ConfigMap key (letters, digits, '-', '_' and '.')",
    REPOSITORY_URL_RE: "a repository URL s3://BUCKET/PREFIX (file:///PATH or mem://NAME for local runs)",
    ENDPOINT_RE: "an http:// or https:// URL",
    DURATION_RE: "a positive duration like 30d, 12h, 90m or 2w",
}


class PolicyError(UsageError):
    """A policy could not be loaded; ``problems`` holds one line per problem."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


_YAML_TYPE = {dict: "mapping", list: "list", str: "string", int: "integer", float: "number", bool: "boolean"}


def yaml_type(value: Any) -> str:
    if value is None:
        return "null"
    for py, name in _YAML_TYPE.items():
        if type(value) is py:
            return name
    return type(value).__name__


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _path(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        if part == "[key]":  # pydantic's marker for an invalid mapping key: the key itself is named
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _model_at(loc: Sequence[Any], root: type[BaseModel]) -> type[BaseModel] | None:
    """The model class that a location inside a policy points into (for 'unknown field' hints)."""
    model: Any = root
    for part in loc:
        if isinstance(part, int):
            continue
        fields = {(f.alias or n): f for n, f in model.model_fields.items()}
        if part not in fields:
            return None
        annotation = fields[part].annotation
        model = None
        for candidate in (annotation, *get_args(annotation)):
            for inner in (candidate, *get_args(candidate)):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    model = inner
            if (
                get_origin(candidate) is None
                and isinstance(candidate, type)
                and issubclass(candidate, BaseModel)
            ):
                model = candidate
        if model is None:
            return None
    return model


def _describe(err: dict[str, Any], root: type[BaseModel]) -> tuple[str, str]:
    """(field path, what was expected) for one pydantic error."""
    loc = list(err.get("loc", ()))
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    if kind == "missing":
        return _path(loc), "required"
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1], root)
        allowed = sorted((f.alias or n) for n, f in model.model_fields.items()) if model else []
        hint = f" (expected one of: {', '.join(allowed)})" if allowed else ""
        return _path(loc), f"unknown field{hint}"
    if kind == "value_error":
        message = str(ctx.get("error", err.get("msg", "")))
        if message.startswith("@"):
            sub, _, message = message[1:].partition("|")
            loc.append(sub)
        return _path(loc), message
    if kind == "literal_error":
        return _path(loc), f"expected {ctx.get('expected')}, got {_show(value)}"
    if kind == "string_pattern_mismatch":
        meaning = PATTERN_MEANING.get(ctx.get("pattern", ""), f"text matching {ctx.get('pattern')}")
        return _path(loc), f"expected {meaning}, got {_show(value)}"
    if kind == "string_too_long":
        return _path(loc), f"expected at most {ctx.get('max_length')} characters, got {len(str(value))}"
    if kind == "string_too_short":
        return _path(loc), "expected a non-empty string"
    if kind == "too_short":
        return _path(loc), f"expected at least {ctx.get('min_length')} item(s)"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[
            kind
        ]
        limit = ctx.get("gt", ctx.get("ge", ctx.get("lt", ctx.get("le"))))
        if isinstance(limit, float) and limit.is_integer():
            limit = int(limit)
        return _path(loc), f"expected a number {op} {limit}, got {_show(value)}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return _path(loc), f"expected an integer, got {_show(value)}"
    if kind in ("float_type", "float_parsing"):
        return _path(loc), f"expected a number, got {_show(value)}"
    if kind in ("bool_type", "bool_parsing"):
        return _path(loc), f"expected true or false, got {_show(value)}"
    if kind in ("string_type",):
        return _path(loc), f"expected a string, got {yaml_type(value)}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return _path(loc), f"expected a mapping, got {yaml_type(value)}"
    if kind == "list_type":
        return _path(loc), f"expected a list, got {yaml_type(value)}"
    return _path(loc), str(err.get("msg", kind)).lower()


def _collapse_union_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """ParamValue is a union; report its errors once, as 'expected a string, number, ... or list'."""
    out: list[dict[str, Any]] = []
    seen_union_locs: set[tuple] = set()
    for err in errors:
        loc = tuple(err.get("loc", ()))
        if "params" in loc and len(loc) > loc.index("params") + 1 and err["type"] != "value_error":
            key_loc = loc[: loc.index("params") + 2]
            if key_loc in seen_union_locs:
                continue
            seen_union_locs.add(key_loc)
            out.append(
                {
                    "loc": key_loc,
                    "type": "value_error",
                    "ctx": {"error": "expected a string, number, boolean or a list of strings"},
                }
            )
            continue
        out.append(err)
    return out


def describe_errors(errors: list[dict[str, Any]], root: type[BaseModel]) -> list[tuple[str, str]]:
    """(field path, what was expected) for each of pydantic's ``errors`` validating ``root``, once."""
    out: list[tuple[str, str]] = []
    for err in _collapse_union_errors(errors):
        described = _describe(err, root)
        if described not in out:
            out.append(described)
    return out
