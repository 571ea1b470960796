"""The report's model: apps, runs, schedule slots and RPO, built from the contents of repository
records (pure: no I/O; :mod:`workflows.report.reading` reads the records)."""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from workflows.schedule import CronSchedule

DEFAULT_WINDOW_DAYS = 30
DEFAULT_GRACE_S = 600.0  # a CronWorkflow's default startingDeadlineSeconds
MAX_SLOTS = 2000
MAX_AUDIT_ROWS = 500  # audit records the page lists (the newest of the window)

VERDICT_RANK = {"app-consistent": 2, "crash-consistent": 1, "inconsistent": 0}
# what a policy with spec.source protects, and the step of its backup workflow that takes the snapshot
SOURCE_STEPS = {"etcd": "etcd-snapshot", "registry": "registry-backup", "bucket": "bucket-backup"}


def parse_time(text: Any) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


# --------------------------------------------------------------------------------------------------
# The model.


@dataclass
class StepSpan:
    name: str
    start: float | None
    end: float | None
    status: str
    holds_freeze: bool = False
    approximate: bool = False


@dataclass
class Run:
    """One backup attempt (one backup ID), committed or not."""

    backup_id: str
    app_key: tuple[str, str, str]
    committed: bool
    status: str  # committed, failed, not committed
    started: float | None  # the consistent point (or the earliest thing known)
    finished: float | None  # commit time, or the end of the last step known
    point_in_time: float | None
    verdict: str | None
    reasons: list[str]
    recovery: dict[str, str]
    freeze_window_ms: float | None
    freeze: tuple[float, float] | None
    verify_ok: bool | None
    verify_percent: float | None
    verify_problems: list[str]
    bytes_total: int
    bytes_read: int
    bytes_added: int
    blob_bytes_new: int
    files: int
    volumes: list[dict[str, Any]]
    steps: list[StepSpan]
    steps_from: str  # "pipeline record" or "reconstructed from records"
    failed_step: str | None = None
    error: str | None = None
    runner: str = "argo"
    damaged: list[str] = field(default_factory=list)  # object keys of its damaged backup / run records
    source: str = "app"  # what the run backs up: app, or a source policy's kind (etcd, registry, bucket)
    # the backup record's ``changes`` (what the copy changed) and ``anomaly`` (judged against the app's
    # history at commit); None in records written before they existed
    changes: dict[str, Any] | None = None
    anomaly: dict[str, Any] | None = None

    @property
    def anomaly_flagged(self) -> bool | None:
        flagged = (self.anomaly or {}).get("flagged")
        return flagged if isinstance(flagged, bool) else None

    @property
    def anomaly_score(self) -> float | None:
        score = (self.anomaly or {}).get("score")
        return float(score) if isinstance(score, int | float) and not isinstance(score, bool) else None

    @property
    def anomaly_reasons(self) -> list[str]:
        reasons = (self.anomaly or {}).get("reasons")
        return [str(r) for r in reasons] if isinstance(reasons, list) else []

    @property
    def duration_s(self) -> float | None:
        if self.started is None or self.finished is None:
            return None
        return max(0.0, self.finished - self.started)

    @property
    def dedup_ratio(self) -> float | None:
        return self.bytes_total / self.blob_bytes_new if self.blob_bytes_new else None

    @property
    def compression_ratio(self) -> float | None:
        return self.blob_bytes_new / self.bytes_added if self.bytes_added else None


@dataclass
class Slot:
    time: float
    status: str  # ok, late, missing, pending
    backup_id: str | None = None
    delay_s: float | None = None


@dataclass
class Rpo:
    schedule: str | None
    timezone: str | None
    source: str | None  # where the schedule came from
    target_s: float | None  # longest gap between fire times (+ grace)
    grace_s: float
    current_s: float | None  # now - point in time of the newest backup
    worst_gap_s: float | None  # longest gap between consecutive backups (and to now)
    slots: list[Slot]
    ok: bool
    counts: dict[str, int]
    truncated: bool = False


