"""``repair records``: put renamed or swapped records back under their own names, remove the rest.

Provides :func:`repair_records` (:class:`RecordRepair` out). Called by the ``repair`` step.

A record whose stored bytes are an intact record of the same kind and group under another name (it was
renamed, or swapped with another) is written back under its own name — the name is the hash of those
bytes, so this is the object as it was written — unless an intact copy is already there; the misnamed
object is then deleted, unless it is itself the right name of another misnamed record (a swap). A
record that cannot be read at all (bytes changed, moved from another group, not written by Snapflow)
is deleted: nothing can be learnt from it, and while it is there ``restore --snapshot latest``,
finalize and retention refuse to choose around it. On a versioned bucket every deletion is logged
first (so ``check`` does not report it as tampering) and the old versions stay until prune purges them.

A backup record whose snapshots are gone is neither put back (it would be a commit naming missing
snapshots) nor deleted (it is an authentic commit): it is reported as kept, with the way out
(``forget --backup-id ID`` removes everything of that backup).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from steps.drivers.objectstore import ObjectNotFound

from .crypto import storage_id
from .damage import DamagedRecord
from .records import RECORD_KINDS, referenced_snapshots
from .repo import Repository


@dataclass
class RecordRepair:
    dry_run: bool
    restored: list[dict] = field(default_factory=list)  # {"key": right name, "from": misnamed key}
    removed: list[dict] = field(default_factory=list)  # {"key", "problem"}
    kept: list[dict] = field(default_factory=list)  # damaged but left alone, with why

    def to_dict(self) -> dict:
        return {
            "dry_run": self.dry_run,
            "restored": self.restored,
            "removed": self.removed,
            "kept": self.kept,
        }


def repair_records(
    repo: Repository, kinds: tuple[str, ...] = RECORD_KINDS, dry_run: bool = False
) -> RecordRepair:
    report = RecordRepair(dry_run)
    damaged: list[DamagedRecord] = []
    for kind in kinds:
        damaged += repo.scan_records(kind)[1]
    present_snapshots = {i.key.rsplit("/", 1)[-1] for i in repo.store.list("snapshots/")}
    # what each right name should hold: the first intact bytes found for it
    moves: dict[str, bytes] = {}
    sources: dict[str, str] = {}
    for d in damaged:
        if d.raw is None or d.true_key is None or d.data is None:
            continue
        if d.kind == "backups":
            missing = sorted(referenced_snapshots(d.data) - present_snapshots - _true_names(damaged))
            if missing:
                bid = d.data.get("backup_id")
                report.kept.append(
                    {
                        "key": d.key,
                        "problem": d.problem,
                        "why": f"backup {bid} it holds names missing snapshot(s) {', '.join(m[:8] for m in missing)};"
                        f" remove that backup with `forget --backup-id {bid}`",
                    }
                )
                continue
        moves.setdefault(d.true_key, d.raw)
        sources.setdefault(d.true_key, d.key)
    writes: dict[str, bytes] = {}
    for key, data in moves.items():
        try:
            current = repo.store.get(key)
        except ObjectNotFound:
            current = None
        if current is not None and storage_id(current) == key.rsplit("/", 1)[-1]:
            continue  # an intact copy is already there: the misnamed one is a duplicate
        writes[key] = data
    for key, data in writes.items():
        report.restored.append({"key": key, "from": sources[key]})
        if not dry_run:
            repo.store.put(key, data)
    doomed = []
    kept_keys = {k["key"] for k in report.kept}
    naming: dict[str, list[str]] = {}  # snapshot ID -> committed backups that name it
    for rec in repo.list_records("backups"):
        for sid in referenced_snapshots(rec.data):
            naming.setdefault(sid, []).append(str(rec.data.get("backup_id")))
    owners: dict[str, str] = {}  # record group -> the backup ID its run records carry
    if any(d.kind == "backups" and d.data is None for d in damaged):
        for rec in repo.list_records("runs"):
            if rec.key_group and rec.data.get("backup_id"):
                owners.setdefault(rec.key_group, str(rec.data["backup_id"]))
    for d in damaged:
        if d.key in writes or d.key in kept_keys:
            continue  # (a swap: this name now holds its own bytes again)
        doomed.append(d)
        entry = {"key": d.key, "problem": d.problem}
        if d.kind == "backups" and d.data is None and d.group in owners:
            bid = owners[d.group]
            entry["backups"] = [bid]
            entry["note"] = (
                f"{d.key} was a backup record of backup {bid} (its run records say so): its snapshots are no"
                " restore point without one, and prune frees them after its grace period; commit it again"
                f" by running finalize for {bid} again (it checks the verify and consistent-point records"
                f" anew), or remove it with `forget --backup-id {bid}`"
            )
        if d.kind == "snapshots" and naming.get(d.id) and d.true_key not in writes:
            bids = naming[d.id]
            entry["backups"] = bids
            entry["note"] = (
                f"backup {bids[0]} names it and is no whole restore point without it: remove that backup"
                f" with `forget --backup-id {bids[0]}`"
            )
        report.removed.append(entry)
    if doomed and not dry_run:
        repo.note_deletions([d.key for d in doomed], "repair records")
        for d in doomed:
            repo.store.delete(d.key)
    return report


def _true_names(damaged: list[DamagedRecord]) -> set[str]:
    return {d.true_id for d in damaged if d.kind == "snapshots" and d.true_id and d.data is not None}
