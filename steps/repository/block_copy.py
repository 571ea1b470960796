"""The copy of a block volume that reads only what changed (CSI changed-block tracking).

Provides :func:`copy_block` (a block device or image file → a snapshot, with the method chosen from the
SnapshotMetadata service, the parent and the repository's memory of a lying service), the content
builders it uses (:func:`rechunk_changed`, :func:`chunk_allocated`, :func:`chunk_all`) and
:class:`BlockCbt`, what the caller hands in to reach the service. Called by the copy engine
(:mod:`.archiver`) for block sources and by the tests and bench directly.

Chunk alignment (docs/user/block-volumes.md): content-defined chunks do not line up with changed ranges,
so the copy re-chunks from the parent's chunk boundary at or before each change and keeps cutting until
a cut lands on one of the parent's boundaries past every change it has met; from there the parent's
chunk list is reused until the next change. FastCDC decides each cut from the bytes since the chunk's
start only, so the result is exactly the content list a full read would give (same chunks, same IDs):
the repository format does not change, and a full read can check a CBT-built snapshot chunk for chunk.

The snapshot record gains a ``block`` object::

    {"method": "cbt-delta" | "cbt-allocated" | "full-read", "reason": str | null,
     "bytes_read": int, "changed_bytes": int | null, "ranges": int | null, "block_type": str | null,
     "driver": str | null, "snapshot_handle": str | null, "base_handle": str | null,
     "copies_since_full_read": int, "verified": bool | null, "cbt_distrusted": {...} | null,
     "trusted_again": {...} (only when a distrusted service was trusted again by request)}

``cbt_distrusted`` (``{"driver", "snapshot", "time", "reason"}``) is set by a full read that found a
CBT-built content list different from what the volume holds, and copied forward by every later copy of
the same volume: the service is never trusted again for it. Only an explicit decision clears it
(:attr:`BlockCbt.trust_again`); the copy that trusts again records the old mark as ``trusted_again``.
"""

from __future__ import annotations

import bisect
import os
import socket
import stat as stat_mod
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from steps.drivers.cbt import CbtUnavailable, Ranges
from steps.errors import UsageError

from .blob_sink import BlobSink
from .chunker import Chunker
from .pack import BLOB_DATA, BLOB_TREE
from .repo import Repository, Snapshot
from .tree import encode_tree, node_from_stat

READ_STEP = 256 * 1024  # bytes per read while re-chunking: a change costs about this much read-ahead
SCATTERED_LIMIT = 0.5  # re-chunk only while that reads less than this share of the volume
DEFAULT_FULL_READ_EVERY = 7  # every 7th copy of a volume reads it in full and checks the CBT result


@dataclass
class BlockCbt:
    """How this copy reaches the SnapshotMetadata service. ``ranges(base_handle)`` returns the delta
    against the base snapshot's CSI handle, or the allocated ranges when ``base_handle`` is None; it
    raises :class:`~steps.drivers.cbt.CbtUnavailable`. ``snapshot_handle`` is the CSI handle of the
    snapshot being copied (the base of the next delta)."""

    ranges: Callable[[str | None], Ranges]
    snapshot_handle: str | None
    driver: str
    full_read_every: int = DEFAULT_FULL_READ_EVERY
    trust_again: bool = False


@dataclass
class BuildResult:
    content: list[str]
    sizes: list[int]  # of each chunk of ``content``
    bytes_read: int


class _Reader:
    """Reads a device at absolute offsets, counting bytes; outside ``mask`` (sorted extents) it gives zeros
    without reading (unallocated blocks of a snapshot read as zeros)."""

    def __init__(self, fd: int, size: int, mask: list[tuple[int, int]] | None = None):
        self.fd, self.size, self.mask = fd, size, mask
        self.bytes_read = 0
        self._m = 0

    def _read(self, view: memoryview, pos: int) -> None:
        got = 0
        while got < len(view):
            k = os.preadv(self.fd, [view[got:]], pos + got)
            if not k:
                raise OSError(f"device shorter than its size (end of data at {pos + got})")
            got += k
        self.bytes_read += got

    def fill(self, view: memoryview, pos: int) -> None:
        if self.mask is None:
            self._read(view, pos)
            return
        end = pos + len(view)
        m = self.mask
        while self._m > 0 and m[self._m - 1][0] + m[self._m - 1][1] > pos:
            self._m -= 1
        while self._m < len(m) and m[self._m][0] + m[self._m][1] <= pos:
            self._m += 1
        cur = pos
        i = self._m
        while cur < end:
            if i < len(m) and m[i][0] <= cur:
                stop = min(end, m[i][0] + m[i][1])
                self._read(view[cur - pos : stop - pos], cur)
                cur = stop
                if stop == m[i][0] + m[i][1]:
                    i += 1
            else:
                stop = min(end, m[i][0]) if i < len(m) else end
                view[cur - pos : stop - pos] = bytes(stop - cur)
                cur = stop


