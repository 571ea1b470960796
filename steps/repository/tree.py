"""Trees: one JSON blob per directory listing its entries with full metadata.

A node is a dict (see docs/design.md for an example)::

    {"name": "pg_wal", "type": "dir", "mode": 448, "uid": 999, "gid": 999, "mtime_ns": ..., "atime_ns": ...,
     "ctime_ns": ..., "inode": 1234, "dev": 2049, "nlink": 3, "subtree": "<tree ID>"}

files add ``size``, ``content`` (blob IDs in order) and ``holes`` (``[[offset, length], ...]`` sparse
regions not stored); symlinks add ``target``; devices add ``rdev``. Names are file-system bytes decoded
with ``os.fsdecode`` (undecodable bytes survive as lone surrogates, escaped in the JSON).
Provides :func:`node_from_stat`, :func:`encode_tree` (and :func:`encode_fs_tree`, its fast form for a
copy's trees), :func:`decode_tree`. Called by the archiver,
restorer, checker and ``ls``.

Trees come from the repository, which a compromised writer may have crafted: :func:`decode_tree` is a
parser of untrusted input. Every tree it returns has passed :func:`validate_nodes` — names are data,
never paths (not empty, not ``.`` or ``..``, no ``/``, no NUL, encodable back to file-system bytes,
unique within the tree), every type is known and every field a reader uses has its type — so no reader
can be led outside the directory it works in by a name. A tree that breaks a rule raises
:class:`DamagedTreeError`, naming the tree and the entry.
"""

from __future__ import annotations

import json
import operator
import os
import re
import stat as stat_mod
import sys
from dataclasses import dataclass

import orjson

from steps.errors import IntegrityError, UsageError

NODE_TYPES = ("file", "dir", "symlink", "fifo", "chardev", "blockdev", "socket")


_TYPE_OF = {
    stat_mod.S_IFREG: "file",
    stat_mod.S_IFDIR: "dir",
    stat_mod.S_IFLNK: "symlink",
    stat_mod.S_IFIFO: "fifo",
    stat_mod.S_IFCHR: "chardev",
    stat_mod.S_IFBLK: "blockdev",
}


def node_type(st: os.stat_result) -> str:
    return _TYPE_OF.get(stat_mod.S_IFMT(st.st_mode), "socket")


def node_from_stat(name: str, st: os.stat_result, kind: str | None = None) -> dict:
    kind = kind or node_type(st)
    node = {
        "name": name,
        "type": kind,
        "mode": stat_mod.S_IMODE(st.st_mode),
        "uid": st.st_uid,
        "gid": st.st_gid,
        "mtime_ns": st.st_mtime_ns,
        "atime_ns": st.st_atime_ns,
        "ctime_ns": st.st_ctime_ns,
        "inode": st.st_ino,
        "dev": st.st_dev,
        "nlink": st.st_nlink,
    }
    if kind in ("chardev", "blockdev"):
        node["rdev"] = st.st_rdev
    return node


def encode_tree(nodes: list[dict]) -> bytes:
    """Deterministic JSON (sorted keys, nodes sorted by name) so equal directories dedup."""
    nodes = sorted(nodes, key=lambda n: n["name"])
    return json.dumps({"nodes": nodes}, sort_keys=True, separators=(",", ":")).encode()


def encode_fs_tree(nodes: list[dict]) -> bytes:
    """:func:`encode_tree` of a file system's nodes (integers, strings and lists of them, as the copy
    builds them from ``lstat``: never a float), the same bytes five times as fast: orjson writes the
    same JSON as ``json.dumps`` for these types as long as every string is printable ASCII. Output
    holding anything else (a byte of 0x7f or above: json escapes those, orjson does not) or that orjson
    refuses (a name that is not valid UTF-8) is written by :func:`encode_tree`
    (tests/unit/test_tree_encoding.py compares the two)."""
    try:
        out = orjson.dumps(
            {"nodes": sorted(nodes, key=operator.itemgetter("name"))}, option=orjson.OPT_SORT_KEYS
        )
    except TypeError:  # orjson.JSONEncodeError
        return encode_tree(nodes)
    if not out.isascii() or b"\x7f" in out:
        return encode_tree(nodes)
    return out


