"""The write pipeline shared by copy, capture and prune: blobs → packs → uploads → index files.

Provides :class:`BlobSink`. A producer thread takes its own :class:`PackChannel` (:meth:`BlobSink.channel`)
and, for each blob, calls :meth:`~BlobSink.claim` (dedup against the index and the blobs in flight) and
:meth:`PackChannel.add`, which compresses and encrypts the blob straight into that thread's pack buffer
(one per blob type); a full pack is handed to the uploader threads, which store it, add it to the
in-memory index and, every ``index_every`` packs, write an intermediate index file so that a retried copy
resumes. :meth:`~BlobSink.save_blob` / :meth:`~BlobSink.submit` do the same through a shared channel for
callers without threads of their own. A producer takes an upload slot (one per uploader) before it
turns a full pack buffer into the pack's bytes, so memory stays at one pack buffer per producer and blob
type plus one pack per uploader. Any error aborts every stage and is re-raised by
:meth:`~BlobSink.finish`.
"""

from __future__ import annotations

import collections
import os
import threading
from dataclasses import dataclass

from steps import runtime
from steps.drivers.cpus import default_threads

from .crypto import NONCE_LEN, compress_many
from .index import IndexPack
from .pack import BLOB_TREE, FinishedPack, PackWriter

MiB = 1024 * 1024


def _env_int(name: str, default: int) -> int:
    try:
        return max(1, int(os.environ.get(name, "") or default))
    except ValueError:
        return default


class Aborted(Exception):
    """Another stage failed; this one stops."""


class ByteQueue:
    """A FIFO bounded by the total size of its items (one oversized item is always admitted). A put
    wakes one consumer and a get one producer, so threads do not all wake for every item."""

    def __init__(self, limit: int, abort: threading.Event):
        self.limit = limit
        self.abort = abort
        lock = threading.Lock()
        self._lock = lock
        self._not_empty = threading.Condition(lock)
        self._not_full = threading.Condition(lock)
        self._items: collections.deque = collections.deque()
        self._used = 0
        self._closed = False

    def put(self, item, size: int) -> None:
        with self._lock:
            while self._used and self._used + size > self.limit and not self.abort.is_set():
                self._not_full.wait(0.2)
            if self.abort.is_set():
                raise Aborted()
            self._items.append((item, size))
            self._used += size
            self._not_empty.notify()

    def get(self):
        """The next item; None once closed and drained, or as soon as the pipeline aborted."""
        with self._lock:
            while not self._items and not self._closed and not self.abort.is_set():
                self._not_empty.wait(0.2)
            if self.abort.is_set() or not self._items:
                return None
            item, size = self._items.popleft()
            self._used -= size
            self._not_full.notify()
            return item

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._not_empty.notify_all()

    def wake(self) -> None:
        with self._lock:
            self._not_empty.notify_all()
            self._not_full.notify_all()


@dataclass
class SinkStats:
    blobs_new: int = 0
    blob_bytes_new: int = 0  # plaintext bytes of new blobs
    bytes_added: int = 0  # stored bytes of uploaded packs
    packs_added: int = 0
    index_files: int = 0
    tree_blobs_new: int = 0
    data_bytes_new: int = 0  # plaintext bytes of new data blobs (file contents, not trees)
    data_bytes_stored_new: int = 0  # their stored bytes (compressed and sealed)


