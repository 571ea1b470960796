"""What the fleet report needs of each record of a repository, kept in a local cache between runs.

Records are immutable objects: a record's name is the hash of its stored bytes and it is never
rewritten, so what one name said once it says for good. :class:`RecordTable` holds, per object name
(``backups/GROUP/ID``, ``runs/GROUP/ID``), a small :data:`Entry` of what the record says; a reading
(:func:`refresh`) lists ``backups/`` and ``runs/``, opens only the names it does not hold (through
:meth:`Repository.read_record <steps.repository.repo.Repository.read_record>`, which authenticates
them) and forgets the names that are gone (pruned). Only records that authenticated become entries.

Between runs the table is saved to ``CACHE_DIR/records/REPOSITORY_ID.cache`` (``CACHE_DIR``:
``--cache-dir``, else ``$XDG_CACHE_HOME/snapflow``, else ``~/.cache/snapflow``). The file is sealed twice:

- with AES-256-GCM under a key derived from a random *local key* (``CACHE_DIR/records/local.key``, 32
  bytes, mode 0600, made on first use; HKDF with a random salt per write), bound to the repository ID,
  the cache format and the URL it was read through. This seal lets a run that finds no new or
  vanished record names render from the cache without opening the repository (no key derivation);
  the cache is then trusted as much as the cache directory, the user's own files;
- with a tag under a key derived from the repository's master key (HKDF, the purpose
  ``record-cache``) over the sealed content, checked whenever the repository is opened: a cache
  written under another repository key is not used.

For a ``file://`` repository the local seal also covers a digest of its record directories
(:func:`local_fingerprint`): while it is unchanged, a run need not even list the names.

So the cache tells nothing to whoever reads it without the local key or the repository key (records
are encrypted in the repository; their decrypted content must not lie around in the clear), and a
cache that was altered, truncated, swapped with another repository's or written under another key does
not authenticate: it is not used (a warning says so), every record is read again from the repository,
and a new cache is written.

The file is written atomically with mode 0600. Entries are ``marshal``-encoded tuples of strings and
numbers (decoded only after the file authenticated).
"""

from __future__ import annotations

import contextlib
import hashlib
import marshal
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zstandard
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from workflows.fleet.records import KINDS, summarize

FORMAT = b"snapflow-record-cache-3"
LOCAL_KEY = "local.key"
LOCAL_KEY_LEN = 32
LOCAL_PURPOSE = b"snapflow/v1/record-cache-local"
SALT_LEN = 16
NONCE_LEN = 12
PURPOSE = b"record-cache"
READ_PARALLEL = 8
READ_BATCH = 512

# an entry: (kind, group, backup_id, app, time, point_in_time, ok, verdict, anomaly)
#   kind: "backups", a run name, "damaged", or "" (a record the report has no use for)
#   app: index into RecordTable.apps, or -1
#   ok: a verify / restore test passed (True/False), or a backup's own verify, or None
#   anomaly: None or (flagged, score, (reason, ...))
Entry = tuple
KIND, GROUP, BACKUP_ID, APP, TIME, POINT, OK, VERDICT, ANOMALY = range(9)
IGNORED = ""


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "snapflow"


def _name_key(name: str) -> bytes:
    """The table's key of an object name ``KIND/GROUP/ID``: kind, group and ID as bytes (not a
    100-character string). The whole name, not the ID alone: a record moved to another group (which
    does not open there) must not be taken for the one read before."""
    kind, _, rest = name.partition("/")
    group, _, ident = rest.rpartition("/")
    try:
        return kind[:1].encode() + bytes.fromhex(group) + b"/" + bytes.fromhex(ident)
    except ValueError:
        return name.encode()


def _anomaly(data: dict) -> tuple | None:
    a = data.get("anomaly")
    if not isinstance(a, dict):
        return None
    flagged = a.get("flagged") if isinstance(a.get("flagged"), bool) else None
    score = a.get("score")
    score = float(score) if isinstance(score, int | float) and not isinstance(score, bool) else None
    reasons = tuple(str(r) for r in a.get("reasons") or () if isinstance(r, str | int | float))
    return (flagged, score, reasons)


