"""Verify and repair (the engines behind ``verify`` and ``repair index``).

Provides :func:`verify` (structure: every tree and content blob of the chosen snapshots is indexed and
its pack exists with the size the index records; data: a share of those packs is read back, its name
checked against its bytes, its header against the index, every blob decrypted and rehashed) and
:func:`rebuild_index` (new index from the packs' own headers, superseding every old index file).
Called by ``steps.commands.verify`` and ``steps.commands.repair``.
"""

from __future__ import annotations

import math
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from steps.drivers.objectstore import ObjectNotFound

from .crypto import storage_id
from .index import IndexPack
from .pack import PREFIX_LEN, TAIL, header_length, pack_key, parse_pack_header, read_pack_entries
from .repo import Repository, Snapshot

MAX_PROBLEMS = 10_000


@dataclass
class VerifyReport:
    snapshots: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    trees: int = 0
    blobs: int = 0
    packs_referenced: int = 0
    packs_read: int = 0
    bytes_read: int = 0
    read_data_percent: float = 0.0
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "snapshots": self.snapshots,
            "problems": self.problems,
            "warnings": self.warnings,
            "trees": self.trees,
            "blobs": self.blobs,
            "packs_referenced": self.packs_referenced,
            "packs_read": self.packs_read,
            "bytes_read": self.bytes_read,
            "read_data_percent": self.read_data_percent,
            "duration_s": round(self.duration_s, 3),
        }


class _Checker:
    def __init__(self, repo: Repository, report: VerifyReport, progress=None):
        self.repo = repo
        self.report = report
        self.progress = progress
        self._lock = threading.Lock()
        self.seen_trees: set[bytes] = set()
        self.pack_refs: dict[int, str] = {}  # pack number -> first snapshot referencing it
        self.expected: dict[int, list] = {}  # pack number -> index entries, for the packs read back

    def problem(self, msg: str) -> None:
        with self._lock:
            if len(self.report.problems) < MAX_PROBLEMS:
                self.report.problems.append(msg)

    def walk(self, snap: Snapshot) -> None:
        index = self.repo.index
        stack = [(snap.data.get("tree"), "/")]
        while stack:
            tree_hex, path = stack.pop()
            if not tree_hex:
                self.problem(f"snapshot {snap.short_id}: directory {path} has no tree")
                continue
            tid = bytes.fromhex(tree_hex)
            if tid in self.seen_trees:
                continue
            self.seen_trees.add(tid)
            loc = index.get(tid)
            if loc is None:
                self.problem(f"snapshot {snap.short_id}: tree {tree_hex} ({path}) is not in the index")
                continue
            self.pack_refs.setdefault(loc.pack_no, snap.short_id)
            try:
                nodes = self.repo.load_tree(tid)
            except ObjectNotFound:
                self.problem(
                    f"pack {loc.pack_id}: missing (holds tree {tree_hex} of {path} in snapshot {snap.short_id})"
                )
                continue
            except Exception as err:
                self.problem(f"snapshot {snap.short_id}: tree {tree_hex} ({path}) unreadable: {err}")
                continue
            self.report.trees += 1
            for node in nodes:
                child = path.rstrip("/") + "/" + node["name"]
                if node["type"] == "dir":
                    stack.append((node.get("subtree"), child))
                elif node["type"] == "file":
                    for hexid in node.get("content", ()):
                        self.report.blobs += 1
                        loc = index.get(bytes.fromhex(hexid))
                        if loc is None:
                            self.problem(
                                f"snapshot {snap.short_id}: blob {hexid} of {child} is not in the index"
                            )
                        elif loc.pack_no not in self.pack_refs:
                            self.pack_refs[loc.pack_no] = snap.short_id

    def check_packs_exist(self) -> None:
        index = self.repo.index
        present = {i.key.rsplit("/", 1)[-1]: i.size for i in self.repo.store.list("data/")}
        for no, sid in sorted(self.pack_refs.items()):
            pid = index.pack_ids[no]
            size = present.get(pid)
            if size is None:
                self.problem(f"pack {pid}: missing (referenced by snapshot {sid})")
            elif size != index.pack_sizes[no]:
                self.problem(
                    f"pack {pid}: size {size} but the index records {index.pack_sizes[no]}"
                    f" (truncated or replaced; referenced by snapshot {sid})"
                )

    def read_pack(self, no: int) -> None:
        index = self.repo.index
        pid = index.pack_ids[no]
        name = f"pack {pid}"
        try:
            data = self.repo.store.get(pack_key(pid))
        except ObjectNotFound:
            return  # already reported as missing
        except Exception as err:
            self.problem(f"{name}: cannot be read ({err})")
            return
        with self._lock:
            self.report.packs_read += 1
            self.report.bytes_read += len(data)
            if self.progress is not None:
                self.progress.done_bytes = self.report.bytes_read
                self.progress.files = self.report.packs_read
        if storage_id(data) != pid:
            self.problem(f"{name}: content does not match its name (corrupt or replaced)")
            return
        try:
            salt, entries = read_pack_entries(self.repo.keys, data, name)
        except Exception as err:
            self.problem(str(err))
            return
        in_header = {e.id: e for e in entries}
        for bid, loc in self.expected.get(no, ()):
            e = in_header.get(bid)
            if e is None or (e.offset, e.length, e.raw_length, e.type) != (
                loc.offset,
                loc.length,
                loc.raw_length,
                loc.type,
            ):
                self.problem(f"{name}: blob {bid.hex()} is in the index but not where the pack header says")
        view = memoryview(data)
        for e in entries:
            try:
                self.repo.decode_blob(
                    e.id,
                    e.type,
                    salt,
                    view[e.offset : e.offset + e.length],
                    e.raw_length,
                    f"{name}: blob {e.id.hex()}",
                )
            except Exception as err:
                self.problem(str(err))


