"""Copy's file workers: read files, cut them into blobs, and seal the new blobs into packs.

Provides :class:`FileReading` (the file-worker side of :class:`~.archiver.Archiver`, which provides
``repo``, ``chunker``, ``abort``, ``changes``, ``file_q``, ``_lock``, ``_workers``, ``_count``, ``_warn``,
``_job_done``, ``_sealed_new`` and ``_start_worker``), :class:`FileJob` (one file to read, handed over by
the walk) and :func:`holes_of`. Small files (one chunk each) go to the workers in batches: a batch is
read from the page cache through libc without releasing the interpreter lock where the file system
allows it (:class:`_CachedReads`), then hashed, compressed by one call and sealed with nonces from one
random draw; larger files are read and cut one by one.
"""

from __future__ import annotations

import ctypes
import os
import stat as stat_mod
from typing import Any

from steps.drivers import beneath, mounts

from .blob_sink import Aborted, BlobSink
from .pack import BLOB_DATA, lazy_buffer


class FileJob:
    __slots__ = ("done", "error", "extra_nodes", "node", "path", "prev", "regions", "size", "st")

    def __init__(self, path: bytes, node: dict, size: int, st: os.stat_result):
        self.path = path
        self.node = node
        self.size = size
        self.st = st  # from the walk: saves an fstat per file
        self.regions: list[tuple[int, int]] | None = None
        self.done = False  # set (under Archiver._done_cv) when a worker finished with it
        self.error: BaseException | None = None
        self.extra_nodes: list[dict] = []
        self.prev: tuple | None = None  # (hash of its content,) when this path was a file in the parent


def holes_of(regions: list[tuple[int, int]], size: int) -> list[list[int]]:
    holes, pos = [], 0
    for off, length in regions:
        if off > pos:
            holes.append([pos, off - pos])
        pos = off + length
    if pos < size:
        holes.append([pos, size - pos])
    return holes


class _CachedReads:
    """Opens, reads and closes small files through libc without releasing the interpreter lock.

    Every ``os`` call releases the lock and takes it back, and on two CPUs each of those is a hand-off
    to whichever thread waits for it (measured: 35 lock hand-offs per small file on a first copy). A
    read here never waits on the disk: ``preadv2`` with ``RWF_NOWAIT`` returns only what the page cache
    holds, and the caller reads whatever is missing through ``os`` (lock released) after asking the
    kernel to fetch those files together (``POSIX_FADV_WILLNEED``). Opening is the same ``open`` as
    :func:`~steps.drivers.beneath.open_source`; the walk's ``lstat`` already brought the inode in."""

    def __init__(self):
        import errno

        libc = ctypes.PyDLL("libc.so.6", use_errno=True)  # PyDLL: the lock stays held during a call
        self._open = libc.open
        self._open.argtypes = (ctypes.c_char_p, ctypes.c_int)
        self._open.restype = ctypes.c_int
        self._preadv2 = libc.preadv2
        self._preadv2.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_int)
        self._preadv2.restype = ctypes.c_ssize_t
        self._close = libc.close
        self._close.argtypes = (ctypes.c_int,)
        self._close.restype = ctypes.c_int

        class IOVec(ctypes.Structure):
            _fields_ = (("base", ctypes.c_void_p), ("len", ctypes.c_size_t))

        self._iov = IOVec()
        self._iov_ref = ctypes.byref(self._iov)
        self._get_errno = ctypes.get_errno
        self._c_char = ctypes.c_char
        self._addressof = ctypes.addressof
        self._eintr, self._eperm = errno.EINTR, errno.EPERM
        self._eagain, self._unsupported = errno.EAGAIN, errno.EOPNOTSUPP
        self._flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
        self._noatime = getattr(os, "O_NOATIME", 0)
        self._nowait = os.RWF_NOWAIT
        self.usable = True  # False once the kernel refused RWF_NOWAIT: every read then goes through os

    def address(self, buf) -> tuple[Any, int]:
        """(a reference to keep while the address is used, the address of writable buffer ``buf``)."""
        ref = self._c_char.from_buffer(buf)
        return ref, self._addressof(ref)

    def open(self, path: bytes) -> int:
        flags = self._flags | self._noatime
        while True:
            fd = self._open(path, flags)
            if fd >= 0:
                return fd
            err = self._get_errno()
            if err == self._eperm and flags & self._noatime:  # O_NOATIME needs the file's owner
                flags = self._flags
            elif err != self._eintr:
                raise OSError(err, os.strerror(err), os.fsdecode(path))

    def read_cached(self, fd: int, address: int, length: int, offset: int) -> int:
        """Bytes read into ``address`` from the page cache (0 to ``length``; fewer when the rest is not
        cached, or at the end of the file)."""
        iov = self._iov
        got = 0
        while got < length:
            iov.base, iov.len = address + got, length - got
            n = self._preadv2(fd, self._iov_ref, 1, offset + got, self._nowait)
            if n > 0:
                got += n
                continue
            if n < 0:
                err = self._get_errno()
                if err == self._eintr:
                    continue
                if err not in (self._eagain, self._unsupported):  # not cached; no RWF_NOWAIT here
                    raise OSError(err, os.strerror(err))
                if err == self._unsupported:
                    self.usable = False
            break
        return got

    def close(self, fd: int) -> None:
        self._close(fd)