@dataclass
class RecordTable:
    """One repository's entries by object name (the key: :func:`_name_key`)."""

    repository_id: str
    entries: dict[bytes, Entry] = field(default_factory=dict)
    apps: list[tuple[str, str, str]] = field(default_factory=list)
    _app_index: dict[tuple[str, str, str], int] = field(default_factory=dict, repr=False)
    changed: bool = False
    url: str | None = None  # what the saved table was read through
    # a file:// repository's record directories as they were when the saved names were listed
    # (:func:`local_fingerprint`); kept under the local seal only, so a run that did not open the
    # repository can update it
    fingerprint: bytes | None = None
    # the saved content and its seal under the repository key: (payload, salt, nonce, tag)
    _sealed: tuple | None = field(default=None, repr=False)
    _repository_checked: bool = field(default=True, repr=False)

    def app_of(self, entry: Entry) -> tuple[str, str, str] | None:
        return self.apps[entry[APP]] if entry[APP] >= 0 else None

    def _app_idx(self, app: tuple[str, str, str] | None) -> int:
        if app is None:
            return -1
        idx = self._app_index.get(app)
        if idx is None:
            idx = self._app_index[app] = len(self.apps)
            self.apps.append(app)
        return idx

    def entry(self, kind: str, group: str | None, data: dict) -> Entry:
        """The entry of a record that opened and authenticated."""
        return self.with_app(describe(kind, group, data))

    def with_app(self, described: tuple) -> Entry:
        """An entry from :func:`describe`'s tuple (its app replaced by the app's index)."""
        app = described[APP]
        return (*described[:APP], self._app_idx(app), *described[APP + 1 :])

    # -- the file ------------------------------------------------------------------------------------
    @staticmethod
    def path(cache_dir: Path, repository_id: str) -> Path:
        return Path(cache_dir) / "records" / f"{repository_id}.cache"

    def _aad(self) -> bytes:
        return FORMAT + b"\0" + self.repository_id.encode()

    def _repository_aad(self, payload: bytes) -> bytes:
        return self._aad() + b"\0" + hashlib.sha256(payload).digest()

    def save(self, cache_dir: Path, keys: Any, url: str | None = None) -> Path:
        """Seal and write the table (atomically, mode 0600); ``keys``: the repository's MasterKeys;
        ``url``: what the repository was read through (a run without opening it needs the same)."""
        payload = zstandard.ZstdCompressor(level=3).compress(
            marshal.dumps((url, self.apps, saveable(self.entries.items())), 4)
        )
        repo_salt, repo_nonce = os.urandom(SALT_LEN), os.urandom(NONCE_LEN)
        tag = keys.subkey_aead(repo_salt, PURPOSE).encrypt(repo_nonce, b"", self._repository_aad(payload))
        self._sealed, self._repository_checked = (payload, repo_salt, repo_nonce, tag), True
        target = self.reseal(cache_dir)
        self.changed = False
        self.url = url
        return target

    def reseal(self, cache_dir: Path) -> Path:
        """Write the saved content again under the local seal with the current :attr:`fingerprint`
        (needs no repository key)."""
        assert self._sealed is not None
        inner = marshal.dumps((*self._sealed, self.fingerprint), 4)
        salt, nonce = os.urandom(SALT_LEN), os.urandom(NONCE_LEN)
        key = local_key(cache_dir)
        if key is None:
            raise OSError(f"cannot make the local key {Path(cache_dir) / 'records' / LOCAL_KEY}")
        sealed = _local_aead(key, salt).encrypt(nonce, inner, self._aad())
        target = self.path(cache_dir, self.repository_id)
        _write_private(target, FORMAT + salt + nonce + sealed)
        return target

    @classmethod
    def load(
        cls,
        cache_dir: Path | None,
        repository_id: str,
        keys: Any,
        warn: Callable[[str], None],
        url: str | None = None,
    ):
        """The saved table of the repository, or an empty one (no file, or one that does not
        authenticate: ``warn`` is told, and nothing of it is used). ``keys`` None: the repository is not
        open; only the local seal is checked, and :meth:`check_repository` checks the rest once it is."""
        table = cls(repository_id)
        if cache_dir is None:
            return table
        target = cls.path(cache_dir, repository_id)
        try:
            raw = target.read_bytes()
        except FileNotFoundError:
            return table
        except OSError as err:
            warn(f"record cache {target}: cannot read it ({err.strerror}); reading every record again")
            return table
        head = len(FORMAT) + SALT_LEN + NONCE_LEN
        try:
            if len(raw) <= head or raw[: len(FORMAT)] != FORMAT:
                raise ValueError("not a record cache of this version")
            key = local_key(cache_dir, create=False)
            if key is None:
                raise ValueError(f"no local key {Path(cache_dir) / 'records' / LOCAL_KEY}")
            salt = raw[len(FORMAT) : len(FORMAT) + SALT_LEN]
            nonce = raw[len(FORMAT) + SALT_LEN : head]
            inner = _local_aead(key, salt).decrypt(nonce, raw[head:], table._aad())
            payload, repo_salt, repo_nonce, tag, fingerprint = marshal.loads(inner)
            table._sealed, table._repository_checked = (payload, repo_salt, repo_nonce, tag), False
            table.fingerprint = fingerprint
            if keys is not None and not table.check_repository(keys, warn, target):
                return cls(repository_id)
        except Exception as err:  # InvalidTag, or a file of another format
            what = str(err) or "authentication failed"
            warn(f"record cache {target}: not used ({what}); reading every record again")
            return cls(repository_id)
        try:  # (written by another Python version, whose marshal format differs)
            url_read, apps, items = marshal.loads(zstandard.ZstdDecompressor().decompress(payload))
            table.url = url_read
            table.apps = [tuple(a) for a in apps]
            table._app_index = {a: i for i, a in enumerate(table.apps)}
            table.entries = dict(items)
        except Exception as err:
            warn(
                f"record cache {target}: not used (cannot decode it: {type(err).__name__}); reading every record again"
            )
            return cls(repository_id)
        return table

    def check_repository(self, keys: Any, warn: Callable[[str], None], target: Path | None = None) -> bool:
        """Whether the loaded cache was written under the repository key ``keys`` (True when nothing was
        loaded); when it was not, its entries are dropped and ``warn`` is told."""
        if self._sealed is None or self._repository_checked:
            return True
        payload, repo_salt, repo_nonce, tag = self._sealed
        try:
            keys.subkey_aead(repo_salt, PURPOSE).decrypt(repo_nonce, tag, self._repository_aad(payload))
        except Exception:
            warn(
                f"record cache {target or self.repository_id}: not used (not written under this repository's"
                " key); reading every record again"
            )
            self.entries, self.apps, self._app_index, self.url = {}, [], {}, None
            self._sealed, self.fingerprint = None, None
            self.changed = True
            return False
        self._repository_checked = True
        return True


