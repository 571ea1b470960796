"""The write pipeline shared by copy and repair: blobs → packs → uploads → index files.

Provides :class:`BlobSink`: producers call :meth:`~BlobSink.claim` (dedup against the index and the
blobs in flight) and :meth:`~BlobSink.submit`; blob workers compress and encrypt into per-thread pack
writers; uploader threads store finished packs, then add them to the in-memory index and, every
``index_every`` packs, write an intermediate index file so that a retried copy resumes. Queues are
bounded in bytes. Any error aborts every stage and is re-raised by :meth:`~BlobSink.finish`.
"""

from __future__ import annotations

import collections
import os
import threading
from dataclasses import dataclass

from .index import IndexPack
from .pack import BLOB_DATA, BLOB_TREE, PackWriter

MiB = 1024 * 1024


def _env_int(name: str, default: int) -> int:
    try:
        return max(1, int(os.environ.get(name, "") or default))
    except ValueError:
        return default


class Aborted(Exception):
    """Another stage failed; this one stops."""


class ByteQueue:
    """A FIFO bounded by the total size of its items (one oversized item is always admitted)."""

    def __init__(self, limit: int, abort: threading.Event):
        self.limit = limit
        self.abort = abort
        self._cv = threading.Condition()
        self._items: collections.deque = collections.deque()
        self._used = 0
        self._closed = False

    def put(self, item, size: int) -> None:
        with self._cv:
            while self._used and self._used + size > self.limit and not self.abort.is_set():
                self._cv.wait(0.2)
            if self.abort.is_set():
                raise Aborted()
            self._items.append((item, size))
            self._used += size
            self._cv.notify_all()

    def get(self):
        """The next item; None once closed and drained, or as soon as the pipeline aborted."""
        with self._cv:
            while not self._items and not self._closed and not self.abort.is_set():
                self._cv.wait(0.2)
            if self.abort.is_set() or not self._items:
                return None
            item, size = self._items.popleft()
            self._used -= size
            self._cv.notify_all()
            return item

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()

    def wake(self) -> None:
        with self._cv:
            self._cv.notify_all()


@dataclass
class SinkStats:
    blobs_new: int = 0
    blob_bytes_new: int = 0  # plaintext bytes of new blobs
    bytes_added: int = 0  # stored bytes of uploaded packs
    packs_added: int = 0
    index_files: int = 0
    tree_blobs_new: int = 0