def _cached_reads() -> _CachedReads | None:
    try:
        return _CachedReads()
    except (OSError, AttributeError):  # no glibc, or no preadv2/RWF_NOWAIT: plain os calls
        return None


class FileReading:
    """The file workers of a copy (mixed into :class:`~.archiver.Archiver`)."""

    def _file_worker(self, sink: BlobSink) -> None:
        channel = sink.channel()  # this thread's pack buffers: blobs are sealed right here
        buf = lazy_buffer(self.chunker.stream_block)  # this thread's read buffer, reused for every file
        quick = _cached_reads() if self.BATCH_READS else None
        _held, address = quick.address(buf) if quick is not None else (None, 0)  # buf stays exported
        one_chunk = min(self.SMALL_FILE, self.chunker.min_size)
        while True:
            jobs = self.file_q.get()  # a batch of small files, or one larger file
            if jobs is None:
                break
            if quick is not None and all(
                j.size <= one_chunk and stat_mod.S_ISREG(j.st.st_mode) and not self._open_waits(j.st.st_dev)
                for j in jobs
            ):
                try:
                    self._archive_batch(jobs, sink, channel, buf, quick, address)
                except Aborted:
                    self._jobs_failed([j for j in jobs if not j.done], Aborted())
                    return
                except BaseException as err:
                    self._jobs_failed([j for j in jobs if not j.done], err)
                    sink.fail(err)
                    return
                continue
            for i, job in enumerate(jobs):
                try:
                    self._archive_file(job, sink, channel, buf)
                except Aborted:
                    self._jobs_failed(jobs[i:], Aborted())
                    return
                except OSError as err:
                    self._unreadable(job, err)
                except BaseException as err:
                    self._jobs_failed(jobs[i:], err)
                    sink.fail(err)
                    return
                self.changes.file_done(job.node, job.prev)
                self._job_done(job)
        if not self.abort.is_set():
            channel.flush()

    def _jobs_failed(self, jobs: list[FileJob], err: BaseException) -> None:
        for job in jobs:
            job.error = err
            self._job_done(job)

    # Small files of a batch are read together, then hashed, then compressed and sealed together: see
    # docs/performance.md, "Small files in batches". Set to False, every file goes through _archive_file.
    BATCH_READS = True
    # Devices whose open() may wait on a server (NFS, SMB, CephFS, FUSE...; see steps.drivers.mounts): a
    # batch opens its files with the interpreter lock held, so their files are read one by one instead.
    _open_may_wait: frozenset[int] = frozenset()
    _devices_seen: set[int]  # set by the archiver when a copy starts

    def _open_waits(self, dev: int) -> bool:
        """Whether opening a file of device ``dev`` may wait on a server. The mount table is read again
        for every device not seen before in this copy: a mount may appear while the copy runs (an
        automount, an NFS submount the walk stepped into)."""
        seen = self._devices_seen
        if dev not in seen:
            with self._lock:
                if dev not in seen:
                    self._open_may_wait = mounts.devices_open_may_wait()
                    seen.add(dev)
        return dev in self._open_may_wait

    def _archive_batch(self, jobs: list[FileJob], sink: BlobSink, channel, buf, quick, address: int) -> None:
        """Archive a batch of small regular files, each of at most one chunk (one blob per data region),
        in groups whose sizes fit ``buf``."""
        cap = len(buf)
        start = 0
        while start < len(jobs):
            end, total = start, 0
            while end < len(jobs) and (end == start or total + jobs[end].size <= cap):
                total += jobs[end].size
                end += 1
            self._archive_group(jobs[start:end], sink, channel, memoryview(buf), quick, address)
            start = end

    def _unreadable(self, job: FileJob, err: OSError) -> None:
        """Keep the entry (metadata) with no content, and say so."""
        self._warn(f"{os.fsdecode(job.path)}: {err.strerror or err}")
        job.node["content"] = []
        job.node["size"] = 0
        job.node.pop("holes", None)

    def _archive_group(self, jobs: list[FileJob], sink: BlobSink, channel, mv, quick, address: int) -> None:
        # (position in the buffer, job, regions, size) of every file read
        read: list[tuple[int, FileJob, list[tuple[int, int]], int]] = []
        slow: list[tuple[int, FileJob, int, list[tuple[int, int]]]] = []  # not (all) in the page cache
        pos = 0
        try:
            for job in jobs:
                try:
                    # where the kernel cannot tell what is cached (RWF_NOWAIT unsupported), every file
                    # takes the path of files not cached, opened as one by one
                    fd = quick.open(job.path) if quick.usable else beneath.open_source(job.path)
                except OSError as err:
                    self._unreadable(job, err)
                    continue
                try:
                    regions = (
                        job.regions if job.regions is not None else beneath.data_regions(fd, job.st, job.size)
                    )
                    cached, p = quick.usable, pos
                    for off, length in regions if cached else ():
                        if quick.read_cached(fd, address + p, length, off) < length:
                            cached = False
                            break
                        p += length
                except OSError as err:
                    quick.close(fd)
                    self._unreadable(job, err)
                    continue
                except BaseException:
                    quick.close(fd)
                    raise
                if cached:
                    quick.close(fd)
                    read.append((pos, job, regions, job.size))
                else:
                    slow.append((pos, job, fd, regions))
                pos += sum(length for _, length in regions)
            if slow:  # cold: let the kernel fetch all of them at once, then wait for each in turn
                for _, _, fd, _ in slow:
                    try:
                        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
                    except OSError:
                        pass
                while slow:
                    p, job, fd, regions = slow[0]
                    try:
                        regions, size = self._read_regions(job, fd, regions, mv, p)
                    except OSError as err:
                        self._unreadable(job, err)
                    else:
                        read.append((p, job, regions, size))
                    finally:
                        del slow[0]
                        os.close(fd)
        finally:
            for _, _, fd, _ in slow:  # only after an error
                os.close(fd)
        read.sort(key=lambda r: r[0])
        blob_id = self.repo.keys.blob_id
        claim = sink.claim
        new_blobs = []
        nread = sparse = new = 0
        for p, job, regions, size in read:
            content: list[str] = []
            for _, length in regions:
                chunk = mv[p : p + length]
                p += length
                bid = blob_id(chunk)
                content.append(bid.hex())
                if claim(bid):
                    new_blobs.append((bid, chunk))
                    new += length
                nread += length
            job.node["content"] = content
            job.node["size"] = size
            holes = holes_of(regions, size)
            if holes:
                job.node["holes"] = holes
                sparse += sum(h[1] for h in holes)
        channel.add_many(BLOB_DATA, new_blobs)
        del new_blobs
        self._count(bytes_read=nread, files_read=len(read), bytes_sparse=sparse)
        self._sealed_new(new, sink)
        file_done = self.changes.file_done
        for job in jobs:
            file_done(job.node, job.prev)
            self._job_done(job)

    def _read_regions(
        self, job: FileJob, fd: int, regions: list[tuple[int, int]], mv, p: int
    ) -> tuple[list[tuple[int, int]], int]:
        """Read ``regions`` of ``fd`` into ``mv`` from ``p`` on (the interpreter lock released while
        waiting); returns the regions and the size read, shorter when the file shrank meanwhile."""
        size = job.size
        for i, (off, length) in enumerate(regions):
            got = 0
            while got < length:
                k = os.preadv(fd, [mv[p + got : p + length]], off + got)
                if not k:
                    break
                got += k
            if got < length:
                self._warn(
                    f"{os.fsdecode(job.path)}: file changed while it was read (shorter than its size)",
                    lost=False,
                )
                return regions[:i] + ([(off, got)] if got else []), off + got
            p += length
        return regions, size

    def _archive_file(self, job: FileJob, sink: BlobSink, channel, buf) -> None:
        fd = beneath.open_source(job.path)
        try:
            st = job.st
            size = job.size
            if stat_mod.S_ISBLK(st.st_mode):
                size = os.lseek(fd, 0, os.SEEK_END)
                job.node["size"] = size
            regions = job.regions if job.regions is not None else beneath.data_regions(fd, st, size)
            content: list[str] = []
            blob_id = self.repo.keys.blob_id
            claim = sink.claim
            add = channel.add
            small = self.chunker.min_size
            mv = memoryview(buf)
            nread = new = 0
            for off, length in regions:
                if length <= small:  # one chunk whatever the content: no chunker, one read
                    got = 0
                    while got < length:
                        k = os.preadv(fd, [mv[got:length]], off + got)
                        if not k:
                            break
                        got += k
                    remaining = length - got
                    if got:
                        chunk = mv[:got]
                        bid = blob_id(chunk)
                        content.append(bid.hex())
                        if claim(bid):
                            add(BLOB_DATA, bid, chunk)
                            new += got
                        nread += got
                else:
                    try:
                        os.posix_fadvise(fd, off, length, os.POSIX_FADV_SEQUENTIAL)
                    except (AttributeError, OSError):
                        pass
                    pos = off
                    remaining = length

                    def readinto(target: memoryview, fd=fd) -> int:
                        nonlocal pos, remaining
                        if remaining <= 0:
                            return 0
                        n = os.preadv(fd, [target[: min(len(target), remaining)]], pos)
                        pos += n
                        remaining -= n
                        return n

                    for chunk in self.chunker.stream(readinto, buf):
                        bid = blob_id(chunk)
                        content.append(bid.hex())
                        if claim(bid):
                            add(BLOB_DATA, bid, chunk)
                            new += len(chunk)
                        self._count(bytes_read=len(chunk))
                    got = length - remaining
                if remaining > 0:  # the file shrank while we read it
                    self._warn(
                        f"{os.fsdecode(job.path)}: file changed while it was read (shorter than its size)",
                        lost=False,
                    )
                    regions = (
                        [r for r in regions if r[0] < off] + [(off, got)]
                        if got
                        else [r for r in regions if r[0] < off]
                    )
                    size = off + got
                    break
            job.node["content"] = content
            job.node["size"] = size
            holes = holes_of(regions, size)
            if holes:
                job.node["holes"] = holes
                self._count(bytes_sparse=sum(h[1] for h in holes), bytes_read=nread, files_read=1)
            else:
                self._count(bytes_read=nread, files_read=1)
            self._sealed_new(new, sink)
        finally:
            os.close(fd)
