"""Verify and repair (the engines behind ``verify``, ``check`` and ``repair index``).

Provides :func:`verify` (structure: every tree of the chosen snapshots is well formed - trees are read
through :func:`~.tree.decode_tree`, so a crafted entry name is a :class:`~.tree.DamagedTreeError` naming
snapshot, tree and entry -, every tree and content blob is indexed, every file's size is its content
blobs plus its holes, every pack exists with the size the index records; data: a share of those packs
is read back, its name checked against its bytes, its header against the index, every blob decrypted and
rehashed) and :func:`rebuild_index` (new index from the packs' own headers, superseding every old index
file; trees are not read). Also :func:`check_repository` (the scheduled ``check``): every index file,
record and snapshot of the repository, a share of *all* packs read back in a keyed rotation that resumes
where the previous check stopped (state in a ``check`` record), tampering on versioned buckets, and an
optional restore test. Damaged records (``Repository.scan_records``) are problems named by their key.

Readers take no lock, so a prune may delete packs and compact the index while they run. A pass works on
one loaded index and keys everything by pack ID; what a prune explains (a pack gone, a blob the index no
longer holds) is settled against a fresh view, and only for the snapshots that reach it (:func:`_settle`).
Called by ``steps.commands.verify``, ``steps.commands.repair`` and ``steps.commands.check``.
"""

from __future__ import annotations

import math
import random
import re
import threading
import time
from array import array
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from steps.drivers.objectstore import ObjectNotFound
from steps.errors import IntegrityError, PermanentError, TemporaryError

from .crypto import storage_id
from .index import IndexPack
from .pack import PREFIX_LEN, TAIL, header_length, pack_key, parse_pack_header, read_pack_entries
from .repo import DamagedRecord, Record, Repository, Snapshot, describe_damage, repair_hint
from .tree import DamagedTreeError, decode_tree

MAX_PROBLEMS = 10_000
# Fresh views tried when packs vanished (or blobs left the index) during a pass, before what is still
# missing counts as damage. One is enough unless a whole prune - mark, grace period, sweep - fits between
# a re-check's listing of the snapshots and its reading of the index; the second covers that too.
RECHECK_ROUNDS = 2
_BLOB_ID = re.compile(r"[0-9a-f]{64}\Z")


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
    rechecked: int = 0  # snapshots checked again against a fresh view because packs went meanwhile
    vanished: list[str] = field(default_factory=list)  # snapshots deleted (forgotten) while being verified
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
            "rechecked": self.rechecked,
            "vanished": self.vanished,
            "duration_s": round(self.duration_s, 3),
        }


# -- damaged records ----------------------------------------------------------------------------------

_RECORD_NOUN = {"snapshots": "snapshot", "backups": "backup", "runs": "run"}
RECORD_KINDS_CHECKED = ("snapshots", "backups", "runs")


def damaged_record_problem(d: DamagedRecord) -> str:
    """The problem line of a record that does not open, naming its object key."""
    return describe_damage([d], _RECORD_NOUN.get(d.kind, d.kind))


# -- who references what ------------------------------------------------------------------------------


