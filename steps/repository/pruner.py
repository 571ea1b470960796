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

Steps 2 and 3 (what may be deleted, and when) are :mod:`.garbage`. Every step leaves a valid repository
when killed: nothing a snapshot record references is deleted, and index files are replaced only through
``supersedes``. See docs/design.md, "Prune".
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from steps.drivers.objectstore import ObjectLock
from steps.errors import DamagedRecordError, UsageError

from .damage import repair_hint
from .garbage import iso, mark, sweep
from .lease import PruneLease
from .object_lock import extend_locks, purge_versions, version_map
from .records import Record
from .repo import Repository
from .retention import Decision, Rules, apply_rules, damage_in_scope, restore_points, timezone
from .writer import CLOCK_SLACK, DELETED, DELETION_LOG_KIND, PRUNE_KIND, SETTINGS

DEFAULT_GRACE = timedelta(hours=24)
MIN_GRACE = timedelta(seconds=5)  # above twice the clock slack, or every copy would refuse to commit
DEFAULT_REPACK_UNUSED = 0.3
DELETE_PARALLEL = 16


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
# 4./5. locks and versions


def _live_keys(run: _Run, excluded_packs: set[str]) -> list[str]:
    store = run.store
    keys = ["config"]
    for prefix in ("keys/", "index/", "snapshots/", "backups/", "runs/", "audit/"):
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
            sweep(run, ripe)
        pending = [r for r in pending if r not in ripe]
        # 3. mark
        # (a dry run swept nothing: what it would sweep is not marked again)
        marked = mark(run, pending + (ripe if opts.dry_run else []), repo.store.server_time())
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
                sweep(run, fresh)
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


__all__ = ["DEFAULT_GRACE", "PruneOptions", "PruneReport", "forget", "prune"]
