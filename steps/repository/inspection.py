"""The walk and read-back shared by ``verify`` and ``check``.

Provides :class:`Inspection` (one pass: every tree of the snapshots walked is well formed - trees are
read through :func:`~.tree.decode_tree`, so a crafted entry name is a :class:`~.tree.DamagedTreeError`
naming snapshot, tree and entry -, every tree and content blob is indexed, every file's size is its
content blobs plus its holes, every pack exists with the size the index records; read-back: a pack's
name checked against its bytes, its header against the index, every blob decrypted and rehashed),
:func:`settle` (what a prune running meanwhile explains is no damage) and
:func:`damaged_record_problem` (the problem line of a record that does not open).

Readers take no lock, so a prune may delete packs and compact the index while they run. A pass works on
one loaded index and keys everything by pack ID; what a prune explains (a pack gone, a blob the index no
longer holds) is settled against a fresh view, and only for the snapshots that reach it.
"""

from __future__ import annotations

import re
import threading
from array import array
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from steps.drivers.objectstore import ObjectNotFound
from steps.errors import IntegrityError

from .crypto import storage_id
from .damage import DamagedRecord, describe_damage
from .pack import pack_key, read_pack_entries
from .records import Snapshot
from .repo import Repository
from .tree import DamagedTreeError, decode_tree

MAX_PROBLEMS = 10_000
# Fresh views tried when packs vanished (or blobs left the index) during a pass, before what is still
# missing counts as damage. One is enough unless a whole prune - mark, grace period, sweep - fits between
# a re-check's listing of the snapshots and its reading of the index; the second covers that too.
RECHECK_ROUNDS = 2
_BLOB_ID = re.compile(r"[0-9a-f]{64}\Z")


# -- damaged records ----------------------------------------------------------------------------------

_RECORD_NOUN = {"snapshots": "snapshot", "backups": "backup", "runs": "run"}
RECORD_KINDS_CHECKED = ("snapshots", "backups", "runs")


def damaged_record_problem(d: DamagedRecord) -> str:
    """The problem line of a record that does not open, naming its object key."""
    return describe_damage([d], _RECORD_NOUN.get(d.kind, d.kind))


# -- who references what ------------------------------------------------------------------------------


class References:
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


class Inspection:
    """One pass over a set of snapshots against one view of the index: ``repo.index`` as it is when the
    pass starts. Nothing reloads it during the pass (trees are read without relocation), and nothing
    kept refers to a pack by its number in that view.

    Findings are of two kinds. *Problems* are damage whatever else happens: a damaged tree, a file whose
    size does not add up, a pack with wrong bytes, header or size. *Suspects* are what a concurrent
    prune explains: a pack gone from the store, a tree or blob the view does not index. They are settled
    against a fresh view (:func:`~.inspection.settle`) and become problems only if it does not explain them."""

    def __init__(self, repo: Repository, progress=None):
        self.repo = repo
        self.view = repo.index
        self.progress = progress
        self.versioned = repo.store.versioning_enabled()
        self._lock = threading.Lock()
        self.refs = References()
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
class Outcome:
    problems: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    packs_read: int = 0
    bytes_read: int = 0
    rechecked: int = 0
    vanished: list[str] = field(default_factory=list)


def settle(
    repo: Repository, first: Inspection, reload: Callable[[], object], read_replacements: bool
) -> Outcome:
    """Merge the findings of ``first`` and, while it has suspects, check again the snapshots that reach
    them against a fresh view: the snapshot records listed again first, then the index reloaded (writers
    store index files before the records that need them, and prune writes its new index before it deletes
    packs). A snapshot gone from the listing was forgotten meanwhile: not damage. A blob the fresh index
    puts in another pack (prune repacked it) is checked there, and with ``read_replacements`` that pack
    is read back too. What no fresh view explains is damage."""
    out = Outcome()
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
        checker = Inspection(repo, first.progress)
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
