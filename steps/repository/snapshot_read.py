"""Reading a snapshot's trees and file contents without writing to disk.

Provides :func:`iter_nodes` (the tree walk behind ``ls``), :func:`load_files` (a small snapshot read
into memory, e.g. stored manifests), :func:`blob_offsets` (where each content blob of a file goes,
used by the restorer) and :func:`piece_offsets` (the same from blob lengths already looked up).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from steps.errors import IntegrityError

from .repo import Repository, Snapshot
from .tree import file_regions


def iter_nodes(repo: Repository, tree_id: str, prefix: str = "") -> Iterator[tuple[str, dict]]:
    """Depth-first (path, node) for every entry below ``tree_id``; paths are relative, '/'-separated."""
    for node in repo.load_tree(tree_id):
        rel = f"{prefix}/{node['name']}" if prefix else node["name"]
        yield rel, node
        if node["type"] == "dir" and node.get("subtree"):
            yield from iter_nodes(repo, node["subtree"], rel)


def load_files(repo: Repository, snapshot: Snapshot | str) -> dict[str, bytes]:
    """Every regular file of a (small) snapshot, read into memory: ``{"relative/path": bytes}``."""
    snap = repo.find_snapshot(snapshot) if isinstance(snapshot, str) else snapshot
    out = {}
    for rel, node in iter_nodes(repo, snap.data["tree"]):
        if node["type"] == "file":
            buf = bytearray(node.get("size", 0))
            for bid, off, raw, _loc in blob_offsets(repo, node):
                buf[off : off + raw] = repo.read_blob(bid)
            out[rel] = bytes(buf)
    return out


def blob_offsets(repo: Repository, node: dict, where: bytes | None = None, index=None) -> Iterator[tuple]:
    """(blob ID, file offset, length, index location) for each content blob, skipping recorded holes.
    Locations come from ``index`` (default: the repository's current index)."""
    content = node.get("content") or ()
    if not content:
        return
    get = (index if index is not None else repo.index).get
    found = []
    for hexid in content:
        bid = bytes.fromhex(hexid)
        loc = get(bid)
        if loc is None:
            name = os.fsdecode(where) if where is not None else repr(node["name"])
            raise IntegrityError(f"blob {hexid} of {name} is not in the index")
        found.append((bid, loc))
    offsets = piece_offsets(node, [loc.raw_length for _bid, loc in found])
    for (bid, loc), pos in zip(found, offsets, strict=True):
        yield bid, pos, loc.raw_length, loc


def piece_offsets(node: dict, raw_lengths: list[int]) -> list[int]:
    """The file offset of each content blob of ``node``, whose plaintext lengths are ``raw_lengths`` in
    order: they fill the file's data regions, the recorded holes skipped."""
    regions = file_regions(node)
    ri, pos, region_end = 0, 0, 0
    if regions:
        pos, region_end = regions[0][0], regions[0][0] + regions[0][1]
    out = []
    for raw in raw_lengths:
        while pos >= region_end and ri + 1 < len(regions):
            ri += 1
            pos, region_end = regions[ri][0], regions[ri][0] + regions[ri][1]
        out.append(pos)
        pos += raw
    return out
