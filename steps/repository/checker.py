"""Verify and repair (the engines behind ``verify`` and ``repair index``).

Provides :func:`verify` (structure: every tree and content blob of the chosen snapshots is indexed and
its pack exists with the size the index records; data: a share of those packs is read back, its name
checked against its bytes, its header against the index, every blob decrypted and rehashed) and
:func:`rebuild_index` (new index from the packs' own headers, superseding every old index file).
Also :func:`check_repository` (the scheduled ``check``): every index file, record and snapshot of the
repository, a share of *all* packs read back in a keyed rotation that resumes where the previous check
stopped (state in a ``check`` record), tampering on versioned buckets, and an optional restore test.
Called by ``steps.commands.verify``, ``steps.commands.repair`` and ``steps.commands.check``.
"""

from __future__ import annotations

import math
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from steps.drivers.objectstore import ObjectNotFound
from steps.errors import IntegrityError, PermanentError, TemporaryError

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
    packs_new: int = 0  # referenced packs the verified backup wrote itself (all read back)
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
            "packs_new": self.packs_new,
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
        versioned = self.repo.store.versioning_enabled()
        for no, sid in sorted(self.pack_refs.items()):
            pid = index.pack_ids[no]
            size = present.get(pid)
            if size == index.pack_sizes[no]:
                continue
            what = "missing" if size is None else f"size {size} but the index records {index.pack_sizes[no]}"
            if versioned and self._older_version_intact(pid, no):
                self.warn(
                    f"pack {pid}: {what}; an intact older version is read instead (deleted or replaced)"
                )
            elif size is None:
                self.problem(f"pack {pid}: missing (referenced by snapshot {sid})")
            else:
                self.problem(f"pack {pid}: {what} (truncated or replaced; referenced by snapshot {sid})")

    def warn(self, msg: str) -> None:
        with self._lock:
            if len(self.report.warnings) < MAX_PROBLEMS:
                self.report.warnings.append(msg)

    def _older_version_intact(self, pid: str, no: int) -> bool:
        try:
            data = self.repo.get_named(pack_key(pid))
        except Exception:
            return False
        return len(data) == self.repo.index.pack_sizes[no]

    def read_pack(self, no: int) -> None:
        index = self.repo.index
        pid = index.pack_ids[no]
        name = f"pack {pid}"
        try:
            data = self.repo.store.get(pack_key(pid))
            if storage_id(data) != pid and self.repo.store.versioning_enabled():
                data = self.repo.get_named(pack_key(pid))  # an intact older version, or IntegrityError
        except ObjectNotFound:
            if not self.repo.store.versioning_enabled():
                return  # already reported as missing
            try:
                data = self.repo.get_named(pack_key(pid))
            except Exception:
                return  # already reported as missing
        except IntegrityError:
            self.problem(f"{name}: content does not match its name (corrupt or replaced)")
            return
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
    reload_index: bool = True,
    new_packs_of: str | None = None,
) -> VerifyReport:
    """Check ``snapshots``; read back ``read_data_percent`` of the packs they reference. With
    ``new_packs_of`` (a backup ID), every referenced pack that backup wrote is read back, and the share
    applies to the older packs it reuses."""
    t0 = time.monotonic()
    report = VerifyReport(snapshots=[s.id for s in snapshots], read_data_percent=read_data_percent)
    repo.warnings.clear()
    repo.fallbacks.clear()
    if reload_index:
        repo.load_index()
    checker = _Checker(repo, report, progress)
    for snap in snapshots:
        checker.walk(snap)
    report.packs_referenced = len(checker.pack_refs)
    checker.check_packs_exist()
    written = repo.index.pack_backup
    new = sorted(n for n in checker.pack_refs if new_packs_of and written.get(n) == new_packs_of)
    report.packs_new = len(new)
    if (read_data_percent > 0 or new) and checker.pack_refs:
        packs = sorted(set(checker.pack_refs) - set(new))
        k = (
            0
            if read_data_percent <= 0 or not packs
            else len(packs)
            if read_data_percent >= 100
            else max(1, math.ceil(len(packs) * read_data_percent / 100))
        )
        chosen = new + (packs if k >= len(packs) else random.Random(seed).sample(packs, k))
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
    report.warnings.extend(repo.fallbacks)
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
    """Write a new index from the packs alone, superseding (then deleting) every old index file.

    A pack is left out (``damaged``) only when its bytes are confirmed not to match its name (and no
    intact older version exists). Any other failure to read a pack — permissions, the store not
    answering, a header that does not decrypt — changes nothing and raises: an index rebuilt without
    that pack would drop its blobs, and prune would then delete it as unindexed."""
    report = RepairReport()
    old = repo.index_ids()
    infos = list(repo.store.list("data/"))
    failed: list[tuple[str, BaseException]] = []
    written_by = _pack_writers(repo, old)

    def one(info):
        pid = info.key.rsplit("/", 1)[-1]
        try:
            pack = read_pack_index(repo, pid, info.size)
            pack.backup_id = written_by.get(pid)
            return pack
        except Exception:
            pass
        # the header did not read: tell a pack whose bytes do not match its name from a read failure
        try:
            data = repo.get_named(pack_key(pid))
        except IntegrityError as err:
            report.damaged.append(f"pack {pid}: {err}")
            return None
        except Exception as err:
            failed.append((pid, err))
            return None
        try:
            salt, entries = read_pack_entries(repo.keys, data, f"pack {pid}")
        except Exception as err:
            failed.append((pid, err))
            return None
        return IndexPack(pid, salt, len(data), entries, written_by.get(pid))

    with ThreadPoolExecutor(max_workers=16) as pool:
        packs = [p for p in pool.map(one, infos) if p is not None]
    if failed:
        failed.sort(key=lambda f: f[0])
        pid, err = failed[0]
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        cls = TemporaryError if all(isinstance(e, TemporaryError) for _, e in failed) else PermanentError
        raise cls(
            f"repair index: pack {pid} cannot be read ({type(err).__name__}: {err}){more}; nothing was"
            " changed (an index rebuilt without it would drop its blobs); make it readable and run repair"
            " again"
        )
    report.packs = len(packs)
    report.blobs = sum(len(p.entries) for p in packs)
    for i in range(0, max(len(packs), 1), packs_per_file):
        report.new_index.append(repo.save_index_file(packs[i : i + packs_per_file], supersedes=old))
    repo.note_deletions([f"index/{iid}" for iid in old], "repair index")
    for iid in old:
        repo.store.delete(f"index/{iid}")
        report.removed_index.append(iid)
    repo.load_index()
    return report


