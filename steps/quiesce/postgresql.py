"""PostgreSQL restore rules for what a consistent point recorded (used by restore).

- ``recovery: crash`` (atomic cut): start the server on the restored data directory as it is; a
  ``backup_label`` must NOT be written (its stop location lies after the cut: "WAL ends before end of
  online backup").
- ``recovery: backup_label`` (copy in backup mode): write the stored ``backup_label`` (and
  ``tablespace_map``) into the data directory before the first start; without it a checkpoint during
  the copy yields a server that starts cleanly and serves inconsistent data.

The committed backup record holds what is needed: the consistent point's timeline (each target's
``recovery``, ``backup_label`` and ``tablespace_map``), where each target's data directory lies inside
its volumes (``targets[].pgdata``) and which repository snapshot holds each volume.
``restore --write-backup-label`` (the command every ``restore-app`` mover runs) reads that record from
the repository itself and applies :func:`labels_for_snapshot` to the snapshot it restored, so no label
ever travels on a command line or in a pod spec. The local restore (``snapflow restore --local``) asks
:func:`labels_for_volume` of the volume it restored: both write the same files at the same place.
"""

from __future__ import annotations

import os
from typing import Any

from steps.errors import UsageError, printable


def backup_labels_needed(record: dict[str, Any]) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Volume name → [(data directory inside it, consistent-point target record)] for every PostgreSQL
    target of a backup record copied in backup mode: its ``backup_label`` must be written into the
    restored data directory. WAL volumes (``role: wal``) get none."""
    consistency = record.get("consistency") or {}
    targets = (consistency.get("timeline") or {}).get("targets") or []
    pgdata = {t.get("name"): t.get("pgdata") or "" for t in record.get("targets") or []}
    out: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for t in targets:
        if t.get("recovery") != "backup_label" or not t.get("backup_label"):
            continue
        for v in record.get("volumes") or []:
            if v.get("role", "data") == "data" and v.get("target") in (None, t.get("name")):
                out.setdefault(v["name"], []).append((str(pgdata.get(t.get("name"), "")).strip("/"), t))
    return out


def labels_for_volume(record: dict[str, Any], volume: str) -> list[tuple[str, dict[str, Any]]]:
    """Whether volume ``volume`` of backup record ``record`` needs a ``backup_label`` after a restore, and
    where it goes: [(data directory inside the volume, consistent-point target record)], empty when none
    is to be written (no PostgreSQL target of the volume was copied in backup mode, or a WAL volume).
    Every restore decides it here: ``restore --write-backup-label`` (:func:`labels_for_snapshot`) and
    the local restore; :func:`write_backup_label` then writes each entry below the restored volume."""
    return backup_labels_needed(record).get(volume) or []


def labels_for_snapshot(
    record: dict[str, Any], snapshot_id: str, where: str = "--write-backup-label"
) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
    """(volume name, [(data directory, target record)]) for the volume of ``record`` held by repository
    snapshot ``snapshot_id``; refuses (one line naming ``where``) a snapshot that is not one of the
    record's volumes, or a volume for which the record carries no ``backup_label``."""
    backup = record.get("backup_id")
    volume = next(
        (v.get("name") for v in record.get("volumes") or [] if v.get("snapshot") == snapshot_id), None
    )
    if volume is None:
        raise UsageError(f"{where}: snapshot {snapshot_id[:8]} is none of the volumes of backup {backup}")
    labels = labels_for_volume(record, volume)
    if not labels:
        raise UsageError(
            f"{where}: backup {backup} recorded no backup_label for volume {volume} (no PostgreSQL "
            "target of that volume was copied in backup mode); restore without it"
        )
    return volume, labels


def label_files(labels: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """The files :func:`write_backup_label` writes for ``labels``, relative to the volume."""
    return [
        f"{sub}/{name}".lstrip("/")
        for sub, t in labels
        for name in ("backup_label", "tablespace_map")
        if t.get(name)
    ]


def label_problem(target_record: Any, sub: Any) -> str | None:
    """Why a consistent-point target record cannot give a backup_label to write into data directory
    ``sub`` (None when it can). The record comes from the repository: every field is checked before the
    restore writes anything."""
    from steps.repository.tree import name_problem

    if not isinstance(target_record, dict):
        return "a consistent-point target of the backup record is not an object"
    name = printable(repr(target_record.get("name")))
    recovery = target_record.get("recovery", "backup_label")
    if recovery != "backup_label":
        return f"target {name}: recovery is {printable(repr(recovery))}; a backup_label must not be written"
    label, tablespace_map = target_record.get("backup_label"), target_record.get("tablespace_map")
    if not label or not isinstance(label, str):
        return f"target {name}: the record carries no backup_label text"
    if tablespace_map is not None and not isinstance(tablespace_map, str):
        return f"target {name}: tablespace_map is not text"
    if not isinstance(sub, str):
        return f"target {name}: its data directory is not a path"
    for c in (c for c in sub.split("/") if c):
        problem = name_problem(c)
        if problem is not None:
            return f"target {name}: data directory {printable(repr(sub))}: {problem}"
    return None


def write_backup_label(root: str | os.PathLike, target_record: dict[str, Any], sub: str = "") -> list[str]:
    """Write ``backup_label`` (and ``tablespace_map``) from a consistent-point target record into the
    restored data directory ``root/sub``; returns the files written. Refuses a record whose recovery is
    not ``backup_label``. ``sub`` comes from the repository: each of its components is checked as a
    directory entry name and opened without following a symlink, so the files land inside ``root``."""
    from steps.drivers.files import write_files_beneath

    problem = label_problem(target_record, sub)
    if problem is not None:
        raise UsageError(problem)
    contents = (
        ("backup_label", target_record["backup_label"]),
        ("tablespace_map", target_record.get("tablespace_map")),
    )
    return write_files_beneath(root, sub, [(name, text) for name, text in contents if text])