class DamagedTreeError(IntegrityError):
    """A tree blob that decrypts and matches its ID but breaks the tree rules (crafted or buggy writer).
    ``tree`` is its ID (hex) when known, ``entry`` the offending entry's name (or None)."""

    def __init__(self, message: str, tree: str | None = None, entry: str | None = None):
        super().__init__(message)
        self.tree = tree
        self.entry = entry


_BLOB_HEX = re.compile(r"[0-9a-f]{64}\Z")
_U64 = (0, 2**64 - 1)
_ID = (-1, 2**32 - 1)  # -1: not recorded
_NS = (-(2**63), 2**63 - 1)
# The integer fields and the values the system calls that restore them take.
_INT_FIELDS = {
    "mode": (0, 0o7777),
    "uid": _ID,
    "gid": _ID,
    "mtime_ns": _NS,
    "atime_ns": _NS,
    "ctime_ns": _NS,
    "inode": _U64,
    "dev": _U64,
    "nlink": _U64,
    "rdev": _U64,
}
MAX_FILE_SIZE = 2**63 - 1  # off_t
MAX_SYMLINK_TARGET = 4095  # PATH_MAX less its NUL


def name_problem(name) -> str | None:
    """Why ``name`` cannot be a directory entry (None when it can). Checked on the bytes the restore
    would create, so a name a real directory holds (newlines, leading dashes, non-UTF-8 bytes kept as
    lone surrogates) passes and nothing that could step out of a directory does."""
    if not isinstance(name, str):
        return f"name is {type(name).__name__}, not a string"
    try:
        raw = os.fsencode(name)
    except UnicodeEncodeError:
        return "name is not encodable as file-system bytes"
    if not raw:
        return "empty name"
    if raw in (b".", b".."):
        return f"name {name!r} is not allowed"
    if b"/" in raw:
        return "name contains '/'"
    if b"\0" in raw:
        return "name contains NUL"
    if len(raw) > 255:
        return f"name is {len(raw)} bytes long (at most 255)"
    return None


def is_blob_id(value) -> bool:
    """Whether ``value`` is a blob ID as trees and records spell it (64 lower-case hex digits)."""
    return isinstance(value, str) and _BLOB_HEX.match(value) is not None


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def node_problem(node) -> str | None:
    """Why ``node`` is not a well-formed entry (None when it is); the name is checked by the caller."""
    if not isinstance(node, dict):
        return "entry is not an object"
    kind = node.get("type")
    if kind not in NODE_TYPES:
        return f"unknown type {kind!r}"
    for key, value in node.items():  # a tree holds millions of nodes: one pass over what is there
        bounds = _INT_FIELDS.get(key)
        if bounds is not None and (type(value) is not int or not bounds[0] <= value <= bounds[1]):
            if not _is_int(value):
                return f"{key} is not an integer"
            return f"{key} {value} is outside {bounds[0]}..{bounds[1]}"
    if kind == "dir":
        sub = node.get("subtree")
        if sub is not None and not (isinstance(sub, str) and _BLOB_HEX.match(sub)):
            return "subtree is not a blob ID"
    elif kind == "file":
        size = node.get("size", 0)
        if not _is_int(size) or not 0 <= size <= MAX_FILE_SIZE:
            return f"size is not an integer in 0..{MAX_FILE_SIZE}"
        content = node.get("content", [])  # when present, a list: readers iterate it as one
        if not isinstance(content, list) or not all(
            isinstance(c, str) and _BLOB_HEX.match(c) for c in content
        ):
            return "content is not a list of blob IDs"
        holes = node.get("holes", [])
        if not isinstance(holes, list):
            return "holes is not a list"
        pos = 0
        for hole in holes:
            if not (isinstance(hole, list) and len(hole) == 2 and all(map(_is_int, hole))):
                return "a hole is not [offset, length]"
            off, length = hole
            if off < pos or length <= 0 or off + length > size:
                return "holes are not sorted, disjoint and inside the size"
            pos = off + length
    elif kind == "symlink":
        target = node.get("target", "")
        if not isinstance(target, str):
            return "symlink target is not a string"
        try:
            raw = os.fsencode(target)
        except UnicodeEncodeError:
            return "symlink target is not encodable as file-system bytes"
        if b"\0" in raw:
            return "symlink target contains NUL"
        if not 0 < len(raw) <= MAX_SYMLINK_TARGET:
            return f"symlink target is {len(raw)} bytes long (1 to {MAX_SYMLINK_TARGET})"
    return None


