"""The HTML report of a repository: per app, backups over time, consistency, verify status, sizes,
dedup and compression, freeze windows, durations and RPO against the schedule; per run, the steps.

:func:`collect` reads what the repository holds (committed ``backups`` records, the ``runs`` records
of each backup — ``consistent-point``, ``verify``, and ``pipeline`` from the local runner — and the
snapshot records) into a :class:`Report`; :func:`render_html` turns it into one self-contained page
(templates/reports/, Jinja2 with StrictUndefined and autoescape; charts are inline SVG, no script,
nothing fetched at view time). Called by ``snapflow report`` and the demo.

Terms: a *run* is one backup attempt (one backup ID); a *backup* is a run whose record was committed
(a restore point). The *point in time* of a backup is its consistent point (first cut). RPO is judged
against the schedule's fire times (cron, from ``--policy`` files or the schedule a local run
recorded): a slot is ``ok`` when a committed backup started within the grace after it, ``late`` when
one started before the next slot, ``missing`` when none did, ``pending`` while it may still come.
"""

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
RUNS_WITH_TIMELINE = 12

VERDICT_RANK = {"app-consistent": 2, "crash-consistent": 1, "inconsistent": 0}


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


def _reconstructed_steps(
    cp: dict[str, Any] | None,
    snaps: list[dict[str, Any]],
    verify: dict[str, Any] | None,
    backup: dict[str, Any] | None,
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
) -> Run | None:
    """One run from its records; None when nothing says which app it belongs to."""
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
    if key is None:
        return None
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
        steps = _reconstructed_steps(cp, snaps, verify, backup)
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
    chosen = [s for s in data_snaps if not wanted or s.get("id") in wanted]

    def total(key: str) -> int:
        return sum(int((s.get("summary") or {}).get(key) or 0) for s in chosen)

    volumes = []
    for s in chosen:
        summary = s.get("summary") or {}
        volumes.append(
            {
                "name": s.get("volume") or (s.get("tags") or {}).get("volume") or "?",
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
        blob_bytes_new=total("blob_bytes_new"),
        files=total("files"),
        volumes=volumes,
        steps=steps,
        steps_from=steps_from,
        failed_step=failed[0].get("name") if failed else None,
        error=error,
        runner="local" if pipeline else "argo",
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
) -> Report:
    """The report from record contents (each snapshot dict carries its ``id``). ``damaged`` lists the
    records that do not open (the banner); ``damaged_by_backup`` the object keys of damaged backup or
    run records per backup ID: such a run is shown as ``record damaged`` and flagged on its app."""
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
    for bid in sorted(ids):
        run = build_run(bid, by_backup.get(bid), runs_by.get(bid, []), snaps_by.get(bid, []))
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
        }
        problems = []
        last = backups_[-1] if backups_ else None
        if last is None:
            problems.append("no committed backup")
        else:
            if last.verdict != "app-consistent":
                problems.append(f"newest backup is {last.verdict or 'of unknown consistency'}")
            if last.verify_ok is False:
                problems.append("newest backup failed verify")
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
            )
        )
    return Report(repository, now, window_days, out, list(warnings), [dict(d) for d in damaged])


# --------------------------------------------------------------------------------------------------
# Reading the repository and the policies.


def schedules_from_policies(paths: Sequence[str]) -> dict[tuple[str, str, str], ScheduleInfo]:
    from workflows.policy import load_policies

    out: dict[tuple[str, str, str], ScheduleInfo] = {}
    for item in load_policies(paths):
        p = item.policy
        if p.spec.schedule is None:
            continue
        s = p.spec.schedule
        out[(p.spec.cluster, p.namespace, p.app)] = ScheduleInfo(
            s.cron, s.timezone, float(s.starting_deadline_seconds or DEFAULT_GRACE_S), item.source
        )
    return out