class PackChannel:
    """One producer thread's pack writers (one per blob type). Not thread-safe: one per thread."""

    def __init__(self, sink: BlobSink):
        self.sink = sink
        self._writers: dict[bytes, PackWriter] = {}
        self._new = 0
        self._new_bytes = 0
        self._new_trees = 0
        self._new_data = self._new_data_stored = 0

    def add_many(self, blob_type: bytes, blobs: list) -> None:
        """:meth:`add` for several claimed, non-empty blobs (``(blob_id, data)`` pairs): they are
        compressed by one call and get their nonces from one draw of ``12 * len(blobs)`` random bytes
        (each nonce is still 12 bytes of its own, fresh from the OS), so sealing many small blobs
        releases the interpreter lock twice instead of twice per blob. Stored bytes are those
        :meth:`add` writes."""
        if not blobs:
            return
        packed = compress_many([data for _, data in blobs])
        nonces = os.urandom(NONCE_LEN * len(blobs))
        add = self.add
        for i, (blob_id, data) in enumerate(blobs):
            add(blob_type, blob_id, data, packed[i], nonces[i * NONCE_LEN : (i + 1) * NONCE_LEN])

    def add(self, blob_type: bytes, blob_id: bytes, data, packed=None, nonce: bytes | None = None) -> None:
        """Seal a claimed blob into this thread's pack; ships the pack once it reaches the pack size.
        ``packed`` and ``nonce``: see :func:`~.crypto.seal_blob_into`."""
        sink = self.sink
        if sink.abort.is_set():
            raise Aborted()
        w = self._writers.get(blob_type)
        if w is None:
            w = self._writers[blob_type] = PackWriter(sink.keys, sink.pack_capacity)
        elif len(w) and not w.fits(len(data)):  # ship a nearly full pack rather than grow its buffer
            self._ship(w)
        stored = w.add(blob_type, blob_id, data, packed, nonce)
        self._new += 1
        self._new_bytes += len(data)
        if blob_type == BLOB_TREE:
            self._new_trees += 1
        else:
            self._new_data += len(data)
            self._new_data_stored += stored
        if w.size >= sink.pack_size:
            self._ship(w)

    def _ship(self, w: PackWriter) -> None:
        sink = self.sink
        sink._reserve_slot()  # before the pack's bytes exist: they count against the packs in flight
        try:
            pack = w.finish()
        except BaseException:
            sink._slots.release()
            raise
        with sink._lock:
            sink.stats.blobs_new += self._new
            sink.stats.blob_bytes_new += self._new_bytes
            sink.stats.tree_blobs_new += self._new_trees
            sink.stats.data_bytes_new += self._new_data
            sink.stats.data_bytes_stored_new += self._new_data_stored
        self._new = self._new_bytes = self._new_trees = 0
        self._new_data = self._new_data_stored = 0
        sink._upload(pack)

    def flush(self) -> None:
        """Ship the partly filled packs (the producer is done)."""
        for w in self._writers.values():
            if len(w):
                self._ship(w)
        self._writers.clear()