def _pack_writers(repo: Repository, index_ids: list[str]) -> dict[str, str]:
    """Pack ID -> the backup that wrote it, from whichever old index files still read (best effort: the
    pack headers do not say it, and per-backup verify uses it)."""

    def read(iid: str) -> list[IndexPack]:
        try:
            return repo._read_index_file(iid)[2]
        except Exception:
            return []

    out: dict[str, str] = {}
    if index_ids:
        with ThreadPoolExecutor(max_workers=min(16, len(index_ids))) as pool:
            for packs in pool.map(read, index_ids):
                for p in packs:
                    if p.backup_id:
                        out.setdefault(p.id, p.backup_id)
    return out


# -- check (the whole repository, scheduled) --------------------------------------------------------

CHECK_KIND = "check"
ROTATION = "read-data"


@dataclass
class CheckReport:
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    tampering: list[str] = field(default_factory=list)
    index_files: int = 0
    packs: int = 0
    snapshots: int = 0
    backups: int = 0
    unindexed_packs: int = 0
    structure: dict = field(default_factory=dict)
    read_data: dict = field(default_factory=dict)
    restore_test: dict | None = None
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems and not self.tampering

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "problems": self.problems[:1000],
            "warnings": self.warnings[:1000],
            "tampering": self.tampering[:1000],
            "index_files": self.index_files,
            "packs": self.packs,
            "snapshots": self.snapshots,
            "backups": self.backups,
            "unindexed_packs": self.unindexed_packs,
            "structure": self.structure,
            "read_data": self.read_data,
            "restore_test": self.restore_test,
            "duration_s": round(self.duration_s, 3),
        }


def rotation_order(repo: Repository, pack_ids: list[str]) -> list[tuple[str, str]]:
    """(position, pack ID) in the keyed order a rotating check walks: stable across runs, new packs fall
    anywhere in it, and nobody without the key can tell which packs the next check reads."""
    return sorted((repo.keys.mac(b"check-rotation\0" + pid.encode()), pid) for pid in pack_ids)


def next_in_rotation(order: list[tuple[str, str]], cursor: str, count: int) -> tuple[list[str], str, bool]:
    """The ``count`` packs after ``cursor`` (wrapping), the new cursor, and whether the walk reached the
    end of the order (a full round is complete)."""
    if not order or count <= 0:
        return [], cursor, False
    count = min(count, len(order))
    start = next((i for i, (pos, _) in enumerate(order) if pos > cursor), 0)
    chosen = [order[(start + i) % len(order)] for i in range(count)]
    return [pid for _, pid in chosen], chosen[-1][0], start + count >= len(order)


