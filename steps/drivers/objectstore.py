"""Object stores: the one interface the repository code writes to, and its implementations.

Provides :class:`ObjectStore` (the interface), :class:`MemoryStore` (tests and deterministic
interleavings), :class:`LocalStore` (a directory; handy for local runs) and :func:`open_store` which turns
a repository URL (``s3://BUCKET/PREFIX``, ``file:///path``, ``mem://name``) into a store. The S3 store
(any S3-compatible server, through the ``minio`` client with short explicit timeouts and bounded
retries) is :mod:`steps.drivers.objectstore_s3`. Called by :mod:`steps.repository` and the step commands.

Keys given to a store are relative to the repository prefix (``config``, ``data/ab/abcd...``).

Versioned buckets and S3 Object Lock: :meth:`ObjectStore.list_versions`, ``get(key, version_id)``,
:meth:`ObjectStore.get_retention` / :meth:`ObjectStore.set_retention`, and :class:`ObjectLock` (mode and
period applied to every new object when set, e.g. from ``SNAPFLOW_OBJECT_LOCK_MODE`` /
``SNAPFLOW_OBJECT_LOCK_DAYS``). On a locked, versioned bucket a PUT to an existing key and a plain DELETE
still succeed (a new version, a delete marker); only deleting a locked *version* is refused
(:class:`ObjectLocked`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from steps import runtime
from steps.drivers.repourl import parse_repo_url
from steps.errors import PermanentError, UsageError


class ObjectNotFound(KeyError):
    """The key does not exist (raised by :meth:`ObjectStore.get` and friends)."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep messages readable
        return str(self.args[0]) if self.args else "object not found"


class ObjectLocked(PermanentError):
    """Deleting (or shortening the retention of) a version that Object Lock still protects."""


LOCK_MODES = ("governance", "compliance")


@dataclass(frozen=True)
class ObjectLock:
    """Object Lock retention for new objects: ``mode`` governance|compliance, kept ``days`` after writing."""

    mode: str
    days: float

    MODE_ENV = runtime.OBJECT_LOCK_MODE
    DAYS_ENV = runtime.OBJECT_LOCK_DAYS

    def __post_init__(self):
        if self.mode not in LOCK_MODES:
            raise UsageError(f"object lock mode: expected governance or compliance, got {self.mode!r}")
        if not self.days > 0:
            raise UsageError(f"object lock days: expected a positive number of days, got {self.days!r}")

    @property
    def period(self) -> timedelta:
        return timedelta(days=self.days)

    def until(self, now: datetime | None = None) -> datetime:
        return (now or datetime.now(UTC)) + self.period

    @classmethod
    def parse(
        cls, mode: str | None, days: str | float | None, where: str = "object lock"
    ) -> ObjectLock | None:
        """None when neither is given; UsageError naming ``where`` when only one is or a value is bad."""
        if not mode and days in (None, ""):
            return None
        if not mode or days in (None, ""):
            raise UsageError(f"{where}: expected both a mode (governance|compliance) and a number of days")
        try:
            value = float(days)
        except (TypeError, ValueError):
            raise UsageError(f"{where}: days: expected a number of days, got {days!r}") from None
        mode = str(mode).strip().lower()
        if mode not in LOCK_MODES:
            raise UsageError(f"{where}: mode: expected governance or compliance, got {mode!r}")
        if not value > 0:
            raise UsageError(f"{where}: days: expected a positive number of days, got {days!r}")
        return cls(mode, value)

    @classmethod
    def from_env(cls) -> ObjectLock | None:
        env = os.environ
        return cls.parse(env.get(cls.MODE_ENV), env.get(cls.DAYS_ENV), f"{cls.MODE_ENV}/{cls.DAYS_ENV}")


@dataclass(frozen=True)
class Retention:
    """The Object Lock retention of one object version."""

    mode: str  # governance | compliance
    until: datetime


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    last_modified: datetime | None = None
    version_id: str | None = None
    is_delete_marker: bool = False
    is_latest: bool = True


