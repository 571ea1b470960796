"""Trees: one JSON blob per directory listing its entries with full metadata.

A node is a dict (see docs/design.md for an example)::

    {"name": "pg_wal", "type": "dir", "mode": 448, "uid": 999, "gid": 999, "mtime_ns": ..., "atime_ns": ...,
     "ctime_ns": ..., "inode": 1234, "dev": 2049, "nlink": 3, "subtree": "<tree ID>"}

files add ``size``, ``content`` (blob IDs in order) and ``holes`` (``[[offset, length], ...]`` sparse
regions not stored); symlinks add ``target``; devices add ``rdev``. Names are file-system bytes decoded
with ``os.fsdecode`` (undecodable bytes survive as lone surrogates, escaped in the JSON).
Provides :func:`node_from_stat`, :func:`encode_tree`, :func:`decode_tree`. Called by the archiver,
restorer, checker and ``ls``.
"""

from __future__ import annotations

import json
import os
import stat as stat_mod

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


def decode_tree(data: bytes) -> list[dict]:
    return json.loads(data)["nodes"]


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
