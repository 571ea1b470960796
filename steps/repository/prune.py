"""Prune: forget restore points outside the retention rules, then free what nothing references — without
a lock, while backups keep running (the engine behind ``prune`` and ``forget``).

Provides :func:`prune` (:class:`PruneOptions` in, :class:`PruneReport` out) and :func:`forget`. One run:

1. **forget** - committed backup records (a whole application's restore point) and plain snapshots
   outside the rules (:mod:`.retention`) are removed: backup record first (the restore point is gone),
   then its snapshot records, then its run records.
2. **sweep** the deletion candidates an earlier run marked, once their grace period has passed in the
   object store's clock: snapshot records still uncommitted are deleted (and restored if their backup
   was committed meanwhile); liveness is computed afresh from every snapshot record now present, and a
   candidate pack holding the only copy of a live blob is kept; then a new index with ``supersedes``
   (compaction) → delete the packs → delete the old index files → delete the candidate records.
3. **mark** new candidates: packs no snapshot uses, unindexed packs older than the grace period (when
   live blobs are missing from the index, only those whose header shows they hold none of them; prune
   stops when some are in no readable pack), packs whose unused share is above the repack threshold
   (their live blobs are first written to new packs and indexed), and snapshot records of backups
   never committed within the grace period. They
   go into a ``prune`` record of type ``candidates``; writers that start later do not deduplicate
   against those packs (:meth:`~.repo.Repository.begin_write`), and writers that started earlier refuse
   to commit once the grace period has passed (:meth:`~.repo.Repository.check_commit`).
4. **locks** - with Object Lock, the retention of every object kept backups need is extended.
5. **versions** - on a versioned bucket, old versions of objects prune deleted are deleted once their
   retention expired; versions still held are reported, and objects deleted by anyone else are reported
   (and kept: ``restore --as-of`` needs them).

Every step leaves a valid repository when killed: nothing a snapshot record references is deleted, and
index files are replaced only through ``supersedes``. See docs/design.md, "Prune".
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from steps.drivers.objectstore import ObjectLock, ObjectNotFound
from steps.errors import DamagedRecordError, IntegrityError, UsageError

from .damage import describe_damage, repair_hint
from .index import IndexPack
from .lease import PruneLease
from .lock import extend_locks, purge_versions, version_map
from .pack import pack_key, read_pack_entries
from .pipeline import BlobSink
from .records import Record, Snapshot
from .repo import Repository
from .retention import Decision, Rules, apply_rules, damage_in_scope, restore_points, timezone
from .tree import decode_tree
from .writer import CANDIDATES, CLOCK_SLACK, DELETED, DELETION_LOG_KIND, PRUNE_KIND, SETTINGS

DEFAULT_GRACE = timedelta(hours=24)
MIN_GRACE = timedelta(seconds=5)  # above twice the clock slack, or every copy would refuse to commit
DEFAULT_REPACK_UNUSED = 0.3
PACKS_PER_INDEX_FILE = 2000
COMPACT_WHEN_MORE_INDEX_FILES = 32
DELETE_PARALLEL = 16


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class PruneOptions:
    rules: Rules | None = None  # None: forget nothing by rule
    timezone: str = "UTC"
    filters: dict[str, str] = field(default_factory=dict)  # cluster, namespace, app, policy
    forget_backups: list[str] = field(default_factory=list)  # explicit backup IDs to forget
    forget_snapshots: list[str] = field(default_factory=list)  # explicit plain snapshot IDs
    grace: timedelta = DEFAULT_GRACE
    repack_unused: float | None = DEFAULT_REPACK_UNUSED  # None: never repack
    gc: bool = True  # False: forget only (the ``forget`` step)
    dry_run: bool = False
    lock: ObjectLock | None = None  # extend locks of what kept backups need
    wait: bool = False  # wait out the grace period and sweep this run's own candidates


@dataclass
class PruneReport:
    dry_run: bool
    server_time: str = ""
    rules: str = ""
    decisions: list[Decision] = field(default_factory=list)
    forgotten_backups: list[str] = field(default_factory=list)
    forgotten_snapshots: list[str] = field(default_factory=list)
    sweep: dict = field(default_factory=dict)
    mark: dict = field(default_factory=dict)
    pending: list[dict] = field(default_factory=list)
    locks: dict | None = None
    versions: dict | None = None
    warnings: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    def to_dict(self) -> dict:
        return {
            "dry_run": self.dry_run,
            "server_time": self.server_time,
            "rules": self.rules,
            "decisions": [d.to_dict() for d in self.decisions],
            "kept": sum(1 for d in self.decisions if d.keep),
            "forgotten_backups": self.forgotten_backups,
            "forgotten_snapshots": self.forgotten_snapshots,
            "sweep": self.sweep,
            "mark": self.mark,
            "pending": self.pending,
            "locks": self.locks,
            "versions": self.versions,
            "warnings": self.warnings[:200],
            "duration_s": round(self.duration_s, 3),
        }


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


class _Run:
    """State of one prune run."""

    def __init__(self, repo: Repository, opts: PruneOptions, report: PruneReport, log: Callable[[str], None]):
        self.repo = repo
        self.store = repo.store
        self.opts = opts
        self.report = report
        self.log = log
        self.versioned = self.store.versioning_enabled()
        self.run_id = uuid.uuid4().hex[:12]
        self.lease: PruneLease | None = None  # held by a run that deletes (see .lease)

    def check_lease(self) -> None:
        if self.lease is not None:
            self.lease.check()

    # -- deleting, with a log for the version purge --------------------------------------------
    def log_deletions(self, keys: list[str], why: str) -> None:
        if not self.opts.dry_run:
            self.repo.note_deletions(keys, why, self.run_id)

    def delete_keys(self, keys: list[str]) -> None:
        if self.opts.dry_run or not keys:
            return
        self.check_lease()
        with ThreadPoolExecutor(max_workers=min(DELETE_PARALLEL, len(keys))) as pool:
            list(pool.map(self.store.delete, keys))


# --------------------------------------------------------------------------------------------------
# 1. forget


def _forget(run: _Run, snapshots: list[Record], backups: list[Record]) -> None:
    repo, opts, report = run.repo, run.opts, run.report
    if opts.rules is not None:
        # Rules count restore points; one that cannot be counted (a damaged record, a backup naming a
        # snapshot that is gone) would make them keep the wrong ones: refuse, naming it. Forgetting by
        # name (--backup-id / --snapshot) goes on: it chooses nothing.
        blocked = damage_in_scope(
            backups,
            snapshots,
            repo.damaged_records("backups"),
            repo.damaged_records("snapshots"),
            opts.filters,
            # listed after the backup records: a backup committed meanwhile names snapshots listed here
            present={i.key.rsplit("/", 1)[-1] for i in run.store.list("snapshots/")},
        )
        if blocked:
            reason = blocked[0][0]
            more = f" (and {len(blocked) - 1} more problem(s))" if len(blocked) > 1 else ""
            raise DamagedRecordError(
                f"retention: the rules are not applied around damage: {reason}{more}; {repair_hint(repo.url)},"
                " or forget by name with --backup-id / --snapshot",
                [k for _, ks in blocked for k in ks],
            )
    points = restore_points(backups, snapshots, opts.filters, key_of=lambda r: r.key)
    to_forget_backups: list[str] = []
    to_forget_snapshots: list[str] = []
    if opts.rules is not None:
        report.decisions = apply_rules(points.points, opts.rules, timezone(opts.timezone))
        for d in report.decisions:
            if d.keep:
                continue
            (to_forget_backups if d.point.kind == "backup" else to_forget_snapshots).append(d.point.id)
    known_backups = set(points.backup_records) | set(points.backup_snapshots)
    groups = repo.record_groups("backups") | repo.record_groups("runs")
    for bid in opts.forget_backups:
        if bid not in known_backups and repo.key_group(bid) not in groups:
            raise UsageError(f"--backup-id: no backup {bid!r} in {repo.url}")
        if bid not in to_forget_backups:
            to_forget_backups.append(bid)
    plain = {s.id: s for s in snapshots if not s.data.get("backup_id")}
    for ref in opts.forget_snapshots:
        found = [sid for sid in plain if sid.startswith(ref)] if len(ref) >= 4 else []
        if len(found) != 1:
            raise UsageError(
                f"--snapshot: expected the ID (or a unique prefix) of a snapshot that belongs to no backup,"
                f" got {ref!r} ({len(found)} match; forget a backup's snapshots with --backup-id)"
            )
        if found[0] not in to_forget_snapshots:
            to_forget_snapshots.append(found[0])
    report.forgotten_backups = to_forget_backups
    report.forgotten_snapshots = to_forget_snapshots
    if not to_forget_backups and not to_forget_snapshots:
        return
    record_keys: list[str] = []
    snap_keys: list[str] = []
    run_keys: list[str] = []
    for bid in to_forget_backups:
        # every object in the backup's group, a damaged record as well (forgetting by name is one way
        # to remove a backup record that no longer opens)
        listed = [i.key for i in run.store.list(f"backups/{repo.key_group(bid)}/")]
        record_keys += list(dict.fromkeys(points.backup_records.get(bid, []) + listed))
        snap_keys += [f"snapshots/{sid}" for sid in points.backup_snapshots.get(bid, [])]
        run_keys += [i.key for i in run.store.list(f"runs/{repo.key_group(bid)}/")]
    snap_keys += [f"snapshots/{sid}" for sid in to_forget_snapshots]
    run.log_deletions(record_keys + snap_keys + run_keys, "forget")
    # the restore point goes first, so a prune killed here leaves uncommitted snapshots (garbage), never
    # a backup record naming a missing snapshot
    run.delete_keys(record_keys)
    run.delete_keys(snap_keys)
    run.delete_keys(run_keys)
    run.log(
        f"forgot {len(to_forget_backups)} backup(s) and {len(to_forget_snapshots)} snapshot(s)"
        + (" (dry run)" if opts.dry_run else "")
    )


# --------------------------------------------------------------------------------------------------
# 2. sweep


def _sweep(run: _Run, ripe: list[Record]) -> None:
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
    snapshots = repo.list_snapshots() + _misnamed_snapshots(run)
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


def _mark(run: _Run, pending: list[Record], now: datetime) -> Record | None:
    repo, store, opts = run.repo, run.store, run.opts
    stats = run.report.mark
    grace = opts.grace
    # records before the index (see _sweep); a pack a running copy stored since may be marked: that copy
    # either commits within the grace period (the sweep then keeps the pack) or refuses to commit
    committed = repo.record_groups("backups")
    snap_records = repo.list_records("snapshots")
    state = IndexState.load(repo)
    repo.load_index()
    pending_packs = {p for r in pending for p in r.data.get("packs", ())}
    pending_snaps = {e.get("id") for r in pending for e in r.data.get("snapshots", ())}
    pending_runs = {g for r in pending for g in r.data.get("runs", ())}

    garbage: list[Record] = []
    live_snaps: list[Snapshot] = _misnamed_snapshots(run)
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


# --------------------------------------------------------------------------------------------------
# 4./5. locks and versions


def _live_keys(run: _Run, excluded_packs: set[str]) -> list[str]:
    store = run.store
    keys = ["config"]
    for prefix in ("keys/", "index/", "snapshots/", "backups/", "runs/"):
        keys += [i.key for i in store.list(prefix)]
    keys += [i.key for i in store.list("data/") if i.key.rsplit("/", 1)[-1] not in excluded_packs]
    return keys


def _versions(run: _Run, now: datetime) -> None:
    repo, store = run.repo, run.store
    logs = [r for r in repo.list_records(DELETION_LOG_KIND) if r.data.get("type") == DELETED]
    ours = {k for r in logs for k in r.data.get("keys", ())}
    versions = version_map(store)
    report = purge_versions(store, versions, ours, now, dry_run=run.opts.dry_run)
    # a log whose keys have no version left has done its job
    finished = [
        r.key for r in logs if all(k in report.done_keys or k not in versions for k in r.data.get("keys", ()))
    ]
    if finished and not run.opts.dry_run:
        run.delete_keys(finished)
    run.report.versions = report.to_dict()
    if report.tampered:
        run.report.warnings.append(
            f"{len(report.tampered)} object(s) were deleted by someone other than prune (their old versions are"
            f" kept; restore --as-of reads them), e.g. {', '.join(report.tampered[:5])}"
        )


# --------------------------------------------------------------------------------------------------


def prune(
    repo: Repository,
    opts: PruneOptions,
    log: Callable[[str], None] = lambda _m: None,
    sleep: Callable[[float], None] = time.sleep,
) -> PruneReport:
    t0 = time.monotonic()
    if opts.rules is not None and opts.rules.empty and not (opts.forget_backups or opts.forget_snapshots):
        raise UsageError(
            "--keep-*: expected at least one retention rule (e.g. --keep-last 7); without one every backup"
            " would be forgotten"
        )
    if opts.grace < timedelta(0) or timedelta(0) < opts.grace < MIN_GRACE:
        raise UsageError(
            f"--grace: expected 0 (no backup runs meanwhile) or at least {MIN_GRACE.total_seconds():.0f} s,"
            f" got {opts.grace.total_seconds():g} s"
        )
    if opts.repack_unused is not None and not 0 <= opts.repack_unused <= 1:
        raise UsageError(f"--repack-unused: expected a share between 0 and 1, got {opts.repack_unused}")
    report = PruneReport(dry_run=opts.dry_run, rules=opts.rules.describe() if opts.rules else "")
    run = _Run(repo, opts, report, log)
    if opts.gc and not opts.dry_run:  # one deleting prune per repository at a time
        run.lease = PruneLease(repo, run.run_id, sleep).acquire()
    try:
        return _prune(run, sleep, t0)
    finally:
        if run.lease is not None:
            run.lease.release()


def _prune(run: _Run, sleep: Callable[[float], None], t0: float) -> PruneReport:
    repo, opts, report, log = run.repo, run.opts, run.report, run.log
    repo.warnings.clear()
    now = repo.store.server_time()
    report.server_time = iso(now)

    # 1. forget
    snapshots = repo.list_records("snapshots")
    backups = repo.list_records("backups")
    _forget(run, snapshots, backups)

    if opts.gc:
        # writers learn the grace period from here before anything is marked (and refuse to commit
        # once they have run that long); one record per value ever used, never deleted
        _record_grace(run)
        # 2. sweep what is ripe
        pending = repo.prune_candidates()
        ripe = [
            r for r in pending if r.modified is not None and r.modified + _grace_of(r) + CLOCK_SLACK <= now
        ]
        if ripe:
            _sweep(run, ripe)
        pending = [r for r in pending if r not in ripe]
        # 3. mark
        # (a dry run swept nothing: what it would sweep is not marked again)
        marked = _mark(run, pending + (ripe if opts.dry_run else []), repo.store.server_time())
        if marked is not None and opts.wait and not opts.dry_run:
            due = marked.modified + opts.grace + CLOCK_SLACK
            while True:
                now = repo.store.server_time()
                if now >= due:
                    break
                log(f"waiting {(due - now).total_seconds():.0f} s for the grace period")
                sleep(min(60.0, max(0.2, (due - now).total_seconds())))
            fresh = [r for r in repo.prune_candidates() if r.id == marked.id]
            if fresh:
                _sweep(run, fresh)
            marked = None
        _record_grace(run, final=True)
        pending = repo.prune_candidates() if not opts.dry_run else pending + ([marked] if marked else [])
        report.pending = [
            {
                "record": r.id,
                "packs": len(r.data.get("packs", ())),
                "snapshots": len(r.data.get("snapshots", ())),
                "sweep_after": iso(r.modified + _grace_of(r)) if r.modified else None,
            }
            for r in pending
        ]
        excluded = {p for r in pending for p in r.data.get("packs", ())}
    else:
        excluded = {p for r in repo.prune_candidates() for p in r.data.get("packs", ())}

    now = repo.store.server_time()
    if opts.lock is not None:
        if not repo.store.versioning_enabled():
            report.warnings.append("--lock-*: the bucket has no versioning/Object Lock; no lock extended")
        else:
            report.locks = extend_locks(
                repo.store, _live_keys(run, excluded), opts.lock, now, dry_run=opts.dry_run
            ).to_dict()
    if opts.gc and run.versioned:
        _versions(run, now)
    report.warnings.extend(repo.warnings)
    report.duration_s = time.monotonic() - t0
    return report


def _misnamed_snapshots(run: _Run) -> list[Snapshot]:
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


def _record_grace(run: _Run, final: bool = False) -> None:
    """Tell writers the grace period (``settings`` records; they refuse to commit once they have run
    that long). Before marking: make sure a record of this grace exists. After marking (``final``):
    write a fresh one, so that its time is after every mark of this run, and drop records writers no
    longer need: older ones of this grace, longer ones (the shortest applies), and shorter ones whose
    last run is more than this grace ago (a writer older than that refuses under this grace anyway)."""
    grace = run.opts.grace
    if run.opts.dry_run or grace <= timedelta(0):
        return
    grace_s = grace.total_seconds()
    known = [r for r in run.repo.list_records(PRUNE_KIND) if r.data.get("type") == SETTINGS]
    same = [r for r in known if float(r.data.get("grace_s", -1)) == grace_s]
    if same and not final:
        return
    rid = run.repo.save_record(
        PRUNE_KIND, {"type": SETTINGS, "version": 1, "time": iso(datetime.now(UTC)), "grace_s": grace_s}
    )
    if not final:
        return
    now = run.store.server_time()
    obsolete = []
    for r in known:
        g = float(r.data.get("grace_s", 0))
        if r.id == rid:
            continue
        if g >= grace_s or (r.modified is not None and r.modified + grace + CLOCK_SLACK < now):
            obsolete.append(r.key)
        else:
            run.report.warnings.append(
                f"copies refuse to commit after {g:.0f} s until {iso(r.modified + grace)} (a prune used that"
                " shorter grace period)"
            )
    run.log_deletions(obsolete, "settings")
    run.delete_keys(obsolete)


def _grace_of(rec: Record) -> timedelta:
    return timedelta(seconds=float(rec.data.get("grace_s", DEFAULT_GRACE.total_seconds())))


def forget(repo: Repository, opts: PruneOptions, log: Callable[[str], None] = lambda _m: None) -> PruneReport:
    """Only step 1 of :func:`prune`: forget restore points; their data is freed by a later prune."""
    opts.gc = False
    opts.lock = None
    return prune(repo, opts, log)


__all__ = ["DEFAULT_GRACE", "IndexState", "Liveness", "PruneOptions", "PruneReport", "forget", "prune"]