_NODE_TYPE_SET = frozenset(NODE_TYPES)
_HEX_DIGITS = b"0123456789abcdef"
_FS_ENCODING = sys.getfilesystemencoding()
_FS_ERRORS = sys.getfilesystemencodeerrors()


def _ids_valid(ids: list) -> bool:
    """Whether every item of ``ids`` is a blob ID (64 lower-case hex digits), checked column-wise."""
    if not ids:
        return True
    return (
        set(map(type, ids)) == {str}
        and set(map(len, ids)) == {64}
        and not "".join(ids).encode("ascii").translate(None, _HEX_DIGITS)  # nothing but 0-9a-f
    )


def _ints_valid(values: list, low: int, high: int) -> bool:
    return not values or (set(map(type, values)) == {int} and low <= min(values) and max(values) <= high)


_ALL_INTS = (*(k for k in _INT_FIELDS if k != "rdev"), "rdev")  # rdev (devices only) last
_COMMON_INTS = operator.itemgetter(*_ALL_INTS[:-1])
_ALL_BOUNDS = tuple(_INT_FIELDS[k] for k in _ALL_INTS)


def _all_valid(nodes: list) -> bool:
    """True only when every rule of :func:`validate_nodes` holds for ``nodes``, checked a rule at a
    time over the whole list (each pass a loop inside the interpreter's C code) instead of a node at a
    time: a tree holds up to millions of nodes and every parent tree of an incremental copy and every
    tree of a restore passes here. False means "not shown valid": the caller then applies the rules node
    by node, which decides and names the first offending entry. Never True for a tree that rule-by-node
    checking would refuse (tests/unit/test_tree_validation_fast.py compares the two)."""
    try:
        if set(map(type, nodes)) - {dict}:
            return False
        names = [n.get("name") for n in nodes]
        if set(map(type, names)) - {str}:
            return False
        raws = [s.encode(_FS_ENCODING, _FS_ERRORS) for s in names]
        if not raws:
            return True
        unique = set(raws)
        if len(unique) != len(raws) or b"" in unique or b"." in unique or b".." in unique:
            return False
        if max(map(len, raws)) > 255:
            return False
        joined = b"\0".join(raws)
        if b"/" in joined or joined.count(b"\0") != len(raws) - 1:
            return False
        kinds = [n.get("type") for n in nodes]
        if not set(kinds) <= _NODE_TYPE_SET:
            return False
        try:  # nodes as this program writes them: every integer field but rdev present
            columns = [
                *zip(*map(_COMMON_INTS, nodes), strict=True),
                [n["rdev"] for n in nodes if "rdev" in n],
            ]
        except KeyError:
            columns = [[n[key] for n in nodes if key in n] for key in _ALL_INTS]
        for values, (low, high) in zip(columns, _ALL_BOUNDS, strict=True):
            if not _ints_valid(values, low, high):
                return False
        files = [n for n, kind in zip(nodes, kinds, strict=True) if kind == "file"]
        if not _ints_valid([n.get("size", 0) for n in files], 0, MAX_FILE_SIZE):
            return False
        contents = [n.get("content", []) for n in files]
        if set(map(type, contents)) - {list}:
            return False
        if not _ids_valid([c for content in contents for c in content]):
            return False
        subtrees = [n.get("subtree") for n, kind in zip(nodes, kinds, strict=True) if kind == "dir"]
        if not _ids_valid([s for s in subtrees if s is not None]):
            return False
        # the rare fields, node by node: holes and symlink targets
        rare = [n for n in files if "holes" in n]
        if "symlink" in kinds:
            rare += [n for n, kind in zip(nodes, kinds, strict=True) if kind == "symlink"]
        return all(node_problem(n) is None for n in rare)
    except (TypeError, ValueError, UnicodeError):
        return False