class _References:
    """The reference graph of one pass, kept compact, so that a pack found missing leads back to exactly
    the snapshots that need it, through shared subtrees too, without walking every snapshot again.

    Trees are numbered in the order they are first reached. Each tree keeps its first referrer (a tree
    number, or ``-1 - i`` for the root of snapshot ``i``); a later reference to a tree already walked is
    kept aside; and each tree lists the packs its own blob and its files' blobs are in. Packs are keyed
    by ID, never by a position in an index that may be reloaded."""

    def __init__(self) -> None:
        self.trees: dict[bytes, int] = {}
        self.first = array("q")
        self.more_child = array("I")
        self.more_parent = array("q")
        self.packs: dict[str, int] = {}
        self.pack_ids: list[str] = []
        self.pack_snapshot = array("I")  # pack number -> the first snapshot referencing it
        self.tp_tree = array("I")
        self.tp_pack = array("I")
        self._parents: dict[int, list[int]] | None = None  # later referrers by tree, built when asked

    def reach(self, tree: bytes, referrer: int) -> tuple[int, bool]:
        """(tree number, whether this is the first time the tree is reached)."""
        no = self.trees.get(tree)
        if no is not None:
            self.more_child.append(no)
            self.more_parent.append(referrer)
            self._parents = None
            return no, False
        no = len(self.first)
        self.trees[tree] = no
        self.first.append(referrer)
        return no, True

    def use_pack(self, tree_no: int, pack_id: str, snapshot: int) -> None:
        pno = self.packs.get(pack_id)
        if pno is None:
            pno = self.packs[pack_id] = len(self.pack_ids)
            self.pack_ids.append(pack_id)
            self.pack_snapshot.append(snapshot)
        self.tp_tree.append(tree_no)
        self.tp_pack.append(pno)

    def snapshots_reaching(self, trees: set[int], packs: set[str] = frozenset()) -> set[int]:
        """Indices of the snapshots from which any of ``trees`` or any tree using ``packs`` is reached."""
        start = set(trees)
        pnos = {self.packs[p] for p in packs if p in self.packs}
        if pnos:
            start.update(t for t, p in zip(self.tp_tree, self.tp_pack, strict=True) if p in pnos)
        if self._parents is None:
            self._parents = {}
            for child, parent in zip(self.more_child, self.more_parent, strict=True):
                self._parents.setdefault(child, []).append(parent)
        more = self._parents
        out: set[int] = set()
        seen = set(start)
        stack = list(start)
        while stack:
            t = stack.pop()
            for parent in (self.first[t], *more.get(t, ())):
                if parent < 0:
                    out.add(-1 - parent)
                elif parent not in seen:
                    seen.add(parent)
                    stack.append(parent)
        return out


# -- one pass -----------------------------------------------------------------------------------------