def _cut_from(
    chunker: Chunker, reader: _Reader, start: int, size: int, step: int = READ_STEP
) -> Iterator[tuple[memoryview, int]]:
    """Chunks of the device from ``start`` (a chunk boundary) as a full read from 0 would cut them, with
    the end offset of each; reads ``step`` bytes at a time so a caller that stops early read little more
    than it used. Every cut but the last in the buffer is final: FastCDC decides a cut from the bytes
    since the chunk's start alone."""
    cap = chunker.max_size + step
    buf = bytearray(cap)
    mv = memoryview(buf)
    n = 0  # bytes held, starting at device offset base
    base = start
    while True:
        want = min(cap - n, size - (base + n))
        if want > 0:
            got = min(want, step)
            reader.fill(mv[n : n + got], base + n)
            n += got
        eof = base + n >= size
        if n == 0:
            return
        cuts, _ = chunker.cuts(mv[:n], True)
        if not eof:
            cuts = cuts[:-1]
        used = 0
        for off, length in cuts:
            used = off + length
            yield mv[off:used], base + used
        if eof and used >= n:
            return
        if used:
            mv[: n - used] = mv[used:n]
            n -= used
            base += used


FULL_READ_STEP = 8 * 1024 * 1024


class Sealer:
    """Hashes, compresses and encrypts chunks on worker threads (BLAKE3 and zstd release the interpreter
    lock), each into its own pack channel, while the caller reads and cuts; results come back in order.
    Used for whole-volume reads, where new data is the bulk of the work."""

    def __init__(self, sink: BlobSink, workers: int = 2, on_chunk: Callable[[int], None] | None = None):
        from concurrent.futures import ThreadPoolExecutor

        self.sink, self.on_chunk = sink, on_chunk
        self.window = 4 * workers
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="seal")
        self._local = threading.local()
        self._channels: list = []
        self._lock = threading.Lock()

    def _seal(self, data: bytes) -> str:
        channel = getattr(self._local, "channel", None)
        if channel is None:
            channel = self._local.channel = self.sink.channel()
            with self._lock:
                self._channels.append(channel)
        bid = self.sink.keys.blob_id(data)
        if self.sink.claim(bid):
            channel.add(BLOB_DATA, bid, data)
        if self.on_chunk is not None:
            self.on_chunk(len(data))
        return bid.hex()

    def submit(self, chunk: memoryview):
        return self._pool.submit(self._seal, bytes(chunk))  # a copy: the read buffer is reused

    def close(self, ok: bool) -> None:
        """Wait for the workers; when ``ok``, ship their partly filled packs."""
        self._pool.shutdown(wait=True, cancel_futures=not ok)
        if ok:
            for channel in self._channels:
                channel.flush()


def _chunk_whole(
    chunker: Chunker, reader: _Reader, size: int, emit, sealer: Sealer | None = None
) -> BuildResult:
    content, sizes = [], []
    if sealer is None:
        for c, _ in _cut_from(chunker, reader, 0, size, FULL_READ_STEP):
            content.append(emit(c))
            sizes.append(len(c))
        return BuildResult(content, sizes, reader.bytes_read)
    pending: deque = deque()
    for c, _ in _cut_from(chunker, reader, 0, size, FULL_READ_STEP):
        pending.append(sealer.submit(c))
        sizes.append(len(c))
        while len(pending) > sealer.window:
            content.append(pending.popleft().result())
    content.extend(f.result() for f in pending)
    return BuildResult(content, sizes, reader.bytes_read)


def chunk_all(
    chunker: Chunker, fd: int, size: int, emit: Callable[[memoryview], str], sealer: Sealer | None = None
) -> BuildResult:
    """A full read: every byte read and chunked (sealed on ``sealer``'s threads when given)."""
    return _chunk_whole(chunker, _Reader(fd, size), size, emit, sealer)


def chunk_allocated(
    chunker: Chunker,
    fd: int,
    size: int,
    allocated: list[tuple[int, int]],
    emit: Callable[[memoryview], str],
    sealer: Sealer | None = None,
) -> BuildResult:
    """A first copy reading only the allocated extents; the rest is zeros, chunked as a full read would
    chunk it (so the content list is a full read's)."""
    return _chunk_whole(chunker, _Reader(fd, size, allocated), size, emit, sealer)