@dataclass
class AppReport:
    cluster: str
    namespace: str
    name: str
    policies: list[str]
    runs: list[Run]  # oldest first
    rpo: Rpo
    totals: dict[str, Any]
    problems: list[str] = field(default_factory=list)  # flagged red: data is at risk
    notices: list[str] = field(default_factory=list)  # worth a look, but a restore point is fine
    source: str = "app"  # app, or a source policy's kind: etcd, registry, bucket

    @property
    def is_source(self) -> bool:
        return self.source != "app"

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.cluster, self.namespace, self.name)

    @property
    def backups(self) -> list[Run]:
        return [r for r in self.runs if r.committed]

    @property
    def last_backup(self) -> Run | None:
        backups = self.backups
        return backups[-1] if backups else None

    @property
    def anchor(self) -> str:
        return re.sub(r"[^a-z0-9-]+", "-", f"app-{self.cluster}-{self.namespace}-{self.name}".lower())


@dataclass
class Report:
    repository: str
    generated: float
    window_days: float
    apps: list[AppReport]
    warnings: list[str]
    # records that do not open, and snapshots a committed backup names that are gone: {kind, key,
    # problem, backup_id?}; shown in a banner at the top of the page
    damaged: list[dict[str, Any]] = field(default_factory=list)
    # the audit trail's verification (the whole trail; steps.api.audit_trail.Verification.to_dict()),
    # None when it was not read; a red banner names each finding when it does not verify
    audit: dict[str, Any] | None = None
    # the trail's records of the window, oldest first, the newest MAX_AUDIT_ROWS of them (rows of
    # workflows.report.evidence.audit_rows); audit_rows_total counts them all
    audit_rows: list[dict[str, Any]] = field(default_factory=list)
    audit_rows_total: int = 0

    @property
    def audit_broken(self) -> bool:
        return self.audit is not None and not self.audit.get("ok", True)

    def audit_count(self, app: AppReport) -> int:
        """The window's audit records of ``app`` (among those listed)."""
        return sum(r.get("app") == f"{app.namespace}/{app.name}" for r in self.audit_rows)


@dataclass(frozen=True)
class ScheduleInfo:
    cron: str
    timezone: str
    grace_s: float
    source: str


# --------------------------------------------------------------------------------------------------
# Building the model from records (pure: no I/O).


def _app_key(d: dict[str, Any] | None) -> tuple[str, str, str] | None:
    if not d:
        return None
    name = d.get("name") or d.get("app")
    if not name:
        return None
    return (d.get("cluster") or "default", d.get("namespace") or "default", name)


def _point_in_time(backup: dict[str, Any] | None, cp: dict[str, Any] | None) -> float | None:
    for source in (backup or {}).get("consistency") or {}, cp or {}:
        timeline = (source or {}).get("timeline") or {}
        points = []
        for v in timeline.get("volumes") or []:
            points.append(parse_time(v.get("cut")) or parse_time(v.get("copy_started")))
        points = [p for p in points if p is not None]
        if points:
            return min(points)
    return None


def _freeze(source: dict[str, Any] | None) -> tuple[float, float] | None:
    targets = ((source or {}).get("timeline") or {}).get("targets") or []
    q = [parse_time(t.get("quiesced")) for t in targets]
    r = [parse_time(t.get("released")) for t in targets]
    q = [x for x in q if x is not None]
    r = [x for x in r if x is not None]
    return (min(q), max(r)) if q and r else None


def _source_of(backup: dict[str, Any] | None, snaps: list[dict[str, Any]]) -> str:
    """``app``, or the kind of source a run backs up: from its backup record, else (a run that was not
    committed) from the kind its snapshots are tagged with."""
    source = (backup or {}).get("source")
    kind = source.get("kind") if isinstance(source, dict) else None
    if kind in SOURCE_STEPS:
        return str(kind)
    kinds = {(s.get("tags") or {}).get("kind") for s in snaps}
    found = sorted(k for k in kinds if k in SOURCE_STEPS)
    return found[0] if backup is None and len(found) == 1 else "app"


