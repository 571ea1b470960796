"""The report's charts: geometry (SVG coordinates, ticks, labels) computed here from the model, drawn
by the templates as inline SVG; and the human-readable numbers the page shows."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from workflows.report.model import AppReport, Run


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


def _dot_class(r: Run) -> str:
    """The colour of a backup's dot: its verdict, or ``source`` (a source's backup has none)."""
    return "source" if r.source != "app" else r.verdict or "unknown"


def _verdict_text(r: Run) -> str:
    return f"{r.source} snapshot (no consistent point)" if r.source != "app" else r.verdict or "unknown"


def changes_text(changes: dict[str, Any] | None) -> str:
    """One line for a backup record's ``changes`` (fields of the wrong type are left out: records are
    untrusted); "" without any."""

    def number(key: str) -> float | None:
        v = (changes or {}).get(key)
        return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None

    parts = []
    new, share, compress = number("newBytes"), number("newDataRatio"), number("newDataCompressibility")
    if new is not None or share is not None:
        detail = [f"{share:.1%} of the data" if share is not None else "", ""]
        if compress is not None:
            detail[1] = f"compressibility {compress:.2f}"
        inner = ", ".join(d for d in detail if d)
        parts.append(f"new data {human_bytes(new)}" + (f" ({inner})" if inner else ""))
    counts = [
        f"{int(v)} {label}"
        for key, label in (
            ("filesAdded", "added"),
            ("filesChanged", "changed"),
            ("filesDeleted", "deleted"),
            ("filesRenamed", "renamed"),
        )
        if (v := number(key)) is not None
    ]
    total = number("filesTotal")
    if counts:
        parts.append("files " + ", ".join(counts) + (f" of {int(total)}" if total is not None else ""))
    return "; ".join(parts)


def lock_text(anomaly: dict[str, Any] | None) -> str:
    """One line for ``anomaly.lockedLastGood`` (what finalize did to the last good backup's Object Lock
    when it flagged this one); "" when it did nothing. Untrusted: fields of the wrong type are left out."""
    lock = (anomaly or {}).get("lockedLastGood")
    if not isinstance(lock, dict):
        return ""
    error, failed = lock.get("error"), lock.get("failed")
    backup, until = lock.get("backupId"), lock.get("until")
    if isinstance(error, str) and error:
        return f"locking the last good backup failed: {error}"
    if not isinstance(backup, str) or not backup:
        return "no earlier unflagged backup to lock"
    if not isinstance(until, str) or not until:  # (finalize locks nothing without versioning)
        return f"last good backup {backup} not locked: the repository has no Object Lock"
    text = f"last good backup {backup} locked until {until}"
    numbers = [
        f"{lock[k]} object(s) {label}"
        for k, label in (("extended", "extended"), ("held", "already held"))
        if isinstance(lock.get(k), int) and not isinstance(lock.get(k), bool)
    ]
    if isinstance(failed, list) and failed:
        numbers.append(f"{len(failed)} failed")
    return text + (f" ({', '.join(numbers)})" if numbers else "")


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
                "verdict": _dot_class(r),
                "anomaly": bool(r.anomaly_flagged),
                "marker_y": round(plot.y(r.bytes_total) - 7, 2) if r.committed else round(plot.base - 7, 2),
                "title": (
                    f"{r.backup_id} — {when(t)}\n"
                    + (
                        f"{_verdict_text(r)}, verify {'passed' if r.verify_ok else 'failed' if r.verify_ok is False else 'unknown'}"
                        f"{', flagged as an anomaly' if r.anomaly_flagged else ''}\n"
                        f"size {human_bytes(r.bytes_total)}, read {human_bytes(r.bytes_read)}, added {human_bytes(r.bytes_added)}"
                        if r.committed
                        else f"not committed ({r.status})" + (f": {r.error}" if r.error else "")
                    )
                ),
            }
        )
    return {
        "empty": False,
        "source": app.source,
        "anomalies": any(b["anomaly"] for b in bars),
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
            "verdict": _dot_class(r),
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