def collect(
    repo_url: str,
    endpoint: str | None = None,
    *,
    policies: Sequence[str] = (),
    now: float | None = None,
    window_days: float = DEFAULT_WINDOW_DAYS,
) -> Report:
    """Read the repository (password and S3 settings from the environment) into a :class:`Report`."""
    from steps.drivers.objectstore import open_store
    from steps.repository.catalog import read_catalog
    from steps.repository.repo import Repository
    from steps.secrets import repository_password

    schedules = schedules_from_policies(policies) if policies else {}
    repo = Repository.open(open_store(repo_url, endpoint), repository_password())
    catalog = read_catalog(repo)
    backups = [r.data for r in catalog.commits.records]
    runs = [r.data for r in catalog.runs]
    snapshots = [{"id": s.id, **s.data} for s in catalog.snapshots.values()]
    known = {b.get("backup_id") for b in backups + runs} | {s.get("backup_id") for s in snapshots}
    damaged_by_backup = {
        bid: [d.key for d in catalog.damaged_of(bid)] for bid in known if bid and catalog.damaged_of(bid)
    }
    # (the banner lists damaged records; their warning lines would only repeat it)
    warnings = [w for w in repo.warnings if not w.startswith("skipping damaged record ")]
    return build_report(
        repo.url,
        backups,
        runs,
        snapshots,
        schedules=schedules,
        now=now if now is not None else datetime.now(UTC).timestamp(),
        window_days=window_days,
        warnings=warnings,
        damaged=catalog.damage(),
        damaged_by_backup=damaged_by_backup,
    )


# --------------------------------------------------------------------------------------------------
# Charts: geometry computed here, drawn by the templates as inline SVG.


def human_bytes(n: float | None) -> str:
    if n is None:
        return "—"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            if unit == "B" or value == int(value):
                return f"{value:.0f} {unit}"
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = float(seconds)
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    if s < 2 * 86400:
        return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"
    return f"{s / 86400:.1f} days"


def ratio(value: float | None) -> str:
    if value is None:
        return "—"
    times = "\u00d7"  # the multiplication sign
    return f"{value:.1f}{times}" if value < 100 else f"{value:.0f}{times}"


def when(t: float | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    return "—" if t is None else datetime.fromtimestamp(t, UTC).strftime(fmt) + " UTC"


_TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
               2 * 86400, 7 * 86400, 14 * 86400, 30 * 86400]  # fmt: skip


def time_ticks(t0: float, t1: float, max_ticks: int = 6) -> list[tuple[float, str]]:
    span = max(t1 - t0, 1.0)
    step = next((s for s in _TIME_STEPS if span / s <= max_ticks), _TIME_STEPS[-1])
    fmt = (
        "%H:%M:%S"
        if step < 60
        else "%H:%M"
        if step < 86400 and span < 86400
        else "%m-%d %H:%M"
        if step < 86400
        else "%Y-%m-%d"
    )
    first = math.ceil(t0 / step) * step
    out = []
    t = first
    while t <= t1 + 1e-9:
        out.append((t, datetime.fromtimestamp(t, UTC).strftime(fmt)))
        t += step
    return out


def value_ticks(vmax: float, count: int = 4, binary: bool = False) -> list[float]:
    """0 and round steps up to at least ``vmax`` (steps round in KiB/MiB/GiB when ``binary``)."""
    if vmax <= 0:
        return [0.0, 1.0]
    unit = 1024 ** max(0, int(math.log(vmax, 1024))) if binary else 1
    scaled = vmax / unit
    raw = scaled / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    return [i * step * unit for i in range(math.ceil(scaled / step - 1e-9) + 1)]


@dataclass
class Plot:
    """A plotting frame: data ranges mapped into an SVG box."""

    width: float
    height: float
    left: float = 64
    right: float = 16
    top: float = 14
    bottom: float = 28
    t0: float = 0.0
    t1: float = 1.0
    vmax: float = 1.0

    def x(self, t: float) -> float:
        span = max(self.t1 - self.t0, 1e-9)
        return round(self.left + (t - self.t0) / span * (self.width - self.left - self.right), 2)

    def y(self, v: float) -> float:
        return round(self.top + (1 - v / max(self.vmax, 1e-12)) * (self.height - self.top - self.bottom), 2)

    @property
    def base(self) -> float:
        return self.y(0)


def _time_range(times: list[float], now: float | None = None) -> tuple[float, float]:
    lo, hi = min(times), max(times)
    if now is not None:
        hi = max(hi, now)
    pad = max((hi - lo) * 0.04, 1.0)
    return lo - pad, hi + pad