def _new_bytes(snaps: list[dict[str, Any]], backup: dict[str, Any] | None) -> int:
    """Plaintext bytes of the new blobs of a run's snapshots (the dedup ratio's divisor); for snapshots
    whose summary does not say (a bucket's, etcd's, a registry's), the ``changes.newBytes`` of the
    backup record (the new data blobs, without the trees)."""
    summaries = [s.get("summary") or {} for s in snaps]
    if any("blob_bytes_new" in x for x in summaries):
        return sum(int(x.get("blob_bytes_new") or 0) for x in summaries)
    new = (_mapping((backup or {}).get("changes")) or {}).get("newBytes")
    return new if isinstance(new, int) and not isinstance(new, bool) and new >= 0 else 0


def _mapping(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _reconstructed_steps(
    cp: dict[str, Any] | None,
    snaps: list[dict[str, Any]],
    verify: dict[str, Any] | None,
    backup: dict[str, Any] | None,
    source: str = "app",
) -> list[StepSpan]:
    spans: list[StepSpan] = []
    if cp:
        spans.append(
            StepSpan(
                "consistent-point",
                parse_time(cp.get("started")),
                parse_time(cp.get("finished")),
                "Succeeded",
                holds_freeze=True,
            )
        )
    for s in sorted(snaps, key=lambda s: str(s.get("time", ""))):
        if (s.get("tags") or {}).get("kind") == "manifests":
            spans.append(
                StepSpan("capture", parse_time(s.get("time")), parse_time(s.get("end_time")), "Succeeded")
            )
            continue
        if source in SOURCE_STEPS:
            name = SOURCE_STEPS[source]
        else:
            name = f"copy-{s.get('volume') or (s.get('tags') or {}).get('volume') or '?'}"
        spans.append(StepSpan(name, parse_time(s.get("time")), parse_time(s.get("end_time")), "Succeeded"))
    if verify:
        end = parse_time(verify.get("time"))
        dur = verify.get("duration_s")
        start = end - float(dur) if end is not None and isinstance(dur, int | float) else end
        spans.append(StepSpan("verify", start, end, "Succeeded" if verify.get("ok") else "Failed"))
    if backup:
        t = parse_time(backup.get("time"))
        spans.append(StepSpan("finalize", t, t, "Succeeded", approximate=True))
    return spans


def build_run(
    backup_id: str,
    backup: dict[str, Any] | None,
    runs: list[dict[str, Any]],
    snaps: list[dict[str, Any]],
    *,
    app_key: tuple[str, str, str] | None = None,
) -> Run | None:
    """One run from its records; None when nothing says which app it belongs to (``app_key``: the app
    when its records do not say, e.g. a source's run that was not committed)."""
    by_name: dict[str, dict[str, Any]] = {}
    for r in sorted(runs, key=lambda r: str(r.get("time") or r.get("finished") or "")):
        by_name[str(r.get("name"))] = r
    cp = by_name.get("consistent-point")
    verify = by_name.get("verify")
    pipeline = by_name.get("pipeline")
    data_snaps = [s for s in snaps if (s.get("tags") or {}).get("kind") != "manifests"]
    key = _app_key((backup or {}).get("app")) or _app_key((cp or {}).get("app"))
    if key is None and pipeline:
        key = _app_key(
            {
                "cluster": pipeline.get("cluster"),
                "namespace": pipeline.get("namespace"),
                "name": pipeline.get("app"),
            }
        )
    if key is None and data_snaps:
        key = _app_key(data_snaps[0])
    key = key or app_key
    if key is None:
        return None
    source = _source_of(backup, data_snaps)
    consistency = (backup or {}).get("consistency") or cp or {}
    committed = backup is not None
    if pipeline and pipeline.get("steps"):
        steps = [
            StepSpan(
                s["name"],
                parse_time(s.get("started")),
                parse_time(s.get("finished")),
                s.get("status", "?"),
                holds_freeze=bool(s.get("holds_freeze")),
            )
            for s in pipeline["steps"]
        ]
        steps_from = "step times recorded by the local runner"
    else:
        steps = _reconstructed_steps(cp, snaps, verify, backup, source)
        steps_from = "step times reconstructed from the repository records (approximate)"
    failed = [s for s in (pipeline or {}).get("steps") or [] if s.get("status") == "Failed"]
    starts = [s.start for s in steps if s.start is not None]
    ends = [s.end for s in steps if s.end is not None]
    started = parse_time((cp or {}).get("started")) or (min(starts) if starts else None)
    finished = parse_time((backup or {}).get("time")) or parse_time((pipeline or {}).get("finished"))
    if finished is None and ends:
        finished = max(ends)
    if started is None:
        started = parse_time((pipeline or {}).get("started")) or finished
    point = _point_in_time(backup, cp) or started
    wanted = {v.get("snapshot") for v in (backup or {}).get("volumes") or []}
    if source != "app":  # a source's backup names its snapshot in ``snapshots``
        wanted |= {x for x in (backup or {}).get("snapshots") or [] if isinstance(x, str)}
    chosen = [s for s in data_snaps if not wanted or s.get("id") in wanted]

    def total(key: str) -> int:
        return sum(int((s.get("summary") or {}).get(key) or 0) for s in chosen)

    volumes = []
    for s in chosen:
        summary = s.get("summary") or {}
        volumes.append(
            {
                "name": s.get("volume")
                or (s.get("tags") or {}).get("volume")
                or (source if source != "app" else "?"),
                "snapshot": s.get("id"),
                "files": summary.get("files"),
                "bytes_total": summary.get("bytes_total"),
                "bytes_read": summary.get("bytes_read"),
                "bytes_added": summary.get("bytes_added"),
            }
        )
    verify_src = (backup or {}).get("verify") or verify or {}
    if committed:
        status = "committed"
    elif (pipeline and pipeline.get("status") == "Failed") or failed or (verify and not verify.get("ok")):
        status = "failed"
    else:
        status = "not committed"
    error = None
    if failed:
        error = failed[0].get("error")
    elif verify and not verify.get("ok"):
        error = "; ".join((verify.get("problems") or [])[:2]) or "verify failed"
    return Run(
        backup_id=backup_id,
        app_key=key,
        committed=committed,
        status=status,
        started=started,
        finished=finished,
        point_in_time=point,
        verdict=consistency.get("verdict"),
        reasons=list(consistency.get("reasons") or []),
        recovery=dict(consistency.get("recovery") or {}),
        freeze_window_ms=consistency.get("freeze_window_ms"),
        freeze=_freeze(consistency),
        verify_ok=None if not verify_src else bool(verify_src.get("ok")),
        verify_percent=verify_src.get("read_data_percent"),
        verify_problems=list((verify or {}).get("problems") or []),
        bytes_total=total("bytes_total"),
        bytes_read=total("bytes_read"),
        bytes_added=total("bytes_added"),
        blob_bytes_new=_new_bytes(chosen, backup),
        files=total("files"),
        volumes=volumes,
        steps=steps,
        steps_from=steps_from,
        failed_step=failed[0].get("name") if failed else None,
        error=error,
        runner="local" if pipeline else "argo",
        source=source,
        changes=_mapping((backup or {}).get("changes")),
        anomaly=_mapping((backup or {}).get("anomaly")),
    )


def judge_rpo(runs: Sequence[Run], schedule: ScheduleInfo | None, now: float, window_days: float) -> Rpo:
    backups = [r for r in runs if r.committed and r.point_in_time is not None]
    points = sorted(r.point_in_time for r in backups if r.point_in_time is not None)
    current = now - points[-1] if points else None
    gaps = [b - a for a, b in itertools.pairwise(points)]
    if points:
        gaps.append(now - points[-1])
    worst = max(gaps) if gaps else None
    if schedule is None:
        return Rpo(None, None, None, None, DEFAULT_GRACE_S, current, worst, [], True, {})
    cron = CronSchedule.parse(schedule.cron, schedule.timezone)
    grace = schedule.grace_s
    target = cron.interval_s(now - 7 * 86400) + grace
    first_known = min([r.started for r in runs if r.started is not None], default=now)
    start = max(first_known - grace, now - window_days * 86400)  # the slot the first run served
    times = cron.fire_times(start, now, limit=MAX_SLOTS * 2)
    truncated = len(times) > MAX_SLOTS
    times = times[-MAX_SLOTS:]
    durations = [r.duration_s for r in backups if r.duration_s is not None]
    settle = grace + max([*durations, 600.0])
    starts = sorted((r.started or r.point_in_time or 0.0, r.backup_id) for r in backups)
    slots: list[Slot] = []
    for i, t in enumerate(times):
        nxt = times[i + 1] if i + 1 < len(times) else math.inf
        inside = [(s, b) for s, b in starts if t <= s < nxt]
        if inside:
            s, b = inside[0]
            slots.append(Slot(t, "ok" if s - t <= grace else "late", b, s - t))
        elif now - t < settle and nxt == math.inf:
            slots.append(Slot(t, "pending"))
        else:
            slots.append(Slot(t, "missing"))
    counts = {k: sum(1 for s in slots if s.status == k) for k in ("ok", "late", "missing", "pending")}
    ok = counts["missing"] == 0 and counts["late"] == 0 and (current is not None and current <= target)
    return Rpo(
        schedule.cron,
        schedule.timezone,
        schedule.source,
        target,
        grace,
        current,
        worst,
        slots,
        ok,
        counts,
        truncated,
    )


def build_report(
    repository: str,
    backups: Iterable[dict[str, Any]],
    runs: Iterable[dict[str, Any]],
    snapshots: Iterable[dict[str, Any]],
    *,
    schedules: dict[tuple[str, str, str], ScheduleInfo] | None = None,
    now: float,
    window_days: float = DEFAULT_WINDOW_DAYS,
    warnings: Sequence[str] = (),
    damaged: Sequence[dict[str, Any]] = (),
    damaged_by_backup: dict[str, list[str]] | None = None,
    audit: dict[str, Any] | None = None,
    audit_rows: Sequence[dict[str, Any]] = (),
) -> Report:
    """The report from record contents (each snapshot dict carries its ``id``). ``damaged`` lists the
    records that do not open (the banner); ``damaged_by_backup`` the object keys of damaged backup or
    run records per backup ID: such a run is shown as ``record damaged`` and flagged on its app.
    ``audit`` is the audit trail's verification and ``audit_rows`` its records of the window (oldest
    first): the page's audit section, and its banner when the trail does not verify."""
    by_backup: dict[str, dict[str, Any]] = {}
    for b in backups:
        if b.get("backup_id"):
            by_backup[b["backup_id"]] = b
    runs_by: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        if r.get("backup_id"):
            runs_by.setdefault(r["backup_id"], []).append(r)
    snaps_by: dict[str, list[dict[str, Any]]] = {}
    for s in snapshots:
        bid = s.get("backup_id") or (s.get("tags") or {}).get("backup")
        if bid:
            snaps_by.setdefault(bid, []).append(s)
    ids = set(by_backup) | set(runs_by)
    apps: dict[tuple[str, str, str], list[Run]] = {}
    policies: dict[tuple[str, str, str], set[str]] = {}
    recorded_schedules: dict[tuple[str, str, str], ScheduleInfo] = {}
    damaged_by_backup = damaged_by_backup or {}
    ids |= {bid for bid in damaged_by_backup if bid in snaps_by}
    # A source's snapshots and run records name its cluster and policy, not its namespace and app: a run
    # that was not committed belongs to the app whose committed backups came from that policy.
    source_apps: dict[tuple[str, str], tuple[str, str, str]] = {}
    for b in by_backup.values():
        key = _app_key(b.get("app")) if isinstance(b.get("app"), dict) else None
        if key and isinstance(b.get("source"), dict) and b["app"].get("policy"):
            source_apps[(key[0], str(b["app"]["policy"]))] = key
    ids |= {
        bid
        for bid, snaps in snaps_by.items()
        if any((s.get("tags") or {}).get("kind") in SOURCE_STEPS for s in snaps)
    }
    for bid in sorted(ids):
        snaps = snaps_by.get(bid, [])
        owner = next(
            (
                source_apps.get((s.get("cluster") or "default", str(s.get("policy"))))
                for s in snaps
                if (s.get("tags") or {}).get("kind") in SOURCE_STEPS and s.get("policy")
            ),
            None,
        )
        run = build_run(bid, by_backup.get(bid), runs_by.get(bid, []), snaps, app_key=owner)
        if run is None:
            continue
        if damaged_by_backup.get(bid):
            keys = damaged_by_backup[bid]
            run.damaged = list(keys)
            if not run.committed:
                run.status = "record damaged"
                run.error = f"{keys[0]} is damaged" + (
                    f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""
                )
        apps.setdefault(run.app_key, []).append(run)
        policy = ((by_backup.get(bid) or {}).get("app") or {}).get("policy")
        for r in runs_by.get(bid, []):
            if not policy:
                app_field = r.get("app")
                policy = app_field.get("policy") if isinstance(app_field, dict) else r.get("policy")
            sched = r.get("schedule") if r.get("name") == "pipeline" else None
            if isinstance(sched, dict) and sched.get("cron"):
                recorded_schedules[run.app_key] = ScheduleInfo(
                    sched["cron"],
                    sched.get("timezone") or "UTC",
                    DEFAULT_GRACE_S,
                    "recorded by the local runner",
                )
        if policy:
            policies.setdefault(run.app_key, set()).add(policy)
    out: list[AppReport] = []
    for key in sorted(apps):
        app_runs = sorted(apps[key], key=lambda r: (r.started or 0.0, r.backup_id))
        horizon = now - window_days * 86400
        app_runs = [r for r in app_runs if (r.started or now) >= horizon] or app_runs[-1:]
        schedule = (schedules or {}).get(key) or recorded_schedules.get(key)
        rpo = judge_rpo(app_runs, schedule, now, window_days)
        backups_ = [r for r in app_runs if r.committed]
        logical = sum(r.bytes_total for r in backups_)
        new = sum(r.blob_bytes_new for r in backups_)
        stored = sum(r.bytes_added for r in backups_)
        windows = [r.freeze_window_ms for r in backups_ if isinstance(r.freeze_window_ms, int | float)]
        totals = {
            "backups": len(backups_),
            "failed": sum(1 for r in app_runs if not r.committed),
            "logical_bytes": logical,
            "new_bytes": new,
            "stored_bytes": stored,
            "dedup_ratio": logical / new if new else None,
            "compression_ratio": new / stored if stored else None,
            "max_freeze_ms": max(windows) if windows else None,
            "verdicts": {v: sum(1 for r in backups_ if r.verdict == v) for v in VERDICT_RANK},
            "anomalies": sum(1 for r in backups_ if r.anomaly_flagged),
        }
        # what the app's backups protect: the newest run that says (a policy protects one thing)
        source = next((r.source for r in reversed(app_runs) if r.source != "app"), "app")
        problems = []
        last = backups_[-1] if backups_ else None
        if last is None:
            problems.append("no committed backup")
        else:
            # (a source's backup has no consistent point: its own snapshot is the cut)
            if last.verdict != "app-consistent" and last.source == "app":
                problems.append(f"newest backup is {last.verdict or 'of unknown consistency'}")
            if last.verify_ok is False:
                problems.append("newest backup failed verify")
            if last.anomaly_flagged:
                why = "; ".join(last.anomaly_reasons[:2])
                problems.append(f"newest backup flagged as an anomaly{': ' + why if why else ''}")
        if rpo.counts.get("missing"):
            problems.append(f"{rpo.counts['missing']} scheduled backup(s) missing")
        if rpo.counts.get("late"):
            problems.append(f"{rpo.counts['late']} scheduled backup(s) late")
        if rpo.target_s is not None and rpo.current_s is not None and rpo.current_s > rpo.target_s:
            problems.append("RPO exceeded: the newest backup is older than the schedule allows")
        notices = []
        for r in app_runs:
            if r.damaged:
                problems.append(f"run {r.backup_id}: damaged record {r.damaged[0]}")
        if app_runs and not app_runs[-1].committed:
            problems.append(f"latest run {app_runs[-1].backup_id} was not committed")
        elif totals["failed"]:
            notices.append(f"{totals['failed']} run(s) in the window not committed (a later backup was)")
        earlier = totals["anomalies"] - (1 if last is not None and last.anomaly_flagged else 0)
        if earlier:
            notices.append(f"{earlier} earlier backup(s) in the window flagged as anomalies")
        out.append(
            AppReport(
                key[0],
                key[1],
                key[2],
                sorted(policies.get(key, set())),
                app_runs,
                rpo,
                totals,
                problems,
                notices,
                source,
            )
        )
    rows = list(audit_rows)
    return Report(
        repository,
        now,
        window_days,
        out,
        list(warnings),
        [dict(d) for d in damaged],
        audit=dict(audit) if audit is not None else None,
        audit_rows=rows[-MAX_AUDIT_ROWS:],
        audit_rows_total=len(rows),
    )


def restore_commands(app: AppReport, repository: str) -> list[tuple[str, str]]:
    """How to restore the newest committed backup of ``app``: (what, command) pairs — the restore
    WorkflowTemplate ``snapflow render`` made for its policy (``argo submit``) and the step itself on
    the command line. Placeholders in capitals are the user's to fill in (docs/user/restore.md, etcd.md,
    registry.md, buckets.md). Empty when the app has no committed backup."""
    last = app.last_backup
    if last is None:
        return []
    policy = app.policies[0] if len(app.policies) == 1 else app.name
    ns = app.namespace
    template = f"argo submit -n {ns} --from workflowtemplate/restore-{policy}"
    snapshot = next((str(v["snapshot"]) for v in last.volumes if v.get("snapshot")), "latest")
    repo = f"python -m steps {{step}} --repo {repository} --snapshot {snapshot}"
    if app.source == "etcd":
        return [
            (
                "Argo (a new data directory on a control-plane node)",
                f"{template} -p snapshot={snapshot} -p node=NODE -p name=MEMBER"
                " -p peer-url=https://NODE_IP:2380 --watch",
            ),
            (
                "command line (on the node)",
                repo.format(step="etcd-restore") + " --data-dir /var/lib/etcd-restored --name MEMBER"
                " --initial-advertise-peer-urls https://NODE_IP:2380",
            ),
        ]
    if app.source == "registry":
        return [
            (
                "Argo (pushes the images into the policy's registry; -p target-registry=https://HOST for another)",
                f"{template} -p snapshot={snapshot} --watch",
            ),
            (
                "command line",
                repo.format(step="registry-restore")
                + " --registry https://REGISTRY --username USER --password-file FILE",
            ),
        ]
    if app.source == "bucket":
        return [
            (
                "Argo (into the policy's bucket; lists what would change, -p dry-run=false writes it)",
                f"{template} -p snapshot={snapshot} -p dry-run=true --watch",
            ),
            (
                "command line",
                repo.format(step="bucket-restore")
                + " --target-endpoint https://S3_ENDPOINT --target s3://BUCKET --dry-run",
            ),
        ]
    return [
        (
            "Argo (the app's objects and volumes, into a new namespace)",
            f"argo submit -n {ns} --from workflowtemplate/restore-app-{policy} -p backup={last.backup_id}"
            f" -p target-namespace={ns}-restored --watch",
        ),
        (
            "command line",
            f"python -m steps restore-app --repo {repository} --backup {last.backup_id}"
            f" --target-namespace {ns}-restored --dry-run",
        ),
    ]