class ObjectStore:
    """Write-once object storage as the repository needs it. Implementations must be thread-safe."""

    url: str = ""

    def put(self, key: str, data: bytes) -> None:
        raise NotImplementedError

    def get(self, key: str, version_id: str | None = None) -> bytes:
        raise NotImplementedError

    def get_range(self, key: str, offset: int, length: int, version_id: str | None = None) -> bytes:
        return self.get(key, version_id)[offset : offset + length]

    def stat(self, key: str) -> ObjectInfo | None:
        """Size and time of ``key``, or None when it does not exist."""
        raise NotImplementedError

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every key under ``prefix`` (recursively), in lexical order."""
        raise NotImplementedError

    def list_versions(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every version (and delete marker) under ``prefix``; stores without versioning list ``list``."""
        yield from self.list(prefix)

    def delete(self, key: str, version_id: str | None = None) -> None:
        """Remove ``key`` (a delete marker on a versioned bucket), or one version of it; deleting a missing
        key is not an error. Raises :class:`ObjectLocked` for a version Object Lock still protects."""
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        return self.stat(key) is not None

    # How finely the store's Last-Modified times tell writes apart (S3: whole seconds).
    time_resolution = timedelta(0)

    def server_time(self) -> datetime:
        """The store's clock (prune's grace period is measured in it, not in the local clock)."""
        return datetime.now(UTC)

    def ensure_container(self, object_lock: ObjectLock | None = None) -> None:
        """Create the bucket/directory if missing (``init`` calls it); with ``object_lock`` a new bucket is
        created versioned with Object Lock enabled and that default retention."""

    # -- versions and Object Lock (stores without them keep these defaults) ---------------------
    @property
    def object_lock(self) -> ObjectLock | None:
        """Retention given to every new object by this client (None: only the bucket's default, if any)."""
        return None

    def versioning_enabled(self) -> bool:
        """True when deleting or overwriting keeps the old versions (S3 versioning)."""
        return False

    def get_retention(self, key: str, version_id: str | None = None) -> Retention | None:
        """The Object Lock retention of a version (None: not locked, or no Object Lock)."""
        return None

    def set_retention(self, key: str, version_id: str | None, retention: Retention) -> None:
        """Set or extend a version's retention. Raises :class:`ObjectLocked` when the store refuses to
        shorten it, UsageError when the store has no Object Lock."""
        raise UsageError(f"{self.url}: this store has no Object Lock")


# --------------------------------------------------------------------------------------------------
# In memory


@dataclass
class _MemVersion:
    version_id: str
    data: bytes | None  # None: a delete marker
    time: datetime
    retention: Retention | None = None


@dataclass
class MemoryStore(ObjectStore):
    """A dict-backed store; optional ``hook(op, key)`` runs before each operation (test barriers).

    With ``versioned=True`` it keeps every version and delete marker like a versioned S3 bucket, and with
    ``lock`` (or :meth:`set_retention`) it refuses to delete locked versions, as S3 Object Lock does.
    """

    name: str = "memory"
    objects: dict[str, bytes] = field(default_factory=dict)
    times: dict[str, datetime] = field(default_factory=dict)
    hook: Callable[[str, str], None] | None = None
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    versioned: bool = False
    lock: ObjectLock | None = None
    versions: dict[str, list[_MemVersion]] = field(default_factory=dict)

    def __post_init__(self):
        self._lock = threading.Lock()
        self._seq = 0
        self.url = f"mem://{self.name}"

    def _hook(self, op: str, key: str) -> None:
        if self.hook:
            self.hook(op, key)

    def _new_version_id(self) -> str:
        self._seq += 1
        return f"v{self._seq:012d}"

    def put(self, key, data):
        self._hook("put", key)
        with self._lock:
            now = self.clock()
            self.objects[key] = bytes(data)
            self.times[key] = now
            if self.versioned:
                retention = Retention(self.lock.mode, self.lock.until(now)) if self.lock else None
                self.versions.setdefault(key, []).append(
                    _MemVersion(self._new_version_id(), bytes(data), now, retention)
                )

    def _version(self, key: str, version_id: str) -> _MemVersion:
        for v in self.versions.get(key, ()):
            if v.version_id == version_id:
                return v
        raise ObjectNotFound(f"{key} (version {version_id})")

    def get(self, key, version_id=None):
        self._hook("get", key)
        with self._lock:
            if version_id is not None and self.versioned:
                v = self._version(key, version_id)
                if v.data is None:
                    raise ObjectNotFound(f"{key} (version {version_id} is a delete marker)")
                return v.data
            try:
                return self.objects[key]
            except KeyError:
                raise ObjectNotFound(key) from None

    def get_range(self, key, offset, length, version_id=None):
        return self.get(key, version_id)[offset : offset + length]

    def stat(self, key):
        self._hook("stat", key)
        with self._lock:
            if key not in self.objects:
                return None
            vid = self.versions[key][-1].version_id if self.versioned and self.versions.get(key) else None
            return ObjectInfo(key, len(self.objects[key]), self.times[key], vid)

    def list(self, prefix=""):
        self._hook("list", prefix)
        with self._lock:
            items = sorted(
                (k, len(v), self.times[k]) for k, v in self.objects.items() if k.startswith(prefix)
            )
        for k, size, t in items:
            yield ObjectInfo(k, size, t)

    def list_versions(self, prefix=""):
        if not self.versioned:
            yield from self.list(prefix)
            return
        self._hook("list", prefix)
        with self._lock:
            out = []
            for k in sorted(self.versions):
                if not k.startswith(prefix):
                    continue
                vs = self.versions[k]
                for i, v in enumerate(reversed(vs)):  # newest first, as S3 lists them
                    out.append(
                        ObjectInfo(
                            k,
                            len(v.data or b""),
                            v.time,
                            v.version_id,
                            is_delete_marker=v.data is None,
                            is_latest=i == 0,
                        )
                    )
        yield from out

    def delete(self, key, version_id=None):
        self._hook("delete", key)
        with self._lock:
            if not self.versioned:
                self.objects.pop(key, None)
                self.times.pop(key, None)
                return
            vs = self.versions.get(key)
            if version_id is None:
                if key in self.objects:
                    vs.append(_MemVersion(self._new_version_id(), None, self.clock()))
                    self.objects.pop(key, None)
                    self.times.pop(key, None)
                return
            if not vs:
                return
            for i, v in enumerate(vs):
                if v.version_id == version_id:
                    if v.retention and v.retention.until > self.clock():
                        raise ObjectLocked(
                            f"object store refused DELETE {key} version {version_id}: locked until"
                            f" {v.retention.until.isoformat()}"
                        )
                    del vs[i]
                    break
            else:
                return
            if not vs:
                del self.versions[key]
            latest = vs[-1] if vs else None
            if latest is not None and latest.data is not None:
                self.objects[key] = latest.data
                self.times[key] = latest.time
            else:
                self.objects.pop(key, None)
                self.times.pop(key, None)

    def server_time(self):
        return self.clock()

    @property
    def object_lock(self):
        return self.lock

    def versioning_enabled(self):
        return self.versioned

    def get_retention(self, key, version_id=None):
        with self._lock:
            if not self.versioned:
                return None
            vs = self.versions.get(key, [])
            v = self._version(key, version_id) if version_id else (vs[-1] if vs else None)
            return v.retention if v else None

    def set_retention(self, key, version_id, retention):
        self._hook("retention", key)
        with self._lock:
            if not self.versioned:
                raise UsageError(f"{self.url}: this store has no Object Lock")
            vs = self.versions.get(key, [])
            v = self._version(key, version_id) if version_id else (vs[-1] if vs else None)
            if v is None:
                raise ObjectNotFound(key)
            old = v.retention
            if (
                old
                and old.until > self.clock()
                and (
                    retention.until < old.until
                    or (old.mode == "compliance" and retention.mode != "compliance")
                )
            ):
                raise ObjectLocked(f"object store refused to shorten the retention of {key}")
            v.retention = retention


