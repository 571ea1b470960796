"""The fleet's rows: one per cluster x app, from the repositories' records (pure: no I/O).

A row says what an SRE looks at first: the newest committed backup, whether the RPO is met, the
consistency and verify of that backup, how old the last passing restore test is, whether the
repository is immutable (Object Lock in the policy), and the anomaly a backup record may carry
(``anomaly: {flagged, score, reasons}``). ``snapflow report --fleet`` (the page, JSON and CSV) and
``snapflow fleet status`` show these same rows.

Terms as in the report and the exporter (:mod:`workflows.fleet.model`): a *backup* is a run whose
``backups`` record opens (committed); its *point in time* is its first volume cut. The RPO of a row:

- ``met``: the newest committed backup is at most the RPO target old;
- ``late``: it is older;
- ``missing``: the repository holds no committed backup of the app;
- ``unknown``: the repository could not be read (the row says why).

The RPO target comes from the app's policy (the longest gap between two fire times of its schedule,
plus its start deadline, as the report and the exporter judge it), else
:data:`workflows.fleet.model.DEFAULT_RPO_S`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from workflows.fleet.model import DEFAULT_RPO_S
from workflows.report.record_cache import (
    ANOMALY,
    APP,
    BACKUP_ID,
    GROUP,
    KIND,
    OK,
    POINT,
    TIME,
    VERDICT,
    RecordTable,
)

AppKey = tuple[str, str, str]  # cluster, namespace, app
RPO_STATES = ("met", "late", "missing", "unknown")

# the columns of the JSON and CSV exports, in order
COLUMNS = (
    "cluster",
    "namespace",
    "app",
    "repository",
    "inFleet",
    "newestBackup",
    "newestBackupTime",
    "ageSeconds",
    "rpo",
    "rpoTargetSeconds",
    "backups",
    "consistency",
    "verify",
    "restoreTestAgeSeconds",
    "restoreTestOk",
    "immutability",
    "anomalyFlagged",
    "anomalyScore",
    "anomalyReasons",
    "error",
    "detail",
)


@dataclass(frozen=True)
class Placement:
    """An app the fleet file places on a cluster, and what its policy says about its backups."""

    cluster: str
    namespace: str
    app: str
    repository: str
    endpoint: str | None
    rpo_target_s: float
    immutability: str  # "compliance, 30 d", "governance, 7 d" or "none"
    policy: str
    schedule: tuple[str, str, float] | None = None  # cron, time zone, start deadline (s)

    @property
    def key(self) -> AppKey:
        return (self.cluster, self.namespace, self.app)


@dataclass
class AppFacts:
    """What one app's records say (the newest of each kind)."""

    backups: int = 0
    newest_id: str | None = None
    newest_point: float | None = None
    newest_written: float | None = None
    verdict: str | None = None
    backup_verify_ok: bool | None = None
    anomaly: tuple | None = None
    verify_ok: bool | None = None
    verify_time: float | None = None
    restore_ok: bool | None = None
    restore_time: float | None = None
    restore_last_success: float | None = None


@dataclass
class RepositoryRead:
    """One repository as read for the fleet: per app facts, or why it could not be read."""

    url: str
    endpoint: str | None = None
    facts: dict[AppKey, AppFacts] = field(default_factory=dict)
    error: str | None = None
    records: int = 0
    read: int = 0  # records opened this time (the others came from the cache)
    damaged: int = 0
    cache_used: bool = False
    seconds: float = 0.0
    open_seconds: float = 0.0  # of ``seconds``: opening the repository (its key derivation)
    list_seconds: float = 0.0  # of ``seconds``: listing its records
    warnings: list[str] = field(default_factory=list)
    detail: str | None = None  # the per-app report's file, relative to the fleet page