def rechunk_changed(
    chunker: Chunker,
    fd: int,
    size: int,
    parent_content: list[str],
    parent_sizes: list[int],
    changed: list[tuple[int, int]],
    emit: Callable[[memoryview], str],
) -> BuildResult:
    """The new content list from the parent's and the changed extents (sorted, merged), reading from the
    parent's chunk boundary before each change until the cuts meet the parent's boundaries again."""
    if sum(parent_sizes) != size or len(parent_sizes) != len(parent_content):
        raise ValueError("the parent's chunks do not cover the volume")
    bounds = [0]
    for s in parent_sizes:
        bounds.append(bounds[-1] + s)
    at_bound = {b: i for i, b in enumerate(bounds)}
    reader = _Reader(fd, size)
    try:  # short reads at scattered offsets: the kernel's read-ahead would only add to them
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
    except (AttributeError, OSError):
        pass
    out: list[str] = []
    out_sizes: list[int] = []
    i = 0  # next parent chunk to reuse; bounds[i] is where the output has got to
    j = 0  # next changed extent
    while j < len(changed):
        s = changed[j][0]
        if s < bounds[i]:  # already re-chunked past its start
            s = bounds[i]
        # the parent's chunk boundary at or before the change: reuse everything before it
        k = i
        lo, hi = i, len(bounds) - 1
        while lo <= hi:
            mid = (lo + hi) // 2
            if bounds[mid] <= s:
                k, lo = mid, mid + 1
            else:
                hi = mid - 1
        if k == len(bounds) - 1:  # a change at the very end (cannot happen with sizes equal)
            break
        out.extend(parent_content[i:k])
        out_sizes.extend(parent_sizes[i:k])
        dirty_end = 0
        resync = None
        for chunk, end in _cut_from(chunker, reader, bounds[k], size):
            out.append(emit(chunk))
            out_sizes.append(len(chunk))
            while j < len(changed) and changed[j][0] < end:
                dirty_end = max(dirty_end, changed[j][0] + changed[j][1])
                j += 1
            if end >= dirty_end and end in at_bound:
                resync = at_bound[end]
                break
        if resync is None:  # cut to the end of the device
            i = len(parent_content)
            break
        i = resync
    out.extend(parent_content[i:])
    out_sizes.extend(parent_sizes[i:])
    return BuildResult(out, out_sizes, reader.bytes_read)


def rechunk_cost(parent_sizes: list[int], changed: list[tuple[int, int]]) -> int:
    """About how many bytes :func:`rechunk_changed` reads: the parent's chunks that hold a change, and the
    chunk after each (where the cuts usually meet the parent's again), counted once."""
    bounds = [0]
    for s in parent_sizes:
        bounds.append(bounds[-1] + s)
    n = len(parent_sizes)
    touched = 0
    upto = 0  # chunks before this index are counted
    for off, length in changed:
        first = max(bisect.bisect_right(bounds, off) - 1, upto)
        last = min(bisect.bisect_left(bounds, off + length) + 1, n)  # one chunk past the change's end
        if last > first:
            touched += bounds[last] - bounds[first]
            upto = last
    return touched


# -- the repository's memory of a service ------------------------------------------------------------------


def _block(s: Snapshot | None) -> dict:
    b = s.data.get("block") if s is not None else None
    return b if isinstance(b, dict) else {}


def distrust_of(repo: Repository, source: str, identity: dict, parent: Snapshot | None) -> dict | None:
    """The record of a lying service for this volume: carried by the parent, or by any snapshot of the same
    source and identity (a chain broken by a failed run or a forgotten snapshot does not forget it)."""
    mark = _block(parent).get("cbt_distrusted")
    if isinstance(mark, dict):
        return mark
    newest = None
    for s in repo.list_snapshots():
        d = s.data
        if d.get("source") != source or any(d.get(k) != v for k, v in identity.items()):
            continue
        m = _block(s).get("cbt_distrusted")
        if isinstance(m, dict) and (newest is None or s.time > newest[0]):
            newest = (s.time, m)
    return newest[1] if newest else None


