"""Verify and check (the engines behind ``verify`` and ``check``).

Provides :func:`verify` (structure of the chosen snapshots, and a share of the packs they reference read
back; with a backup ID every pack that backup wrote) and :func:`check_repository` (the scheduled
``check``): every index file, record and snapshot of the repository, a share of *all* packs read back in a
keyed rotation that resumes where the previous check stopped (state in a ``check`` record), tampering on
versioned buckets, and an optional restore test. Damaged records (``Repository.scan_records``) are
problems named by their key. Both walk and read back through :mod:`.inspection`, which also settles what
a prune running meanwhile explains. ``repair index`` is :mod:`.repair_index`.
Called by ``steps.commands.verify`` and ``steps.commands.check``.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field

from steps.drivers.objectstore import ObjectNotFound

from .damage import repair_hint
from .inspection import (
    RECORD_KINDS_CHECKED,
    Inspection,
    damaged_record_problem,
    settle,
)
from .records import Record, Snapshot, referenced_snapshots, utc_now_iso
from .registry_tree import check_registry_digests
from .repo import Repository
from .writer import DELETED, DELETION_LOG_KIND


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
    :func:`~.inspection.settle`), so a snapshot forgotten meanwhile (``vanished``) or a blob moved to another pack is
    no problem, and a blob a snapshot still needs that is nowhere is."""
    t0 = time.monotonic()
    report = VerifyReport(snapshots=[s.id for s in snapshots], read_data_percent=read_data_percent)
    repo.warnings.clear()
    repo.fallbacks.clear()
    if reload_index:
        repo.load_index()
    checker = Inspection(repo, progress)
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
    outcome = settle(repo, checker, repo.load_index, read_replacements=bool(chosen))
    report.problems = list(outcome.problems.values())
    # registry snapshots: each manifest and blob file in a pack read back against the digest naming it
    report.problems += check_registry_digests(repo, snapshots, set(checker.read))
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
    :func:`~.inspection.settle`)."""
    from .object_lock import MAINTENANCE_PREFIXES, iter_deleted_keys, version_map

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
    checker = Inspection(repo, progress)
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
    outcome = settle(repo, checker, reload, read_replacements=bool(chosen))
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
                "time": utc_now_iso(),
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