def validate_nodes(nodes, tree: str | None = None) -> list[dict]:
    """``nodes`` when they form a valid tree, else :class:`DamagedTreeError` naming the tree and entry."""
    where = f"tree {tree}" if tree else "tree"
    if not isinstance(nodes, list):
        raise DamagedTreeError(f"{where}: nodes is not a list", tree)
    if _all_valid(nodes):
        return nodes
    seen: set[bytes] = set()  # names as the file system sees them: two spellings of one name collide
    for node in nodes:
        name = node.get("name") if isinstance(node, dict) else None
        problem = name_problem(name) or node_problem(node)
        if problem is None and os.fsencode(name) in seen:
            problem = "name appears twice"
        if problem is not None:
            shown = repr(name) if isinstance(name, str) else "?"
            raise DamagedTreeError(
                f"{where}: entry {shown}: {problem}", tree, name if isinstance(name, str) else None
            )
        seen.add(os.fsencode(name))
    return nodes


def decode_tree(data: bytes, tree: str | None = None, validated: bool = False) -> list[dict]:
    """The validated nodes of a stored tree (see :func:`validate_nodes`); ``tree`` names it in errors.
    ``validated``: these very bytes (authenticated under the same ID) passed before, so the rules are
    not applied again. See :func:`parse_tree` for how the bytes are parsed."""
    return parse_tree(data, tree, validated)[0]


def parse_tree(
    data: bytes, tree: str | None = None, validated: bool = False, orjson_exact: bool = False
) -> tuple[list[dict], bool]:
    """:func:`decode_tree`, and whether orjson's nodes were taken. orjson parses (twice as fast), and its
    nodes are taken when orjson writes them back as the very bytes stored, as a copy writes a tree of
    printable ASCII names (see :func:`encode_fs_tree`); anything else is parsed again by json. For such
    bytes the two parsers give the same nodes, while orjson alone would read an integer past 64 bits as
    a float (which does not write back as its digits), and refuses names kept as lone surrogates
    (non-UTF-8 bytes, escaped in the JSON), NaN and a byte-order mark, which json reads.
    ``orjson_exact``: these very bytes were parsed before and orjson's nodes were taken, so they are
    taken without writing them back again (the same bytes parse and write back the same)."""
    exact = False
    try:
        try:
            doc = orjson.loads(data)
            exact = orjson_exact or orjson.dumps(doc, option=orjson.OPT_SORT_KEYS) == data
            if not exact:
                doc = json.loads(data)  # not as a copy writes it: json decides
        except (orjson.JSONDecodeError, orjson.JSONEncodeError):
            doc = json.loads(data)
        nodes = doc["nodes"]
    except (ValueError, TypeError, KeyError, RecursionError) as err:
        raise DamagedTreeError(f"tree {tree or '?'}: not a tree ({type(err).__name__})", tree) from None
    return (nodes if validated else validate_nodes(nodes, tree)), exact


def file_regions(node: dict) -> list[tuple[int, int]]:
    """The (offset, length) data regions of a file node: everything that is not a hole."""
    size = node.get("size", 0)
    out, pos = [], 0
    for off, length in node.get("holes", ()):
        if off > pos:
            out.append((pos, off - pos))
        pos = off + length
    if pos < size:
        out.append((pos, size - pos))
    return out


@dataclass(frozen=True)
class RestoreLimits:
    """Bounds on what a snapshot may expand to (a crafted repository can reference one tree many times);
    each is named by its command-line flag in the error that reports it."""

    max_depth: int = 1000  # directories below the target
    max_tree_entries: int = 10_000_000  # entries of one directory
    max_entries: int = 1_000_000_000  # entries of the whole snapshot, counted as restored

    def __post_init__(self) -> None:
        for name in ("max_depth", "max_tree_entries", "max_entries"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')}: expected a positive number")


# What restore does with entries already in its target; "refuse" (the default) refuses a non-empty target.
OVERWRITE_MODES = ("refuse", "always", "if-changed", "never")