def verify(
    repo: Repository,
    snapshots: list[Snapshot],
    read_data_percent: float = 0.0,
    progress=None,
    seed: int | None = None,
) -> VerifyReport:
    t0 = time.monotonic()
    report = VerifyReport(snapshots=[s.id for s in snapshots], read_data_percent=read_data_percent)
    repo.warnings.clear()
    repo.load_index()
    checker = _Checker(repo, report, progress)
    for snap in snapshots:
        checker.walk(snap)
    report.packs_referenced = len(checker.pack_refs)
    checker.check_packs_exist()
    if read_data_percent > 0 and checker.pack_refs:
        packs = sorted(checker.pack_refs)
        k = (
            len(packs)
            if read_data_percent >= 100
            else max(1, math.ceil(len(packs) * read_data_percent / 100))
        )
        chosen = packs if k >= len(packs) else random.Random(seed).sample(packs, k)
        wanted = set(chosen)
        for bid, loc in repo.index.iter_blobs():
            if loc.pack_no in wanted:
                checker.expected.setdefault(loc.pack_no, []).append((bid, loc))
        if progress is not None:
            progress.total_bytes = sum(repo.index.pack_sizes[n] for n in chosen)
            progress.total_final = True
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(checker.read_pack, chosen))
    report.warnings.extend(repo.warnings)
    report.duration_s = time.monotonic() - t0
    return report


# -- repair ---------------------------------------------------------------------------------------


@dataclass
class RepairReport:
    packs: int = 0
    blobs: int = 0
    damaged: list[str] = field(default_factory=list)
    new_index: list[str] = field(default_factory=list)
    removed_index: list[str] = field(default_factory=list)


def read_pack_index(repo: Repository, pack_id: str, size: int) -> IndexPack:
    """A pack's entries from its own header (two ranged reads at most)."""
    name = f"pack {pack_id}"
    store = repo.store
    key = pack_key(pack_id)
    tail_len = min(size, 256 * 1024)
    tail = store.get_range(key, size - tail_len, tail_len)
    hlen = header_length(tail, size, name)
    if hlen + TAIL.size <= len(tail):
        header = tail[len(tail) - TAIL.size - hlen : len(tail) - TAIL.size]
    else:
        header = store.get_range(key, size - TAIL.size - hlen, hlen)
    prefix = tail[:PREFIX_LEN] if tail_len == size else store.get_range(key, 0, PREFIX_LEN)
    salt, entries = parse_pack_header(repo.keys, prefix, header, size, name)
    return IndexPack(pack_id, salt, size, entries)


def rebuild_index(repo: Repository, packs_per_file: int = 2000) -> RepairReport:
    """Write a new index from the packs alone, superseding (then deleting) every old index file."""
    report = RepairReport()
    old = repo.index_ids()
    infos = list(repo.store.list("data/"))

    def one(info):
        pid = info.key.rsplit("/", 1)[-1]
        try:
            return read_pack_index(repo, pid, info.size)
        except Exception as err:
            report.damaged.append(f"pack {pid}: {err}")
            return None

    with ThreadPoolExecutor(max_workers=16) as pool:
        packs = [p for p in pool.map(one, infos) if p is not None]
    report.packs = len(packs)
    report.blobs = sum(len(p.entries) for p in packs)
    for i in range(0, max(len(packs), 1), packs_per_file):
        report.new_index.append(repo.save_index_file(packs[i : i + packs_per_file], supersedes=old))
    for iid in old:
        repo.store.delete(f"index/{iid}")
        report.removed_index.append(iid)
    repo.load_index()
    return report