class _Checker:
    """One pass over a set of snapshots against one view of the index: ``repo.index`` as it is when the
    pass starts. Nothing reloads it during the pass (trees are read without relocation), and nothing
    kept refers to a pack by its number in that view.

    Findings are of two kinds. *Problems* are damage whatever else happens: a damaged tree, a file whose
    size does not add up, a pack with wrong bytes, header or size. *Suspects* are what a concurrent
    prune explains: a pack gone from the store, a tree or blob the view does not index. They are settled
    against a fresh view (:func:`_settle`) and become problems only if it does not explain them."""

    def __init__(self, repo: Repository, progress=None):
        self.repo = repo
        self.view = repo.index
        self.progress = progress
        self.versioned = repo.store.versioning_enabled()
        self._lock = threading.Lock()
        self.refs = _References()
        self.snapshots: list[Snapshot] = []
        self.problems: dict[str, str] = {}  # key -> message (a finding found again keeps its first text)
        self.warnings: list[str] = []
        self.tree_problems: dict[int, list[str]] = {}  # tree number -> keys of its problems
        self.suspects: dict[str, str] = {}  # unindexed trees and blobs: key -> message
        self.suspect_trees: set[int] = set()
        self.missing_packs: dict[str, str] = {}  # pack ID -> message
        self.expected: dict[str, list] = {}  # pack ID -> its index entries, for the packs read back
        self.read: set[str] = set()  # packs read back (or attempted)
        self.trees = 0
        self.blobs = 0
        self.packs_read = 0
        self.bytes_read = 0

    # -- findings ---------------------------------------------------------------------------------
    def problem(self, msg: str, key: str | None = None, tree: int | None = None) -> None:
        key = key or msg
        with self._lock:
            if len(self.problems) < MAX_PROBLEMS:
                self.problems.setdefault(key, msg)
            if tree is not None:
                self.tree_problems.setdefault(tree, []).append(key)

    def warn(self, msg: str) -> None:
        with self._lock:
            if len(self.warnings) < MAX_PROBLEMS:
                self.warnings.append(msg)

    def suspect(self, msg: str, tree: int | None = None, pack: str | None = None) -> None:
        with self._lock:
            if tree is not None:
                self.suspect_trees.add(tree)
            if pack is not None:
                self.missing_packs.setdefault(pack, msg)
            elif len(self.suspects) < MAX_PROBLEMS:
                self.suspects.setdefault(msg, msg)

    @property
    def has_suspects(self) -> bool:
        return bool(self.suspects or self.missing_packs)

    def affected(self) -> list[Snapshot]:
        """The snapshots of this pass that reach a suspect."""
        idx = self.refs.snapshots_reaching(self.suspect_trees, set(self.missing_packs))
        return [self.snapshots[i] for i in sorted(idx)]

    def suspects_are_problems(self) -> None:
        """No fresh view explains the suspects: they are damage. (A pack deleted from a versioned bucket
        whose older version is intact is read from that version, as the readers do: a warning.)"""
        for msg in self.suspects.values():
            self.problem(msg)
        for pid, msg in sorted(self.missing_packs.items()):
            size = self.view.pack_sizes[self.view.pack_no(pid)] if self.view.has_pack(pid) else None
            if self.versioned and size is not None and self._older_version_intact(pid, size):
                self.warn(
                    f"pack {pid}: missing; an intact older version is read instead (deleted or replaced)"
                )
            else:
                self.problem(msg)

    def name_every_snapshot(self) -> None:
        """Add to each tree's problems the other snapshots that reach the tree (shared subtrees)."""
        for tno, keys in self.tree_problems.items():
            shorts = [self.snapshots[i].short_id for i in sorted(self.refs.snapshots_reaching({tno}))]
            for key in dict.fromkeys(keys):
                msg = self.problems.get(key)
                if msg is None:
                    continue
                others = [s for s in shorts if f"snapshot {s}:" not in msg]
                if others:
                    shown = ", ".join(others[:10]) + (
                        f" and {len(others) - 10} more" if len(others) > 10 else ""
                    )
                    self.problems[key] = f"{msg} (also in snapshot(s) {shown})"

    # -- structure --------------------------------------------------------------------------------
    def walk(self, snap: Snapshot) -> None:
        si = len(self.snapshots)
        self.snapshots.append(snap)
        root = snap.data.get("tree")
        if not root:
            self.problem(f"snapshot {snap.short_id}: directory / has no tree")
            return
        if not (isinstance(root, str) and _BLOB_ID.match(root)):
            self.problem(f"snapshot {snap.short_id}: its root tree {root!r} is not a blob ID")
            return
        stack: list[tuple[bytes, str, int]] = [(bytes.fromhex(root), "/", -1 - si)]
        while stack:
            tid, path, referrer = stack.pop()
            tno, first = self.refs.reach(tid, referrer)
            if not first:
                continue
            loc = self.view.get(tid)
            if loc is None:
                self.suspect(f"snapshot {snap.short_id}: tree {tid.hex()} ({path}) is not in the index", tno)
                continue
            self.refs.use_pack(tno, loc.pack_id, si)
            nodes = self._read_tree(snap, tno, tid, loc, path)
            if nodes is None:
                continue
            self.trees += 1
            packs = {loc.pack_id}
            for node in nodes:
                child = path.rstrip("/") + "/" + node["name"]
                if node["type"] == "dir":
                    sub = node.get("subtree")
                    if not sub:
                        self.problem(f"snapshot {snap.short_id}: directory {child} has no tree", tree=tno)
                    else:
                        stack.append((bytes.fromhex(sub), child, tno))
                elif node["type"] == "file":
                    self._file(snap, si, tno, tid, node, child, packs)

    def _read_tree(self, snap: Snapshot, tno: int, tid: bytes, loc, path: str) -> list[dict] | None:
        try:
            # without relocation: a pack that went is a suspect for the fresh view, and the index of
            # this pass must not be swapped under it
            return decode_tree(self.repo.read_blob(tid, _relocated=True), tid.hex())
        except DamagedTreeError as err:
            self.problem(f"snapshot {snap.short_id}: damaged tree at {path}: {err}", f"tree {tid.hex()}", tno)
        except Exception as err:
            if self.repo.store.stat(pack_key(loc.pack_id)) is None:
                self.suspect(
                    f"pack {loc.pack_id}: missing (holds tree {tid.hex()} of {path} in snapshot {snap.short_id})",
                    tno,
                    loc.pack_id,
                )
            else:
                self.problem(
                    f"snapshot {snap.short_id}: tree {tid.hex()} ({path}) unreadable: {err}",
                    f"tree {tid.hex()}",
                    tno,
                )
        return None

    def _file(self, snap: Snapshot, si: int, tno: int, tid: bytes, node: dict, path: str, packs: set) -> None:
        stored = 0
        complete = True
        content = node.get("content") or ()
        for hexid in content:
            self.blobs += 1
            loc = self.view.get(bytes.fromhex(hexid))
            if loc is None:
                complete = False
                self.suspect(f"snapshot {snap.short_id}: blob {hexid} of {path} is not in the index", tno)
                continue
            stored += loc.raw_length
            if loc.pack_id not in packs:
                packs.add(loc.pack_id)
                self.refs.use_pack(tno, loc.pack_id, si)
        if not complete:
            return
        holes = sum(length for _off, length in node.get("holes") or ())
        size = node.get("size", 0)
        if stored + holes != size:
            self.problem(
                f"snapshot {snap.short_id}: file {path} in tree {tid.hex()}: size {size}, but its"
                f" {len(content)} content blob(s) hold {stored} bytes"
                + (f" and its holes {holes}" if holes else "")
                + " (damaged tree)",
                f"size {tid.hex()} {node['name']}",
                tno,
            )

    def check_packs_exist(self) -> None:
        """Every referenced pack is stored with the size the index records."""
        present = {i.key.rsplit("/", 1)[-1]: i.size for i in self.repo.store.list("data/")}
        for pno, pid in enumerate(self.refs.pack_ids):
            recorded = self.view.pack_sizes[self.view.pack_no(pid)]
            size = present.get(pid)
            if size == recorded:
                continue
            sid = self.snapshots[self.refs.pack_snapshot[pno]].short_id
            if size is None:
                self.suspect(f"pack {pid}: missing (referenced by snapshot {sid})", pack=pid)
                continue
            what = f"size {size} but the index records {recorded}"
            if self.versioned and self._older_version_intact(pid, recorded):
                self.warn(
                    f"pack {pid}: {what}; an intact older version is read instead (deleted or replaced)"
                )
            else:
                self.problem(f"pack {pid}: {what} (truncated or replaced; referenced by snapshot {sid})")

    def _older_version_intact(self, pid: str, size: int) -> bool:
        try:
            data = self.repo.get_named(pack_key(pid))
        except Exception:
            return False
        return len(data) == size

    # -- data -------------------------------------------------------------------------------------
    def read_back(self, pack_ids: list[str]) -> None:
        """Read ``pack_ids`` back: names against bytes, headers against the index, every blob."""
        todo = [p for p in dict.fromkeys(pack_ids) if p not in self.read and self.view.has_pack(p)]
        if not todo:
            return
        self.read.update(todo)
        wanted = {self.view.pack_no(p): p for p in todo}  # (numbers of this pass's view, used at once)
        for bid, loc in self.view.iter_blobs():
            if loc.pack_no in wanted:
                self.expected.setdefault(loc.pack_id, []).append((bid, loc))
        if self.progress is not None:
            self.progress.total_bytes += sum(self.view.pack_sizes[n] for n in wanted)
            self.progress.total_final = True
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(self.read_pack, todo))

    def read_pack(self, pid: str) -> None:
        name = f"pack {pid}"
        key = pack_key(pid)
        try:
            try:
                data = self.repo.store.get(key)
                if storage_id(data) != pid and self.versioned:
                    data = self.repo.get_named(key)  # an intact older version, or IntegrityError
            except ObjectNotFound:
                if not self.versioned:
                    raise
                data = self.repo.get_named(key)  # ObjectNotFound again when no version is intact
        except ObjectNotFound:
            if pid in self.refs.packs:
                sid = self.snapshots[self.refs.pack_snapshot[self.refs.packs[pid]]].short_id
                self.suspect(f"pack {pid}: missing (referenced by snapshot {sid})", pack=pid)
            else:
                self.warn(f"{name}: deleted before it was read back (no snapshot checked here uses it)")
            return
        except IntegrityError:
            self.problem(f"{name}: content does not match its name (corrupt or replaced)")
            return
        except Exception as err:
            self.problem(f"{name}: cannot be read ({err})")
            return
        with self._lock:
            self.packs_read += 1
            self.bytes_read += len(data)
            if self.progress is not None:
                self.progress.done_bytes += len(data)
                self.progress.files += 1
        if storage_id(data) != pid:
            self.problem(f"{name}: content does not match its name (corrupt or replaced)")
            return
        try:
            salt, entries = read_pack_entries(self.repo.keys, data, name)
        except Exception as err:
            self.problem(str(err))
            return
        in_header = {e.id: e for e in entries}
        for bid, loc in self.expected.get(pid, ()):
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


