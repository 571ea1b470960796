"""The anomaly check at a backup's commit, and the lock it may put on the last known-good backup.

Provides :func:`assess` (adds ``changes`` and ``anomaly`` to a backup record about to be committed,
from its snapshots' change telemetry and the app's committed history) and :func:`lock_last_good`
(extends the Object Lock retention of every object the newest unflagged committed backup of the app
needs), and :func:`lock_audit` (what finalize records of that lock in the audit trail). Called by
:func:`.records.commit_backup` and ``finalize``; the detector itself is the pure :mod:`.anomaly`.

An anomaly is a warning, never a failure: the backup is committed all the same. Its data may be
legitimate (a migration, a bulk import, a re-encryption the owner meant), and refusing it would only
lose the newest state; what an attack threatens is the older, good backups, which retention would
forget in time and a writer with the backup credentials could try to delete, so those are what a
flagged backup protects (``lock_last_good``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from . import anomaly

if TYPE_CHECKING:
    from .records import Record, Snapshot
    from .repo import Repository


def assess(
    repo: Repository,
    record: dict,
    snapshots: list[Snapshot],
    log: Callable[[str], None],
    lock_last_good_days: float | None = None,
) -> None:
    """Add ``changes`` (summed over the backup's volume or source snapshots) and ``anomaly`` to
    ``record`` (which has its ``time``). Backups whose snapshots carry no telemetry get neither. A
    failure to read the history costs only the check (logged, nothing flagged). When the backup is
    flagged and ``lock_last_good_days`` is given, the last good backup is locked that long
    (:func:`lock_last_good`) and ``anomaly.lockedLastGood`` says so."""
    by_id = {s.id: s for s in snapshots}
    ids = [v.get("snapshot") for v in record.get("volumes") or () if isinstance(v, dict)]
    ids += list(record.get("snapshots") or ())
    telemetry = [by_id[i].data.get("changes") for i in dict.fromkeys(ids) if i in by_id]
    try:  # the commit must not depend on the telemetry or the history (untrusted records)
        changes = anomaly.backup_changes(telemetry)
        if changes is None:
            return
        record["changes"] = changes
        history = anomaly.baseline(
            (r.data for r in repo.list_records("backups")), record.get("app") or {}, record["time"]
        )
        found = anomaly.detect(changes, history)
    except Exception as err:
        record["anomaly"] = {"flagged": False, "score": 0.0, "reasons": [], "baseline": 0}
        log(f"finalize: no anomaly check, the change history could not be used ({type(err).__name__}: {err})")
        return
    record["anomaly"] = found
    if found["flagged"]:
        log(
            f"finalize: WARNING backup {record.get('backup_id')} changed unusually much "
            f"({'; '.join(found['reasons'])}); it is committed, and its predecessors are the ones to keep"
        )
        if lock_last_good_days:
            try:
                found["lockedLastGood"] = lock_last_good(repo, record, lock_last_good_days, log)
            except Exception as err:  # a warning still: the commit goes on
                found["lockedLastGood"] = {"backupId": None, "until": None, "error": str(err)[:300]}
                log(f"finalize: could not lock the last good backup ({err})")


def last_good(repo: Repository, record: dict) -> Record | None:
    """The newest committed backup of the same app older than ``record``, that was not flagged."""
    app = record.get("app") or {}
    key = tuple(app.get(k) for k in ("cluster", "namespace", "name"))
    best = None
    for r in repo.list_records("backups"):
        d = r.data
        other = d.get("app") if isinstance(d.get("app"), dict) else {}
        t = d.get("time")
        if tuple(other.get(k) for k in ("cluster", "namespace", "name")) != key or not isinstance(t, str):
            continue
        flagged = isinstance(d.get("anomaly"), dict) and d["anomaly"].get("flagged") is True
        if flagged or t >= str(record.get("time", "")) or d.get("backup_id") == record.get("backup_id"):
            continue
        if best is None or t > best.data["time"]:
            best = r
    return best


def objects_of(repo: Repository, good: Record) -> list[str]:
    """Every object key a restore of the backup ``good`` reads: its record, its snapshot records, the
    packs holding its trees and file contents, the index files, the key files and the config."""
    from .pack import pack_key
    from .records import referenced_snapshots
    from .tree import decode_tree

    keys = ["config", good.key]
    keys += [i.key for i in repo.store.list("keys/")]
    keys += [i.key for i in repo.store.list("index/")]
    index = repo.index
    packs: set[str] = set()
    seen: set[bytes] = set()
    for sid in sorted(referenced_snapshots(good.data)):
        keys.append(f"snapshots/{sid}")
        snap = repo.find_snapshot(sid)
        stack = [snap.data.get("tree")]
        while stack:
            tree_hex = stack.pop()
            if not isinstance(tree_hex, str):
                continue
            tid = bytes.fromhex(tree_hex)
            if tid in seen:
                continue
            seen.add(tid)
            loc = index.get(tid)
            if loc is not None:
                packs.add(loc.pack_id)
            for node in decode_tree(repo.read_blob(tid), tree_hex):
                if node.get("type") == "dir":
                    stack.append(node.get("subtree"))
                elif node.get("type") == "file":
                    for hexid in node.get("content") or ():
                        loc = index.get(bytes.fromhex(hexid))
                        if loc is not None:
                            packs.add(loc.pack_id)
    return keys + [pack_key(p) for p in sorted(packs)]


def lock_last_good(repo: Repository, record: dict, days: float, log: Callable[[str], None]) -> dict:
    """Keep the newest unflagged backup of the app locked (S3 Object Lock) for ``days`` from now: the
    retention of each object it needs is extended (never shortened; a compliance lock stays one).
    Returns what was done, for the record: ``{backupId, until, extended, held, failed}``."""
    from steps.drivers.objectstore import ObjectLock

    from .object_lock import extend_locks

    good = last_good(repo, record)
    if good is None:
        log("finalize: no earlier unflagged backup of the app to lock")
        return {"backupId": None, "until": None, "extended": 0, "held": 0, "failed": []}
    if not repo.store.versioning_enabled():
        log(
            f"finalize: {repo.url} has no versioning/Object Lock; backup {good.data.get('backup_id')} not locked"
        )
        return {"backupId": good.data.get("backup_id"), "until": None, "extended": 0, "held": 0, "failed": []}
    keys = objects_of(repo, good)
    try:
        now = repo.store.server_time()
    except Exception:
        now = datetime.now(UTC)
    report = extend_locks(repo.store, keys, ObjectLock("governance", days), now, workers=8)
    out = {
        "backupId": good.data.get("backup_id"),
        "until": report.until,
        "extended": report.extended,
        "held": report.held,
        "failed": report.failed[:20],
    }
    log(
        f"finalize: backup {out['backupId']} (the last one not flagged) is locked until {report.until}:"
        f" {report.extended} object(s) extended, {report.held} already held, {len(report.failed)} failed"
    )
    return out


def lock_audit(record: dict) -> tuple[dict, str] | None:
    """The audit record's ``what`` and result of the lock a committed, flagged backup ``record`` put on
    the last good backup (``anomaly.lockedLastGood``); None when nothing was locked or tried: no lock
    asked for, no earlier unflagged backup, or a repository without Object Lock. ``partial`` when some
    objects could not be locked, ``failed`` when the lock could not be put at all."""
    found = record.get("anomaly") if isinstance(record.get("anomaly"), dict) else {}
    locked = found.get("lockedLastGood")
    if not isinstance(locked, dict):
        return None
    what = {
        "reason": "anomaly",
        "flagged_backup": record.get("backup_id"),
        "backup_id": locked.get("backupId"),
        "until": locked.get("until"),
        "extended": locked.get("extended", 0),
        "held": locked.get("held", 0),
        "failed": list(locked.get("failed") or [])[:20],
        "reasons": list(found.get("reasons") or [])[:5],
    }
    if locked.get("error"):
        what["error"] = locked["error"]
        return what, "failed"
    if not locked.get("backupId") or not locked.get("until"):
        return None  # no earlier unflagged backup, or no Object Lock on the repository: nothing locked
    return what, "partial" if what["failed"] else "ok"
