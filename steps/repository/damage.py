"""Damaged records: what a record that does not open is, and how messages name it.

Provides :class:`DamagedRecord` (one record object whose bytes do not match its name, do not
authenticate for its kind and group, or are no JSON record; when the bytes are an intact record stored
under another name, its authentic content and true place), :func:`describe_damage` (the one-line
description commands put in their errors) and :func:`repair_hint` (the way out, for the end of such a
line). Made by :meth:`~.repo.Repository.scan_records`; read by every command that chooses among records
(restore, retention, finalize, verify, check, ``repair records``). Damage is refused by name, never
chosen around: see docs/design.md, "Threat model".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime


def repair_hint(url: str = "URL") -> str:
    """The way out of a damaged record, for the end of a one-line error."""
    return (
        f"remove the damaged record with `python -m steps repair records --repo {url}` (it moves a renamed or"
        " swapped record back under its own name, and deletes one that cannot be read; `check` shows what"
        " else is affected)"
    )


REPAIR_HINT = repair_hint()


@dataclass
class DamagedRecord:
    """A record object that does not open: its bytes do not match its name, do not authenticate for
    this kind and group, or are not a JSON record. When the bytes are an intact record stored under
    another name (renamed, or swapped with another record of the same kind and group), ``data`` is its
    authentic content, ``true_id`` the name and ``true_group`` the group it belongs under (``repair
    records`` moves it back)."""

    kind: str
    key: str  # the object key, e.g. snapshots/<ID> or backups/<GROUP>/<ID>
    problem: str
    group: str | None = None
    modified: datetime | None = None  # Last-Modified in the store's clock
    data: dict | None = None
    true_id: str | None = None
    raw: bytes | None = field(default=None, repr=False)
    true_group: str | None = None  # the group the bytes authenticate in (records kept by backup ID)

    @property
    def id(self) -> str:
        return self.key.rsplit("/", 1)[-1]

    @property
    def true_key(self) -> str | None:
        """Where the bytes belong: their own name, in the group they authenticate in."""
        if self.true_id is None:
            return None
        if self.true_group:
            return f"{self.kind}/{self.true_group}/{self.true_id}"
        return f"{self.kind}/{self.true_id}"

    def to_dict(self) -> dict:
        out = {"kind": self.kind, "key": self.key, "problem": self.problem}
        if self.true_id:
            out["belongs_under"] = self.true_key
        if self.data is not None and self.data.get("backup_id"):
            out["backup_id"] = self.data.get("backup_id")
        if self.modified is not None:
            out["modified"] = self.modified.astimezone(UTC).isoformat().replace("+00:00", "Z")
        return out


def describe_damage(damaged: list[DamagedRecord], what: str, shown: int = 2) -> str:
    """``the backup record KEY is damaged (PROBLEM)`` or ``3 backup records are damaged (KEY: ...; ...)``
    for a one-line message; every key shown in full."""
    if len(damaged) == 1:
        d = damaged[0]
        return f"the {what} record {d.key} is damaged ({d.problem})"
    listed = "; ".join(f"{d.key}: {d.problem}" for d in damaged[:shown])
    more = f"; and {len(damaged) - shown} more" if len(damaged) > shown else ""
    return f"{len(damaged)} {what} records are damaged ({listed}{more})"
