"""Restore points: which backups are committed, and which snapshot a command may use.

A snapshot is a restore point (and a candidate parent) when it belongs to no backup (a plain ``copy``)
or its backup has a ``backups`` record that opens (docs/design.md, "backups/GROUP/ID"). Provides
:class:`Commits` (one reading of every backup record) and the mixin :class:`RestorePoints` of
:class:`~.repo.Repository`: ``commits``, ``find_snapshot`` (``latest``, an ID or a prefix),
``find_restore_point`` (what ``restore`` may write), ``find_parent`` (an incremental copy's parent) and
``refuse_damaged_backups``. None of them chooses around damage: a record that does not open and may be
the one asked for is refused by name (:class:`~steps.errors.DamagedRecordError`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from steps.errors import DamagedRecordError, UsageError

from .damage import DamagedRecord, describe_damage, repair_hint
from .records import Record, Snapshot, parse_time, referenced_snapshots

if TYPE_CHECKING:
    from steps.drivers.objectstore import ObjectStore


@dataclass
class Commits:
    """Which backups are committed, from one reading of every ``backups`` record: a backup is committed
    when its group holds a record that opens; ``damaged`` are the records there that do not."""

    records: list[Record]
    damaged: list[DamagedRecord]
    group_of: Callable[[str], str]
    groups: set[str] = field(init=False)
    damaged_groups: set[str] = field(init=False)

    def __post_init__(self):
        self.groups = {r.key_group for r in self.records if r.key_group}
        self.damaged_groups = {d.group for d in self.damaged if d.group}

    def committed(self, snap: Snapshot) -> bool:
        return not snap.backup_id or self.group_of(snap.backup_id) in self.groups

    def state(self, snap: Snapshot) -> str:
        """``plain`` (no backup), ``committed``, ``damaged`` (only damaged backup records) or
        ``uncommitted``."""
        if not snap.backup_id:
            return "plain"
        group = self.group_of(snap.backup_id)
        if group in self.groups:
            return "committed"
        return "damaged" if group in self.damaged_groups else "uncommitted"

    def damaged_for(self, backup_id: str) -> list[DamagedRecord]:
        group = self.group_of(backup_id)
        return [d for d in self.damaged if d.group == group]

    def record_for(self, backup_id: str) -> Record | None:
        """The newest record of the backup that opens."""
        group = self.group_of(backup_id)
        mine = [r for r in self.records if r.key_group == group]
        return mine[-1] if mine else None


class RestorePoints:
    """Choosing among snapshots and backups, for :class:`~.repo.Repository` (which provides ``store``,
    ``url``, ``warnings``, ``key_group``, ``scan_records``, ``list_records``, ``damaged_records`` and
    ``list_snapshots``)."""

    store: ObjectStore
    url: str
    warnings: list[str]

    def commits(self) -> Commits:
        """Which backups are committed: those with a ``backups`` record that opens. A backup whose only
        records there are damaged is neither committed nor known to be uncommitted (``state`` says
        ``damaged``)."""
        records, damaged = self.scan_records("backups")
        for d in damaged:
            self.warnings.append(f"skipping damaged record {d.key}: {d.problem}")
        return Commits(records, damaged, self.key_group)

    def committed_filter(self, commits: Commits | None = None) -> Callable[[Snapshot], bool]:
        """A snapshot is a restore point (and a parent candidate) when it belongs to no backup (a plain
        ``copy``) or its backup has a committed ``backups`` record that opens."""
        return (commits or self.commits()).committed

    def find_snapshot(
        self, ref: str, snapshots: list[Snapshot] | None = None, commits: Commits | None = None
    ) -> Snapshot:
        """``latest`` (newest committed), a full ID or a unique prefix of at least 4 characters.

        ``latest`` refuses (DamagedRecordError naming the object key) rather than choose around damage:
        when a snapshot record or a backup record does not open (either may be the newest restore
        point), or when a committed backup at least as new as the choice names a snapshot that is gone.
        An ID that matches only a damaged record is refused naming that record, not "no snapshot"."""
        snaps = snapshots if snapshots is not None else self.list_snapshots()
        if ref == "latest":
            return self._latest(snaps, commits or self.commits())
        if len(ref) < 4 or not re.fullmatch(r"[0-9a-f]+", ref):
            raise UsageError(
                f"--snapshot: expected 'latest' or a snapshot ID (at least 4 hex digits), got {ref!r}"
            )
        found = [s for s in snaps if s.id.startswith(ref)]
        if not found:
            damaged = [
                d
                for d in self.damaged_records("snapshots")
                if d.id.startswith(ref) or (d.true_id or "").startswith(ref)
            ]
            if damaged:
                d = damaged[0]
                raise DamagedRecordError(
                    f"--snapshot {ref}: the snapshot record {d.key} is damaged ({d.problem}) and cannot be"
                    f" used; {repair_hint(self.url)}",
                    [x.key for x in damaged],
                )
            named = [
                (r, sid)
                for r in (commits.records if commits else self.list_records("backups"))
                for sid in sorted(referenced_snapshots(r.data))
                if sid.startswith(ref)
            ]
            if named:
                rec, sid = named[0]
                raise DamagedRecordError(
                    f"--snapshot {ref}: backup {rec.data.get('backup_id')} names snapshot {sid}, but its record"
                    f" snapshots/{sid} is missing from {self.url} (deleted outside Snapflow?)",
                    [f"snapshots/{sid}"],
                )
            raise UsageError(f"--snapshot: no snapshot {ref!r} in {self.url}")
        if len(found) > 1:
            raise UsageError(f"--snapshot: {ref!r} is ambiguous ({len(found)} snapshots match)")
        return found[0]

    def _latest(self, snaps: list[Snapshot], commits: Commits) -> Snapshot:
        damaged = self.damaged_records("snapshots")
        if damaged:
            raise DamagedRecordError(
                f"--snapshot latest: {describe_damage(damaged, 'snapshot')}, so which snapshot is the newest"
                f" restore point is unknown; pass --snapshot ID to restore a chosen one (`snapshots` lists"
                f" the intact ones), or {repair_hint(self.url)}",
                [d.key for d in damaged],
            )
        if commits.damaged:
            raise DamagedRecordError(
                f"--snapshot latest: {describe_damage(commits.damaged, 'backup')}, so the newest committed"
                f" backup is unknown; pass --snapshot ID to restore a chosen one, or {repair_hint(self.url)}",
                [d.key for d in commits.damaged],
            )
        committed = [s for s in snaps if commits.committed(s)]
        if not committed:
            raise UsageError(f"--snapshot latest: {self.url} has no committed snapshot")
        best = max(committed, key=lambda s: s.time)
        present: set[str] | None = None  # listed after the backup records (see below)
        best_time = parse_time(best.time)
        for rec in reversed(commits.records):
            when = parse_time(rec.data.get("time"))
            if when is not None and best_time is not None and when < best_time:
                continue  # committed before the choice was made: cannot be a newer restore point
            if present is None:
                # a backup committed after ``snaps`` were listed names snapshots that list lacks
                present = {i.key.rsplit("/", 1)[-1] for i in self.store.list("snapshots/")}
            missing = sorted(referenced_snapshots(rec.data) - present)
            if missing:
                raise DamagedRecordError(
                    f"--snapshot latest: backup {rec.data.get('backup_id')} (committed {rec.data.get('time')})"
                    f" names the snapshot record snapshots/{missing[0]}, which is missing (deleted outside"
                    " Snapflow?), so the newest restore point is broken; pass --snapshot ID to restore a"
                    f" chosen one, or drop that backup with `forget --backup-id {rec.data.get('backup_id')}`",
                    [f"snapshots/{m}" for m in missing],
                )
        return best

    def refuse_damaged_backups(
        self,
        option: str,
        matches: Callable[[dict], bool] | None = None,
        key: str | None = None,
        way_out: str = "choose a backup by its ID",
    ) -> None:
        """For commands that choose among backup records (``--backup latest`` of an app, a backup by ID):
        DamagedRecordError naming the damaged backup records that may be among them — every one that
        cannot be read, and one whose intact content (under a wrong name) ``matches``; ``key``: only
        the records of that backup ID."""
        damaged = [
            d
            for d in self.damaged_records("backups", key)
            if d.data is None or matches is None or matches(d.data)
        ]
        if damaged:
            raise DamagedRecordError(
                f"{option}: {describe_damage(damaged, 'backup')}, and it may be the backup asked for;"
                f" {way_out}, or {repair_hint(self.url)}",
                [d.key for d in damaged],
            )

    def find_restore_point(
        self, ref: str, allow_uncommitted: bool = False, snapshots: list[Snapshot] | None = None
    ) -> Snapshot:
        """The snapshot ``restore`` may write (as :meth:`find_snapshot`). A snapshot of a backup that was
        never committed — its copies, verify or finalize did not all pass, or it is still running — is no
        restore point: refused (UsageError) unless ``allow_uncommitted``. One whose backup record is
        damaged is refused too (DamagedRecordError naming it): whether it was committed is unknown."""
        commits = self.commits()
        snap = self.find_snapshot(ref, snapshots, commits)
        if not allow_uncommitted and not commits.committed(snap):
            damaged = commits.damaged_for(snap.backup_id or "")
            if damaged:
                raise DamagedRecordError(
                    f"--snapshot: {snap.short_id} belongs to backup {snap.backup_id}, whose backup record"
                    f" {damaged[0].key} is damaged ({damaged[0].problem}), so whether it was committed is"
                    f" unknown; pass --allow-uncommitted to restore it anyway, or {repair_hint(self.url)}",
                    [d.key for d in damaged],
                )
            raise UsageError(
                f"--snapshot: {snap.short_id} belongs to backup {snap.backup_id}, which was never committed"
                " (a copy, the verify or finalize did not pass, or it is still running), so it is no"
                " restore point; pass --allow-uncommitted to restore it anyway"
            )
        return snap

    def find_parent(
        self, source: str, tags: dict, identity: dict, warn: Callable[[str], None] | None = None
    ) -> Snapshot | None:
        """The newest committed snapshot of the same source, tags (ignoring ``backup``) and identity.

        None (a full read), with a warning, when a damaged record may hide a newer parent."""
        want_tags = {k: v for k, v in tags.items() if k != "backup"}

        def same_source(d: dict) -> bool:
            t = d.get("tags") if isinstance(d.get("tags"), dict) else {}
            return (
                d.get("source") == source
                and {k: v for k, v in t.items() if k != "backup"} == want_tags
                and all(d.get(k) == v for k, v in identity.items())
            )

        snaps = self.list_snapshots()
        commits = self.commits()
        best = None
        for s in snaps:
            if same_source(s.data) and commits.committed(s) and (best is None or s.time > best.time):
                best = s
        # Damage here costs speed, not safety: a parent only lets unchanged files reuse its content
        # lists, and a full read stores exactly the same snapshot. So the copy goes on rather than fail
        # (failing would stop every backup of this source until someone repairs the repository, and
        # its uncommitted copies would become prune's garbage). It does not quietly take an older
        # parent either: choosing around damage is what hides it. It reads everything and says why.
        newer = "" if best is None else best.time
        hiding = [
            d
            for d in self.damaged_records("snapshots")
            if d.data is None or (same_source(d.data) and str(d.data.get("time", "")) > newer)
        ]
        for s in snaps:
            if same_source(s.data) and s.time > newer and commits.state(s) == "damaged":
                hiding += commits.damaged_for(s.backup_id or "")
        if hiding:
            msg = (
                f"parent: {describe_damage(hiding, 'record')}, and may hide the newest snapshot of {source};"
                " this copy reads every file instead of reusing a parent's (slower, equally complete); "
                + repair_hint(self.url)
            )
            (warn or self.warnings.append)(msg)
            return None
        return best
