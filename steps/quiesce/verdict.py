"""The timeline of a consistent point and its verdict (pure functions, no I/O).

Verdicts, best first:

- ``app-consistent``: every volume was cut while every target it belongs to was quiesced:
  quiesced <= cut time <= released (the cut time as the storage recorded it), or — for a copy that is
  not atomic — the whole copy ran inside the hold of a hook whose method makes such a copy consistent
  (PostgreSQL backup mode with its backup_label stored and pg_wal copied after the stop; fsfreeze;
  fsyncLock), and the hold check before the release passed.
- ``crash-consistent``: each volume was cut atomically, but not inside the hold (no hook, a lost hold,
  a cut after the deadline released): like a power cut; the application's recovery must cope.
- ``inconsistent``: a volume was copied file by file outside a hold that makes that safe; its content
  may be torn and must not be trusted as a restore point.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from steps.drivers.snapshot import CutResult

RANK = {"app-consistent": 2, "crash-consistent": 1, "inconsistent": 0}


@dataclass
class TargetHold:
    name: str
    hook: str
    method: str | None
    recovery: str | None
    non_atomic_ok: bool
    quiesced: float | None
    released: float | None
    released_by: str | None
    lost: str | None = None
    info: dict[str, Any] = field(default_factory=dict)


def iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _ms(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round((b - a) * 1000, 3)


def judge_volume(cut: CutResult, holds: list[TargetHold]) -> tuple[str, list[str]]:
    """The verdict of one volume cut against the holds of the targets it belongs to."""
    worst_case = "crash-consistent" if cut.atomic else "inconsistent"
    reasons = []
    if not holds:
        return worst_case, [f"volume {cut.volume}: no target quiesces it"]
    for h in holds:
        who = f"volume {cut.volume} / target {h.name}"
        if h.hook == "none":
            reasons.append(f"{who}: hook 'none' does not quiesce")
            continue
        if h.quiesced is None:
            reasons.append(f"{who}: not quiesced")
            continue
        if h.lost:
            reasons.append(f"{who}: hold check failed: {h.lost}")
            continue
        if h.released is not None and h.released_by not in ("release",):
            reasons.append(f"{who}: hold ended by {h.released_by} before the release")
            continue
        released = h.released if h.released is not None else float("inf")
        if cut.atomic:
            if cut.cut_time is None:
                reasons.append(f"{who}: the storage reported no cut time")
            elif not (h.quiesced <= cut.cut_time <= released):
                reasons.append(
                    f"{who}: cut at {iso(cut.cut_time)} outside the hold "
                    f"[{iso(h.quiesced)}, {iso(h.released)}]"
                )
            continue
        if not h.non_atomic_ok:
            reasons.append(
                f"{who}: a file-by-file copy is not consistent under the {h.method} method "
                "(only an atomic cut is)"
            )
        elif not (h.quiesced <= cut.started and cut.finished <= released):
            reasons.append(
                f"{who}: copy [{iso(cut.started)}, {iso(cut.finished)}] not inside the hold "
                f"[{iso(h.quiesced)}, {iso(h.released)}]"
            )
        elif h.recovery == "backup_label" and not h.info.get("backup_label"):
            reasons.append(f"{who}: backup mode without a stored backup_label")
        elif cut.deferred and (
            cut.deferred_copied is None or (h.released is not None and cut.deferred_copied < h.released)
        ):
            reasons.append(f"{who}: {', '.join(cut.deferred)} not copied after the stop")
    if reasons:
        return worst_case, reasons
    return "app-consistent", []


def build_record(
    holds: list[TargetHold],
    cuts: list[CutResult],
    owners: dict[str, list[str]],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Timeline and verdict. ``owners`` maps a volume name to the targets that quiesce it."""
    by_name = {h.name: h for h in holds}
    verdict = "app-consistent"
    reasons: list[str] = []
    volumes = []
    for cut in cuts:
        vholds = [by_name[n] for n in owners.get(cut.volume, []) if n in by_name]
        v, why = judge_volume(cut, vholds)
        if RANK[v] < RANK[verdict]:
            verdict = v
        reasons.extend(why)
        quiesced = max((h.quiesced for h in vholds if h.quiesced is not None), default=None)
        released = min((h.released for h in vholds if h.released is not None), default=None)
        point = cut.cut_time if cut.atomic else cut.finished
        volumes.append(
            {
                "volume": cut.volume,
                "snapshot": cut.snapshot,
                "atomic": cut.atomic,
                "targets": [h.name for h in vholds],
                "quiesced": iso(quiesced),
                "cut": iso(cut.cut_time) if cut.atomic else None,
                "copy_started": None if cut.atomic else iso(cut.started),
                "copy_finished": None if cut.atomic else iso(cut.finished),
                "deferred": list(cut.deferred),
                "deferred_copied": iso(cut.deferred_copied),
                "released": iso(released),
                "window_ms": _ms(quiesced, released),
                "cut_after_quiesce_ms": _ms(quiesced, point),
                "verdict": v,
            }
        )
    targets = []
    for h in holds:
        t = {
            "name": h.name,
            "hook": h.hook,
            "method": h.method,
            "recovery": h.recovery,
            "quiesced": iso(h.quiesced),
            "released": iso(h.released),
            "released_by": h.released_by,
            "window_ms": _ms(h.quiesced, h.released),
        }
        if h.lost:
            t["hold_lost"] = h.lost
        for key in ("backup_label", "tablespace_map", "stop_lsn", "thaw_attempts"):
            if h.info.get(key):
                t[key] = h.info[key]
        targets.append(t)
    windows = [t["window_ms"] for t in targets if t["window_ms"] is not None]
    record = {
        "verdict": verdict,
        "reasons": reasons,
        "recovery": {h.name: h.recovery for h in holds},
        "freeze_window_ms": max(windows) if windows else None,
        "timeline": {"targets": targets, "volumes": volumes},
        "snapshots": [c.to_dict() for c in cuts],
    }
    if extra:
        record.update(extra)
    return record
