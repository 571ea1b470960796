"""Early warning of ransomware and mass deletion: a backup's changes compared with its app's history.

Pure (no I/O). Provides:

* :func:`backup_changes` - the ``changes`` of a backup record, summed over the ``changes`` telemetry of
  its snapshots (:mod:`.change_telemetry`);
* :func:`baseline` - the app's earlier committed, unflagged backups that a new one is compared with;
* :func:`detect` - the ``anomaly`` of a backup record: ``{flagged, score, reasons, baseline}``.

Called by :mod:`.anomaly_commit` when ``finalize`` commits a backup, and by bench/anomaly_rates.py.

The comparison is robust: for each feature, the median and the median absolute deviation (MAD) of the
last :data:`HISTORY` backups; a feature's score is how many robust standard deviations
(1.4826 x MAD, at least the feature's scale floor) the new value lies above the median. A backup is
flagged when a feature's score reaches :data:`THRESHOLD` *and* its value passes the feature's absolute
floor (so an app that is quiet most days does not flag on a small absolute change), and only once at
least :data:`MIN_HISTORY` backups are known. The thresholds are fixed here, before any evaluation;
docs/user/anomalies.md gives the rates they reach on held-out data.

Features (shares are of the files, or bytes, the previous backup held):

* ``changedShare`` - files whose content changed (ransomware rewrites files in place);
* ``deletedShare`` - files deleted (mass deletion; renamed files are not deleted);
* ``newDataRatio`` - bytes stored new, of the source's bytes;
* ``incompressibleRatio`` - the same for the part compression could not shrink (encrypted data does
  not compress, an app's own writes mostly do);
* ``compressibilityDrop`` - how much less compressible the new data is than usual (only when at least
  :data:`MIN_NEW_BYTES` are new).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from statistics import median

HISTORY = 30  # backups of the app compared with
MIN_HISTORY = 5  # fewer known backups: nothing is flagged yet
THRESHOLD = 6.0  # robust z-score that flags
MIN_FILES = 10  # fewer files changed or deleted never flag
MIN_NEW_BYTES = 1024 * 1024  # less new data: its compressibility says nothing
MAD_TO_SD = 1.4826  # the MAD of a normal distribution times this is its standard deviation


@dataclass(frozen=True)
class Feature:
    name: str
    floor: float  # the value must be at least this to flag
    scale_floor: float  # the spread is taken as at least this (a history of equal values has MAD 0)
    what: str


FEATURES = (
    Feature("changedShare", 0.10, 0.01, "of the files changed"),
    Feature("deletedShare", 0.05, 0.005, "of the files deleted"),
    Feature("newDataRatio", 0.10, 0.01, "of the data is new"),
    Feature("incompressibleRatio", 0.05, 0.005, "of the data is new and does not compress"),
    Feature("compressibilityDrop", 0.30, 0.05, "less compressible new data than usual"),
)

CHANGE_FIELDS = (
    "newBytes",
    "newDataRatio",
    "newDataCompressibility",
    "filesAdded",
    "filesChanged",
    "filesDeleted",
    "filesRenamed",
    "filesTotal",
)
_FILE_COUNTS = {
    "filesAdded": "files_added",
    "filesChanged": "files_changed",
    "filesDeleted": "files_deleted",
    "filesRenamed": "files_renamed",
    "filesTotal": "files_total",
}


# Untrusted numbers (records and snapshots a writer with the key may have crafted) count only when finite
# and below this bound: a huge integer must not overflow the arithmetic, a NaN must not silence a flag.
LIMIT = 2**63


def _count(value) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < LIMIT:
        return value
    return None


def backup_changes(telemetry: Iterable[dict]) -> dict | None:
    """The ``changes`` of a backup from the ``changes`` of its snapshots (volumes or source), or None
    when none has any (copied by an older version). File counts are None when no snapshot has them
    (block volumes only). Snapshot records are untrusted: a value of the wrong type is left out."""
    items = [t for t in telemetry if isinstance(t, dict)]
    if not items:
        return None
    new = sum(_count(t.get("new_bytes")) or 0 for t in items)
    stored = sum(_count(t.get("new_bytes_stored")) or 0 for t in items)
    total = sum(_count(t.get("bytes_total")) or 0 for t in items)
    read = sum(_count(t.get("bytes_read")) or 0 for t in items)
    out: dict = {
        "newBytes": new,
        "newDataRatio": round(new / total, 6) if total else None,
        "newDataCompressibility": round(min(1.0, max(0.0, 1 - stored / new)), 6) if new else None,
    }
    with_files = [t for t in items if _count(t.get("files_total")) is not None]
    for name, key in _FILE_COUNTS.items():
        out[name] = sum(_count(t.get(key)) or 0 for t in with_files) if with_files else None
    out["bytesTotal"] = total
    out["bytesRead"] = read
    return out


def baseline(records: Iterable[dict], app: dict, before: str) -> list[dict]:
    """The ``changes`` of the app's committed backups older than ``before`` (an ISO time), oldest first,
    at most :data:`HISTORY`: same cluster, namespace and name; flagged ones left out (an attack must
    not become the norm)."""
    key = tuple(app.get(k) for k in ("cluster", "namespace", "name"))
    picked = []
    for r in records:
        if not isinstance(r, dict) or not isinstance(r.get("changes"), dict):
            continue
        other = r.get("app") if isinstance(r.get("app"), dict) else {}
        if tuple(other.get(k) for k in ("cluster", "namespace", "name")) != key:
            continue
        t = r.get("time")
        if not isinstance(t, str) or t >= before:
            continue
        a = r.get("anomaly")
        if isinstance(a, dict) and a.get("flagged") is True:
            continue
        picked.append((t, r["changes"]))
    picked.sort(key=lambda p: p[0])
    return [c for _, c in picked[-HISTORY:]]


def _num(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not -LIMIT < value < LIMIT:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def features(changes: dict, usual_compressibility: float | None = None) -> dict[str, float | None]:
    """The features of one backup's ``changes`` (None where it has no data for one)."""
    ratio = _num(changes.get("newDataRatio"))
    comp = _num(changes.get("newDataCompressibility"))
    total, added, deleted = (_num(changes.get(k)) for k in ("filesTotal", "filesAdded", "filesDeleted"))
    changed = _num(changes.get("filesChanged"))
    before = (total - (added or 0) + (deleted or 0)) if total is not None else None
    out: dict[str, float | None] = {
        "changedShare": changed / before if before and changed is not None else None,
        "deletedShare": deleted / before if before and deleted is not None else None,
        "newDataRatio": ratio,
        "incompressibleRatio": ratio * (1 - comp) if ratio is not None and comp is not None else None,
        "compressibilityDrop": None,
    }
    new = _num(changes.get("newBytes")) or 0
    if usual_compressibility is not None and comp is not None and new >= MIN_NEW_BYTES:
        out["compressibilityDrop"] = usual_compressibility - comp
    return out


