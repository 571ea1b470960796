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
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from steps.drivers.objectstore import ObjectNotFound, ObjectStore
from steps.errors import IntegrityError, RepositoryError, UsageError

from .config import RepoConfig
from .crypto import MasterKeys, open_blob, open_object, seal_object, storage_id
from .index import IndexPack, MemIndex, decode_index_file, encode_index_file
from .keys import KeyFile, create_key_file, open_master_key
from .pack import BLOB_TREE, FinishedPack, pack_key, read_pack_entries
from .tree import decode_tree

RECORD_KINDS = ("snapshots", "backups", "runs")
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

    # -- life cycle ---------------------------------------------------------------------------
    @classmethod
    def init(cls, store: ObjectStore, password: str, kdf_params: dict | None = None) -> Repository:
        """Create a new repository (and the bucket); refuses to touch an existing one."""
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
            d = kf.doc
            out.append(
                {
                    "id": kf.id,
                    "current": kf.id == self.key_id,
                    "created": d.get("created"),
                    "host": d.get("host"),
                    "user": d.get("user"),
                    "kdf": {k: v for k, v in d.get("kdf", {}).items() if k != "salt"},
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
        for info in self.store.list_versions(key):
            if info.key != key or info.is_delete_marker or not info.version_id:
                continue
            try:
                old = self.store.get(key, info.version_id)
            except ObjectNotFound:
                continue
            if storage_id(old) == expected:
                return old
        if data is None:
            raise ObjectNotFound(key)
        raise IntegrityError(f"{key}: {problem}")

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
        """Load every index file not superseded by another; parallel fetches, compact result."""
        with self._index_lock:
            ids = self.index_ids()
            index, superseded = self._load_index_files(ids, skip=set())
            live = superseded & set(ids)
            if live:  # some loaded files were superseded: load again without them (rare: after repair/prune)
                index, _ = self._load_index_files(ids, skip=live)
            index.exclude_packs(exclude_packs)
            self._index = index
            self._index_ids = set(ids) - live
            return index

    def _load_index_files(self, ids: list[str], skip: set[str]) -> tuple[MemIndex, set[str]]:
        index = MemIndex()
        superseded: set[str] = set()
        todo = [i for i in ids if i not in skip]
        with ThreadPoolExecutor(max_workers=min(LIST_PARALLEL, max(1, len(todo)))) as pool:
            for _iid, doc, packs in pool.map(self._read_index_file, todo):
                superseded.update(doc.get("supersedes", ()))
                for p in packs:
                    index.add_pack(p.id, p.salt, p.size, p.entries)
        return index, superseded

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

    # -- packs and blobs ----------------------------------------------------------------------
    def save_pack(self, pack: FinishedPack) -> None:
        self.store.put(pack_key(pack.id), pack.data)

    def read_pack(self, pack_id: str) -> bytes:
        return self.get_named(pack_key(pack_id))

    def read_blob(self, blob_id: bytes) -> bytes:
        loc = self.index.get(blob_id)
        if loc is None:
            raise IntegrityError(f"blob {blob_id.hex()} is not in the index")
        if loc.type == BLOB_TREE:
            cached = self._tree_cached(blob_id)
            if cached is not None:
                return cached
            if self.index.is_tree_pack(loc.pack_no) and loc.pack_no not in self._tree_packs_loaded:
                self._load_tree_pack(loc.pack_no)
                cached = self._tree_cached(blob_id)
                if cached is not None:
                    return cached
        stored = self.store.get_range(pack_key(loc.pack_id), loc.offset, loc.length)
        data = self.decode_blob(
            blob_id, loc.type, loc.salt, stored, loc.raw_length, f"blob {blob_id.hex()} in pack {loc.pack_id}"
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
            return decode_tree(self.read_blob(bid))
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
        sealed = seal_object(self.keys, kind, _json(data), context=(group or "").encode())
        return self.put_named(prefix, sealed)

    def _read_record(self, kind: str, object_key: str) -> Record:
        parts = object_key.split("/")
        group = parts[1] if len(parts) == 3 else None
        plain = open_object(
            self.keys, kind, self.get_named(object_key), object_key, context=(group or "").encode()
        )
        return Record(kind, parts[-1], json.loads(plain), group)

    def list_records(self, kind: str, key: str | None = None, strict: bool = False) -> list[Record]:
        """Every record of ``kind`` (under ``key`` when given). Damaged records are skipped with a warning
        in :attr:`warnings` (or raise IntegrityError when ``strict``)."""
        self._check_kind(kind)
        prefix = f"{kind}/{self.key_group(key)}/" if key is not None else f"{kind}/"
        keys = [i.key for i in self.store.list(prefix)]

        def read(k: str) -> Record | None:
            try:
                return self._read_record(kind, k)
            except (IntegrityError, ObjectNotFound, ValueError) as err:
                if strict:
                    raise
                self.warnings.append(f"skipping damaged record {k}: {err}")
                return None

        with ThreadPoolExecutor(max_workers=min(LIST_PARALLEL, max(1, len(keys)))) as pool:
            out = [r for r in pool.map(read, keys) if r is not None]
        out.sort(key=lambda r: (str(r.data.get("time", "")), r.id))
        return out

    def load_record(self, kind: str, record_id: str, key: str | None = None) -> Record:
        self._check_kind(kind)
        if key is not None:
            return self._read_record(kind, f"{kind}/{self.key_group(key)}/{record_id}")
        for info in self.store.list(f"{kind}/"):
            if info.key.rsplit("/", 1)[-1] == record_id:
                return self._read_record(kind, info.key)
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
