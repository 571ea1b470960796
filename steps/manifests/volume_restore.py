"""Restore one repository snapshot into one volume: the engine of the ``restore`` step and of
``restore-app``'s local mover (which runs what a mover pod runs, in this process).

With ``write_backup_label``, the ``backup_label`` (and ``tablespace_map``) of a PostgreSQL copied in
backup mode is read from the committed record of the snapshot's backup and written into its data
directory after the restore (:mod:`steps.quiesce.postgresql`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from steps.errors import PermanentError, UsageError


@dataclass
class VolumeRestore:
    """What a restore of one snapshot did: the snapshot, the restorer's statistics, the label files
    written (relative to the target)."""

    snap: Any
    stats: Any
    written: list[str] = field(default_factory=list)


def backup_labels(repo, snap) -> list[tuple[str, dict]]:
    """[(data directory inside the target, consistent-point target record)] to write after restoring
    ``snap``, from the committed record of its backup; refuses a snapshot whose backup recorded none."""
    from steps.quiesce.postgresql import label_problem, labels_for_snapshot

    if not snap.backup_id:
        raise UsageError(
            f"--write-backup-label: snapshot {snap.short_id} belongs to no backup, so no consistent point"
            " recorded a backup_label for it"
        )
    records = repo.list_records("backups", key=snap.backup_id)
    if not records:
        raise UsageError(
            f"--write-backup-label: backup {snap.backup_id} of snapshot {snap.short_id} has no committed"
            " record in the repository (the record holds the backup_label)"
        )
    try:
        _volume, labels = labels_for_snapshot(records[-1].data, snap.id)
    except (AttributeError, TypeError, KeyError):  # a field of the wrong type in a crafted record
        raise PermanentError(
            f"--write-backup-label: the committed record of backup {snap.backup_id} is malformed (its"
            " volumes, targets or consistency are not what a backup record holds); nothing was written"
        ) from None
    for sub, record in labels:  # checked now, so that nothing is written for a label that cannot be
        problem = label_problem(record, sub)
        if problem is not None:
            raise PermanentError(f"--write-backup-label: {problem}; nothing was written")
    return labels


def write_labels(target: str, labels: list[tuple[str, dict]]) -> list[str]:
    """Write each label into its data directory below ``target`` (never through a symlink); the files
    written, relative to it."""
    from steps.quiesce.postgresql import write_backup_label

    written = []
    for sub, record in labels:
        try:
            names = write_backup_label(target, record, sub)
        except OSError as err:
            raise PermanentError(
                f"--write-backup-label: the data directory {sub or '.'} of target {record.get('name')} is"
                f" not a directory in the restored {target} ({err.strerror})"
            ) from None
        written += [f"{sub}/{name}".lstrip("/") for name in names]
    return written


def check_label_target(target: str, write_backup_label: bool) -> None:
    """Refuse, before anything is read, a ``--target`` that is not a directory when labels are to be
    written into it."""
    from steps.drivers import files

    if write_backup_label and files.exists(target) and not files.is_dir(target):
        raise UsageError(
            f"--write-backup-label: --target {target} is no directory (a data directory is needed)"
        )


def restore_volume(
    repo,
    snapshot: str,
    target: str,
    *,
    includes: list[str] | None = None,
    excludes: list[str] | None = None,
    uid_map=(),
    gid_map=(),
    overwrite: str | None = None,
    delete: bool = False,
    skip_damaged: bool = False,
    limits=None,
    write_backup_label: bool = False,
    allow_uncommitted: bool = False,
    progress_label: str = "restore",
) -> VolumeRestore:
    """Restore ``snapshot`` (an ID, a prefix or ``latest``; a restore point unless
    ``allow_uncommitted``) of ``repo`` into ``target``; then the backup labels, when asked for."""
    from steps.progress import Progress
    from steps.repository.blob_sink import tune_for_bulk_work
    from steps.repository.restorer import restore_snapshot

    check_label_target(target, write_backup_label)
    tune_for_bulk_work()
    snap = repo.find_restore_point(snapshot, allow_uncommitted=allow_uncommitted)
    labels = backup_labels(repo, snap) if write_backup_label else []
    kw: dict[str, Any] = {"limits": limits} if limits is not None else {}
    with Progress(progress_label) as progress:
        stats = restore_snapshot(
            repo,
            snap,
            target,
            includes or [],
            excludes or [],
            progress,
            uid_map=uid_map,
            gid_map=gid_map,
            overwrite=overwrite,
            delete=delete,
            skip_damaged=skip_damaged,
            **kw,
        )
    return VolumeRestore(snap, stats, write_labels(target, labels) if labels else [])
