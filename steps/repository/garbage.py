"""What prune may delete: liveness, the sweep of ripe deletion candidates and the mark of new ones.

Provides :class:`IndexState` (every index file, read whole), :class:`Liveness` (the blobs a set of
snapshots reaches; nothing is deleted while a tree cannot be read), :func:`sweep` (steps 2a-h of
docs/design.md, "Prune": uncommitted snapshot records, liveness afresh, compaction, packs, old index
files, the candidates records) and :func:`mark` (step 3: unused, unindexed and mostly unused packs,
whose live blobs are repacked first, and snapshot records of backups never committed within the grace
period, into one ``candidates`` record). Run by :func:`~.pruner.prune`, whose run state (``_Run``: the
repository, options, report, the lease checked before each deletion) they share.
"""

from __future__ import annotations

import os
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from steps.drivers.objectstore import ObjectNotFound
from steps.errors import DamagedRecordError, IntegrityError

from .blob_sink import BlobSink
from .damage import describe_damage, repair_hint
from .index import IndexPack
from .pack import pack_key, read_pack_entries
from .records import Record, Snapshot
from .repo import Repository
from .tree import decode_tree
from .writer import CANDIDATES, PRUNE_KIND

if TYPE_CHECKING:
    from .pruner import _Run

PACKS_PER_INDEX_FILE = 2000
COMPACT_WHEN_MORE_INDEX_FILES = 32


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


# --------------------------------------------------------------------------------------------------
# What the repository holds


@dataclass
class IndexState:
    """Every index file, read whole: which packs the live (not superseded) files name, with entries."""

    all_ids: list[str]
    live_ids: list[str]
    packs: dict[str, IndexPack]  # pack ID -> entries (first listing of the pack wins)

    @classmethod
    def load(cls, repo: Repository) -> IndexState:
        def read(iid: str):
            try:
                return repo._read_index_file(iid)
            except ObjectNotFound:
                return iid, None, None

        for _attempt in range(6):
            ids = repo.index_ids()
            docs: dict[str, tuple[dict, list[IndexPack]]] = {}
            if ids:
                with ThreadPoolExecutor(max_workers=min(16, len(ids))) as pool:
                    for iid, doc, packs in pool.map(read, ids):
                        if doc is not None:
                            docs[iid] = (doc, packs)
            superseded = {s for doc, _ in docs.values() for s in doc.get("supersedes", ())}
            if not (set(ids) - set(docs) - superseded):
                break  # (a file that vanished was replaced by a compaction: list again)
        else:
            raise IntegrityError("index files keep vanishing while being read; is another prune running?")
        ids = list(docs)
        live = [i for i in ids if i not in superseded]
        packs: dict[str, IndexPack] = {}
        for iid in live:
            for p in docs[iid][1]:
                packs.setdefault(p.id, p)
        return cls(ids, live, packs)


class Liveness:
    """Blobs reachable from a set of snapshots; refuses (IntegrityError) when a tree cannot be read,
    because nothing may be deleted while liveness is unknown."""

    def __init__(self, repo: Repository):
        self.repo = repo
        self.blobs: set[bytes] = set()
        self.trees: set[bytes] = set()
        self.missing: list[str] = []  # the first ones, as messages
        self.missing_ids: set[bytes] = set()  # every live blob the index lacks

    def add(self, snapshots: list[Snapshot]) -> None:
        index = self.repo.index
        for snap in snapshots:
            stack = [snap.data.get("tree")]
            while stack:
                tree_hex = stack.pop()
                if not tree_hex:
                    continue
                tid = bytes.fromhex(tree_hex)
                if tid in self.trees:
                    continue
                self.trees.add(tid)
                self.blobs.add(tid)
                if index.get(tid) is None:
                    raise IntegrityError(
                        f"snapshot {snap.short_id}: tree {tree_hex} is not in the index; run verify (and"
                        " repair index) before prune"
                    )
                try:
                    nodes = decode_tree(self.repo.read_blob(tid), tree_hex)
                except Exception as err:
                    raise IntegrityError(
                        f"snapshot {snap.short_id}: tree {tree_hex} unreadable ({err}); run verify before prune"
                    ) from None
                for node in nodes:
                    if node.get("type") == "dir":
                        stack.append(node.get("subtree"))
                    elif node.get("type") == "file":
                        for hexid in node.get("content") or ():
                            bid = bytes.fromhex(hexid)
                            if bid not in self.blobs:
                                if index.get(bid) is None:
                                    self.missing_ids.add(bid)
                                    if len(self.missing) < 100:
                                        self.missing.append(
                                            f"snapshot {snap.short_id}: blob {hexid} is not indexed"
                                        )
                                self.blobs.add(bid)