# -- settling what a concurrent prune explains ----------------------------------------------------------


@dataclass
class _Outcome:
    problems: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    packs_read: int = 0
    bytes_read: int = 0
    rechecked: int = 0
    vanished: list[str] = field(default_factory=list)


def _settle(
    repo: Repository, first: _Checker, reload: Callable[[], object], read_replacements: bool
) -> _Outcome:
    """Merge the findings of ``first`` and, while it has suspects, check again the snapshots that reach
    them against a fresh view: the snapshot records listed again first, then the index reloaded (writers
    store index files before the records that need them, and prune writes its new index before it deletes
    packs). A snapshot gone from the listing was forgotten meanwhile: not damage. A blob the fresh index
    puts in another pack (prune repacked it) is checked there, and with ``read_replacements`` that pack
    is read back too. What no fresh view explains is damage."""
    out = _Outcome()
    known_packs = set(first.view.pack_ids)  # packs of the first view; others are newer (repacks)
    read = set(first.read)
    checker = first
    for attempt in range(RECHECK_ROUNDS + 1):
        affected = checker.affected() if checker.has_suspects else []
        if checker.has_suspects and (attempt == RECHECK_ROUNDS or not affected):
            checker.suspects_are_problems()
            affected = []
        checker.name_every_snapshot()
        for key, msg in checker.problems.items():
            out.problems.setdefault(key, msg)
        out.warnings.extend(checker.warnings)
        if checker is not first:
            out.packs_read += checker.packs_read
            out.bytes_read += checker.bytes_read
        if not affected:
            break
        present = {i.key.rsplit("/", 1)[-1] for i in repo.store.list("snapshots/")}
        out.vanished.extend(s.id for s in affected if s.id not in present and s.id not in out.vanished)
        still = [s for s in affected if s.id in present]
        if not still:
            break
        reload()
        out.rechecked += len(still)
        checker = _Checker(repo, first.progress)
        for snap in still:
            checker.walk(snap)
        checker.check_packs_exist()
        if read_replacements:
            newer = [p for p in checker.refs.pack_ids if p not in known_packs and p not in read]
            newer = [p for p in newer if p not in checker.missing_packs]
            read.update(newer)
            checker.read_back(newer)
    out.warnings = list(dict.fromkeys(out.warnings))
    return out


