"""The repository facade: open or create a repository, read and write its objects.

Provides :class:`Repository` (``init`` / ``open``, keys, the index, blobs and trees, encrypted JSON
records of any kind: ``snapshots``, ``backups``, ``runs``, prune's). Called by every data step and by
the steps that store records::

    repo = Repository.open(open_store(url, endpoint), password)
    for rec in repo.list_records("runs", key=backup_id): ...
    rec = repo.read_record("runs", info.key, info.last_modified)  # one listed name
    snap = repo.find_restore_point("latest")

Layout, write order and invariants are in docs/design.md. Nothing here takes a lock: every object is
written once under a name derived from its content, and readers only ever see complete objects. Readers
fall back to older versions of a replaced or deleted object on versioned buckets
(:meth:`Repository.get_named`, :meth:`Repository.pack_range`).

Concerns kept in their own modules, mixed into :class:`Repository`: what the records hold and the
commit point of a backup (:mod:`.records`: ``commit_backup``, ``save_run_record``), prune's protocol on
the writer's side, which every writer must follow (:mod:`.writer`: ``begin_write``, ``check_commit``,
``confirm_commit``; ``save_record("backups", ...)`` refuses snapshots prune marked as garbage and
withdraws a record whose snapshots are gone), restore points (:mod:`.restore_points`: ``commits``,
``find_snapshot``, ``find_restore_point``, ``find_parent``) and damaged records (:mod:`.damage`).
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TypeVar

from steps.drivers.objectstore import ObjectNotFound, ObjectStore
from steps.errors import (
    DamagedRecordError,
    IntegrityError,
    PermanentError,
    RepositoryError,
    UsageError,
)

from .config import RepoConfig
from .crypto import MasterKeys, open_blob, open_object, seal_object, storage_id
from .damage import DamagedRecord
from .index import IndexPack, MemIndex, decode_index_file, encode_index_file
from .keys import KeyFile, create_key_file, open_master_key
from .pack import BLOB_TREE, FinishedPack, pack_key
from .records import Record, Snapshot, referenced_snapshots
from .restore_points import RestorePoints
from .tree import parse_tree
from .writer import WriterProtocol, WriterSession

T = TypeVar("T")
_RESERVED = {"config", "keys", "data", "index", "locks"}
_KIND_RE = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
TREE_CACHE_BYTES = 32 * 1024 * 1024
WHOLE_TREE_PACK_LIMIT = 16 * 1024 * 1024
TREE_PACK_CACHE_BYTES = 32 * 1024 * 1024
LIST_PARALLEL = 16
# Index files being fetched, decoded or waiting to be added, by their stored size (the decoded text is
# about twice that, held while it is decoded): one file larger than this is loaded alone.
INDEX_LOAD_BUDGET = 4 * 1024 * 1024
# Stored bytes of an index file per blob, rounded up (about 45 are measured: an ID's 32 bytes of entropy and
# its numbers, compressed): the estimate of blobs from it falls short rather than holding memory for nothing,
# but by little: at 64 a million blobs were estimated at 700 000 and the hash table was rebuilt once (0.2 s
# of the index load's 2.6 s).
INDEX_BYTES_PER_BLOB = 48


def older_versions(store: ObjectStore, key: str) -> list[str]:
    """Version IDs of ``key`` (no delete markers), newest first; empty on stores without versions."""
    try:
        infos = [
            i for i in store.list_versions(key) if i.key == key and i.version_id and not i.is_delete_marker
        ]
    except (ObjectNotFound, PermanentError):
        return []
    infos.sort(key=lambda i: (i.last_modified or datetime.min.replace(tzinfo=UTC), i.is_latest), reverse=True)
    return [i.version_id for i in infos if i.version_id]


def _get_version(store: ObjectStore, key: str, version_id: str) -> bytes | None:
    try:
        return store.get(key, version_id)
    except (ObjectNotFound, PermanentError):
        return None


def _loads_record(plain: bytes):
    """A record's JSON; one nested beyond any record Snapflow writes is damage (ValueError), not a
    crash of the reader."""
    try:
        return json.loads(plain)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _json(data: dict) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


class Repository(WriterProtocol, RestorePoints):
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
        # tree IDs whose blobs passed the tree rules -> whether orjson's nodes were taken (parse_tree)
        self._valid_trees: dict[bytes, bool] = {}
        self._tree_lock = threading.Lock()
        self._tree_packs: OrderedDict[str, bytes] = OrderedDict()  # pack ID -> stored bytes
        self._tree_packs_bytes = 0
        self._tree_packs_damaged: set[str] = set()
        self._writer: WriterSession | None = None
        self._pins: dict[str, str] = {}  # key -> version ID that verified (versioned buckets)
        self._pins_lock = threading.Lock()
        self.fallbacks: list[str] = []  # objects served from an older version (replaced or deleted)
        self._damaged: dict[tuple[str, str | None], list[DamagedRecord]] = {}  # last scan per (kind, key)

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
        """Every key file, in listing order. One whose bytes do not match its name (or are no JSON) comes
        with a ``problem`` — unless an older version of it does match (versioned buckets)."""
        for info in store.list("keys/"):
            kid = info.key.rsplit("/", 1)[-1]
            data = store.get(info.key)
            if storage_id(data) != kid:
                data = next(
                    (
                        old
                        for old in (_get_version(store, info.key, v) for v in older_versions(store, info.key))
                        if old is not None and storage_id(old) == kid
                    ),
                    data,
                )
            if storage_id(data) != kid:
                yield KeyFile(kid, {}, "its stored bytes do not match its name: corrupt or replaced")
                continue
            try:
                yield KeyFile(kid, json.loads(data))
            except ValueError:
                yield KeyFile(kid, {}, "not a JSON key file")

    # -- keys ---------------------------------------------------------------------------------
    def list_keys(self) -> list[dict]:
        """Every key file; a damaged one is listed with ``damaged`` (why it opens nothing)."""
        out = []
        for kf in self._key_files(self.store):
            d = kf.doc if isinstance(kf.doc, dict) else {}  # (a malformed file is listed, not fatal)
            kdf = d.get("kdf") if isinstance(d.get("kdf"), dict) else {}
            entry = {
                "id": kf.id,
                "current": kf.id == self.key_id,
                "created": d.get("created"),
                "host": d.get("host"),
                "user": d.get("user"),
                "kdf": {k: v for k, v in kdf.items() if k != "salt"},
            }
            if kf.problem:
                entry["damaged"] = kf.problem
            out.append(entry)
        return out

    def add_key(self, password: str, kdf_params: dict | None = None) -> str:
        key_id, data = create_key_file(self.keys, self.config.id, password, kdf_params)
        self.store.put(f"keys/{key_id}", data)
        return key_id

    def remove_key(self, key_id: str) -> None:
        keys = self.list_keys()
        if key_id not in [k["id"] for k in keys]:
            raise UsageError(f"--key: no key {key_id!r} in {self.url}")
        if not [k for k in keys if k["id"] != key_id and not k.get("damaged")]:
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
        return older_versions(self.store, key)

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
                sizes = {i.key.rsplit("/", 1)[-1]: i.size for i in self.store.list("index/")}
                ids = list(sizes)
                index, superseded, missing = self._load_index_files(ids, skip=set(), sizes=sizes)
                live = superseded & set(ids)
                if live:  # some loaded files were superseded: load again without them (after repair/prune)
                    index, _, again = self._load_index_files(ids, skip=live, sizes=sizes)
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

    def _load_index_files(
        self, ids: list[str], skip: set[str], sizes: dict[str, int] | None = None
    ) -> tuple[MemIndex, set[str], set[str]]:
        superseded: set[str] = set()
        missing: set[str] = set()
        todo = [i for i in ids if i not in skip]
        sizes = sizes or {}
        # Sized from the files' stored bytes, so that the hash table is rebuilt once at most while their
        # blobs are added instead of at every doubling from its smallest size.
        index = MemIndex(capacity=sum(max(0, sizes.get(i, 0)) for i in todo) // INDEX_BYTES_PER_BLOB)

        def read(iid: str):
            try:
                return self._read_index_file(iid)
            except ObjectNotFound:
                return iid, None, None

        # An index file's text and decoded entries are large next to the compact index they are added
        # to: files are fetched while their stored sizes together stay within INDEX_LOAD_BUDGET (at least
        # one at a time, at most ``workers``), added in list order and dropped.
        workers = min(LIST_PARALLEL, max(1, len(todo)))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            feed = iter(todo)
            nxt = next(feed, None)
            window: deque = deque()  # (future, stored size) in list order
            held = 0

            def admit() -> None:
                nonlocal nxt, held
                while nxt is not None and len(window) < workers:
                    size = max(0, sizes.get(nxt, 0))
                    if window and held + size > INDEX_LOAD_BUDGET:
                        return
                    window.append((pool.submit(read, nxt), size))
                    held += size
                    nxt = next(feed, None)

            admit()
            while window:
                future, size = window.popleft()
                iid, doc, packs = future.result()
                del future  # it holds the decoded file too
                if doc is not None:
                    superseded.update(doc.get("supersedes", ()))
                    for p in packs:
                        index.add_pack(p.id, p.salt, p.size, p.entries, p.backup_id)
                else:
                    missing.add(iid)
                del doc, packs
                held -= size
                admit()
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
            pack = self._tree_pack(loc)
            if pack is not None:  # decoded from the cached pack, not cached decoded: see _tree_pack
                return self.decode_blob(
                    blob_id,
                    loc.type,
                    loc.salt,
                    memoryview(pack)[loc.offset : loc.offset + loc.length],
                    loc.raw_length,
                    f"blob {blob_id.hex()} in pack {loc.pack_id}",
                )
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

    def _tree_pack(self, loc) -> bytes | None:
        """The stored bytes of the tree pack holding ``loc`` (one GET for the whole pack, checked against its
        name), kept in a cache of its own of at most TREE_PACK_CACHE_BYTES (the newest pack always), or
        None for a pack holding data blobs or larger than WHOLE_TREE_PACK_LIMIT. A snapshot's trees are
        written one after the other into a few tree packs, so a walk over them (a restore's survey and
        its plan, an incremental copy's parent) makes a GET per pack instead of one per tree. The trees
        are decoded from these bytes at each read rather than kept decoded: a pack's trees decoded are
        several times its stored size and would evict each other from the tree cache before the walk
        reached them. Packs are cached by ID (an index reload may renumber them). The
        fetch is a range of the size the index gives, at most WHOLE_TREE_PACK_LIMIT, whatever the object's
        real size. A pack whose bytes do not match its name is not used: each of its trees is then
        fetched and authenticated alone, so damage costs only the trees it touches."""
        index = self.index
        no, pack_id = loc.pack_no, loc.pack_id
        if not (0 <= no < len(index.pack_ids) and index.pack_ids[no] == pack_id and index.is_tree_pack(no)):
            return None
        size = index.pack_sizes[no]
        if size > WHOLE_TREE_PACK_LIMIT:
            return None
        with self._tree_lock:
            if pack_id in self._tree_packs_damaged:
                return None
            data = self._tree_packs.get(pack_id)
            if data is not None:
                self._tree_packs.move_to_end(pack_id)
                return data

        def whole(data: bytes) -> bytes:
            if storage_id(data) != pack_id:
                raise IntegrityError(f"pack {pack_id}: stored bytes do not match their name")
            return data

        try:
            data = self.pack_range(pack_id, 0, size, whole)
        except IntegrityError:  # missing, short or damaged: each tree is read and authenticated alone
            with self._tree_lock:
                self._tree_packs_damaged.add(pack_id)
            return None
        with self._tree_lock:
            if pack_id not in self._tree_packs:
                self._tree_packs[pack_id] = data
                self._tree_packs_bytes += len(data)
                while self._tree_packs_bytes > TREE_PACK_CACHE_BYTES and len(self._tree_packs) > 1:
                    _, old = self._tree_packs.popitem(last=False)
                    self._tree_packs_bytes -= len(old)
        return data

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
            known = self._valid_trees.get(bid)
            nodes, exact = parse_tree(
                self.read_blob(bid), bid.hex(), validated=known is not None, orjson_exact=known is True
            )
            self._valid_trees[bid] = exact  # read_blob checked the bytes against the ID: they cannot change
            return nodes
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

    def read_record(self, kind: str, object_key: str, modified: datetime | None = None) -> Record:
        """The record stored under ``object_key`` (``KIND/GROUP/ID`` or ``snapshots/ID``, as a listing
        names it), opened and authenticated; ``modified`` is the store's Last-Modified of it, kept on the
        record. Raises ObjectNotFound (a KeyError) when it is gone, IntegrityError when it does not
        authenticate (or its bytes do not match its name), ValueError when it is no JSON object. Readers
        that list records themselves (the metrics exporter's incremental cache) open each name with it."""
        if not object_key.startswith(f"{kind}/"):
            raise UsageError(f"record {object_key!r}: not a name of a {kind} record")
        parts = object_key.split("/")
        group = parts[1] if len(parts) == 3 else None
        plain = open_object(
            self.keys, kind, self.get_named(object_key), object_key, context=(group or "").encode()
        )
        data = _loads_record(plain)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return Record(kind, parts[-1], data, group, modified)

    def _diagnose(
        self,
        kind: str,
        object_key: str,
        modified: datetime | None,
        err: Exception,
        groups: Callable[[], set[str]],
    ) -> DamagedRecord | None:
        """What is wrong with a record that did not open (None: it was deleted meanwhile). Bytes that are
        an intact record of this kind under another name or in another group (renamed, moved, or swapped
        with another record) authenticate there: their content and true place are kept for ``repair
        records``. ``groups`` gives the record groups of ``kind`` to try."""
        parts = object_key.split("/")
        group = parts[1] if len(parts) == 3 else None
        reason = str(err).removeprefix(f"{object_key}: ")
        if isinstance(err, ValueError):
            reason = f"not a JSON record: {type(err).__name__}"
        elif "authentication failed" in reason:
            reason = "does not authenticate: corrupt, or not written by Snapflow"
        try:
            raw = self.store.get(object_key)
        except ObjectNotFound:
            return None
        true_id = storage_id(raw)
        if true_id != parts[-1]:
            reason = "its stored bytes do not match its name: damaged or replaced"
        # where would these bytes open? here first, then in the other groups of this kind
        places = [group] + ([g for g in sorted(groups()) if g != group] if group is not None else [])
        for place in places:
            try:
                data = _loads_record(
                    open_object(self.keys, kind, raw, object_key, context=(place or "").encode())
                )
            except (IntegrityError, ValueError):
                continue
            if not isinstance(data, dict):
                continue
            if place == group and true_id == parts[-1]:
                break  # (it opens where it is: the error was something else)
            where = "under a wrong name" if place == group else f"of group {place}"
            how = "renamed, or swapped with another" if place == group else "moved or swapped from that group"
            return DamagedRecord(
                kind,
                object_key,
                f"holds the intact record {true_id[:12]} {where}: {how}",
                group,
                modified,
                data=data,
                true_id=true_id,
                raw=raw,
                true_group=place,
            )
        return DamagedRecord(kind, object_key, reason, group, modified)

    def scan_records(self, kind: str, key: str | None = None) -> tuple[list[Record], list[DamagedRecord]]:
        """Every record of ``kind`` (under ``key`` when given) that opens, oldest first, and every one
        that does not (:class:`DamagedRecord`), from one listing. The damaged ones are remembered for
        :meth:`damaged_records`."""
        self._check_kind(kind)
        prefix = f"{kind}/{self.key_group(key)}/" if key is not None else f"{kind}/"
        infos = list(self.store.list(prefix))

        groups_seen: list[set[str]] = []

        def groups() -> set[str]:  # listed once, and only when a record in a group is damaged
            with self._pins_lock:
                if not groups_seen:
                    groups_seen.append(self.record_groups(kind))
                return groups_seen[0]

        def read(info) -> Record | DamagedRecord | None:
            try:
                return self.read_record(kind, info.key, info.last_modified)
            except ObjectNotFound:
                return None  # deleted since the listing (prune forgot it)
            except (IntegrityError, ValueError) as err:
                return self._diagnose(kind, info.key, info.last_modified, err, groups)

        out: list[Record] = []
        damaged: list[DamagedRecord] = []
        if infos:
            with ThreadPoolExecutor(max_workers=min(LIST_PARALLEL, max(1, len(infos)))) as pool:
                for r in pool.map(read, infos):
                    if isinstance(r, Record):
                        out.append(r)
                    elif isinstance(r, DamagedRecord):
                        damaged.append(r)
        out.sort(key=lambda r: (str(r.data.get("time", "")), r.id))
        damaged.sort(key=lambda d: d.key)
        with self._pins_lock:
            self._damaged[(kind, key)] = list(damaged)
        return out, damaged

    def list_records(self, kind: str, key: str | None = None, strict: bool = False) -> list[Record]:
        """Every record of ``kind`` (under ``key`` when given). Damaged records are left out with a warning
        in :attr:`warnings` (or raise DamagedRecordError when ``strict``); commands that choose among
        records ask :meth:`damaged_records` whether anything was left out."""
        out, damaged = self.scan_records(kind, key)
        if damaged and strict:
            raise DamagedRecordError(f"{damaged[0].key}: {damaged[0].problem}", [d.key for d in damaged])
        for d in damaged:
            self.warnings.append(f"skipping damaged record {d.key}: {d.problem}")
        return out

    def damaged_records(self, kind: str, key: str | None = None) -> list[DamagedRecord]:
        """The records of ``kind`` (under ``key``) that do not open, as the last listing of them in this
        session found them (one is made when there was none)."""
        with self._pins_lock:
            cached = self._damaged.get((kind, key))
            if cached is None and key is not None and (kind, None) in self._damaged:
                group = self.key_group(key)
                cached = [d for d in self._damaged[(kind, None)] if d.group == group]
        if cached is None:
            cached = self.scan_records(kind, key)[1]
        return list(cached)

    def load_record(self, kind: str, record_id: str, key: str | None = None) -> Record:
        self._check_kind(kind)
        if key is not None:
            return self.read_record(kind, f"{kind}/{self.key_group(key)}/{record_id}")
        for info in self.store.list(f"{kind}/"):
            if info.key.rsplit("/", 1)[-1] == record_id:
                return self.read_record(kind, info.key, info.last_modified)
        raise UsageError(f"no {kind} record {record_id!r} in {self.url}")

    def record_groups(self, kind: str) -> set[str]:
        return {i.key.split("/")[1] for i in self.store.list(f"{kind}/") if i.key.count("/") == 2}

    # -- snapshots ----------------------------------------------------------------------------
    def save_snapshot(self, data: dict) -> str:
        return self.save_record("snapshots", data)

    def list_snapshots(self) -> list[Snapshot]:
        return [Snapshot(r.id, r.data) for r in self.list_records("snapshots")]