def backups_chart(app: AppReport, now: float, width: float = 880, height: float = 220) -> dict[str, Any]:
    """Bars of each backup's size (logical) and what it added (stored), markers by consistency, and
    crosses for runs that were not committed."""
    runs = [r for r in app.runs if r.point_in_time is not None or r.started is not None]
    if not runs:
        return {"empty": True}
    times = [r.point_in_time or r.started or now for r in runs]
    t0, t1 = _time_range(times, now)
    vmax = max([r.bytes_total for r in runs] + [1])
    ticks_v = value_ticks(vmax, binary=True)
    plot = Plot(width, height, t0=t0, t1=t1, vmax=max(ticks_v[-1], vmax))
    bar_w = max(3.0, min(18.0, (width - plot.left - plot.right) / max(len(runs), 1) * 0.5))
    bars = []
    for r, t in zip(runs, times, strict=True):
        x = plot.x(t)
        bars.append(
            {
                "x": round(x - bar_w / 2, 2),
                "cx": x,
                "w": round(bar_w, 2),
                "y_total": plot.y(r.bytes_total),
                "h_total": round(plot.base - plot.y(r.bytes_total), 2),
                "y_added": plot.y(min(r.bytes_added, r.bytes_total or r.bytes_added)),
                "h_added": round(plot.base - plot.y(min(r.bytes_added, r.bytes_total or r.bytes_added)), 2),
                "committed": r.committed,
                "verdict": r.verdict or "unknown",
                "marker_y": round(plot.y(r.bytes_total) - 7, 2) if r.committed else round(plot.base - 7, 2),
                "title": (
                    f"{r.backup_id} — {when(t)}\n"
                    + (
                        f"{r.verdict or 'unknown'}, verify {'passed' if r.verify_ok else 'failed' if r.verify_ok is False else 'unknown'}\n"
                        f"size {human_bytes(r.bytes_total)}, read {human_bytes(r.bytes_read)}, added {human_bytes(r.bytes_added)}"
                        if r.committed
                        else f"not committed ({r.status})" + (f": {r.error}" if r.error else "")
                    )
                ),
            }
        )
    return {
        "empty": False,
        "width": width,
        "height": height,
        "plot": plot,
        "bars": bars,
        "xticks": [{"x": plot.x(t), "label": label} for t, label in time_ticks(t0, t1)],
        "yticks": [{"y": plot.y(v), "label": human_bytes(v)} for v in ticks_v],
        "now_x": plot.x(now) if t0 <= now <= t1 else None,
    }


def series_chart(
    app: AppReport, value, label, fmt, now: float, width: float = 430, height: float = 170
) -> dict[str, Any]:
    """A dot-and-line chart of one number per committed backup (freeze window, duration)."""
    pts = [(r.point_in_time or r.started, value(r), r) for r in app.backups]
    pts = [(t, v, r) for t, v, r in pts if t is not None and isinstance(v, int | float)]
    if not pts:
        return {"empty": True, "label": label}
    t0, t1 = _time_range([t for t, _, _ in pts])
    vmax = max(v for _, v, _ in pts) or 1.0
    ticks_v = value_ticks(vmax)
    plot = Plot(width, height, left=56, right=28, t0=t0, t1=t1, vmax=max(ticks_v[-1], vmax))
    points = [
        {
            "x": plot.x(t),
            "y": plot.y(v),
            "title": f"{r.backup_id}: {fmt(v)}",
            "verdict": r.verdict or "unknown",
        }
        for t, v, r in pts
    ]
    return {
        "empty": False,
        "label": label,
        "width": width,
        "height": height,
        "plot": plot,
        "points": points,
        "path": " ".join(f"{'M' if i == 0 else 'L'}{p['x']},{p['y']}" for i, p in enumerate(points)),
        "xticks": [{"x": plot.x(t), "label": lab} for t, lab in time_ticks(t0, t1, 4)],
        "yticks": [{"y": plot.y(v), "label": fmt(v)} for v in ticks_v],
    }


def rpo_chart(app: AppReport, width: float = 880, height: float = 56) -> dict[str, Any]:
    slots = app.rpo.slots
    if not slots:
        return {"empty": True}
    t0 = slots[0].time
    t1 = slots[-1].time
    if t1 <= t0:
        t1 = t0 + 60
    plot = Plot(width, height, left=64, right=16, top=6, bottom=22, t0=t0, t1=t1)
    w = max(1.0, (width - plot.left - plot.right) / max(len(slots), 1))
    cells = [
        {
            "x": round(plot.left + i * w, 2),
            "w": round(max(w - (0.6 if w > 3 else 0), 0.8), 2),
            "status": s.status,
            "title": f"{when(s.time, '%Y-%m-%d %H:%M')}: {s.status}"
            + (f" ({s.backup_id}, started {human_duration(s.delay_s)} after)" if s.backup_id else ""),
        }
        for i, s in enumerate(slots)
    ]
    ticks = []
    for t, label in time_ticks(t0, t1, 6):
        frac = (t - t0) / (t1 - t0)
        ticks.append({"x": round(plot.left + frac * (width - plot.left - plot.right), 2), "label": label})
    return {"empty": False, "width": width, "height": height, "cells": cells, "xticks": ticks, "plot": plot}


def run_timeline(run: Run, width: float = 860) -> dict[str, Any]:
    spans = [s for s in run.steps if s.start is not None]
    if not spans:
        return {"empty": True}
    t0 = min(s.start for s in spans if s.start is not None)
    t1 = max((s.end or s.start or t0) for s in spans)
    if run.freeze:
        t0, t1 = min(t0, run.freeze[0]), max(t1, run.freeze[1])
    span = max(t1 - t0, 0.05)
    row = 22
    left = 150
    height = 26 + row * len(run.steps) + 18
    plot = Plot(width, height, left=left, right=60, top=8, bottom=26, t0=t0, t1=t0 + span)
    rows = []
    for i, s in enumerate(run.steps):
        y = 8 + i * row
        if s.start is None:
            rows.append({"y": y, "name": s.name, "status": s.status, "bar": None, "label": s.status})
            continue
        x0 = plot.x(s.start)
        x1 = max(plot.x(s.end or s.start), x0 + 2)
        dur = (s.end - s.start) if s.end is not None else None
        rows.append(
            {
                "y": y,
                "name": s.name,
                "status": s.status,
                "bar": {"x": x0, "w": round(x1 - x0, 2)},
                "label": ("≈ " if s.approximate else "") + human_duration(dur),
                "label_x": round(x1 + 4, 2),
                "title": f"{s.name}: {s.status}, {human_duration(dur)} (from {when(s.start, '%H:%M:%S')})",
            }
        )
    freeze = None
    if run.freeze:
        fx0, fx1 = plot.x(run.freeze[0]), plot.x(run.freeze[1])
        freeze = {
            "x": fx0,
            "w": round(max(fx1 - fx0, 1.5), 2),
            "y": 4,
            "h": 8 + row * len(run.steps),
            "label": f"freeze {run.freeze_window_ms:.1f} ms"
            if isinstance(run.freeze_window_ms, int | float)
            else "freeze",
        }
    ticks = []
    step = next((s for s in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600)
                 if span / s <= 8), 7200)  # fmt: skip
    k = 0
    while k * step <= span + 1e-9:
        ticks.append(
            {
                "x": plot.x(t0 + k * step),
                "label": f"+{k * step:g} s" if step < 60 else f"+{k * step / 60:g} min",
            }
        )
        k += 1
    return {"empty": False, "width": width, "height": height, "rows": rows, "freeze": freeze, "xticks": ticks,
            "axis_y": height - 22, "left": left}  # fmt: skip


# --------------------------------------------------------------------------------------------------
# Rendering.


def render_html(report: Report) -> str:
    from steps.resources import jinja_env

    env = jinja_env("reports", autoescape=True)
    template = env.get_template("report.html.j2")
    apps = []
    for app in report.apps:
        newest_first = list(reversed(app.runs))
        apps.append(
            {
                "app": app,
                "chart": backups_chart(app, report.generated),
                "freeze_chart": series_chart(
                    app,
                    lambda r: r.freeze_window_ms,
                    "Freeze window per backup",
                    lambda v: f"{v:.0f} ms" if v >= 10 else f"{v:.1f} ms",
                    report.generated,
                ),
                "duration_chart": series_chart(
                    app, lambda r: r.duration_s, "Backup duration", human_duration, report.generated
                ),
                "rpo_chart": rpo_chart(app),
                "runs": newest_first,
                "timelines": [(r, run_timeline(r)) for r in newest_first[:RUNS_WITH_TIMELINE]],
            }
        )
    return template.render(
        report=report,
        apps=apps,
        generated=when(report.generated),
        human_bytes=human_bytes,
        human_duration=human_duration,
        ratio=ratio,
        when=when,
    )


def write_report(report: Report, path: str) -> None:
    """Write the page atomically (a reader never sees half a report)."""
    import contextlib
    import os
    import tempfile

    html = render_html(report)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".report.", suffix=".html", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(html)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