def _unindexed_to_keep(run: _Run, live: Liveness, unindexed: dict[str, int]) -> set[str]:
    """Of the packs no index file names (ID -> size), those that must stay: when live blobs are missing
    from the index (an index file lost, or ``repair index`` skipped a pack), such a pack may hold their
    only copy. Their headers are read; a pack holding a missing blob, or whose header cannot be read,
    stays. IntegrityError when some missing blobs are in no readable unindexed pack: nothing may be
    deleted until the index is repaired."""
    if not live.missing_ids:
        return set()
    from .repair_index import read_pack_index

    def header(pid: str):
        try:
            return pid, read_pack_index(run.repo, pid, unindexed[pid]), None
        except Exception as err:
            return pid, None, err

    keep: set[str] = set()
    found: set[bytes] = set()
    unreadable: list[str] = []
    if unindexed:
        with ThreadPoolExecutor(max_workers=min(16, len(unindexed))) as pool:
            for pid, pack, err in pool.map(header, sorted(unindexed)):
                if pack is None:
                    keep.add(pid)
                    unreadable.append(f"pack {pid}: {err}")
                    continue
                hits = live.missing_ids.intersection(e.id for e in pack.entries)
                if hits:
                    keep.add(pid)
                    found |= hits
    still = len(live.missing_ids - found)
    if still:
        where = (
            f"{len(unreadable)} unindexed pack(s) cannot be read, e.g. {unreadable[0]}"
            if unreadable
            else "no pack holds them"
        )
        raise IntegrityError(
            f"{still} blob(s) that snapshots need are not in the index (e.g. {live.missing[0]}) and"
            f" {where}; prune deletes nothing until the index is whole: run `repair index`, then verify"
            " (snapshots whose data is lost must be forgotten)"
        )
    run.report.warnings.append(
        f"{len(found)} blob(s) that snapshots need are only in {len(keep)} unindexed pack(s), which are"
        " kept; run `repair index`"
    )
    return keep


# --------------------------------------------------------------------------------------------------
# 2. sweep