def _choose_packs(packs: list[str], percent: float, seed: int | None) -> list[str]:
    if percent <= 0 or not packs:
        return []
    if percent >= 100:
        return list(packs)
    k = max(1, math.ceil(len(packs) * percent / 100))
    return random.Random(seed).sample(packs, k)


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
    applies to the older packs it reuses; the snapshots are that backup's, and one deleted meanwhile is a
    problem (the backup cannot be committed without it).

    Safe against a concurrent prune: ``snapshots`` should be listed before the index is loaded (the
    readers' order); packs that go while the pass runs are settled against a fresh view (see
    :func:`_settle`), so a snapshot forgotten meanwhile (``vanished``) or a blob moved to another pack is
    no problem, and a blob a snapshot still needs that is nowhere is."""
    t0 = time.monotonic()
    report = VerifyReport(snapshots=[s.id for s in snapshots], read_data_percent=read_data_percent)
    repo.warnings.clear()
    repo.fallbacks.clear()
    if reload_index:
        repo.load_index()
    checker = _Checker(repo, progress)
    for snap in snapshots:
        checker.walk(snap)
    report.trees, report.blobs = checker.trees, checker.blobs
    referenced = list(checker.refs.pack_ids)
    report.packs_referenced = len(referenced)
    checker.check_packs_exist()
    view = checker.view
    written = view.pack_backup
    new = sorted(p for p in referenced if new_packs_of and written.get(view.pack_no(p)) == new_packs_of)
    report.packs_new = len(new)
    readable = [p for p in referenced if p not in checker.missing_packs]
    older = sorted(set(readable) - set(new))
    chosen = [p for p in new if p not in checker.missing_packs] + _choose_packs(
        older, read_data_percent, seed
    )
    checker.read_back(chosen)
    outcome = _settle(repo, checker, repo.load_index, read_replacements=bool(chosen))
    report.problems = list(outcome.problems.values())
    report.packs_read = checker.packs_read + outcome.packs_read
    report.bytes_read = checker.bytes_read + outcome.bytes_read
    report.rechecked = outcome.rechecked
    report.vanished = outcome.vanished
    report.warnings.extend(outcome.warnings)
    if outcome.vanished and new_packs_of:  # the backup's own snapshots: without them it cannot commit
        report.problems += [
            f"snapshot {sid[:8]} of backup {new_packs_of} was deleted while it was verified"
            for sid in outcome.vanished
        ]
    elif outcome.vanished:
        report.warnings.append(
            f"{len(outcome.vanished)} snapshot(s) were deleted while they were verified (forgotten by a"
            f" prune): {', '.join(s[:8] for s in outcome.vanished[:10])}"
        )
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
    rotation of the previous check, and store where it stopped. Damaged records, damaged trees and files
    whose size does not add up are problems; what a prune running meanwhile deletes is not (see
    :func:`_settle`)."""
    from .lock import MAINTENANCE_PREFIXES, iter_deleted_keys, version_map
    from .repo import DELETED, DELETION_LOG_KIND

    t0 = time.monotonic()
    report = CheckReport()
    repo.warnings.clear()
    repo.fallbacks.clear()
    store = repo.store

    # records before the index, as every reader (a writer stores its index files first); damaged ones
    # are problems, named by key
    scanned = {kind: repo.scan_records(kind) for kind in RECORD_KINDS_CHECKED}
    damaged = [d for kind in RECORD_KINDS_CHECKED for d in scanned[kind][1]]
    report.problems.extend(damaged_record_problem(d) for d in damaged)
    if damaged:
        report.warnings.append(f"damaged records: {repair_hint(repo.url)}")
    snap_records, backups = scanned["snapshots"][0], scanned["backups"][0]
    snapshots = [Snapshot(r.id, r.data) for r in snap_records]
    report.snapshots = len(snapshots)
    report.backups = len(backups)

    # index files, one by one, so that one damaged file does not hide the others
    ids, index_problems = _check_index_files(repo)
    report.index_files = len(ids)
    report.problems.extend(index_problems)

    def reload() -> None:
        if index_problems:
            _load_index_tolerant(repo)
        else:
            repo.load_index()

    reload()
    index = repo.index
    report.packs = index.pack_count
    report.problems.extend(_backups_missing_snapshots(repo, backups, {s.id for s in snapshots}))
    listing = {i.key.rsplit("/", 1)[-1] for i in store.list("data/")}
    report.unindexed_packs = sum(1 for pid in listing if not index.has_pack(pid))

    # structure of every snapshot (trees, blobs indexed, sizes, packs present)
    checker = _Checker(repo, progress)
    for snap in snapshots:
        checker.walk(snap)
    checker.check_packs_exist()
    report.structure = {
        "trees": checker.trees,
        "blobs": checker.blobs,
        "packs_referenced": len(checker.refs.pack_ids),
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
    checker.read_back([p for p in chosen if p not in checker.missing_packs])
    outcome = _settle(repo, checker, reload, read_replacements=bool(chosen))
    report.problems.extend(outcome.problems.values())
    report.warnings.extend(outcome.warnings)
    if outcome.vanished:
        report.warnings.append(
            f"{len(outcome.vanished)} snapshot(s) were deleted while check ran (forgotten by a prune):"
            f" {', '.join(s[:8] for s in outcome.vanished[:10])}"
        )
    packs_read = checker.packs_read + outcome.packs_read
    rounds += 1 if wrapped else 0
    report.read_data = {
        "percent": read_data_percent,
        "packs_read": packs_read,
        "bytes_read": checker.bytes_read + outcome.bytes_read,
        "packs_total": len(order),
        "cursor": new_cursor[:16],
        "rounds_completed": rounds,
        "packs": chosen[:10_000],
    }
    report.structure["rechecked"] = outcome.rechecked
    if chosen and save_state:
        rid = repo.save_record(
            CHECK_KIND,
            {
                "type": ROTATION,
                "version": 1,
                "time": _now_iso(),
                "cursor": new_cursor,
                "rounds": rounds,
                "packs_read": packs_read,
            },
        )
        for r in state_records:  # only the newest position matters
            if r.id != rid:
                store.delete(r.key)

    # tampering, on versioned buckets: objects deleted or replaced by someone other than Snapflow
    ours: set[str] = set()
    if store.versioning_enabled():
        logs = [r for r in repo.list_records(DELETION_LOG_KIND) if r.data.get("type") == DELETED]
        ours = {k for r in logs for k in r.data.get("keys", ())}
        for key in sorted(iter_deleted_keys(version_map(store))):
            if key not in ours and not key.startswith(MAINTENANCE_PREFIXES):
                report.tampering.append(f"{key}: deleted outside Snapflow (older versions kept)")
    for msg in dict.fromkeys(repo.fallbacks):
        key = msg.split(": ", 1)[0]
        if key in ours and store.stat(key) is None:
            continue  # a prune running meanwhile deleted it (its log says so): read from a locked version
        report.tampering.append(f"{msg} (replaced or deleted outside Snapflow)")
    report.warnings.extend(repo.warnings)
    report.duration_s = time.monotonic() - t0
    return report


def _check_index_files(repo: Repository) -> tuple[list[str], list[str]]:
    """(index file IDs, problems): every index file read on its own. A file deleted since the listing was
    replaced by a compaction (prune, ``repair index``), which writes the file superseding it first: only
    a deleted file that no listed file supersedes is a problem."""
    ids = repo.index_ids()
    problems: list[str] = []
    gone: list[str] = []
    superseded: set[str] = set()

    def read(iid: str) -> None:
        try:
            _iid, doc, _packs = repo._read_index_file(iid)
            superseded.update(doc.get("supersedes", ()))
        except ObjectNotFound:
            gone.append(iid)
        except Exception as err:
            problems.append(f"index {iid}: {err}")

    for iid in ids:
        read(iid)
    if gone:
        for iid in [i for i in repo.index_ids() if i not in ids]:
            read(iid)
        problems += [
            f"index {iid}: missing (deleted while check ran, and no index file supersedes it)"
            for iid in gone
            if iid not in superseded and iid in ids
        ]
    return ids, problems


def _backups_missing_snapshots(repo: Repository, backups: list[Record], present: set[str]) -> list[str]:
    """Backup records naming a snapshot that does not exist. A backup committed while check listed (its
    snapshots listed before it was written) or forgotten meanwhile (backup record first, then its
    snapshots) only looks so: such findings are checked against a second listing, snapshots first."""
    from .repo import referenced_snapshots

    suspicious = [rec for rec in backups if referenced_snapshots(rec.data) - present]
    if not suspicious:
        return []
    present_now = {i.key.rsplit("/", 1)[-1] for i in repo.store.list("snapshots/")}
    backups_now = {i.key for i in repo.store.list("backups/")}
    out = []
    for rec in suspicious:
        missing = sorted(referenced_snapshots(rec.data) - present - present_now)
        if missing and rec.key in backups_now:
            out.append(
                f"backup {rec.data.get('backup_id')}: snapshot(s) {', '.join(m[:8] for m in missing)} missing"
            )
    return out


def _load_index_tolerant(repo: Repository) -> None:
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