class BlobSink:
    def __init__(
        self,
        repo,
        backup_id: str | None = None,
        workers: int | None = None,  # accepted for compatibility: producers seal in their own threads
        uploaders: int | None = None,
        index_every: int | None = None,
        abort: threading.Event | None = None,
    ):
        self.repo = repo
        self.index = repo.index
        self.keys = repo.keys
        self.backup_id = backup_id
        self.pack_size = repo.config.pack_size
        # a pack is finished once it reaches pack_size; a blob that would overflow this buffer starts
        # the next pack instead (with chunks of 1 MiB on average, packs average about pack_size)
        self.pack_capacity = self.pack_size + MiB
        self.abort = abort or threading.Event()
        self.error: BaseException | None = None
        self.stats = SinkStats()
        self._lock = threading.Lock()
        self._pending: set[bytes] = set()
        self._unindexed: list[IndexPack] = []
        self.index_every = index_every or _env_int(runtime.INDEX_EVERY_PACKS, 16)
        nu = uploaders or _env_int(runtime.UPLOADERS, default_threads("uploaders"))
        # finished packs alive at once: one per uploader (measured: a pack waiting on top of those only
        # adds memory, the store's latency rises with the requests in flight)
        self._slots = threading.Semaphore(nu)
        self.upload_q = ByteQueue(1 << 62, self.abort)
        self._shared = PackChannel(self)
        self._shared_lock = threading.Lock()
        self._upload_threads = [
            threading.Thread(target=self._guard, args=(self._uploader,), name=f"upload-{i}", daemon=True)
            for i in range(nu)
        ]
        for t in self._upload_threads:
            t.start()

    # -- errors -------------------------------------------------------------------------------
    def fail(self, err: BaseException) -> None:
        with self._lock:
            if self.error is None:
                self.error = err
        self.abort.set()
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
    def channel(self) -> PackChannel:
        """Pack writers for one producer thread; call :meth:`PackChannel.flush` when it is done."""
        return PackChannel(self)

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
        """Store a claimed blob through the shared channel (any thread)."""
        with self._shared_lock:
            self._shared.add(blob_type, blob_id, data)

    def save_blob(self, blob_type: bytes, data) -> bytes:
        """Hash, dedup and (if new) store one blob; returns its ID."""
        blob_id = self.keys.blob_id(data)
        if self.claim(blob_id):
            self.submit(blob_type, blob_id, data)
        return blob_id

    # -- uploads ------------------------------------------------------------------------------
    def _reserve_slot(self) -> None:
        while not self._slots.acquire(timeout=0.2):
            if self.abort.is_set():
                raise Aborted()

    def _upload(self, pack: FinishedPack) -> None:
        self.upload_q.put(pack, pack.size)

    def _uploader(self) -> None:
        while True:
            pack = self.upload_q.get()
            if pack is None:
                break
            try:
                self.repo.save_pack(pack)
            finally:
                self._slots.release()
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
            del pack
            if batch:
                self.repo.save_index_file(batch, backup_id=self.backup_id)
                with self._lock:
                    self.stats.index_files += 1

    def finish(self) -> None:
        """Flush everything (packs, then the last index file); re-raise the first error of any stage.
        Producers flush their own channels before this is called."""
        if not self.abort.is_set():
            with self._shared_lock:
                try:
                    self._shared.flush()
                except Aborted:
                    pass
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
        self.upload_q.wake()
        for t in self._upload_threads:
            t.join(timeout=60)


def tune_for_bulk_work() -> None:
    """Process settings for copy and restore: :func:`tune_malloc`, and a cyclic garbage collector that
    runs less often (the trees of a large volume are tens of thousands of dicts, which every full
    collection would traverse again; the pipeline itself creates no reference cycles)."""
    import gc

    if not _is_step_process():
        return
    tune_malloc()
    gc.set_threshold(50_000, 20, 20)


def _is_step_process() -> bool:
    """True when this process is a step of its own (``python -m steps``). The settings above are made for
    such a process; a long-lived host that calls a step's function (a test run, a server with threads
    spawning children) keeps its own allocator and collector settings."""
    import sys

    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return spec is not None and spec.name == "steps.__main__"


def tune_malloc() -> None:
    """Let glibc reuse freed pack-sized buffers instead of returning them to the kernel on every free.

    Every pack (~8 MiB) and many zstd outputs (~1 MiB) are allocated and freed again; above glibc's mmap
    threshold each of them is a fresh mapping whose pages fault in one by one (measured: over a million
    page faults and seconds of system time per GiB copied). With the threshold above the largest such
    buffer and a high trim threshold, freed memory is reused, while the peak stays bounded by the queues
    (the memory in use never exceeds what the pipeline holds at once). One arena keeps threads from
    multiplying the retained memory (measured: 5-8 MiB less at the peak than two, at the same speed,
    for copy and restore alike). Measured on a 1 GiB copy: 48k page faults instead of 1.5 million,
    2.1 s of system time instead of 6.7 s. A 16 MiB trim threshold (rather than 64 MiB) keeps about
    10 MiB less resident at the peak for no measurable time (8 MiB cost 200k faults and 0.25 s more).
    """
    if not _is_step_process():
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 * MiB)  # M_MMAP_THRESHOLD (glibc's largest)
        libc.mallopt(-1, 16 * MiB)  # M_TRIM_THRESHOLD
        libc.mallopt(-8, 1)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass
