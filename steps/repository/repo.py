"""The repository facade: open or create a repository, read and write its objects.

Provides :class:`Repository` (``init`` / ``open``, the index, blobs and trees, JSON records of kinds
``snapshots``, ``backups`` and ``runs``) and :class:`Snapshot`. Called by every data step and by the
steps that store records (capture, consistent-point, verify, finalize)::

    repo = Repository.open(open_store(url, endpoint), password)
    rid = repo.save_record("runs", {"name": "verify", "ok": True}, key=backup_id)
    for rec in repo.list_records("runs", key=backup_id): ...
    repo.save_record("backups", {...}, key=backup_id)     # the commit point, written by finalize

Layout, write order and invariants are in docs/design.md. Nothing here takes a lock: every object is
written once under a name derived from its content, and readers only ever see complete objects.

Prune's side of the protocol lives here too, because every writer must follow it: a writer calls
:meth:`Repository.begin_write` (it stops deduplicating against prune's pending deletion candidates and
notes its start in the store's clock) and :meth:`Repository.confirm_commit` after writing a snapshot
record (a writer that ran past the grace period of a prune it did not see withdraws its record);
``save_record("backups", ...)`` refuses to commit snapshots prune marked as garbage. Readers fall back
to older versions of a replaced or deleted object on versioned buckets (:meth:`Repository.get_named`,
:meth:`Repository.pack_range`).
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from steps.drivers.objectstore import ObjectNotFound, ObjectStore
from steps.errors import IntegrityError, PermanentError, RepositoryError, TemporaryError, UsageError

from .config import RepoConfig
from .crypto import MasterKeys, open_blob, open_object, seal_object, storage_id
from .index import IndexPack, MemIndex, decode_index_file, encode_index_file
from .keys import KeyFile, create_key_file, open_master_key
from .pack import BLOB_TREE, FinishedPack, pack_key, read_pack_entries
from .tree import decode_tree

RECORD_KINDS = ("snapshots", "backups", "runs")
PRUNE_KIND = "prune"  # prune's own records: deletion candidates and deletion logs
CANDIDATES = "candidates"
DELETED = "deleted"
DELETION_LOG_KIND = "prune-log"  # what Snapflow deleted itself (versioned buckets); only prune/check read it
SETTINGS = "settings"  # the grace periods prune runs use; kept while a writer may need them
# Clock resolution of object stores (Last-Modified and Date have whole seconds): writers stop this much
# before the end of a grace period and prune sweeps this much after it.
CLOCK_SLACK = timedelta(seconds=2)
T = TypeVar("T")
_RESERVED = {"config", "keys", "data", "index", "locks"}
_KIND_RE = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
TREE_CACHE_BYTES = 32 * 1024 * 1024
WHOLE_TREE_PACK_LIMIT = 16 * 1024 * 1024
LIST_PARALLEL = 16


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Record:
    kind: str
    id: str
    data: dict
    key_group: str | None = None
    modified: datetime | None = None  # Last-Modified in the store's clock

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.key_group}/{self.id}" if self.key_group else f"{self.kind}/{self.id}"


@dataclass
class WriterSession:
    """A writer's start: prune's pending candidates are excluded from its deduplication."""

    start: datetime  # the store's clock before the candidates were listed
    excluded: set[str]  # candidate packs hidden from deduplication


@dataclass
class Snapshot:
    id: str
    data: dict = field(default_factory=dict)

    @property
    def short_id(self) -> str:
        return self.id[:8]

    @property
    def time(self) -> str:
        return self.data.get("time", "")

    @property
    def tags(self) -> dict:
        return self.data.get("tags", {})

    @property
    def backup_id(self) -> str | None:
        return self.data.get("backup_id")


def _json(data: dict) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


class Repository:
    """One open repository. Thread-safe for concurrent reads and blob/pack writes."""

    def __init__(self, store: ObjectStore, keys: MasterKeys, config: RepoConfig, key_id: str):
        self.store = store
        self.keys = keys
        self.config = config
        self.key_id = key_id
        self.url = store.url
        self.warnings: list[str] = []
        self._index: MemIndex | None = None
        self._index_ids: set[str] = set()
        self._index_lock = threading.Lock()
        self._tree_cache: OrderedDict[bytes, bytes] = OrderedDict()
        self._tree_cache_bytes = 0
        self._tree_lock = threading.Lock()
        self._tree_packs_loaded: set[int] = set()
        self._writer: WriterSession | None = None
        self._pins: dict[str, str] = {}  # key -> version ID that verified (versioned buckets)
        self._pins_lock = threading.Lock()
        self.fallbacks: list[str] = []  # objects served from an older version (replaced or deleted)

    # -- life cycle ---------------------------------------------------------------------------
    @classmethod
    def init(
        cls, store: ObjectStore, password: str, kdf_params: dict | None = None, object_lock=None
    ) -> Repository:
        """Create a new repository (and the bucket, with Object Lock and that default retention when
        ``object_lock`` is given); refuses to touch an existing one."""
        if object_lock is not None:
            store.ensure_container(object_lock=object_lock)
        else:
            store.ensure_container()
        if store.exists("config") or any(True for _ in store.list("keys/")):
            raise RepositoryError(f"{store.url}: a repository already exists here; refusing to overwrite it")
        keys = MasterKeys.generate()
        config = RepoConfig.new()
        key_id, key_bytes = create_key_file(keys, config.id, password, kdf_params)
        store.put(f"keys/{key_id}", key_bytes)  # the key first: a config without a key is useless
        store.put("config", config.to_bytes(keys))
        return cls(store, keys, config, key_id)

    @classmethod
    def open(cls, store: ObjectStore, password: str) -> Repository:
        try:
            raw = store.get("config")
        except ObjectNotFound:
            raise RepositoryError(
                f"{store.url}: no repository here (config missing); run init first"
            ) from None
        config, doc = RepoConfig.parse(raw, store.url)
        keys, repo_id, key_id = open_master_key(cls._key_files(store), password, store.url)
        if repo_id != config.id:
            raise IntegrityError(
                f"{store.url}: key {key_id[:8]} belongs to repository {repo_id}, not {config.id}"
            )
        RepoConfig.check_mac(doc, keys, store.url)
        return cls(store, keys, config, key_id)

    @staticmethod
    def _key_files(store: ObjectStore) -> Iterable[KeyFile]:
        for info in store.list("keys/"):
            kid = info.key.rsplit("/", 1)[-1]
            data = store.get(info.key)
            if storage_id(data) != kid:
                continue  # a replaced or damaged key file never opens anything
            try:
                yield KeyFile(kid, json.loads(data))
            except ValueError:
                continue

    # -- keys ---------------------------------------------------------------------------------
    def list_keys(self) -> list[dict]:
        out = []
        for kf in self._key_files(self.store):
            d = kf.doc if isinstance(kf.doc, dict) else {}  # (a malformed file is listed, not fatal)
            kdf = d.get("kdf") if isinstance(d.get("kdf"), dict) else {}
            out.append(
                {
                    "id": kf.id,
                    "current": kf.id == self.key_id,
                    "created": d.get("created"),
                    "host": d.get("host"),
                    "user": d.get("user"),
                    "kdf": {k: v for k, v in kdf.items() if k != "salt"},
                }
            )
        return out

    def add_key(self, password: str, kdf_params: dict | None = None) -> str:
        key_id, data = create_key_file(self.keys, self.config.id, password, kdf_params)
        self.store.put(f"keys/{key_id}", data)
        return key_id

    def remove_key(self, key_id: str) -> None:
        ids = [k["id"] for k in self.list_keys()]
        if key_id not in ids:
            raise UsageError(f"--key: no key {key_id!r} in {self.url}")
        if len(ids) == 1:
            raise UsageError(
                "--key: refusing to remove the last key (the repository would become unreadable)"
            )
        self.note_deletions([f"keys/{key_id}"], "key remove")
        self.store.delete(f"keys/{key_id}")

    def resolve_key_id(self, ref: str) -> str:
        ids = [k["id"] for k in self.list_keys()]
        found = [i for i in ids if i.startswith(ref)] if ref else []
        if len(found) != 1:
            raise UsageError(
                f"--key: expected the ID (or a unique prefix) of one key, got {ref!r} ({len(found)} match)"
            )
        return found[0]

    # -- raw objects --------------------------------------------------------------------------
    def get_named(self, key: str) -> bytes:
        """Fetch an object whose name is the hash of its bytes; falls back to older versions when the
        current one was replaced or deleted (versioned buckets). IntegrityError when none matches."""
        expected = key.rsplit("/", 1)[-1]
        try:
            data = self.store.get(key)
            if storage_id(data) == expected:
                return data
            problem = "stored bytes do not match their name (replaced or corrupt)"
        except ObjectNotFound:
            problem = "missing"
            data = None
        for version_id in self._older_versions(key):
            try:
                old = self.store.get(key, version_id)
            except (ObjectNotFound, PermanentError):
                continue
            if storage_id(old) == expected:
                self._note_fallback(key, version_id, problem)
                return old
        if data is None:
            raise ObjectNotFound(key)
        raise IntegrityError(f"{key}: {problem}")

    def _older_versions(self, key: str) -> list[str]:
        """Version IDs of ``key`` (no delete markers), newest first; empty on stores without versions."""
        try:
            infos = [
                i
                for i in self.store.list_versions(key)
                if i.key == key and i.version_id and not i.is_delete_marker
            ]
        except (ObjectNotFound, PermanentError):
            return []
        infos.sort(
            key=lambda i: (i.last_modified or datetime.min.replace(tzinfo=UTC), i.is_latest), reverse=True
        )
        return [i.version_id for i in infos if i.version_id]

    def _note_fallback(self, key: str, version_id: str, problem: str) -> None:
        msg = f"{key}: {problem}; read the intact version {version_id}"
        with self._pins_lock:
            self._pins[key] = version_id
            if len(self.fallbacks) < 10_000 and msg not in self.fallbacks[-50:]:
                self.fallbacks.append(msg)

    def pack_range(self, pack_id: str, offset: int, length: int, decode: Callable[[bytes], T]) -> T:
        """``decode`` of a byte range of a pack; when the current version is missing, short or does not
        decode (GCM tags fail on replaced bytes), older versions are tried, newest first, and the one that
        decodes is used for later reads of that pack."""
        key = pack_key(pack_id)
        with self._pins_lock:
            pinned = self._pins.get(key)
        first_error: Exception | None = None
        try:
            data = self.store.get_range(key, offset, length, pinned)
            if len(data) != length:
                raise IntegrityError(f"pack {pack_id} is truncated")
            return decode(data)
        except (ObjectNotFound, IntegrityError) as err:
            first_error = err
        problem = "missing" if isinstance(first_error, ObjectNotFound) else "damaged or replaced"
        for version_id in self._older_versions(key):
            if version_id == pinned:
                continue
            try:
                data = self.store.get_range(key, offset, length, version_id)
                if len(data) != length:
                    continue
                result = decode(data)
            except (ObjectNotFound, PermanentError):  # (IntegrityError is a PermanentError)
                continue
            self._note_fallback(key, version_id, problem)
            return result
        if isinstance(first_error, ObjectNotFound):
            raise IntegrityError(f"pack {pack_id} is missing") from None
        raise first_error

    def put_named(self, prefix: str, data: bytes) -> str:
        oid = storage_id(data)
        self.store.put(f"{prefix}/{oid}", data)
        return oid

    # -- index --------------------------------------------------------------------------------
    @property
    def index(self) -> MemIndex:
        if self._index is None:
            self.load_index()
        assert self._index is not None
        return self._index

    def index_ids(self) -> list[str]:
        return [i.key.rsplit("/", 1)[-1] for i in self.store.list("index/")]

    def _read_index_file(self, iid: str) -> tuple[str, dict, list[IndexPack]]:
        name = f"index/{iid}"
        plain = open_object(self.keys, "index", self.get_named(name), name)
        doc, packs = decode_index_file(plain, name)
        return iid, doc, packs

    def load_index(self, exclude_packs: Iterable[str] = ()) -> MemIndex:
        """Load every index file not superseded by another; parallel fetches, compact result. An index
        file that vanishes while being read was replaced by prune's compaction: list again."""
        with self._index_lock:
            missing: set[str] = set()
            for _attempt in range(6):
                ids = self.index_ids()
                index, superseded, missing = self._load_index_files(ids, skip=set())
                live = superseded & set(ids)
                if live:  # some loaded files were superseded: load again without them (after repair/prune)
                    index, _, again = self._load_index_files(ids, skip=live)
                    missing |= again
                missing -= superseded
                if not missing:
                    break
            else:
                raise IntegrityError(
                    f"index file(s) {', '.join(sorted(m[:12] for m in missing))} are listed but cannot be read"
                )
            index.exclude_packs(exclude_packs)
            self._index = index
            self._index_ids = set(ids) - live
            return index

    def _load_index_files(self, ids: list[str], skip: set[str]) -> tuple[MemIndex, set[str], set[str]]:
        index = MemIndex()
        superseded: set[str] = set()
        missing: set[str] = set()
        todo = [i for i in ids if i not in skip]

        def read(iid: str):
            try:
                return self._read_index_file(iid)
            except ObjectNotFound:
                return iid, None, None

        # Decoded index files are large (Python objects per blob) next to the compact index they are
        # added to: at most ``workers`` of them are held at once, added in list order and dropped.
        workers = min(LIST_PARALLEL, max(1, len(todo)))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            feed = iter(todo)
            window = deque(pool.submit(read, i) for i in itertools.islice(feed, workers))
            while window:
                iid, doc, packs = window.popleft().result()
                nxt = next(feed, None)
                if nxt is not None:
                    window.append(pool.submit(read, nxt))
                if doc is None:
                    missing.add(iid)
                    continue
                superseded.update(doc.get("supersedes", ()))
                for p in packs:
                    index.add_pack(p.id, p.salt, p.size, p.entries, p.backup_id)
                del doc, packs
        return index, superseded, missing

    def save_index_file(
        self, packs: list[IndexPack], supersedes: Iterable[str] = (), backup_id: str | None = None
    ) -> str:
        import os
        import socket

        body = encode_index_file(
            packs, supersedes, backup_id, {"host": socket.gethostname(), "pid": os.getpid()}
        )
        iid = self.put_named("index", seal_object(self.keys, "index", body))
        self._index_ids.add(iid)
        return iid

    def note_deletions(self, keys: list[str], why: str, run: str | None = None) -> None:
        """On a versioned bucket, log keys Snapflow itself is about to delete (a ``prune`` record of type
        ``deleted``, written before the deletions): prune purges their old versions once unlocked, and
        any other deletion stands out as tampering. Nothing to do on stores without versions."""
        if not keys or not self.store.versioning_enabled():
            return
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

    # -- prune's protocol, writer side -----------------------------------------------------------
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

    # -- packs and blobs ----------------------------------------------------------------------
    def save_pack(self, pack: FinishedPack) -> None:
        self.store.put(pack_key(pack.id), pack.data)

    def read_pack(self, pack_id: str) -> bytes:
        return self.get_named(pack_key(pack_id))

    def unpin(self) -> None:
        with self._pins_lock:
            self._pins.clear()

    def read_blob(self, blob_id: bytes, _relocated: bool = False) -> bytes:
        loc = self.index.get(blob_id)
        if loc is None:
            raise IntegrityError(f"blob {blob_id.hex()} is not in the index")
        try:
            return self._read_blob_at(blob_id, loc)
        except (ObjectNotFound, IntegrityError):
            if _relocated or not self.relocate(blob_id, loc.pack_id):
                raise
            return self.read_blob(blob_id, _relocated=True)

    def relocate(self, blob_id: bytes, gone_pack: str) -> bool:
        """After ``gone_pack`` turned out missing: if prune deleted it because another pack holds the same
        blob (a duplicate), reload the index and tell whether the blob is now found elsewhere."""
        if self.store.stat(pack_key(gone_pack)) is not None:
            return False
        self.load_index()
        loc = self.index.get(blob_id)
        return loc is not None and loc.pack_id != gone_pack

    def _read_blob_at(self, blob_id: bytes, loc) -> bytes:
        if loc.type == BLOB_TREE:
            cached = self._tree_cached(blob_id)
            if cached is not None:
                return cached
            if self.index.is_tree_pack(loc.pack_no) and loc.pack_no not in self._tree_packs_loaded:
                self._load_tree_pack(loc.pack_no)
                cached = self._tree_cached(blob_id)
                if cached is not None:
                    return cached
        data = self.pack_range(
            loc.pack_id,
            loc.offset,
            loc.length,
            lambda stored: self.decode_blob(
                blob_id,
                loc.type,
                loc.salt,
                stored,
                loc.raw_length,
                f"blob {blob_id.hex()} in pack {loc.pack_id}",
            ),
        )
        if loc.type == BLOB_TREE:
            self._tree_put(blob_id, data)
        return data

    def decode_blob(
        self, blob_id: bytes, blob_type: bytes, salt: bytes, stored, raw_length: int, name: str
    ) -> bytes:
        if len(stored) < 29:
            raise IntegrityError(f"{name}: truncated")
        try:
            data = open_blob(self.keys.pack_aead(salt), blob_type, blob_id, stored, raw_length)
        except IntegrityError as err:
            raise IntegrityError(f"{name}: {err}") from None
        except Exception as err:  # zstd errors and the like: corrupt payload
            raise IntegrityError(f"{name}: cannot decode ({type(err).__name__})") from None
        if len(data) != raw_length or self.keys.blob_id(data) != blob_id:
            raise IntegrityError(f"{name}: content does not match its ID")
        return data

    def _load_tree_pack(self, pack_no: int) -> None:
        index = self.index
        pack_id = index.pack_ids[pack_no]
        if index.pack_sizes[pack_no] > WHOLE_TREE_PACK_LIMIT:
            return
        data = self.read_pack(pack_id)
        salt, entries = read_pack_entries(self.keys, data, f"pack {pack_id}")
        for e in entries:
            if e.type == BLOB_TREE:
                blob = self.decode_blob(
                    e.id,
                    e.type,
                    salt,
                    memoryview(data)[e.offset : e.offset + e.length],
                    e.raw_length,
                    f"tree {e.id.hex()} in pack {pack_id}",
                )
                self._tree_put(e.id, blob)
        self._tree_packs_loaded.add(pack_no)

    def _tree_cached(self, blob_id: bytes) -> bytes | None:
        with self._tree_lock:
            data = self._tree_cache.get(blob_id)
            if data is not None:
                self._tree_cache.move_to_end(blob_id)
            return data

    def _tree_put(self, blob_id: bytes, data: bytes) -> None:
        with self._tree_lock:
            if blob_id in self._tree_cache:
                return
            self._tree_cache[blob_id] = data
            self._tree_cache_bytes += len(data)
            while self._tree_cache_bytes > TREE_CACHE_BYTES and len(self._tree_cache) > 1:
                _, old = self._tree_cache.popitem(last=False)
                self._tree_cache_bytes -= len(old)

    def load_tree(self, tree_id: str | bytes) -> list[dict]:
        bid = bytes.fromhex(tree_id) if isinstance(tree_id, str) else tree_id
        try:
            return decode_tree(self.read_blob(bid), bid.hex())
        except ObjectNotFound:
            loc = self.index.get(bid)
            raise IntegrityError(f"tree {bid.hex()}: pack {loc.pack_id if loc else '?'} is missing") from None

    # -- records ------------------------------------------------------------------------------
    def _check_kind(self, kind: str) -> None:
        if not _KIND_RE.match(kind) or kind in _RESERVED:
            raise UsageError(
                f"record kind: expected a lower-case name other than {sorted(_RESERVED)}, got {kind!r}"
            )

    def key_group(self, key: str) -> str:
        """The directory a keyed record lives in: a MAC of the key, so names reveal no backup IDs."""
        return self.keys.mac(b"record-key\0" + key.encode())[:32]

    def save_record(self, kind: str, data: dict, key: str | None = None) -> str:
        """Encrypt and store a JSON record; returns its ID (the hash of its stored bytes).

        ``key`` groups records (e.g. the backup ID for ``runs`` and ``backups``) so that
        ``list_records(kind, key=...)`` finds them with one listing.
        """
        self._check_kind(kind)
        group = self.key_group(key) if key is not None else None
        prefix = f"{kind}/{group}" if group else kind
        referenced: set[str] = set()
        if kind == "backups":
            referenced = referenced_snapshots(data)
            self._refuse_garbage_commit(key, referenced)
        sealed = seal_object(self.keys, kind, _json(data), context=(group or "").encode())
        rid = self.put_named(prefix, sealed)
        if kind == "backups" and referenced:
            present = {i.key.rsplit("/", 1)[-1] for i in self.store.list("snapshots/")}
            missing = sorted(referenced - present)
            if missing:  # prune swept them between the check and the write: withdraw the commit
                self.store.delete(f"{prefix}/{rid}")
                raise PermanentError(
                    f"backup {key}: snapshot(s) {', '.join(m[:8] for m in missing)} no longer exist; not committed"
                )
        return rid

    def _refuse_garbage_commit(self, backup_id: str | None, referenced: set[str]) -> None:
        for rec in self.prune_candidates():
            for entry in rec.data.get("snapshots", ()):
                if entry.get("id") in referenced or (backup_id and entry.get("backup_id") == backup_id):
                    raise PermanentError(
                        f"backup {backup_id}: its snapshots stayed uncommitted longer than prune's grace period"
                        " and are marked as garbage; not committed (run the backup again)"
                    )

    def _read_record(self, kind: str, object_key: str, modified: datetime | None = None) -> Record:
        parts = object_key.split("/")
        group = parts[1] if len(parts) == 3 else None
        plain = open_object(
            self.keys, kind, self.get_named(object_key), object_key, context=(group or "").encode()
        )
        return Record(kind, parts[-1], json.loads(plain), group, modified)

    def list_records(self, kind: str, key: str | None = None, strict: bool = False) -> list[Record]:
        """Every record of ``kind`` (under ``key`` when given). Damaged records are skipped with a warning
        in :attr:`warnings` (or raise IntegrityError when ``strict``)."""
        self._check_kind(kind)
        prefix = f"{kind}/{self.key_group(key)}/" if key is not None else f"{kind}/"
        infos = list(self.store.list(prefix))

        def read(info) -> Record | None:
            try:
                return self._read_record(kind, info.key, info.last_modified)
            except ObjectNotFound:
                return None  # deleted since the listing (prune forgot it)
            except (IntegrityError, ValueError) as err:
                if strict:
                    raise
                self.warnings.append(f"skipping damaged record {info.key}: {err}")
                return None

        if not infos:
            return []
        with ThreadPoolExecutor(max_workers=min(LIST_PARALLEL, max(1, len(infos)))) as pool:
            out = [r for r in pool.map(read, infos) if r is not None]
        out.sort(key=lambda r: (str(r.data.get("time", "")), r.id))
        return out

    def load_record(self, kind: str, record_id: str, key: str | None = None) -> Record:
        self._check_kind(kind)
        if key is not None:
            return self._read_record(kind, f"{kind}/{self.key_group(key)}/{record_id}")
        for info in self.store.list(f"{kind}/"):
            if info.key.rsplit("/", 1)[-1] == record_id:
                return self._read_record(kind, info.key, info.last_modified)
        raise UsageError(f"no {kind} record {record_id!r} in {self.url}")

    def record_groups(self, kind: str) -> set[str]:
        return {i.key.split("/")[1] for i in self.store.list(f"{kind}/") if i.key.count("/") == 2}

    # -- snapshots ----------------------------------------------------------------------------
    def save_snapshot(self, data: dict) -> str:
        return self.save_record("snapshots", data)

    def list_snapshots(self) -> list[Snapshot]:
        return [Snapshot(r.id, r.data) for r in self.list_records("snapshots")]

    def committed_filter(self) -> Callable[[Snapshot], bool]:
        """A snapshot is a restore point (and a parent candidate) when it belongs to no backup (a plain
        ``copy``) or its backup has a committed ``backups`` record."""
        groups = self.record_groups("backups")
        return lambda s: not s.backup_id or self.key_group(s.backup_id) in groups

    def find_snapshot(self, ref: str, snapshots: list[Snapshot] | None = None) -> Snapshot:
        """``latest`` (newest committed), a full ID or a unique prefix of at least 4 characters."""
        snaps = snapshots if snapshots is not None else self.list_snapshots()
        if ref == "latest":
            ok = self.committed_filter()
            committed = [s for s in snaps if ok(s)]
            if not committed:
                raise UsageError(f"--snapshot latest: {self.url} has no committed snapshot")
            return max(committed, key=lambda s: s.time)
        if len(ref) < 4 or not re.fullmatch(r"[0-9a-f]+", ref):
            raise UsageError(
                f"--snapshot: expected 'latest' or a snapshot ID (at least 4 hex digits), got {ref!r}"
            )
        found = [s for s in snaps if s.id.startswith(ref)]
        if not found:
            raise UsageError(f"--snapshot: no snapshot {ref!r} in {self.url}")
        if len(found) > 1:
            raise UsageError(f"--snapshot: {ref!r} is ambiguous ({len(found)} snapshots match)")
        return found[0]

    def find_restore_point(
        self, ref: str, allow_uncommitted: bool = False, snapshots: list[Snapshot] | None = None
    ) -> Snapshot:
        """The snapshot ``restore`` may write (as :meth:`find_snapshot`). A snapshot of a backup that was
        never committed — its copies, verify or finalize did not all pass, or it is still running — is no
        restore point: refused (UsageError) unless ``allow_uncommitted``."""
        snap = self.find_snapshot(ref, snapshots)
        if not allow_uncommitted and not self.committed_filter()(snap):
            raise UsageError(
                f"--snapshot: {snap.short_id} belongs to backup {snap.backup_id}, which was never committed"
                " (a copy, the verify or finalize did not pass, or it is still running), so it is no"
                " restore point; pass --allow-uncommitted to restore it anyway"
            )
        return snap

    def find_parent(self, source: str, tags: dict, identity: dict) -> Snapshot | None:
        """The newest committed snapshot of the same source, tags (ignoring ``backup``) and identity."""
        want_tags = {k: v for k, v in tags.items() if k != "backup"}
        ok = self.committed_filter()
        best = None
        for s in self.list_snapshots():
            d = s.data
            if d.get("source") != source or {k: v for k, v in s.tags.items() if k != "backup"} != want_tags:
                continue
            if any(d.get(k) != v for k, v in identity.items()):
                continue
            if not ok(s):
                continue
            if best is None or s.time > best.time:
                best = s
        return best


def referenced_snapshots(record: dict) -> set[str]:
    """Snapshot IDs a backup record names: ``volumes[].snapshot``, ``manifests``, ``snapshots[]``."""
    out: set[str] = set()
    for v in record.get("volumes") or ():
        if isinstance(v, dict) and isinstance(v.get("snapshot"), str):
            out.add(v["snapshot"])
    if isinstance(record.get("manifests"), str):
        out.add(record["manifests"])
    for sid in record.get("snapshots") or ():
        if isinstance(sid, str):
            out.add(sid)
    return {s for s in out if re.fullmatch(r"[0-9a-f]{64}", s)}
