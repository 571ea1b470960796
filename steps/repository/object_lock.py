"""Object Lock, versions and time travel: what immutability needs on top of the repository format.

Provides:

* :class:`AsOfStore` - a read-only view of a versioned store as it was at a moment (``--as-of``): keys
  listed as they existed then, each read from the version current then. A repository opened on it
  restores what the repository held at that time, even after its objects were overwritten or deleted.
* :func:`parse_as_of` - ``--as-of`` values (ISO 8601 times; a time without a zone is UTC).
* :func:`extend_locks` - extend the Object Lock retention of the objects kept backups still need.
* :func:`purge_versions` - delete the versions of objects prune deleted, once their retention expired,
  report the versions still held, and report objects deleted by someone other than prune.

Called by :mod:`.pruner`, ``steps.commands.restore`` / ``snapshots`` / ``ls`` (``--as-of``) and ``check``.

S3 semantics relied on (measured on SeaweedFS, and what AWS documents): on a versioned bucket with
Object Lock, a PUT to an existing key and a plain DELETE succeed (a new version, a delete marker); only
deleting a locked *version* is refused, and a retention can be extended, never shortened (compliance),
or shortened only with a bypass permission (governance).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from steps.drivers.objectstore import (
    ObjectInfo,
    ObjectLock,
    ObjectLocked,
    ObjectNotFound,
    ObjectStore,
    Retention,
)
from steps.errors import PermanentError, UsageError

# Objects that belong to no backup: read-probe objects and maintenance state. Their old versions are
# purged freely; anything else deleted by someone other than prune is reported as tampering.
MAINTENANCE_PREFIXES = ("locks/", "prune/", "prune-lease/", "prune-log/", "check/")


def parse_as_of(value: str) -> datetime:
    text = (value or "").strip()
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T", 1))
    except ValueError:
        raise UsageError(
            f"--as-of: expected a time like 2026-11-26T19:40:00Z (ISO 8601; UTC when no zone), got {value!r}"
        ) from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _newest_first(infos: Iterable[ObjectInfo]) -> list[ObjectInfo]:
    floor = datetime.min.replace(tzinfo=UTC)
    # S3 lists a key's versions newest first; stores with coarse clocks can give equal times, so the
    # listing order breaks ties (stable sort, reversed twice)
    indexed = list(enumerate(infos))
    indexed.sort(key=lambda p: (p[1].last_modified or floor, p[1].is_latest, -p[0]), reverse=True)
    return [i for _, i in indexed]


class AsOfStore(ObjectStore):
    """Read-only view of ``store`` at ``as_of``: for each key, the newest version written at or before
    then (a key whose newest version then was a delete marker did not exist). Readers still fall back to
    older versions of that time when a version does not match its name."""

    def __init__(self, store: ObjectStore, as_of: datetime):
        self.inner = store
        self.as_of = as_of
        self.url = f"{store.url} (as of {as_of.isoformat()})"
        self._lock = threading.Lock()
        self._versions: dict[str, list[ObjectInfo]] = {}  # key -> versions up to as_of, newest first
        self._listed: set[str] = set()  # prefixes already listed

    def _load(self, prefix: str) -> None:
        prefix = ""  # one listing of every version serves all later lookups (restores read many packs)
        with self._lock:
            if any(prefix.startswith(p) for p in self._listed):
                return
        found: dict[str, list[ObjectInfo]] = {}
        for info in self.inner.list_versions(prefix):
            if info.last_modified is not None and info.last_modified > self.as_of:
                continue
            found.setdefault(info.key, []).append(info)
        with self._lock:
            for key, infos in found.items():
                self._versions[key] = _newest_first(infos)
            self._listed.add(prefix)

    def _current(self, key: str) -> ObjectInfo | None:
        self._load(key)
        with self._lock:
            infos = self._versions.get(key) or []
        if not infos or infos[0].is_delete_marker:
            return None
        return infos[0]

    def versioning_enabled(self) -> bool:
        return self.inner.versioning_enabled()

    def get(self, key, version_id=None):
        if version_id is None:
            cur = self._current(key)
            if cur is None:
                raise ObjectNotFound(key)
            version_id = cur.version_id
        return self.inner.get(key, version_id)

    def get_range(self, key, offset, length, version_id=None):
        if version_id is None:
            cur = self._current(key)
            if cur is None:
                raise ObjectNotFound(key)
            version_id = cur.version_id
        return self.inner.get_range(key, offset, length, version_id)

    def stat(self, key):
        return self._current(key)

    def list(self, prefix=""):
        self._load(prefix)
        with self._lock:
            keys = sorted(k for k in self._versions if k.startswith(prefix))
            items = [self._versions[k][0] for k in keys]
        for info in items:
            if not info.is_delete_marker:
                yield info

    def list_versions(self, prefix=""):
        self._load(prefix)
        with self._lock:
            items = [i for k in sorted(self._versions) if k.startswith(prefix) for i in self._versions[k]]
        yield from items

    def server_time(self):
        return self.as_of

    def _read_only(self, *_args, **_kwargs):
        raise UsageError("--as-of: the repository is opened read-only as of a past time")

    put = _read_only
    delete = _read_only
    set_retention = _read_only


# -- extending locks -------------------------------------------------------------------------------


@dataclass
class LockReport:
    checked: int = 0
    extended: int = 0
    held: int = 0  # already locked long enough
    failed: list[str] = field(default_factory=list)
    until: str | None = None

    def to_dict(self) -> dict:
        return {
            "checked": self.checked,
            "extended": self.extended,
            "held": self.held,
            "failed": self.failed[:50],
            "until": self.until,
        }


def extend_locks(
    store: ObjectStore,
    keys: Iterable[str],
    lock: ObjectLock,
    now: datetime,
    dry_run: bool = False,
    workers: int = 8,
) -> LockReport:
    """Make sure every key's current version stays locked until ``now + lock.period``; a retention that
    still has more than half the period to run is left alone (each prune run refreshes the rest)."""
    report = LockReport()
    target = now + lock.period
    refresh_before = now + lock.period / 2
    report.until = target.isoformat().replace("+00:00", "Z")
    mu = threading.Lock()

    def one(key: str) -> None:
        try:
            info = store.stat(key)
            if info is None:
                return
            current = store.get_retention(key, info.version_id)
            with mu:
                report.checked += 1
            if current is not None and current.until >= refresh_before:
                with mu:
                    report.held += 1
                return
            mode = lock.mode
            if current is not None and current.mode == "compliance" and current.until > now:
                mode = "compliance"  # a compliance lock cannot be turned into a governance one
            if not dry_run:
                store.set_retention(key, info.version_id, Retention(mode, target))
            with mu:
                report.extended += 1
        except (ObjectNotFound, ObjectLocked, PermanentError) as err:
            with mu:
                report.failed.append(f"{key}: {err}")

    keys = list(keys)
    if keys:
        with ThreadPoolExecutor(max_workers=min(workers, len(keys))) as pool:
            list(pool.map(one, keys))
    return report


# -- purging old versions --------------------------------------------------------------------------


@dataclass
class PurgeReport:
    versions_deleted: int = 0
    markers_deleted: int = 0
    bytes_freed: int = 0
    held: int = 0
    held_bytes: int = 0
    held_until: str | None = None
    done_keys: set[str] = field(default_factory=set)  # deleted keys with no version left
    tampered: list[str] = field(default_factory=list)  # deleted, but not by prune
    replaced: list[str] = field(default_factory=list)  # current version is not the first one

    def to_dict(self) -> dict:
        return {
            "versions_deleted": self.versions_deleted,
            "delete_markers_deleted": self.markers_deleted,
            "bytes_freed": self.bytes_freed,
            "versions_held": self.held,
            "bytes_held": self.held_bytes,
            "held_until": self.held_until,
            "deleted_outside_prune": len(self.tampered),
            "deleted_outside_prune_examples": self.tampered[:20],
        }


def version_map(store: ObjectStore, prefix: str = "") -> dict[str, list[ObjectInfo]]:
    out: dict[str, list[ObjectInfo]] = {}
    for info in store.list_versions(prefix):
        out.setdefault(info.key, []).append(info)
    return {k: _newest_first(v) for k, v in out.items()}


def iter_deleted_keys(versions: dict[str, list[ObjectInfo]]) -> Iterator[str]:
    """Keys whose newest version is a delete marker (deleted, old versions kept)."""
    for key, infos in versions.items():
        if infos and infos[0].is_delete_marker:
            yield key


def purge_versions(
    store: ObjectStore,
    versions: dict[str, list[ObjectInfo]],
    deleted_by_prune: set[str],
    now: datetime,
    dry_run: bool = False,
) -> PurgeReport:
    """Delete every version of the keys prune deleted (and of maintenance objects) whose retention has
    expired; count those still held. Keys deleted by anyone else are reported, never purged: their old
    versions are what ``restore --as-of`` needs after an attack."""
    report = PurgeReport()
    latest_until: datetime | None = None
    for key in sorted(iter_deleted_keys(versions)):
        ours = key in deleted_by_prune or key.startswith(MAINTENANCE_PREFIXES)
        if not ours:
            report.tampered.append(key)
            continue
        remaining = 0
        markers = []
        for info in versions[key]:
            if info.is_delete_marker:
                markers.append(info)
                continue
            try:
                retention = store.get_retention(key, info.version_id)
            except PermanentError:
                retention = None  # may not read retention: the delete below tells
            if retention is not None and retention.until > now:
                report.held += 1
                report.held_bytes += info.size
                remaining += 1
                if latest_until is None or retention.until > latest_until:
                    latest_until = retention.until
                continue
            if not dry_run:
                try:
                    store.delete(key, info.version_id)
                except ObjectLocked:
                    report.held += 1
                    report.held_bytes += info.size
                    remaining += 1
                    continue
            report.versions_deleted += 1
            report.bytes_freed += info.size
        if remaining == 0:
            for marker in markers:
                if not dry_run:
                    store.delete(key, marker.version_id)
                report.markers_deleted += 1
            report.done_keys.add(key)
    if latest_until is not None:
        report.held_until = latest_until.isoformat().replace("+00:00", "Z")
    return report
