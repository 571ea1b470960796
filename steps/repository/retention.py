"""Retention rules: which restore points to keep (grandfather-father-son), and why.

Provides :class:`Rules` (``--keep-last/hourly/daily/weekly/monthly/yearly``), :class:`Point` (one restore
point: a committed backup of an application, or a plain snapshot), :func:`apply_rules` (a decision with
reasons for every point) and :func:`restore_points` (the points of a repository, grouped per application
or per source and tag set). Called by :mod:`.pruner` and ``steps.commands.forget``; pure apart from
:func:`restore_points`, which reads records.

Rule semantics: points are grouped, and each group is evaluated on its own, newest first. ``last N``
keeps the N newest points; a periodic rule ``daily N`` keeps the newest point of each of the N most
recent days that have a point (likewise hours, ISO weeks, months, years), with periods taken in the
policy's time zone. The rules are united: a point is kept if any rule keeps it, and the reasons list
every rule that did. Hours are told apart by their UTC offset, so the two 02:00 hours of a daylight
saving change are two hours, as they are in elapsed time.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo

from steps.errors import UsageError

from .damage import describe_damage
from .records import parse_time, referenced_snapshots

UNITS = ("last", "hourly", "daily", "weekly", "monthly", "yearly")
IDENTITY = ("cluster", "namespace", "app", "policy")


@dataclass(frozen=True)
class Rules:
    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0

    def __post_init__(self):
        for unit in UNITS:
            value = getattr(self, unit)
            if not isinstance(value, int) or value < 0:
                raise UsageError(f"--keep-{unit}: expected a whole number >= 0, got {value!r}")

    @property
    def empty(self) -> bool:
        return not any(getattr(self, u) for u in UNITS)

    def items(self) -> list[tuple[str, int]]:
        return [(u, getattr(self, u)) for u in UNITS if getattr(self, u)]

    def describe(self) -> str:
        return ", ".join(f"keep {u} {n}" for u, n in self.items()) or "no rule"

    @property
    def total(self) -> int:
        """The most points these rules can keep in one group."""
        return sum(n for _, n in self.items())


@dataclass(frozen=True)
class Point:
    """One restore point: ``id`` (backup ID or snapshot ID), its time and its group."""

    id: str
    time: datetime
    group: tuple = ()
    kind: str = "backup"  # backup | snapshot
    label: str = ""  # how to show the group


@dataclass
class Decision:
    point: Point
    keep: bool = False
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        p = self.point
        return {
            "id": p.id,
            "kind": p.kind,
            "time": p.time.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "group": p.label or "/".join(str(g) for g in p.group),
            "keep": self.keep,
            "reasons": list(self.reasons),
        }


def timezone(name: str | None) -> tzinfo:
    if not name or name == "UTC":
        return UTC
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise UsageError(
            f"--timezone: expected an IANA time zone like UTC or Europe/Berlin, got {name!r}"
        ) from None


def _period(unit: str, t: datetime) -> tuple[tuple, str]:
    """The period of ``t`` (already in the policy's zone) for a periodic rule, and its label."""
    if unit == "hourly":
        offset = t.utcoffset()
        return (t.year, t.month, t.day, t.hour, offset), t.strftime("%Y-%m-%d %H:00 %z")
    if unit == "daily":
        return (t.year, t.month, t.day), t.strftime("%Y-%m-%d")
    if unit == "weekly":
        year, week, _ = t.isocalendar()
        return (year, week), f"{year}-W{week:02d}"
    if unit == "monthly":
        return (t.year, t.month), t.strftime("%Y-%m")
    if unit == "yearly":
        return (t.year,), f"{t.year}"
    raise ValueError(unit)


def apply_rules(points: Iterable[Point], rules: Rules, tz: tzinfo = UTC) -> list[Decision]:
    """A decision for every point (newest first within each group, groups in first-seen order)."""
    groups: dict[tuple, list[Point]] = {}
    for p in points:
        if p.time.tzinfo is None:
            raise ValueError(f"point {p.id}: time without a zone")
        groups.setdefault(p.group, []).append(p)
    out: list[Decision] = []
    for members in groups.values():
        ordered = sorted(members, key=lambda p: (p.time, p.id), reverse=True)
        decisions = [Decision(p) for p in ordered]
        if rules.last:
            for i, d in enumerate(decisions[: rules.last]):
                d.keep = True
                d.reasons.append(f"last {i + 1}/{rules.last}")
        for unit in UNITS[1:]:
            count = getattr(rules, unit)
            if not count:
                continue
            kept = 0
            previous = None
            for d in decisions:
                if kept >= count:
                    break
                key, label = _period(unit, d.point.time.astimezone(tz))
                if key == previous:
                    continue
                previous = key
                kept += 1
                d.keep = True
                d.reasons.append(f"{unit} {kept}/{count} ({label})")
        out.extend(decisions)
    return out


# -- the points of a repository ------------------------------------------------------------------


def backup_identity(record: dict) -> dict[str, str | None]:
    """cluster/namespace/app/policy of a backup record (flat fields, or the ``app`` object finalize
    writes: ``{"cluster", "namespace", "name", "policy"}``)."""
    app = record.get("app")
    if isinstance(app, dict):
        return {
            "cluster": app.get("cluster"),
            "namespace": app.get("namespace"),
            "app": app.get("name") or app.get("app"),
            "policy": app.get("policy"),
        }
    return {k: record.get(k) for k in IDENTITY}


def snapshot_group(data: dict) -> tuple:
    tags = tuple(sorted((k, v) for k, v in (data.get("tags") or {}).items() if k != "backup"))
    ident = tuple(data.get(k) for k in ("cluster", "namespace", "app", "volume", "policy"))
    return ("snapshot", data.get("host"), data.get("source"), ident, tags)


def _matches(identity: dict, filters: dict[str, str]) -> bool:
    return all(identity.get(k) == v for k, v in filters.items() if v)


@dataclass
class RestorePoints:
    """The restore points of a repository and what each consists of."""

    points: list[Point]
    backup_snapshots: dict[str, list[str]]  # backup ID -> snapshot IDs that carry it
    backup_records: dict[str, list[str]]  # backup ID -> object keys of its backup records
    skipped: list[str]  # committed backups or snapshots outside the filters


def restore_points(
    backups: Iterable,
    snapshots: Iterable,
    filters: dict[str, str] | None = None,
    key_of: Callable[[object], str] | None = None,
) -> RestorePoints:
    """Group committed backup records (per cluster/namespace/app/policy) and plain snapshots (per host,
    source, identity and tags) into restore points. ``backups`` are records (``.data``), ``snapshots``
    have ``.id`` and ``.data``; ``filters`` (cluster, namespace, app, policy) restrict the points."""
    filters = {k: v for k, v in (filters or {}).items() if v}
    points: list[Point] = []
    backup_snapshots: dict[str, list[str]] = {}
    backup_records: dict[str, list[str]] = {}
    skipped: list[str] = []
    seen_backups: dict[str, Point] = {}
    for rec in backups:
        data = rec.data
        bid = data.get("backup_id")
        if not bid:
            continue
        backup_records.setdefault(bid, []).append(key_of(rec) if key_of else rec.id)
        if bid in seen_backups:
            continue
        ident = backup_identity(data)
        if not _matches(ident, filters):
            skipped.append(bid)
            continue
        t = parse_time(data.get("time")) or getattr(rec, "modified", None) or datetime.now(UTC)
        group = tuple(ident.get(k) for k in IDENTITY)
        label = "/".join(str(ident.get(k) or "-") for k in IDENTITY)
        point = Point(bid, t, ("backup", *group), "backup", label)
        seen_backups[bid] = point
        points.append(point)
    for snap in snapshots:
        data = snap.data
        bid = data.get("backup_id")
        if bid:
            backup_snapshots.setdefault(bid, []).append(snap.id)
            continue
        ident = {k: data.get(k) for k in IDENTITY}
        if not _matches(ident, filters):
            skipped.append(snap.id)
            continue
        t = parse_time(data.get("time")) or datetime.now(UTC)
        tags = ",".join(f"{k}={v}" for k, v in sorted((data.get("tags") or {}).items()))
        label = f"{data.get('source')}" + (f" [{tags}]" if tags else "")
        points.append(Point(snap.id, t, snapshot_group(data), "snapshot", label))
    return RestorePoints(points, backup_snapshots, backup_records, skipped)


def damage_in_scope(
    backups: Iterable,
    snapshots: Iterable,
    damaged_backups: Iterable,
    damaged_snapshots: Iterable,
    filters: dict[str, str] | None = None,
    present: set[str] | None = None,
) -> list[tuple[str, list[str]]]:
    """What keeps retention rules from being applied safely, as (one-line reason, object keys): a
    damaged backup or snapshot record that may be (part of) a restore point the rules apply to (one
    that cannot be read may be any), and a committed backup in scope that names a snapshot record
    that is not there (counted as kept, it would cost an intact restore point). Pure: takes records
    (``.data``, ``.id``) and damaged records (``.key``, ``.problem``, ``.data`` or None); ``present``:
    the snapshot IDs stored, listed after ``backups`` (default: those of ``snapshots``), so that a backup
    committed while the records were being read is not taken for one whose snapshot is gone."""
    filters = {k: v for k, v in (filters or {}).items() if v}
    out: list[tuple[str, list[str]]] = []
    hit = [d for d in damaged_backups if d.data is None or _matches(backup_identity(d.data), filters)]
    # a snapshot record: a plain one is a restore point itself, one of a backup makes that backup no
    # whole restore point (both are matched by the identity they carry; one that cannot be read may be
    # any)
    hit += [
        d
        for d in damaged_snapshots
        if d.data is None or _matches({k: d.data.get(k) for k in IDENTITY}, filters)
    ]
    if hit:
        what = "backup" if all(d.kind == "backups" for d in hit) else "snapshot"
        if {d.kind for d in hit} == {"backups", "snapshots"}:
            what = "backup or snapshot"
        out.append(
            (
                f"{describe_damage(hit, what)}; it may be a restore point the rules keep, and counting"
                " without it would forget another one instead",
                [d.key for d in hit],
            )
        )
    if present is None:
        present = {s.id for s in snapshots}
    for rec in backups:
        data = rec.data
        if not data.get("backup_id") or not _matches(backup_identity(data), filters):
            continue
        missing = sorted(referenced_snapshots(data) - present)
        if missing:
            out.append(
                (
                    f"backup {data['backup_id']} names the snapshot record snapshots/{missing[0]}, which is"
                    " missing, so it is no whole restore point and keeping it would forget an intact one;"
                    f" drop it first with `forget --backup-id {data['backup_id']}`",
                    [f"snapshots/{m}" for m in missing],
                )
            )
    return out