# --------------------------------------------------------------------------------------------------
# Local directory


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStore(ObjectStore):
    """Objects as files below a directory; writes go to a temp file and are renamed into place."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.url = f"file://{self.root}"
        if self.root.exists() and not self.root.is_dir():
            raise UsageError(f"{self.url}: expected a directory for the repository, found a file")

    def _path(self, key: str) -> Path:
        if key.startswith("/") or ".." in key.split("/"):
            raise UsageError(f"invalid object key {key!r}")
        return self.root / key

    def ensure_container(self, object_lock=None):
        if object_lock is not None:
            raise UsageError("--object-lock: a local directory has no Object Lock; use an S3 bucket")
        self.root.mkdir(parents=True, exist_ok=True)

    def put(self, key, data):
        path = self._path(key)
        # the directories this put creates: their entries must reach the disk too
        new_dirs = [d for d in path.parents if d == self.root or self.root in d.parents]
        existing = next((i for i, d in enumerate(new_dirs) if d.is_dir()), len(new_dirs))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        # a rename is durable only once its directory is synced (and so is a new directory's entry)
        for d in new_dirs[: existing + 1]:
            _fsync_dir(d)

    def get(self, key, version_id=None):
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise ObjectNotFound(key) from None

    def get_range(self, key, offset, length, version_id=None):
        try:
            with open(self._path(key), "rb") as f:
                f.seek(offset)
                return f.read(length)
        except FileNotFoundError:
            raise ObjectNotFound(key) from None

    def stat(self, key):
        try:
            st = self._path(key).stat()
        except FileNotFoundError:
            return None
        return ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    def list(self, prefix=""):
        # walk only the directory the prefix names (``backups/`` is the directory backups), not the
        # whole repository: a listing of one kind costs what that kind holds
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root / base if base and ".." not in base.split("/") else self.root
        if not start.is_dir():
            return
        found = []
        for dirpath, _dirs, files in os.walk(start):
            for name in files:
                if name.startswith("."):
                    continue
                full = Path(dirpath, name)
                key = full.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    found.append(key)
        for key in sorted(found):
            info = self.stat(key)
            if info:
                yield info

    def delete(self, key, version_id=None):
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            pass


# --------------------------------------------------------------------------------------------------

_MEMORY_STORES: dict[str, MemoryStore] = {}


def open_store(
    url: str, endpoint: str | None = None, *, field: str = "--repo", **s3_overrides
) -> ObjectStore:
    """The store behind a repository URL (checked and normalised by :func:`parse_repo_url`, errors naming
    ``field``); S3 settings come from ``endpoint`` and the environment. The store's ``url`` is the
    canonical spelling."""
    repo = parse_repo_url(url, field)
    if repo.scheme == "s3":
        from steps.drivers.objectstore_s3 import S3Settings, S3Store

        return S3Store(S3Settings.from_env(endpoint, **s3_overrides), repo.bucket, repo.path)
    if repo.scheme == "file":
        return LocalStore(repo.path)
    return _MEMORY_STORES.setdefault(repo.bucket, MemoryStore(name=repo.bucket))