def check_repository(
    repo: Repository,
    read_data_percent: float = 0.0,
    progress=None,
    save_state: bool = True,
) -> CheckReport:
    """Check everything the repository holds; read ``read_data_percent`` of all packs, continuing the
    rotation of the previous check, and store where it stopped."""
    from .lock import MAINTENANCE_PREFIXES, iter_deleted_keys, version_map
    from .repo import DELETED, DELETION_LOG_KIND

    t0 = time.monotonic()
    report = CheckReport()
    repo.warnings.clear()
    repo.fallbacks.clear()
    store = repo.store

    # index files, one by one, so that one damaged file does not hide the others
    ids = repo.index_ids()
    report.index_files = len(ids)
    for iid in ids:
        try:
            repo._read_index_file(iid)
        except ObjectNotFound:
            report.problems.append(f"index {iid}: missing")
        except Exception as err:
            report.problems.append(f"index {iid}: {err}")
    if report.problems:
        _load_index_tolerant(repo, report)
    else:
        repo.load_index()
    index = repo.index
    report.packs = index.pack_count

    snapshots = repo.list_snapshots()
    backups = repo.list_records("backups")
    report.snapshots = len(snapshots)
    report.backups = len(backups)
    for w in repo.warnings:  # damaged records
        report.problems.append(w)
    repo.warnings.clear()
    present = {s.id for s in snapshots}
    from .repo import referenced_snapshots

    for rec in backups:
        missing = sorted(referenced_snapshots(rec.data) - present)
        if missing:
            report.problems.append(
                f"backup {rec.data.get('backup_id')}: snapshot(s) {', '.join(m[:8] for m in missing)} missing"
            )
    listing = {i.key.rsplit("/", 1)[-1] for i in store.list("data/")}
    report.unindexed_packs = sum(1 for pid in listing if not index.has_pack(pid))

    # structure of every snapshot (trees, blobs indexed, packs present)
    early_fallbacks = list(repo.fallbacks)
    structure = verify(repo, snapshots, 0.0, reload_index=False)
    report.problems.extend(structure.problems)
    report.warnings.extend(structure.warnings)
    report.structure = {
        "trees": structure.trees,
        "blobs": structure.blobs,
        "packs_referenced": structure.packs_referenced,
    }

    # read back a share of all packs, continuing the rotation
    state_records = [r for r in repo.list_records(CHECK_KIND) if r.data.get("type") == ROTATION]
    state = (
        max(state_records, key=lambda r: (str(r.data.get("time", "")), r.id)).data if state_records else {}
    )
    cursor = str(state.get("cursor", ""))
    rounds = int(state.get("rounds", 0))
    order = rotation_order(repo, list(index.pack_ids))
    count = 0
    if read_data_percent > 0 and order:
        count = (
            len(order)
            if read_data_percent >= 100
            else max(1, math.ceil(len(order) * read_data_percent / 100))
        )
    chosen, new_cursor, wrapped = next_in_rotation(order, cursor, count)
    read_report = VerifyReport(read_data_percent=read_data_percent)
    if chosen:
        checker = _Checker(repo, read_report, progress)
        wanted = {index.pack_no(pid) for pid in chosen}
        for bid, loc in index.iter_blobs():
            if loc.pack_no in wanted:
                checker.expected.setdefault(loc.pack_no, []).append((bid, loc))
        if progress is not None:
            progress.total_bytes = sum(index.pack_sizes[n] for n in wanted if n is not None)
            progress.total_final = True
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(checker.read_pack, [n for n in wanted if n is not None]))
        report.problems.extend(read_report.problems)
        report.warnings.extend(read_report.warnings)
    rounds += 1 if wrapped else 0
    report.read_data = {
        "percent": read_data_percent,
        "packs_read": read_report.packs_read,
        "bytes_read": read_report.bytes_read,
        "packs_total": len(order),
        "cursor": new_cursor[:16],
        "rounds_completed": rounds,
        "packs": chosen[:10_000],
    }
    if chosen and save_state:
        rid = repo.save_record(
            CHECK_KIND,
            {
                "type": ROTATION,
                "version": 1,
                "time": _now_iso(),
                "cursor": new_cursor,
                "rounds": rounds,
                "packs_read": read_report.packs_read,
            },
        )
        for r in state_records:  # only the newest position matters
            if r.id != rid:
                store.delete(r.key)

    # tampering, on versioned buckets: objects deleted or replaced by someone other than Snapflow
    if store.versioning_enabled():
        logs = [r for r in repo.list_records(DELETION_LOG_KIND) if r.data.get("type") == DELETED]
        ours = {k for r in logs for k in r.data.get("keys", ())}
        for key in sorted(iter_deleted_keys(version_map(store))):
            if key not in ours and not key.startswith(MAINTENANCE_PREFIXES):
                report.tampering.append(f"{key}: deleted outside Snapflow (older versions kept)")
    for msg in dict.fromkeys(early_fallbacks + repo.fallbacks):
        report.tampering.append(f"{msg} (replaced or deleted outside Snapflow)")
    report.warnings.extend(repo.warnings)
    report.duration_s = time.monotonic() - t0
    return report


def _load_index_tolerant(repo: Repository, report: CheckReport) -> None:
    """Load every index file that can be read (check goes on to report what the damage affects)."""
    from .index import MemIndex

    index = MemIndex()
    superseded: set[str] = set()
    docs = []
    for iid in repo.index_ids():
        try:
            docs.append(repo._read_index_file(iid))
        except Exception:
            continue
    for _iid, doc, _packs in docs:
        superseded.update(doc.get("supersedes", ()))
    for iid, _doc, packs in docs:
        if iid in superseded:
            continue
        for p in packs:
            index.add_pack(p.id, p.salt, p.size, p.entries, p.backup_id)
    repo._index = index


def _now_iso() -> str:
    from .repo import utc_now_iso

    return utc_now_iso()
