"""The records' formats and the commit point of a backup.

A record is an encrypted JSON object of a kind (``snapshots/ID``; ``backups/GROUP/ID`` and
``runs/GROUP/ID`` grouped by a MAC of the backup ID), stored and read by :class:`~.repo.Repository`.
This module says what the records of an application's run hold and when a backup is committed; it is
the one place that writes ``backups`` and ``runs`` records for the steps (docs/design.md, "Objects").

Provides :class:`Record` and :class:`Snapshot` (records as read), :func:`referenced_snapshots` (which
snapshots a backup record names), :func:`save_run_record` (a step's record about a backup run:
``consistent-point``, ``verify``, ``restore``, the local runner's ``pipeline``), and the commit point:

* :func:`backup_record` - the commit rule, pure: a backup is committed only when every volume of its
  plan has a snapshot of this backup, the newest ``verify`` run record passed and checked every
  snapshot being committed (so nothing written after the verify is committed unverified), and the
  newest ``consistent-point`` run record says ``app-consistent`` or ``crash-consistent``;
* :func:`damage_in_the_way` - damaged records that may be part of the backup (committing without them
  would choose around damage);
* :func:`commit_backup` - both, then the ``backups`` record, written once (a second call finds it).
  :meth:`~.repo.Repository.save_record` adds prune's side: it refuses snapshots marked as garbage, and
  withdraws the record when a snapshot it names is gone after the write.

Called by ``finalize`` (the exit handler) and the steps that store run records. The backup record::

    {"version": 1, "backup_id": ..., "time": ..., "workflow_status": "Succeeded",
     "app": {"cluster", "namespace", "name", "policy"},
     "volumes": [{"name", "pvc", "path", "role", "block", "target", "snapshot", "files", "bytes",
                  "read": {"method", "bytes_read", "reason"} (block volumes copied by block_copy only)}],
     "manifests": SNAPSHOT_ID | null, "snapshot_driver": ..., "repository": URL,
     "targets": [{"name", "hook", "pgdata"}],
     "consistency": {"verdict", "reasons", "recovery", "freeze_window_ms", "timeline"} | null,
     "verify": {"ok", "read_data_percent", "snapshots", "bytes_read", "time"},
     "audit_heads": [{"id", "seq", "time"}],   # the audit trail's heads the commit saw
     "changes": {"newBytes", "newDataRatio", "newDataCompressibility", "filesAdded", "filesChanged",
                 "filesDeleted", "filesRenamed", "filesTotal", "bytesTotal", "bytesRead"},  # optional
     "anomaly": {"flagged", "score", "reasons", "baseline", "lockedLastGood"}}  # optional (.anomaly_commit)

A source's backup (a plan with ``source``: etcd, registry, bucket) is committed when the newest snapshot
of this backup whose ``tags["kind"]`` is the source's kind was checked by the newest verify, which
passed; there is no consistent point. Its record has ``"source": {"kind", "snapshot", "summary"}``,
``"snapshots": [ID]`` (what keeps the snapshot alive for prune), empty ``volumes`` and ``targets``,
``"manifests": null`` and ``"consistency": null``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from steps.errors import DamagedRecordError

from .damage import DamagedRecord, describe_damage, repair_hint
from .writer import CLOCK_SLACK

if TYPE_CHECKING:
    from steps.plan import Plan

    from .repo import Repository

RECORD_KINDS = ("snapshots", "backups", "runs")
BACKUP_RECORD_VERSION = 1
# the verdicts of a consistent point that make a restore point (an inconsistent copy is none)
COMMITTABLE_VERDICTS = ("app-consistent", "crash-consistent")


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def parse_time(value) -> datetime | None:
    """An ISO 8601 time of a record (``Z`` or an offset; naive means UTC), or None when it is none."""
    if not isinstance(value, str) or not value:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


@dataclass
class Record:
    kind: str
    id: str
    data: dict
    key_group: str | None = None
    modified: datetime | None = None  # Last-Modified in the store's clock

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.key_group}/{self.id}" if self.key_group else f"{self.kind}/{self.id}"


@dataclass
class Snapshot:
    id: str
    data: dict = field(default_factory=dict)

    @property
    def short_id(self) -> str:
        return self.id[:8]

    # A record's fields come from whoever holds the key: a value of the wrong type must neither crash a
    # reader nor make a snapshot look like something it is not (an older time, a plain copy).
    @property
    def time(self) -> str:
        value = self.data.get("time", "")
        return value if isinstance(value, str) else ""

    @property
    def tags(self) -> dict:
        value = self.data.get("tags", {})
        return value if isinstance(value, dict) else {}

    @property
    def backup_id(self) -> str | None:
        value = self.data.get("backup_id")
        if value is None or isinstance(value, str):
            return value
        return f"(malformed backup ID {value!r})"  # belongs to no committed backup


def referenced_snapshots(record: dict) -> set[str]:
    """Snapshot IDs a backup record names: ``volumes[].snapshot``, ``manifests``, ``snapshots[]``."""
    out: set[str] = set()
    for v in record.get("volumes") or ():
        if isinstance(v, dict) and isinstance(v.get("snapshot"), str):
            out.add(v["snapshot"])
    if isinstance(record.get("manifests"), str):
        out.add(record["manifests"])
    for sid in record.get("snapshots") or ():
        if isinstance(sid, str):
            out.add(sid)
    return {s for s in out if re.fullmatch(r"[0-9a-f]{64}", s)}


# -- the commit point ------------------------------------------------------------------------------


def backup_record(
    plan: Plan, backup_id: str, snapshots: list[Snapshot], runs: list[Record]
) -> tuple[dict | None, list[str]]:
    """The commit rule: the backup record to commit (without ``time`` and ``workflow_status``, which
    :func:`commit_backup` adds), or the reasons it must not be. Pure: takes what the repository holds
    (every snapshot record, the backup's run records, oldest first)."""
    if plan.source is not None:
        return _source_backup_record(plan, backup_id, snapshots, runs)
    problems: list[str] = []
    mine = [s for s in snapshots if s.backup_id == backup_id or s.tags.get("backup") == backup_id]
    manifests = [s for s in mine if s.tags.get("kind") == "manifests"]
    data = [s for s in mine if s.tags.get("kind") != "manifests"]
    volumes = []
    for v in plan.volumes:
        # exactly this volume: by name, or by its PVC when it has one (a snapshot naming no volume, or a
        # plan volume without a PVC, must not match everything)
        names = {v.name, v.pvc} - {None, ""}
        found = [s for s in data if s.data.get("volume") in names or s.tags.get("volume") == v.name]
        if not found:
            problems.append(f"volume {v.name}: no snapshot of backup {backup_id} in the repository")
            continue
        snap = max(found, key=lambda s: s.time)
        summary = snap.data.get("summary") or {}
        entry = {
            **v.to_dict(),
            "snapshot": snap.id,
            "files": summary.get("files"),
            "bytes": summary.get("bytes_total"),
        }
        block = snap.data.get("block")
        if isinstance(block, dict):  # a block volume: how it was read (changed-block tracking or in full)
            entry["read"] = {k: block.get(k) for k in ("method", "bytes_read", "reason")}
        volumes.append(entry)
    verify = _passing_verify(backup_id, runs, problems)
    if verify is not None:
        # what is committed must be what the verify checked (not a copy written after it)
        checked = set(verify.get("snapshots") or ())
        committed = [(f"volume {v['name']}", v["snapshot"]) for v in volumes]
        if manifests:
            committed.append(("manifests", max(manifests, key=lambda s: s.time).id))
        for what, sid in committed:
            if sid not in checked:
                problems.append(
                    f"{what}: snapshot {sid[:8]} was not checked by the passing verify of backup {backup_id}"
                )
    cps = [r.data for r in runs if r.data.get("name") == "consistent-point"]
    cp = cps[-1] if cps else None
    if cp is None:
        if plan.targets or plan.volumes:
            problems.append(
                f"backup {backup_id}: no consistent-point run record (the cut of its volumes was never"
                " recorded, so nothing says what the copies are worth)"
            )
    elif cp.get("verdict") not in COMMITTABLE_VERDICTS:
        why = "; ".join(str(r) for r in (cp.get("reasons") or [])[:3])
        problems.append(
            f"backup {backup_id}: its consistent point is {cp.get('verdict')!r}"
            + (f" ({why})" if why else "")
            + ", which is no restore point"
        )
    if problems or verify is None:
        return None, problems
    record = {
        "version": BACKUP_RECORD_VERSION,
        "backup_id": backup_id,
        "app": plan.app.to_dict(),
        "volumes": volumes,
        "manifests": max(manifests, key=lambda s: s.time).id if manifests else None,
        "snapshot_driver": plan.snapshot.driver,
        # where each target's data directory lies inside its volumes (a restore writes backup_label there)
        "targets": [
            {"name": t.name, "hook": t.hook, "pgdata": str(t.params.get("pgdata") or "")}
            for t in plan.targets
        ],
        "consistency": None
        if cp is None
        else {k: cp.get(k) for k in ("verdict", "reasons", "recovery", "freeze_window_ms", "timeline")},
        "verify": {k: verify.get(k) for k in ("ok", "read_data_percent", "snapshots", "bytes_read", "time")},
        "repository": plan.repository.url if plan.repository else None,
    }
    return record, []


def _passing_verify(backup_id: str, runs: list[Record], problems: list[str]) -> dict | None:
    """The newest verify run record of the backup when it passed; else None, with the reason added."""
    verifies = [r for r in runs if r.data.get("name") == "verify"]
    verify = verifies[-1].data if verifies else None
    if verify is None:
        problems.append(f"backup {backup_id}: no verify run record")
        return None
    if not verify.get("ok"):
        problems.append(f"backup {backup_id}: verify failed ({'; '.join(verify.get('problems', [])[:3])})")
        return None
    return verify


def _source_backup_record(
    plan: Plan, backup_id: str, snapshots: list[Snapshot], runs: list[Record]
) -> tuple[dict | None, list[str]]:
    """The commit rule of a source's backup (etcd, registry, bucket): the newest snapshot of this backup
    of the source's kind, checked by the newest verify, which passed. There is no consistent point (no
    app is quiesced): the source step's own snapshot is the cut."""
    assert plan.source is not None
    kind = plan.source.kind
    problems: list[str] = []
    mine = [
        s
        for s in snapshots
        if (s.backup_id == backup_id or s.tags.get("backup") == backup_id) and s.tags.get("kind") == kind
    ]
    snap = max(mine, key=lambda s: s.time) if mine else None
    if snap is None:
        problems.append(f"source {kind}: no snapshot of backup {backup_id} in the repository")
    verify = _passing_verify(backup_id, runs, problems)
    if snap is not None and verify is not None and snap.id not in set(verify.get("snapshots") or ()):
        problems.append(
            f"source {kind}: snapshot {snap.short_id} was not checked by the passing verify of backup {backup_id}"
        )
    if problems or snap is None or verify is None:
        return None, problems
    summary = snap.data.get("summary")
    return {
        "version": BACKUP_RECORD_VERSION,
        "backup_id": backup_id,
        "app": plan.app.to_dict(),
        "source": {
            "kind": kind,
            "snapshot": snap.id,
            "summary": summary if isinstance(summary, dict) else None,
            # the point in time the backup holds (the source step's snapshot), not the commit's
            "time": snap.data.get("time") if isinstance(snap.data.get("time"), str) else None,
        },
        "snapshots": [snap.id],
        "volumes": [],
        "manifests": None,
        "snapshot_driver": None,
        "targets": [],
        "consistency": None,
        "verify": {k: verify.get(k) for k in ("ok", "read_data_percent", "snapshots", "bytes_read", "time")},
        "repository": plan.repository.url if plan.repository else None,
    }, []


def damage_in_the_way(
    repo: Repository, backup_id: str, runs: list[Record], snapshots: list[Snapshot]
) -> list[DamagedRecord]:
    """The damaged records that may be part of this backup, so that committing without them would
    choose around damage: any damaged record in its own ``backups`` or ``runs`` group (the commit
    itself, or the newest verify / consistent-point record), and each damaged snapshot record that is
    this backup's or may be: its intact content says so, the passing verify checked a snapshot of that
    name, or it cannot be read and was stored since this backup's first record (an older one that
    cannot be read belongs to an earlier backup, and the report and ``check`` flag it)."""
    found = list(repo.damaged_records("backups", key=backup_id))
    found += repo.damaged_records("runs", key=backup_id)
    verifies = [r for r in runs if r.data.get("name") == "verify"]
    checked = set(verifies[-1].data.get("snapshots") or ()) if verifies else set()
    mine = [s for s in snapshots if s.backup_id == backup_id or s.tags.get("backup") == backup_id]
    times = [r.modified for r in runs if r.modified is not None]
    first = min(times) if times and len(times) == len(runs) else None
    for d in repo.damaged_records("snapshots"):
        if d.id in checked:  # the name of a snapshot the verify checked: this backup's
            found.append(d)
        elif d.data is not None:
            tags = d.data.get("tags") if isinstance(d.data.get("tags"), dict) else {}
            if d.data.get("backup_id") == backup_id or tags.get("backup") == backup_id:
                found.append(d)
        else:
            unknown = first is None or d.modified is None or not mine
            if unknown or d.modified >= first - CLOCK_SLACK:
                found.append(d)
    return found


def commit_backup(
    repo: Repository,
    plan: Plan,
    backup_id: str,
    log: Callable[[str], None],
    lock_last_good_days: float | None = None,
) -> tuple[str | None, list[str], bool]:
    """Commit the backup: (record ID, problems, already_committed). Writes nothing when there are
    problems (:func:`backup_record`). Refuses (DamagedRecordError naming the object key) when a damaged
    record may be part of this backup. A backup committed before is not committed again. The record
    gets the backup's ``changes`` and ``anomaly`` (:func:`.anomaly_commit.assess`: a warning, never a
    reason not to commit; a flagged backup locks the last good one for ``lock_last_good_days``)."""
    existing = repo.list_records("backups", key=backup_id)
    runs = repo.list_records("runs", key=backup_id)
    snapshots = repo.list_snapshots()
    damaged = damage_in_the_way(repo, backup_id, runs, snapshots)
    if damaged and not existing:
        raise DamagedRecordError(
            f"backup {backup_id} not committed: {describe_damage(damaged, damaged[0].kind.rstrip('s'))},"
            " and it may be part of this backup (its commit, its newest verify or consistent-point record,"
            f" or one of its snapshots), so finalize will not commit around it; {repair_hint(repo.url)}, then run"
            " the backup again",
            [d.key for d in damaged],
        )
    if existing:
        for d in damaged:
            log(f"finalize: backup {backup_id} was committed, but {d.key} is damaged ({d.problem})")
        return existing[-1].id, [], True
    record, problems = backup_record(plan, backup_id, snapshots, runs)
    if record is None:
        return None, problems, False
    record["time"] = utc_now_iso()
    record["workflow_status"] = "Succeeded"
    from .audit import head_refs, recent_trail

    try:
        record["audit_heads"] = head_refs(recent_trail(repo))  # the audit trail as this commit saw it
    except Exception as err:  # the commit must not depend on the trail; audit verify names the gap
        log(f"WARNING: the audit trail could not be read, the backup record names no head ({err})")
    from .anomaly_commit import assess

    assess(repo, record, snapshots, log, lock_last_good_days)
    rid = repo.save_record("backups", record, key=backup_id)
    log(f"backup {backup_id} committed as record {rid[:8]}")
    return rid, [], False


def save_run_record(repo: Repository, backup_id: str, name: str, fields: dict) -> str:
    """Store a step's record about the run of backup ``backup_id`` (``runs/GROUP/ID``, found with the
    backup's other records by one listing): ``{"name": name, "backup_id": backup_id, **fields}``.
    Returns the record's ID."""
    return repo.save_record("runs", {"name": name, "backup_id": backup_id, **fields}, key=backup_id)