def fold(table: RecordTable) -> dict[AppKey, AppFacts]:
    """Per app, the newest backup, verify and restore test among the table's entries. A verify record
    names no app: its group (the run's) does, through that run's backup or consistent-point record."""
    entries = table.entries.values()
    app_of_group: dict[str, int] = {}
    for e in entries:
        if e[APP] >= 0 and e[GROUP] and e[KIND] in ("backups", "consistent-point"):
            app_of_group.setdefault(e[GROUP], e[APP])
    facts: dict[int, AppFacts] = {}
    for e in entries:
        kind = e[KIND]
        if kind not in ("backups", "verify", "restore-test"):
            continue
        idx = e[APP] if e[APP] >= 0 else app_of_group.get(e[GROUP], -1)
        if idx < 0:
            continue
        f = facts.get(idx)
        if f is None:
            f = facts[idx] = AppFacts()
        t = e[TIME]
        if kind == "backups":
            f.backups += 1
            point = e[POINT] or 0.0
            if f.newest_id is None or (point, t or 0.0) > (f.newest_point or 0.0, f.newest_written or 0.0):
                f.newest_id, f.newest_point, f.newest_written = e[BACKUP_ID], e[POINT], t
                f.verdict, f.backup_verify_ok, f.anomaly = e[VERDICT], e[OK], e[ANOMALY]
        elif t is None:
            continue
        elif kind == "verify":
            if f.verify_time is None or t > f.verify_time:
                f.verify_ok, f.verify_time = e[OK], t
        else:
            if f.restore_time is None or t > f.restore_time:
                f.restore_ok, f.restore_time = e[OK], t
            if e[OK] and (f.restore_last_success is None or t > f.restore_last_success):
                f.restore_last_success = t
    return {table.apps[i]: f for i, f in facts.items()}


@dataclass
class FleetRow:
    cluster: str
    namespace: str
    app: str
    repository: str
    in_fleet: bool
    rpo: str  # met, late, missing, unknown
    rpo_target_s: float
    newest_backup: str | None = None
    newest_time: float | None = None
    age_s: float | None = None
    backups: int | None = None
    consistency: str | None = None
    verify: str | None = None  # ok, failed, or None (no verify known)
    restore_test_age_s: float | None = None  # since the newest passing restore test
    restore_test_ok: bool | None = None  # the newest restore test
    immutability: str = "unknown"
    anomaly_flagged: bool | None = None
    anomaly_score: float | None = None
    anomaly_reasons: tuple[str, ...] = ()
    error: str | None = None
    detail: str | None = None  # link to the per-app report

    @property
    def key(self) -> AppKey:
        return (self.cluster, self.namespace, self.app)

    @property
    def anchor(self) -> str:
        """The per-app report's anchor of this app (as :attr:`AppReport.anchor` spells it)."""
        ns = self.namespace or "default"
        return re.sub(r"[^a-z0-9-]+", "-", f"app-{self.cluster}-{ns}-{self.app}".lower())

    @property
    def attention(self) -> bool:
        """Something on the row needs a look."""
        return (
            self.rpo != "met"
            or self.verify == "failed"
            or self.restore_test_ok is False
            or bool(self.anomaly_flagged)
            or (self.consistency is not None and self.consistency not in ("app-consistent", "n/a (source)"))
        )

    def to_dict(self) -> dict[str, Any]:
        from datetime import UTC, datetime

        def iso(t: float | None) -> str | None:
            if t is None:
                return None
            return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")

        return {
            "cluster": self.cluster,
            "namespace": self.namespace,
            "app": self.app,
            "repository": self.repository,
            "inFleet": self.in_fleet,
            "newestBackup": self.newest_backup,
            "newestBackupTime": iso(self.newest_time),
            "ageSeconds": None if self.age_s is None else round(self.age_s),
            "rpo": self.rpo,
            "rpoTargetSeconds": round(self.rpo_target_s),
            "backups": self.backups,
            "consistency": self.consistency,
            "verify": self.verify,
            "restoreTestAgeSeconds": None
            if self.restore_test_age_s is None
            else round(self.restore_test_age_s),
            "restoreTestOk": self.restore_test_ok,
            "immutability": self.immutability,
            "anomalyFlagged": self.anomaly_flagged,
            "anomalyScore": self.anomaly_score,
            "anomalyReasons": list(self.anomaly_reasons),
            "error": self.error,
            "detail": self.detail,
        }