def sweep(run: _Run, ripe: list[Record]) -> None:
    repo, store, opts = run.repo, run.store, run.opts
    stats = run.report.sweep
    stats.update(
        candidate_records=len(ripe),
        snapshots_deleted=0,
        snapshots_restored=0,
        snapshots_rescued=0,
        runs_deleted=0,
        packs_deleted=0,
        packs_rescued=0,
        bytes_freed=0,
        index_files_written=0,
        index_files_deleted=0,
    )
    # a. snapshot records still uncommitted go; their backup may have been committed meanwhile
    committed = repo.record_groups("backups")
    removed: dict[str, tuple[bytes, str]] = {}
    doomed: list[tuple[str, str]] = []
    for rec in ripe:
        for entry in rec.data.get("snapshots", ()):
            sid, bid = entry.get("id"), entry.get("backup_id") or ""
            if not sid:
                continue
            if bid and repo.key_group(bid) in committed:
                stats["snapshots_rescued"] += 1
                continue
            doomed.append((sid, bid))
    if doomed:
        run.log_deletions([f"snapshots/{sid}" for sid, _ in doomed], "uncommitted")
    for sid, bid in doomed:
        key = f"snapshots/{sid}"
        try:
            data = store.get(key)
        except ObjectNotFound:
            continue
        if not opts.dry_run:
            run.check_lease()
            store.delete(key)
        removed[sid] = (data, bid)
        stats["snapshots_deleted"] += 1
    # b. a commit that raced the deletion gets its snapshot records back (same bytes, same name)
    if removed and not opts.dry_run:
        committed = repo.record_groups("backups")
        for sid, (data, bid) in removed.items():
            if bid and repo.key_group(bid) in committed:
                store.put(f"snapshots/{sid}", data)
                stats["snapshots_restored"] += 1
                stats["snapshots_deleted"] -= 1
    run_keys = []
    for rec in ripe:
        for group in rec.data.get("runs", ()):
            if group not in committed:
                run_keys += [i.key for i in store.list(f"runs/{group}/")]
    if run_keys:
        run.log_deletions(run_keys, "uncommitted")
        run.delete_keys(run_keys)
        stats["runs_deleted"] = len(run_keys)

    # c. liveness, afresh: every snapshot record present now (listed before the index is read, so
    # that every listed snapshot's blobs are in the index read: writers store the index first)
    snapshots = repo.list_snapshots() + misnamed_snapshots(run)
    state = IndexState.load(repo)
    repo.load_index()
    if opts.dry_run:
        snapshots = [s for s in snapshots if s.id not in removed]
    live = Liveness(repo)
    live.add(snapshots)
    # d. a candidate pack holding the only copy of a live blob stays
    candidates = {p for rec in ripe for p in rec.data.get("packs", ())}
    doomed_packs = set(candidates)
    locations: dict[bytes, list[str]] = {}
    for pid, pack in state.packs.items():
        for e in pack.entries:
            if e.id in live.blobs:
                locations.setdefault(e.id, []).append(pid)
    for locs in locations.values():
        if all(p in doomed_packs for p in locs):
            for p in locs:
                if p in doomed_packs:
                    doomed_packs.discard(p)
                    stats["packs_rescued"] += 1
    present = {i.key.rsplit("/", 1)[-1]: i.size for i in store.list("data/")}
    # ... and so does an unindexed one that may hold a live blob the index lacks
    held = _unindexed_to_keep(run, live, {p: n for p, n in present.items() if p not in state.packs})
    for p in held & doomed_packs:
        doomed_packs.discard(p)
        stats["packs_rescued"] += 1
    dropped = set(doomed_packs)  # leave the index, whether or not still stored
    doomed_packs &= set(present)
    # e. new index with supersedes: every pack still here, from every index file listed now
    keep = [p for pid, p in state.packs.items() if pid not in dropped]
    compact = bool(dropped & set(state.packs)) or bool(doomed_packs)
    compact = compact or len(state.all_ids) > COMPACT_WHEN_MORE_INDEX_FILES
    if compact and not opts.dry_run:
        new_ids = []
        for i in range(0, max(len(keep), 1), PACKS_PER_INDEX_FILE):
            new_ids.append(repo.save_index_file(keep[i : i + PACKS_PER_INDEX_FILE], supersedes=state.all_ids))
        stats["index_files_written"] = len(new_ids)
    # f. the packs, then g. the old index files, then h. the candidate records
    pack_keys = [pack_key(p) for p in sorted(doomed_packs)]
    old_index = [f"index/{i}" for i in state.all_ids] if compact else []
    run.log_deletions(pack_keys + old_index + [r.key for r in ripe], "sweep")
    run.delete_keys(pack_keys)
    stats["packs_deleted"] = len(pack_keys)
    stats["bytes_freed"] = sum(present[p] for p in doomed_packs)
    run.delete_keys(old_index)
    stats["index_files_deleted"] = len(old_index)
    run.delete_keys([r.key for r in ripe])
    run.log(
        f"swept {len(ripe)} candidate record(s): deleted {stats['packs_deleted']} pack(s)"
        f" ({stats['bytes_freed']} bytes), kept {stats['packs_rescued']} still in use,"
        f" {stats['snapshots_deleted']} uncommitted snapshot(s)" + (" (dry run)" if opts.dry_run else "")
    )


# --------------------------------------------------------------------------------------------------
# 3. mark


def mark(run: _Run, pending: list[Record], now: datetime) -> Record | None:
    repo, store, opts = run.repo, run.store, run.opts
    stats = run.report.mark
    grace = opts.grace
    # records before the index (see sweep); a pack a running copy stored since may be marked: that copy
    # either commits within the grace period (the sweep then keeps the pack) or refuses to commit
    committed = repo.record_groups("backups")
    snap_records = repo.list_records("snapshots")
    state = IndexState.load(repo)
    repo.load_index()
    pending_packs = {p for r in pending for p in r.data.get("packs", ())}
    pending_snaps = {e.get("id") for r in pending for e in r.data.get("snapshots", ())}
    pending_runs = {g for r in pending for g in r.data.get("runs", ())}

    garbage: list[Record] = []
    live_snaps: list[Snapshot] = misnamed_snapshots(run)
    for rec in snap_records:
        bid = rec.data.get("backup_id")
        if rec.id in pending_snaps:
            continue
        old = rec.modified is not None and rec.modified < now - grace
        if bid and repo.key_group(bid) not in committed and old:
            garbage.append(rec)
        else:
            live_snaps.append(Snapshot(rec.id, rec.data))
    # run records of backups never committed, untouched for the grace period
    newest_run: dict[str, datetime] = {}
    for info in store.list("runs/"):
        parts = info.key.split("/")
        if len(parts) == 3 and info.last_modified is not None:
            g = parts[1]
            newest_run[g] = max(newest_run.get(g, info.last_modified), info.last_modified)
    dead_runs = sorted(
        g for g, t in newest_run.items() if g not in committed and g not in pending_runs and t < now - grace
    )

    live = Liveness(repo)
    live.add(live_snaps)
    run.report.warnings.extend(live.missing)

    # the location of each live blob: the first copy not already on its way out
    used: dict[str, int] = {}
    primary: dict[bytes, str] = {}
    for pid, pack in state.packs.items():
        if pid in pending_packs:
            continue
        for e in pack.entries:
            if e.id in live.blobs and e.id not in primary:
                primary[e.id] = pid
                used[pid] = used.get(pid, 0) + e.length
    listing = {i.key.rsplit("/", 1)[-1]: i for i in store.list("data/")}
    unused: list[str] = []
    repack: list[str] = []
    for pid, pack in state.packs.items():
        if pid in pending_packs:
            continue
        u = used.get(pid, 0)
        if u == 0:
            unused.append(pid)  # also when already gone from the store: it leaves the index at the sweep
            continue
        blob_bytes = sum(e.length for e in pack.entries)  # (a pack's own overhead is not "unused")
        if (
            pid in listing
            and opts.repack_unused is not None
            and blob_bytes
            and 1 - u / blob_bytes > opts.repack_unused
        ):
            repack.append(pid)
    missing = [pid for pid in state.packs if pid not in listing and pid in used]
    for pid in missing[:20]:
        run.report.warnings.append(f"pack {pid} is named by the index and used, but missing")
    # an unindexed pack may hold the only copy of a live blob the index lacks: then its header decides
    held = _unindexed_to_keep(run, live, {p: i.size for p, i in listing.items() if p not in state.packs})
    orphans = [
        pid
        for pid, info in listing.items()
        if pid not in state.packs
        and pid not in pending_packs
        and pid not in held
        and info.last_modified is not None
        and info.last_modified < now - grace
    ]
    repacked_blobs = 0
    repacked_bytes = 0
    if repack and not opts.dry_run:
        repacked, repacked_blobs, repacked_bytes = _repack(run, repack, primary, pending_packs | set(unused))
        repack = repacked
    stats.update(
        packs_unused=len(unused),
        packs_unindexed=len(orphans),
        packs_repacked=len(repack),
        blobs_repacked=repacked_blobs,
        bytes_repacked=repacked_bytes,
        bytes_to_free=sum(listing[p].size for p in unused + orphans + repack if p in listing),
        snapshots_uncommitted=len(garbage),
        runs_uncommitted=len(dead_runs),
        live_blobs=len(live.blobs),
        packs=len(state.packs),
        index_files=len(state.live_ids),
    )
    packs = sorted(set(unused) | set(orphans) | set(repack))
    if not packs and not garbage and not dead_runs:
        return None
    data = {
        "type": CANDIDATES,
        "version": 1,
        "time": iso(now),
        "prune": run.run_id,
        "grace_s": grace.total_seconds(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "packs": packs,
        "snapshots": [{"id": r.id, "backup_id": r.data.get("backup_id")} for r in garbage],
        "runs": dead_runs,
    }
    if opts.dry_run:
        return Record(PRUNE_KIND, "(dry run)", data, None, now)
    rid = repo.save_record(PRUNE_KIND, data)
    info = store.stat(f"{PRUNE_KIND}/{rid}")
    run.log(
        f"marked {len(packs)} pack(s) ({stats['bytes_to_free']} bytes) and {len(garbage)} uncommitted"
        f" snapshot(s) as deletion candidates; swept after {iso((info.last_modified if info else now) + grace)}"
    )
    return Record(PRUNE_KIND, rid, data, None, info.last_modified if info else now)


def _repack(
    run: _Run, sources: list[str], primary: dict[bytes, str], also_excluded: set[str]
) -> tuple[list[str], int, int]:
    """Write the live blobs of ``sources`` into new packs (and an index file naming them) so the sources
    can become candidates. Returns the sources done, blobs and bytes rewritten."""
    repo = run.repo
    repo.load_index(exclude_packs=set(sources) | also_excluded)  # so the sink does not dedup against them
    sink = BlobSink(repo, None, workers=1, uploaders=2)
    done: list[str] = []
    blobs = 0
    nbytes = 0
    try:
        for pid in sources:
            try:
                data = repo.read_pack(pid)
                salt, entries = read_pack_entries(repo.keys, data, f"pack {pid}")
                view = memoryview(data)
                plains = [
                    (
                        e.type,
                        repo.decode_blob(
                            e.id,
                            e.type,
                            salt,
                            view[e.offset : e.offset + e.length],
                            e.raw_length,
                            f"blob {e.id.hex()} in pack {pid}",
                        ),
                    )
                    for e in entries
                    if primary.get(e.id) == pid
                ]
            except Exception as err:
                run.report.warnings.append(f"pack {pid}: not repacked ({err})")
                continue
            for blob_type, plain in plains:
                sink.save_blob(blob_type, plain)
                blobs += 1
                nbytes += len(plain)
            done.append(pid)
        sink.finish()
    except BaseException:
        sink.close_on_error()
        raise
    finally:
        repo.load_index()
    return done, blobs, nbytes


def misnamed_snapshots(run: _Run) -> list[Snapshot]:
    """Snapshot records stored under a wrong name (renamed or swapped) still hold their authentic
    content, and ``repair records`` can put them back: what they reference is live. A snapshot record
    that cannot be read at all leaves liveness unknown, and nothing may be deleted then
    (DamagedRecordError naming it)."""
    damaged = run.repo.damaged_records("snapshots")
    unreadable = [d for d in damaged if d.data is None]
    if unreadable:
        raise DamagedRecordError(
            f"prune: {describe_damage(unreadable, 'snapshot')}, so what it references is unknown and"
            f" nothing is deleted; {repair_hint(run.repo.url)}, then prune again",
            [d.key for d in unreadable],
        )
    return [Snapshot(d.true_id or d.id, d.data) for d in damaged if d.data is not None]