def _write_private(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically, mode 0600 (its directory made 0700)."""
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=".records.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o600)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _read_local_key(path: Path) -> bytes | None:
    try:
        st = path.stat()
        if st.st_mode & 0o077 or st.st_size != LOCAL_KEY_LEN:
            return None
        return path.read_bytes()
    except OSError:
        return None


_LOCAL_KEY_LOCK = threading.Lock()


def local_key(cache_dir: Path, create: bool = True) -> bytes | None:
    """The cache directory's random local key (``records/local.key``, mode 0600), made when missing
    and ``create``; None when there is none (or it is not 32 bytes, or others may read it). Readers
    that make it at once (threads, processes) end up with the same one."""
    path = Path(cache_dir) / "records" / LOCAL_KEY
    with _LOCAL_KEY_LOCK:
        key = _read_local_key(path)
        if key is not None or not create:
            return key
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=".local-key.", dir=path.parent)  # (mode 0600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(os.urandom(LOCAL_KEY_LEN))
            if path.exists() or path.is_symlink():
                os.replace(tmp, path)  # (an unusable one: caches sealed under it are read again)
            else:
                with contextlib.suppress(FileExistsError):  # (another process made it first)
                    os.link(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return _read_local_key(path)


def _local_aead(key: bytes, salt: bytes) -> AESGCM:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=LOCAL_PURPOSE).derive(key)
    return AESGCM(derived)


def describe(kind: str, group: str | None, data: dict) -> tuple:
    """What the report keeps of a record that opened: an :data:`Entry` whose ``app`` is still the
    (cluster, namespace, app) tuple or None. Runs in the reading threads, so that a record's decoded
    content is dropped as soon as it is read."""
    s = summarize(kind, group, data)
    if s is None:
        return (IGNORED, None, None, None, None, None, None, None, None)
    verdict = None
    ok = s.ok
    if kind == "backups":
        consistency = data.get("consistency")
        if isinstance(consistency, dict) and isinstance(consistency.get("verdict"), str):
            verdict = consistency["verdict"]
        elif isinstance(data.get("source"), dict):
            verdict = "n/a (source)"
        verify = data.get("verify")
        ok = verify.get("ok") if isinstance(verify, dict) and isinstance(verify.get("ok"), bool) else None
    elif s.kind == "consistent-point" and isinstance(data.get("verdict"), str):
        verdict = data["verdict"]
    return (
        _intern(s.kind),
        _intern(group),
        s.backup_id,
        s.app,
        s.time,
        s.point_in_time,
        ok,
        _intern(verdict),
        _anomaly(data) if kind == "backups" else None,
    )


_INTERNED: dict[str, str] = {}


def _intern(text: str | None) -> str | None:
    if text is None:
        return None
    return _INTERNED.setdefault(text, text) if len(_INTERNED) < 1_000_000 else text


@dataclass
class RefreshStats:
    listed: int = 0
    read: int = 0
    forgotten: int = 0
    damaged: int = 0
    cached: bool = False  # a saved cache was used
    seconds: float = 0.0
    list_seconds: float = 0.0


HEX = "0123456789abcdef"


def _listings(store: Any, parallel: int) -> list[tuple[str, list[Any]]]:
    """Every ``backups/`` and ``runs/`` object of the repository, listed. On S3 the listing is split by
    the first character of the record group (a hex MAC) and the parts are listed at once: a listing is
    a chain of requests, each waiting for the last, and a fleet's repositories hold hundreds of pages."""
    if _is_local(store):
        return [(kind, _local_names(store.root, kind)) for kind in KINDS]
    if not str(getattr(store, "url", "")).startswith("s3://"):
        return [(kind, list(store.list(f"{kind}/"))) for kind in KINDS]
    parts = [(kind, f"{kind}/{h}") for kind in KINDS for h in HEX]
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        found = list(pool.map(lambda part: list(store.list(part[1])), parts))
    return [(kind, infos) for (kind, _prefix), infos in zip(parts, found, strict=True)]


@dataclass(frozen=True, slots=True)
class _Name:
    key: str
    last_modified: Any = None


def _local_names(root: Path, kind: str) -> list[_Name]:
    """The record names of a ``file://`` repository (``KIND/GROUP/ID``: the files one directory below
    ``KIND``, as the store lists them, dot files left out), without the store's stat of every file: a
    record's size and time are not needed to know which names are new."""
    out: list[_Name] = []
    try:
        groups = [g for g in os.scandir(root / kind) if g.is_dir()]
    except FileNotFoundError:
        return out
    for group in groups:
        try:
            with os.scandir(group.path) as entries:
                names = sorted(e.name for e in entries if e.is_file() and not e.name.startswith("."))
        except FileNotFoundError:  # (pruned meanwhile)
            continue
        out += [_Name(f"{kind}/{group.name}/{n}") for n in names]
    return out


RECENT_S = 60.0  # a record directory changed this recently gives no fingerprint (see local_fingerprint)


def local_fingerprint(store: Any) -> bytes | None:
    """A digest of a ``file://`` repository's record directories: each ``KIND/GROUP`` directory's name,
    inode and modification time (adding or removing a record changes its directory's), one ``stat``
    per directory instead of reading each. None for other stores, and when a directory changed in the
    last :data:`RECENT_S` seconds: a record written in the same tick of the file system's clock as an
    earlier one could leave that time as it was, and the clocks of a network file system may differ."""
    if not _is_local(store):
        return None
    h = hashlib.blake2b(digest_size=32)
    recent = time.time_ns() - int(RECENT_S * 1e9)
    for kind in KINDS:
        base = store.root / kind
        try:
            st = os.stat(base)
            newest = st.st_mtime_ns
            parts = [f"{kind}\0{st.st_ino}\0{newest}"]
            with os.scandir(base) as it:  # (in the directory's order: a new order is a change too)
                for entry in it:
                    if entry.is_dir(follow_symlinks=False):
                        gst = entry.stat(follow_symlinks=False)
                        newest = max(newest, gst.st_mtime_ns)
                        parts.append(f"{entry.name}\0{gst.st_ino}\0{gst.st_mtime_ns}")
        except FileNotFoundError:
            h.update(f"{kind}\0-\n".encode())
            continue
        if newest > recent:
            return None
        h.update("\n".join(parts).encode() + b"\n\n")
    return h.digest()


def _is_local(store: Any) -> bool:
    return type(store).__name__ == "LocalStore" and isinstance(getattr(store, "root", None), Path)


@dataclass
class Listing:
    """The record names of a repository: ``seen`` (the table's keys of them) and the listed objects."""

    listed: list[tuple[str, list[Any]]]
    seen: set[bytes]
    seconds: float


def list_records(store: Any, parallel: int = READ_PARALLEL) -> Listing:
    """List the repository's records (names only: nothing is opened, no key is needed)."""
    t0 = time.monotonic()
    listed = _listings(store, parallel)
    seen = {_name_key(i.key) for _kind, infos in listed for i in infos if i.key.count("/") == 2}
    return Listing(listed, seen, time.monotonic() - t0)


def current(table: RecordTable, listing: Listing) -> bool:
    """Whether the table holds exactly the listed names: nothing new, nothing vanished (then the
    repository need not be opened to render it)."""
    return bool(table.entries) and table.entries.keys() == listing.seen


def refresh(
    table: RecordTable, repo: Any, parallel: int = READ_PARALLEL, listing: Listing | None = None
) -> RefreshStats:
    """List the repository's records (unless ``listing`` has them); open the names the table does not
    hold; forget the names gone."""
    t0 = time.monotonic() - (listing.seconds if listing is not None else 0.0)
    stats = RefreshStats(cached=bool(table.entries))
    if listing is None:
        listing = list_records(repo.store, parallel)
    seen = listing.seen
    new: list[tuple[bytes, str, str, Any]] = []
    for kind, infos in listing.listed:
        for info in infos:
            name = info.key
            if name.count("/") != 2:
                continue
            key = _name_key(name)
            if key not in table.entries:
                new.append((key, kind, name, info.last_modified))
    stats.listed = len(seen)
    stats.list_seconds = listing.seconds

    def read(item: tuple[bytes, str, str, Any]) -> tuple[bytes, str, tuple | None]:
        key, kind, name, modified = item
        group = name.split("/")[1]
        try:
            record = repo.read_record(kind, name, modified)
        except KeyError:
            return key, "gone", None
        except Exception:
            # kept in memory, never saved: a damaged record is read again next time
            return key, "damaged", ("damaged", _intern(group), None, None, None, None, None, None, None)
        return key, kind, describe(kind, group, record.data)

    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(new) or 1))) as pool:
        for start in range(0, len(new), READ_BATCH):  # (in batches: few results wait at a time)
            for key, _kind, described in pool.map(read, new[start : start + READ_BATCH]):
                if described is None:
                    continue
                table.entries[key] = table.with_app(described)
                stats.read += 1
                table.changed = True
    gone = [k for k in table.entries if k not in seen]
    for k in gone:
        del table.entries[k]
    stats.forgotten = len(gone)
    table.changed = table.changed or bool(gone)
    stats.damaged = sum(1 for e in table.entries.values() if e[KIND] == "damaged")
    stats.seconds = time.monotonic() - t0
    return stats


def saveable(entries: Iterable[tuple[bytes, Entry]]) -> list[tuple[bytes, Entry]]:
    """The entries worth keeping on disk (a damaged record is read again on the next run)."""
    return [(k, e) for k, e in entries if e[KIND] != "damaged"]
