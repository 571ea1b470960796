"""Prune's protocol, the writer's side: what every writer of a repository must do so that a prune
running at the same time never deletes what it refers to (docs/design.md, "Prune").

Provides the mixin :class:`WriterProtocol` of :class:`~.repo.Repository`: ``begin_write`` (load the
index without prune's pending deletion candidates and note the start in the store's clock),
``check_commit`` / ``confirm_commit`` (a writer that has run for a prune's grace period refuses to
commit, and withdraws a snapshot record that landed too late), the refusal of a backup record naming
snapshots prune marked as garbage, and ``note_deletions`` (the log of what Snapflow deletes itself, on
versioned buckets). Also the names of prune's record kinds and types, and :data:`CLOCK_SLACK`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from steps.errors import PermanentError, TemporaryError

if TYPE_CHECKING:
    from .index import MemIndex
    from .records import Record

PRUNE_KIND = "prune"  # prune's own records: deletion candidates and deletion logs
CANDIDATES = "candidates"
DELETED = "deleted"
DELETION_LOG_KIND = "prune-log"  # what Snapflow deleted itself (versioned buckets); only prune/check read it
SETTINGS = "settings"  # the grace periods prune runs use; kept while a writer may need them
# Clock resolution of object stores (Last-Modified and Date have whole seconds): writers stop this much
# before the end of a grace period and prune sweeps this much after it.
CLOCK_SLACK = timedelta(seconds=2)


@dataclass
class WriterSession:
    """A writer's start: prune's pending candidates are excluded from its deduplication."""

    start: datetime  # the store's clock before the candidates were listed
    excluded: set[str]  # candidate packs hidden from deduplication


class WriterProtocol:
    """The writer's side of prune's protocol, for :class:`~.repo.Repository` (which provides ``store``,
    ``list_records``, ``save_record`` and ``load_index``)."""

    _writer: WriterSession | None = None

    def note_deletions(self, keys: list[str], why: str, run: str | None = None) -> None:
        """On a versioned bucket, log keys Snapflow itself is about to delete (a ``prune`` record of type
        ``deleted``, written before the deletions): prune purges their old versions once unlocked, and
        any other deletion stands out as tampering. Nothing to do on stores without versions."""
        if not keys or not self.store.versioning_enabled():
            return
        from .records import utc_now_iso  # (records imports this module)

        for i in range(0, len(keys), 20_000):
            self.save_record(
                DELETION_LOG_KIND,
                {
                    "type": DELETED,
                    "version": 1,
                    "time": utc_now_iso(),
                    "prune": run,
                    "why": why,
                    "keys": keys[i : i + 20_000],
                },
            )

    def prune_candidates(self) -> list[Record]:
        """Prune's pending deletion candidates (records of kind ``prune`` of type ``candidates``)."""
        return [r for r in self.list_records(PRUNE_KIND) if r.data.get("type") == CANDIDATES]

    def grace_period(self) -> timedelta | None:
        """The grace period writers must respect: the shortest one recent prunes used (their ``settings``
        records, kept until no writer they could harm can still commit). None: no prune runs with a
        grace period, so nothing a writer refers to can be swept under it (``--grace 0`` is for
        maintenance windows without backups)."""
        values = [
            float(r.data["grace_s"])
            for r in self.list_records(PRUNE_KIND)
            if r.data.get("type") in (SETTINGS, CANDIDATES) and float(r.data.get("grace_s", 0)) > 0
        ]
        return timedelta(seconds=min(values)) if values else None

    def begin_write(self) -> MemIndex:
        """Start writing: load the index without prune's deletion candidates (so that nothing new refers
        to a pack about to go) and note the start in the store's clock. Every copy starts a new session."""
        start = self.store.server_time()
        pending = self.prune_candidates()
        excluded = {p for r in pending for p in r.data.get("packs", ())}
        index = self.load_index(exclude_packs=excluded)
        self._writer = WriterSession(start, excluded)
        return index

    @property
    def writer_session(self) -> WriterSession | None:
        return self._writer

    def check_commit(self, at: datetime | None = None) -> None:
        """Refuse (TemporaryError) when this writer has been running for prune's grace period: it may
        refer to packs a prune marked after it started, and the sweep may already have deleted them.
        Retrying starts a fresh writer, which does not use them."""
        session = self._writer
        if session is None:
            return
        grace = self.grace_period()
        if grace is None:
            return
        now = at or self.store.server_time()
        if now >= session.start + grace - CLOCK_SLACK:
            age = (now - session.start).total_seconds()
            raise TemporaryError(
                f"this copy has been running for {age:.0f} s, longer than prune's grace period"
                f" ({grace.total_seconds():.0f} s): refusing to commit (a retry writes what is needed again;"
                " raise prune's --grace above the longest backup)"
            )

    def confirm_commit(self, key: str) -> None:
        """After writing the record ``key`` (a snapshot): if it landed after the grace period, withdraw it
        (delete) and refuse — the check before the write may have been overtaken by a stalled process."""
        if self._writer is None:
            return
        info = self.store.stat(key)
        at = info.last_modified if info and info.last_modified else self.store.server_time()
        try:
            self.check_commit(at)
        except TemporaryError:
            self.store.delete(key)
            raise

    def _refuse_garbage_commit(self, backup_id: str | None, referenced: set[str]) -> None:
        """Before a backup record is written: refuse (PermanentError) when a candidates record marked one
        of its snapshots (or any of this backup's) as garbage; prune may delete them at any moment."""
        for rec in self.prune_candidates():
            for entry in rec.data.get("snapshots", ()):
                if entry.get("id") in referenced or (backup_id and entry.get("backup_id") == backup_id):
                    raise PermanentError(
                        f"backup {backup_id}: its snapshots stayed uncommitted longer than prune's grace period"
                        " and are marked as garbage; not committed (run the backup again)"
                    )