def _parent_chunks(
    repo: Repository, parent: Snapshot | None, name: str, size: int
) -> tuple[list[str], list[int]] | None:
    """The parent's content list and chunk sizes when it is a whole-device copy of this size."""
    if parent is None or parent.data.get("source_type") != "block":
        return None
    try:
        nodes = repo.load_tree(parent.data.get("tree"))
    except Exception:
        return None
    node = next((n for n in nodes if n.get("name") == name), None)
    if node is None or node.get("size") != size or node.get("holes"):
        return None
    content = node.get("content")
    if not isinstance(content, list):
        return None
    sizes = []
    for bid in content:
        try:
            n = repo.index.raw_length(bytes.fromhex(bid))
        except (ValueError, TypeError):
            return None
        if n is None:
            return None
        sizes.append(n)
    if sum(sizes) != size:
        return None
    return content, sizes


# -- the copy ------------------------------------------------------------------------------------------------


def copy_block(repo: Repository, opts, cbt: BlockCbt | None = None, progress=None, before_commit=None):
    """Copy the block device (or image file) ``opts.source`` (a :class:`~.archiver.CopyOptions`) into a
    snapshot; returns a :class:`~.archiver.CopyResult` whose warnings say which method was used and why."""
    from .archiver import IDENTITY_FIELDS, SNAPSHOT_VERSION, CopyResult, CopyStats, _version

    t0 = time.monotonic()
    started = datetime.now(UTC)
    source = os.path.abspath(opts.source)
    try:
        st = os.stat(source)
    except OSError as err:
        raise UsageError(f"--source: cannot read {source!r} ({err.strerror})") from None
    if not (stat_mod.S_ISBLK(st.st_mode) or stat_mod.S_ISREG(st.st_mode)):
        raise UsageError(f"--source: expected a block device or an image file, got {source!r}")
    warnings: list[str] = []
    repo.begin_write()
    parent = None
    if opts.parent and opts.parent != "auto":
        parent = repo.find_snapshot(opts.parent)
    elif opts.parent == "auto":
        parent = repo.find_parent(source, opts.tags, opts.identity, warn=warnings.append)
    name = os.path.basename(source) or "data"
    chunker = Chunker(repo.keys.chunker, repo.config.chunk_min, repo.config.chunk_avg, repo.config.chunk_max)
    sink = BlobSink(repo, opts.backup_id)
    stats = CopyStats(files=1)
    fd = os.open(source, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
        stats.bytes_total = size
        if progress is not None:
            progress.total_bytes, progress.total_final = size, True

        def emit(chunk: memoryview) -> str:
            bid = sink.save_blob(BLOB_DATA, chunk)
            if progress is not None:  # bytes chunked; reused chunks of the parent count at the end
                progress.done_bytes += len(chunk)
            return bid.hex()

        def advanced(n: int) -> None:
            if progress is not None:
                progress.done_bytes += n

        sealer = Sealer(sink, on_chunk=advanced)
        where = (source, opts.identity)
        try:
            block, content = _build(repo, chunker, fd, size, name, where, parent, cbt, emit, warnings, sealer)
        except BaseException:
            sealer.close(ok=False)
            raise
        sealer.close(ok=True)
        stats.bytes_read = block["bytes_read"]
        stats.files_read = 1
        node = node_from_stat(name, st, kind="file")
        node["size"] = size
        node["content"] = content
        root_tree = sink.save_blob(BLOB_TREE, encode_tree([node])).hex()
        sink.finish()
    except BaseException:
        sink.close_on_error()
        raise
    finally:
        os.close(fd)
    ss = sink.stats
    stats.blobs_new, stats.blob_bytes_new, stats.bytes_added = ss.blobs_new, ss.blob_bytes_new, ss.bytes_added
    stats.packs_added, stats.index_files = ss.packs_added, ss.index_files
    stats.duration_s = time.monotonic() - t0
    root_meta = node_from_stat("", st)
    root_meta.pop("name")
    root_meta["size"] = size
    from dataclasses import asdict

    from .change_telemetry import snapshot_changes

    snap = {
        "version": SNAPSHOT_VERSION,
        "time": started.isoformat().replace("+00:00", "Z"),
        "end_time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "scan_start_ns": time.time_ns(),
        "host": socket.gethostname(),
        "source": source,
        "source_type": "block",
        "tags": dict(opts.tags),
        "backup_id": opts.backup_id,
        **{k: opts.identity.get(k) for k in IDENTITY_FIELDS},
        "parent": parent.id if parent else None,
        "tree": root_tree,
        "root": root_meta,
        "excludes": [],
        "consistency": opts.consistency,
        "summary": asdict(stats),
        "block": block,
        "program": f"snapflow-steps {_version()}",
        "changes": snapshot_changes(stats, ss, None, parent is not None),  # optional (docs/design.md)
    }
    if before_commit is not None:
        before_commit(repo, parent)
    repo.check_commit()
    sid = repo.save_snapshot(snap)
    repo.confirm_commit(f"snapshots/{sid}")
    return CopyResult(sid, snap["parent"], stats, warnings)


def _build(
    repo, chunker, fd, size, name, where, parent, cbt: BlockCbt | None, emit, warnings, sealer=None
) -> tuple[dict, list[str]]:
    pblock = _block(parent)
    block = {
        "method": "full-read",
        "reason": None,
        "bytes_read": 0,
        "changed_bytes": None,
        "ranges": None,
        "block_type": None,
        "driver": cbt.driver if cbt else None,
        "snapshot_handle": cbt.snapshot_handle if cbt else None,
        "base_handle": None,
        "copies_since_full_read": 0,
        "verified": None,
        "cbt_distrusted": None,
    }

    def full(reason: str) -> tuple[dict, list[str]]:
        built = chunk_all(chunker, fd, size, emit, sealer)
        block["reason"] = reason
        block["bytes_read"] += built.bytes_read
        warnings.append(f"{name}: full read of {size} bytes ({reason})")
        return block, built.content

    if cbt is None:
        return full("no SnapshotMetadata service for this volume")
    distrust = distrust_of(repo, where[0], where[1], parent)
    if distrust is not None and not cbt.trust_again:
        block["cbt_distrusted"] = distrust
        return full(
            f"changed-block tracking of driver {distrust.get('driver')!r} is not trusted for this volume since"
            f" {distrust.get('time')}: {distrust.get('reason')}"
        )
    if distrust is not None:
        block["trusted_again"] = distrust
        warnings.append(
            f"{name}: changed-block tracking trusted again by request (it was distrusted: {distrust.get('reason')})"
        )
    base = pblock.get("snapshot_handle") if isinstance(pblock.get("snapshot_handle"), str) else None
    pchunks = _parent_chunks(repo, parent, name, size) if base else None
    try:
        ranges = cbt.ranges(base if pchunks else None)
        if ranges.capacity != size:
            raise CbtUnavailable(
                f"the service's volume capacity {ranges.capacity} is not the device's size {size}"
            )
    except CbtUnavailable as err:
        return full(f"changed-block tracking unavailable: {err}")
    block.update(
        changed_bytes=ranges.bytes,
        ranges=ranges.ranges,
        block_type=ranges.block_type,
        base_handle=base if pchunks else None,
    )
    since = pblock.get("copies_since_full_read")
    since = since if isinstance(since, int) and since >= 0 and parent is not None else 0
    every = cbt.full_read_every
    due = every > 0 and since + 1 >= every
    if pchunks and not due and rechunk_cost(pchunks[1], ranges.extents) > size * SCATTERED_LIMIT:
        # changes spread over most chunks: one sequential read is faster than re-chunking around each
        block["copies_since_full_read"] = 0
        share = rechunk_cost(pchunks[1], ranges.extents) * 100 // max(size, 1)
        return full(
            f"the changed ranges touch about {share}% of the volume's chunks; a sequential read is faster"
        )
    if pchunks:
        built = rechunk_changed(chunker, fd, size, pchunks[0], pchunks[1], ranges.extents, emit)
        method = "cbt-delta"
    else:
        built = chunk_allocated(chunker, fd, size, ranges.extents, emit, sealer)
        method = "cbt-allocated"
    block["bytes_read"] = built.bytes_read
    if not due:
        block.update(method=method, copies_since_full_read=since + 1)
        return block, built.content
    # the periodic full read: the whole volume, compared chunk for chunk with what the service's ranges built
    check = chunk_all(chunker, fd, size, emit, sealer)
    block["bytes_read"] += check.bytes_read
    if check.content == built.content:
        block.update(method=method, verified=True, copies_since_full_read=0)
        return block, built.content
    first = next(
        (i for i, (a, b) in enumerate(zip(check.content, built.content, strict=False)) if a != b),
        min(len(check.content), len(built.content)),
    )
    offset = sum(check.sizes[:first])
    reason = (
        f"the {method} ranges of driver {cbt.driver!r} missed changed data (first difference near byte"
        f" {offset}); the full read's content is recorded"
    )
    block.update(
        method="full-read",
        reason=reason,
        verified=False,
        copies_since_full_read=0,
        cbt_distrusted={
            "driver": cbt.driver,
            "snapshot_handle": cbt.snapshot_handle,
            "time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "reason": reason,
        },
    )
    warnings.append(f"{name}: {reason}; changed-block tracking will not be used for this volume again")
    return block, check.content