class BlobSink:
    def __init__(
        self,
        repo,
        backup_id: str | None = None,
        workers: int | None = None,
        uploaders: int | None = None,
        index_every: int | None = None,
        abort: threading.Event | None = None,
    ):
        self.repo = repo
        self.index = repo.index
        self.keys = repo.keys
        self.backup_id = backup_id
        self.pack_size = repo.config.pack_size
        self.abort = abort or threading.Event()
        self.error: BaseException | None = None
        self.stats = SinkStats()
        self._lock = threading.Lock()
        self._pending: set[bytes] = set()
        self._unindexed: list[IndexPack] = []
        self.index_every = index_every or _env_int("SNAPFLOW_INDEX_EVERY_PACKS", 16)
        self.blob_q = ByteQueue(_env_int("SNAPFLOW_BLOB_QUEUE_MIB", 16) * MiB, self.abort)
        self.upload_q = ByteQueue(self.pack_size + 1, self.abort)
        nb = workers or _env_int("SNAPFLOW_PACK_WORKERS", 2)
        nu = uploaders or _env_int("SNAPFLOW_UPLOADERS", 4)
        self._blob_threads = [
            threading.Thread(target=self._guard, args=(self._blob_worker,), name=f"pack-{i}", daemon=True)
            for i in range(nb)
        ]
        self._upload_threads = [
            threading.Thread(target=self._guard, args=(self._uploader,), name=f"upload-{i}", daemon=True)
            for i in range(nu)
        ]
        for t in self._blob_threads + self._upload_threads:
            t.start()

    # -- errors -------------------------------------------------------------------------------
    def fail(self, err: BaseException) -> None:
        with self._lock:
            if self.error is None:
                self.error = err
        self.abort.set()
        self.blob_q.wake()
        self.upload_q.wake()

    def _guard(self, fn) -> None:
        try:
            fn()
        except Aborted:
            pass
        except BaseException as err:
            self.fail(err)

    def check(self) -> None:
        if self.abort.is_set():
            raise Aborted()

    # -- producers ----------------------------------------------------------------------------
    def claim(self, blob_id: bytes) -> bool:
        """True when the caller must store this blob (unknown to the index and not in flight)."""
        with self._lock:
            if blob_id in self._pending or self.index.has(blob_id):
                return False
            self._pending.add(blob_id)
            return True

    def known(self, blob_id: bytes) -> bool:
        with self._lock:
            return blob_id in self._pending or self.index.has(blob_id)

    def submit(self, blob_type: bytes, blob_id: bytes, data) -> None:
        self.blob_q.put((blob_type, blob_id, data), len(data))

    def save_blob(self, blob_type: bytes, data) -> bytes:
        """Hash, dedup and (if new) queue one blob; returns its ID."""
        blob_id = self.keys.blob_id(data)
        if self.claim(blob_id):
            self.submit(blob_type, blob_id, data)
        return blob_id

    # -- stages -------------------------------------------------------------------------------
    def _blob_worker(self) -> None:
        writers: dict[bytes, PackWriter | None] = {BLOB_DATA: None, BLOB_TREE: None}
        while True:
            item = self.blob_q.get()
            if item is None:
                break
            blob_type, blob_id, data = item
            w = writers[blob_type]
            if w is None:
                w = writers[blob_type] = PackWriter(self.keys)
            w.add(blob_type, blob_id, data)
            with self._lock:
                self.stats.blobs_new += 1
                self.stats.blob_bytes_new += len(data)
                if blob_type == BLOB_TREE:
                    self.stats.tree_blobs_new += 1
            if w.size >= self.pack_size:
                self.upload_q.put(w.finish(), w.size)
                writers[blob_type] = None
        if self.abort.is_set():
            return
        for w in writers.values():
            if w is not None and len(w):
                self.upload_q.put(w.finish(), w.size)

    def _uploader(self) -> None:
        while True:
            pack = self.upload_q.get()
            if pack is None:
                break
            self.repo.save_pack(pack)
            batch = None
            with self._lock:
                self.index.add_pack(pack.id, pack.salt, pack.size, pack.entries)
                for e in pack.entries:
                    self._pending.discard(e.id)
                self._unindexed.append(IndexPack(pack.id, pack.salt, pack.size, pack.entries))
                self.stats.packs_added += 1
                self.stats.bytes_added += pack.size
                if len(self._unindexed) >= self.index_every:
                    batch, self._unindexed = self._unindexed, []
            if batch:
                self.repo.save_index_file(batch, backup_id=self.backup_id)
                with self._lock:
                    self.stats.index_files += 1

    def finish(self) -> None:
        """Flush everything (packs, then the last index file); re-raise the first error of any stage."""
        self.blob_q.close()
        for t in self._blob_threads:
            t.join()
        self.upload_q.close()
        for t in self._upload_threads:
            t.join()
        if self.error is not None:
            raise self.error
        if self.abort.is_set():
            raise Aborted()
        if self._unindexed:
            self.repo.save_index_file(self._unindexed, backup_id=self.backup_id)
            self._unindexed = []
            self.stats.index_files += 1

    def close_on_error(self) -> None:
        self.abort.set()
        self.blob_q.wake()
        self.upload_q.wake()
        for t in self._blob_threads + self._upload_threads:
            t.join(timeout=60)


def tune_malloc() -> None:
    """Keep glibc from hoarding freed pack-sized buffers (its mmap threshold otherwise grows to 32 MiB
    and per-thread arenas multiply the retained memory), so peak RSS follows what is really in use."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, int(os.environ.get("XX_MMAP", 1024 * 1024)))  # M_MMAP_THRESHOLD: fixed, large buffers are returned on free
        if os.environ.get("XX_TRIM"):
            libc.mallopt(-1, int(os.environ["XX_TRIM"]))
        libc.mallopt(-8, int(os.environ.get("XX_ARENA", 4)))  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass
