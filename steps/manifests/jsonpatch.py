"""RFC 6902 JSON Patch on plain dicts and lists (with RFC 6901 JSON Pointers).

:func:`apply_patch` returns a patched copy and never changes its input; an operation that cannot be
applied raises :class:`PatchError` naming the operation's index and path. Operations: ``add``,
``remove``, ``replace``, ``move``, ``copy``, ``test``. Used by the restore transforms (``--patch``).
"""

from __future__ import annotations

import copy
from typing import Any

from steps.errors import UsageError


class PatchError(UsageError):
    """A patch operation is malformed or does not apply to the document."""


def parse_pointer(pointer: str) -> list[str]:
    """``/a/b~1c/0`` → ``["a", "b/c", "0"]``; ``""`` is the whole document."""
    if not isinstance(pointer, str):
        raise PatchError(f"JSON pointer: expected a string, got {type(pointer).__name__}")
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise PatchError(f"JSON pointer {pointer!r}: must be empty or start with '/'")
    parts = pointer[1:].split("/")
    out = []
    for p in parts:
        if "~" in p.replace("~0", "").replace("~1", ""):
            raise PatchError(f"JSON pointer {pointer!r}: '~' must be followed by 0 or 1")
        out.append(p.replace("~1", "/").replace("~0", "~"))
    return out


def _index(container: list, token: str, pointer: str, *, for_add: bool = False) -> int:
    if for_add and token == "-":
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
        raise PatchError(f"{pointer}: {token!r} is not an array index")
    i = int(token)
    limit = len(container) if for_add else len(container) - 1
    if i > limit:
        raise PatchError(f"{pointer}: index {i} is out of range (array has {len(container)} items)")
    return i


def _parent(doc: Any, tokens: list[str], pointer: str) -> Any:
    cur = doc
    for t in tokens[:-1]:
        if isinstance(cur, dict):
            if t not in cur:
                raise PatchError(f"{pointer}: {t!r} does not exist")
            cur = cur[t]
        elif isinstance(cur, list):
            cur = cur[_index(cur, t, pointer)]
        else:
            raise PatchError(f"{pointer}: cannot descend into a {type(cur).__name__}")
    return cur


def resolve(doc: Any, pointer: str) -> Any:
    """The value at ``pointer``; raises :class:`PatchError` when it does not exist."""
    tokens = parse_pointer(pointer)
    if not tokens:
        return doc
    parent = _parent(doc, tokens, pointer)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"{pointer}: {last!r} does not exist")
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, pointer)]
    raise PatchError(f"{pointer}: cannot descend into a {type(parent).__name__}")


def _add(doc: Any, pointer: str, value: Any) -> Any:
    tokens = parse_pointer(pointer)
    if not tokens:
        return value
    parent = _parent(doc, tokens, pointer)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, pointer, for_add=True), value)
    else:
        raise PatchError(f"{pointer}: cannot add to a {type(parent).__name__}")
    return doc


def _remove(doc: Any, pointer: str) -> tuple[Any, Any]:
    tokens = parse_pointer(pointer)
    if not tokens:
        raise PatchError("remove: cannot remove the whole document")
    parent = _parent(doc, tokens, pointer)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"{pointer}: {last!r} does not exist")
        return doc, parent.pop(last)
    if isinstance(parent, list):
        return doc, parent.pop(_index(parent, last, pointer))
    raise PatchError(f"{pointer}: cannot remove from a {type(parent).__name__}")


def _equal(a: Any, b: Any) -> bool:
    # JSON equality: 1 and True are different values, 1 and 1.0 are the same number
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def apply_patch(doc: Any, operations: list[dict], where: str = "patch") -> Any:
    """Apply ``operations`` (a JSON Patch document) to a copy of ``doc``; all or nothing."""
    if not isinstance(operations, list):
        raise PatchError(f"{where}: expected a list of operations, got {type(operations).__name__}")
    result = copy.deepcopy(doc)
    for i, op in enumerate(operations):
        at = f"{where}[{i}]"
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"{at}: expected an object with 'op' and 'path'")
        kind, path = op["op"], op["path"]
        try:
            if kind in ("add", "replace", "test") and "value" not in op:
                raise PatchError(f"{kind} needs a 'value'")
            if kind in ("move", "copy") and "from" not in op:
                raise PatchError(f"{kind} needs a 'from'")
            if kind == "add":
                result = _add(result, path, copy.deepcopy(op["value"]))
            elif kind == "remove":
                result, _ = _remove(result, path)
            elif kind == "replace":
                resolve(result, path)
                if parse_pointer(path):
                    result, _ = _remove(result, path)
                result = _add(result, path, copy.deepcopy(op["value"]))
            elif kind == "move":
                src = op["from"]
                if path != src and path.startswith(src + "/"):
                    raise PatchError(f"cannot move {src} into its own child {path}")
                result, value = _remove(result, src)
                result = _add(result, path, value)
            elif kind == "copy":
                result = _add(result, path, copy.deepcopy(resolve(result, op["from"])))
            elif kind == "test":
                if not _equal(resolve(result, path), op["value"]):
                    raise PatchError(f"test failed: {path} is not {op['value']!r}")
            else:
                raise PatchError(f"unknown op {kind!r} (expected add, remove, replace, move, copy or test)")
        except PatchError as err:
            raise PatchError(f"{at} ({kind} {path}): {err}") from None
    return result