def _robust(values: list[float]) -> tuple[float, float]:
    mid = median(values)
    return mid, median(abs(v - mid) for v in values)


def detect(changes: dict | None, history: list[dict]) -> dict:
    """The ``anomaly`` of a backup whose ``changes`` are given, against the ``changes`` of the app's
    earlier backups (:func:`baseline`). ``score`` is the largest feature score (0 without enough
    history); ``reasons`` say which features flagged, by how much."""
    usable = [h for h in history if isinstance(h, dict)]
    result = {"flagged": False, "score": 0.0, "reasons": [], "baseline": len(usable)}
    if not isinstance(changes, dict) or len(usable) < MIN_HISTORY:
        return result
    comps = [c for c in (_num(h.get("newDataCompressibility")) for h in usable) if c is not None]
    usual_comp = median(comps) if comps else None
    now = features(changes, usual_comp)
    past = [features(h, usual_comp) for h in usable]
    # the compressibility of the past, not its drop, is the history of the drop
    for p, h in zip(past, usable, strict=True):
        c = _num(h.get("newDataCompressibility"))
        p["compressibilityDrop"] = usual_comp - c if usual_comp is not None and c is not None else None
    score = 0.0
    reasons = []
    counts = {"changedShare": "filesChanged", "deletedShare": "filesDeleted"}
    for f in FEATURES:
        x = now[f.name]
        values = [p[f.name] for p in past if p[f.name] is not None]
        if x is None or len(values) < MIN_HISTORY:
            continue
        mid, mad = _robust(values)
        z = (x - mid) / max(MAD_TO_SD * mad, f.scale_floor)
        score = max(score, z)
        few = f.name in counts and (_num(changes.get(counts[f.name])) or 0) < MIN_FILES
        if z >= THRESHOLD and x >= f.floor and not few:
            reasons.append(
                f"{f.name}: {x:.1%} {f.what} (usual {mid:.1%}, spread {MAD_TO_SD * mad:.1%}; score {z:.1f})"
            )
    result["score"] = round(score, 2)
    result["reasons"] = reasons
    result["flagged"] = bool(reasons)
    return result