def row_for(
    key: AppKey,
    facts: AppFacts | None,
    *,
    repository: str,
    in_fleet: bool,
    target_s: float,
    immutability: str,
    now: float,
    error: str | None = None,
    detail: str | None = None,
) -> FleetRow:
    row = FleetRow(*key, repository, in_fleet, "unknown", target_s, immutability=immutability, error=error)
    if error is not None:
        return row
    # (the per-app report shows the apps the repository holds runs of)
    row.detail = f"{detail}#{row.anchor}" if detail and facts is not None else None
    if facts is None or facts.newest_id is None:
        row.rpo, row.backups = "missing", 0
        return row
    row.backups = facts.backups
    row.newest_backup, row.newest_time = facts.newest_id, facts.newest_point or facts.newest_written
    row.age_s = max(0.0, now - row.newest_time) if row.newest_time is not None else None
    row.rpo = "met" if row.age_s is not None and row.age_s <= target_s else "late"
    row.consistency = facts.verdict
    # the newest verify run when it checked the newest backup or a later run, else the backup's own
    if facts.verify_time is not None and facts.verify_time >= (facts.newest_point or 0.0):
        ok = facts.verify_ok
    else:
        ok = facts.backup_verify_ok
    row.verify = None if ok is None else ("ok" if ok else "failed")
    if facts.restore_last_success is not None:
        row.restore_test_age_s = max(0.0, now - facts.restore_last_success)
    row.restore_test_ok = facts.restore_ok
    if facts.anomaly is not None:
        row.anomaly_flagged, row.anomaly_score, reasons = facts.anomaly
        row.anomaly_reasons = tuple(reasons)
    return row


def build_rows(
    placements: Sequence[Placement],
    reads: Iterable[RepositoryRead],
    now: float,
    default_target_s: float = DEFAULT_RPO_S,
) -> list[FleetRow]:
    """Every placed app (``missing`` when its repository holds no backup of it, ``unknown`` when the
    repository could not be read) and every other app the repositories hold records of."""
    reads = list(reads)
    by_repo = {(r.url, r.endpoint): r for r in reads}
    rows: dict[AppKey, FleetRow] = {}
    for p in placements:
        read = by_repo.get((p.repository, p.endpoint))
        if read is None:
            continue
        rows[p.key] = row_for(
            p.key,
            read.facts.get(p.key),
            repository=p.repository,
            in_fleet=True,
            target_s=p.rpo_target_s,
            immutability=p.immutability,
            now=now,
            error=read.error,
            detail=read.detail,
        )
    for read in reads:
        for key, facts in read.facts.items():
            if key in rows:
                continue
            rows[key] = row_for(
                key,
                facts,
                repository=read.url,
                in_fleet=not placements,
                target_s=default_target_s,
                immutability="unknown",
                now=now,
                detail=read.detail,
            )
        if read.error is not None and not any(p.repository == read.url for p in placements):
            rows[("", "", read.url)] = row_for(
                ("", "", ""),
                None,
                repository=read.url,
                in_fleet=not placements,
                target_s=default_target_s,
                immutability="unknown",
                now=now,
                error=read.error,
            )
    return sorted(rows.values(), key=lambda r: (r.cluster, r.namespace, r.app, r.repository))


def counts(rows: Iterable[FleetRow]) -> dict[str, int]:
    rows = list(rows)
    out = {s: sum(1 for r in rows if r.rpo == s) for s in RPO_STATES}
    out["anomalies"] = sum(1 for r in rows if r.anomaly_flagged)
    out["rows"] = len(rows)
    return out
