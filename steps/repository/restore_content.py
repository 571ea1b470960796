"""The restore's content path: planned files written from ranged pack reads over several connections.

Provides :class:`ContentWriter` (the part of :class:`~.restorer.Restorer` that creates files and writes
their blobs), :class:`FileRef` and :func:`interleave`. A batch of planned files is turned into ranged
GETs, in pack order, cut into parts that different connections fetch at once; each blob is decrypted
into a per-thread buffer, checked against its ID and written with ``pwrite``. A file of one blob is
created, written and given its metadata through one descriptor when its blob arrives; small ones
(up to ``SMALL_WHOLE``) are handed, a fetched range's worth at a time, to the thread that runs the
restore, which creates and writes them, sharing them by directory with a second process (see
:mod:`.file_creator`; ``SNAPFLOW_RESTORE_CREATORS``), while the connections fetch, decrypt and check. The walk and the planning of batches run in a thread of their
own, one batch ahead: while batch N's files are written, batch N+1 is planned and its ranges fetched.
"""

from __future__ import annotations

import itertools
import os
import queue
import struct
import threading
from collections import deque

from steps import runtime
from steps.errors import IntegrityError, SnapflowError, printable

from .blob_sink import _env_int
from .crypto import NONCE_LEN, TAG_LEN, open_blob_into
from .file_creator import (
    DONE,
    FATAL,
    FDS_PER_FRAME,
    HEADER,
    RANGE,
    SERIAL,
    WARNING,
    ChildGone,
    CreatorProcess,
    create_whole,
    frame,
    open_new,
    pack_record,
    warning_text,
)
from .pack import lazy_buffer, pack_key
from .snapshot_read import blob_offsets

MiB = 1024 * 1024
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_ZEROS = bytes(4 * 1024 * 1024)
SMALL_WHOLE = 64 * 1024  # one-blob files up to this size are created and written by the batch's own thread
_DONE = None  # a connection's last item on the writer queue
_CHILD = object()  # first element of the second file creator's answers on the writer queue
# SNAPFLOW_RESTORE_CREATORS: processes creating small files (1, the default: the restore's own thread
# alone; 2: a second process with it, from the first small file on). Measured on a 2-core machine, two
# creators restored 30 000 small files to tmpfs 11-15 % faster, but 200 000 to ext4 with 50-70 % more wall time
# and 1.4-2.5 times the CPU (the kernel's file creation from two processes at once), hence one by default.
CREATORS_ENV = "SNAPFLOW_RESTORE_CREATORS"
CHILD_RANGES = 2  # ranges handed to the second creator and not yet confirmed: one created, one waiting
_serials = itertools.count(1)


def _creators() -> int:
    """File creators asked for (``SNAPFLOW_RESTORE_CREATORS``; 1 when unset or not a number)."""
    return _env_int(CREATORS_ENV, 1)


def _is_zero(data) -> bool:
    n = len(data)
    if not n or data[0]:
        return not n
    if n <= len(_ZEROS):
        return _ZEROS.startswith(data)
    view = memoryview(data)
    return all(_ZEROS.startswith(view[i : i + len(_ZEROS)]) for i in range(0, n, len(_ZEROS)))


def interleave(items: list, ways: int) -> list:
    """``items`` cut into ``ways`` consecutive parts, taken one from each part in turn: connections
    working at the same moment write files of different directories (creating files in one directory
    is serialised by the kernel) while each still reads its part of the packs in order."""
    if ways <= 1:
        return items
    size = -(-len(items) // ways)
    parts = [items[i : i + size] for i in range(0, len(items), size)]
    return [p[i] for i in range(size) for p in parts if i < len(p)]


class FileRef:
    """One file to write: ``name`` in the directory ``dir_fd``, whose path below the target is ``comps``
    (a tuple shared by the files of one directory, so a batch holds no path per file; or the path of a
    file target). ``created``: it exists with its final size (pieces are pwritten into it); otherwise it
    is created, written and closed when its only blob arrives (``whole``)."""

    __slots__ = ("comps", "created", "dir_fd", "ident", "name", "node", "ours", "pending", "whole")

    def __init__(
        self,
        dir_fd: int,
        name: bytes,
        comps: tuple[bytes, ...] | str,
        node: dict,
        created: bool = False,
        ours: bool = False,
    ):
        self.dir_fd = dir_fd
        self.name = name
        self.comps = comps
        self.node = node
        self.created = created
        self.ident: tuple[int, int] | None = None  # (st_dev, st_ino) of the file created for it
        self.ours = ours  # a file created there belongs to our uid and gid (the directory is not set-gid)
        self.whole = False
        self.pending = 0

    @property
    def shown(self) -> str:
        """The file's path in messages."""
        if isinstance(self.comps, str):
            return self.comps
        return printable("/" + os.fsdecode(b"/".join((*self.comps, self.name))))


class _Batch:
    """A batch of planned files: the directory descriptors its files are created in (closed once it is
    written), the index its pack numbers belong to, and how many of its ranges are not yet written."""

    __slots__ = ("fds", "index", "left", "refs", "serial", "side")

    def __init__(self, refs: list[FileRef], fds: dict):
        self.refs = refs
        self.fds = fds
        self.index = None
        self.left = 0
        self.serial: int | None = None  # its number with the second file creator (knows its descriptors)
        self.side: dict[int, int] | None = None  # directory descriptor -> 1: the second creator's

    def close(self) -> None:
        fds, self.fds = self.fds, {}
        for fd in fds.values():
            os.close(fd)


class _SecondCreator:
    """The restore's side of the second file-creating process: the ranges handed to it and not yet
    confirmed (``pending``: range number -> (batch, files)), in the order sent."""

    def __init__(self, deliver):
        self.proc = CreatorProcess(deliver)
        self.pending: dict[int, tuple[_Batch, list]] = {}
        self._numbers = itertools.count()
        self.gone = False  # it ended (its end was delivered)
        self.confirmed = False  # it created every file it was given and said so
        self.stopped = False

    def usable(self) -> bool:
        return not self.gone and not self.stopped

    def full(self) -> bool:
        return len(self.pending) >= CHILD_RANGES

    def send_range(self, batch: _Batch, umask: int, parts: list, files: list) -> None:
        if batch.serial is None:  # its directory descriptors first, once per batch
            batch.serial = next(_serials)
            fds = list(batch.fds.values())
            for i in range(0, len(fds), FDS_PER_FRAME):
                chunk = fds[i : i + FDS_PER_FRAME]
                head = SERIAL.pack(batch.serial) + struct.pack(f"<{len(chunk)}i", *chunk)
                self.proc.send(frame(b"B", head), chunk)
        number = next(self._numbers)
        self.pending[number] = (batch, files)
        body = [RANGE.pack(number, umask, batch.serial), *parts]
        self.proc.send(b"".join([HEADER.pack(b"W", sum(map(len, body))), *body]))

    def forget(self, serial: int) -> None:
        if not self.gone:
            self.proc.send(frame(b"X", SERIAL.pack(serial)))

    def finish(self) -> None:
        if not self.gone:
            self.proc.send(frame(b"E", b""))

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.proc.kill()

    def close(self) -> None:
        if not self.confirmed:
            self.proc.kill()
        self.proc.close()


class _Stopped(Exception):
    """Raised in the planning thread when another thread failed: the walk ends, the first error is raised."""


class ContentWriter:
    """File creation and content writing of :class:`~.restorer.Restorer` (which provides ``repo``,
    ``stats``, ``progress``, ``downloaders``, ``_lock``, ``_umask``, ``_ids``, ``_is_root``, ``_batch``,
    ``_batch_blobs``, ``_batch_fds``, ``_warn``, ``_owner`` and ``_apply_meta_fd``). ``_batch`` and
    ``_batch_fds`` belong to the planning thread; a batch handed to ``_flush`` belongs to the pipeline."""

    # -- content ------------------------------------------------------------------------------
    @staticmethod
    def _open_new(ref: FileRef, mode: int = 0o600) -> int:
        """A new file ``ref.name``; whatever appeared in its place since the walk is removed, not followed."""
        return open_new(ref.dir_fd, ref.name, mode)

    def _create_sized(self, ref: FileRef) -> os.stat_result:
        fd = self._open_new(ref)
        try:
            size = ref.node.get("size", 0)
            if size:
                os.ftruncate(fd, size)
            st = os.fstat(fd)
        finally:
            os.close(fd)
        ref.created = True
        ref.ident = (st.st_dev, st.st_ino)
        return st

    @staticmethod
    def _reopen(ref: FileRef) -> int:
        """The file created for ``ref``, opened again for writing: refused when something else stands
        under its name now (a hard link or file swapped in by another process), so that nothing is
        ever written through it."""
        fd = os.open(ref.name, os.O_WRONLY | _O_NOFOLLOW | _O_CLOEXEC, dir_fd=ref.dir_fd)
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != ref.ident:
            os.close(fd)
            raise SnapflowError(
                f"{printable(ref.shown)}: replaced by another process during the restore; nothing was"
                " written through it"
            )
        return fd

    # -- the pipeline: planning, fetching and writing overlap ------------------------------------
    def _init_pipeline(self) -> None:
        self._cv = threading.Condition()
        self._feed: deque = deque()  # (batch, pack number, blobs) of the ranges not yet taken by a connection
        self._inflight: list[_Batch] = []  # batches planned and not yet written
        self._errors: list[BaseException] = []
        self._planned = False
        self._child_files = 0  # small files the second creator made

    def _fail(self, err: BaseException) -> None:
        """Record an error: the first one stops every thread and is the one raised."""
        with self._cv:
            self._errors.append(err)
            self._cv.notify_all()

    def _stop_if_failed(self) -> None:
        if self._errors:
            raise _Stopped

    def _run_content(self, walk) -> None:
        """Run ``walk`` (which forms batches and hands each to ``_flush``) in a planning thread while the
        connections fetch and this thread creates the small one-blob files (and a second process with
        it, see ``_SecondCreator``): batch N+1 is planned and its ranges fetched while batch N's files
        are written, and at most one batch is ahead of the one being written. The first error stops
        every thread and the second process; it is raised here once all of them have ended. Returns
        once every file is created (the second process has confirmed its last)."""
        self._init_pipeline()
        cv = self._cv
        ways = max(1, self.downloaders)
        # Small one-blob files of fetched ranges, decrypted and checked, for this thread to write: one
        # range's worth waits here (a range holds at most SNAPFLOW_RESTORE_RANGE_MIB of stored data),
        # besides the one each connection holds and the one being written. The second process's answers
        # come through the same queue (they are not bounded by ``slots``).
        small: queue.Queue = queue.Queue()
        slots = threading.Semaphore(1)
        creators = _creators()
        child: _SecondCreator | None = None

        def plan() -> None:
            try:
                walk()
            except _Stopped:
                pass
            except BaseException as err:
                self._fail(err)
            finally:
                with cv:
                    self._planned = True
                    cv.notify_all()

        threads = [
            threading.Thread(target=self._connection, args=(small, slots), name=f"restore-{i}", daemon=True)
            for i in range(ways)
        ]
        for t in threads:
            t.start()
        planner = threading.Thread(target=plan, name="restore-plan", daemon=True)
        planner.start()
        running = ways
        stash = None  # a range waiting until the second process has room for its share
        try:
            while running or stash is not None or (child is not None and child.pending):
                if self._errors and child is not None:
                    child.stop()
                if stash is not None and not (child.usable() and child.full()):
                    item, stash = stash, None
                else:
                    item = small.get()
                    if item is _DONE:
                        running -= 1
                        continue
                    if item[0] is _CHILD:
                        self._from_child(child, item[1], item[2])
                        continue
                    if child is not None and item[1] and child.usable() and child.full() and not self._errors:
                        batch, files = item
                        mine, theirs = self._split(batch, files)
                        if theirs:  # this thread writes its share now, the rest waits for room
                            try:
                                self._write_small(mine)
                            except BaseException as err:
                                self._fail(err)
                            stash = (batch, theirs)  # its slot stays taken: the connections wait meanwhile
                            continue
                slots.release()
                batch, files = item
                if files and not self._errors:  # after an error the queue is only drained
                    try:
                        if child is None and creators > 1:
                            child = self._start_child(small)
                            if child is None:
                                creators = 1
                        if child is not None and child.usable():
                            mine, theirs = self._split(batch, files)
                            rest = self._to_child(child, batch, theirs) if theirs else theirs
                            if rest is not theirs:  # handed (but for files it cannot take)
                                self._write_small(mine + rest)
                                continue  # the range is done when the second process confirms it
                        self._write_small(files)
                    except BaseException as err:
                        self._fail(err)
                self._range_done(batch)
            if child is not None and not self._errors and not child.gone:
                child.finish()
                while not child.gone:
                    item = small.get()
                    if item[0] is _CHILD:
                        self._from_child(child, item[1], item[2])
        except BaseException as err:
            # interrupted: stop the others, and drain the queue so that no connection waits on it
            self._fail(err)
            if child is not None:
                child.stop()
            if stash is not None:
                stash = None
                slots.release()
            while running:
                item = small.get()
                if item is _DONE:
                    running -= 1
                elif item[0] is not _CHILD:
                    slots.release()
        finally:
            if child is not None:
                child.close()
            planner.join()
            for t in threads:
                t.join()
            with cv:
                left, self._inflight = self._inflight, []
                self._feed.clear()
            for batch in left:  # stopped by an error before they were written
                batch.close()
        if self._errors:
            raise self._errors[0]

    # -- the second file creator ------------------------------------------------------------------
    def _start_child(self, small: queue.Queue) -> _SecondCreator | None:
        """The second process, started; None (and a warning) when it cannot be."""
        child = _SecondCreator(lambda kind, payload: small.put((_CHILD, kind, payload)))
        try:
            child.proc.start()
        except OSError as err:
            self._warn(
                f"cannot start a second file creator ({err.strerror or err}); files are created by one"
            )
            return None
        return child

    @staticmethod
    def _split(batch: _Batch, files: list) -> tuple[list, list]:
        """A range's files for this thread and for the second process: by directory, alternately in the
        order the batch met them, so that the two never create files in the same directory at once
        (the kernel serialises creation in a directory, and waiting for its lock costs CPU)."""
        side = batch.side
        if side is None:
            side = batch.side = {fd: i & 1 for i, fd in enumerate(batch.fds.values())}
        mine: list = []
        theirs: list = []
        for entry in files:
            (theirs if side.get(entry[0].dir_fd) else mine).append(entry)
        return mine, theirs

    def _to_child(self, child: _SecondCreator, batch: _Batch, files: list) -> list:
        """Hand a range's small files to the second process. Returns ``files`` itself when none could be
        handed, else the files it cannot take (values out of its record's range), for this thread."""
        owner_of, ids, umask = self._owner, self._ids, self._umask
        parts: list = []
        handed: list = []
        rest: list = []
        known = set(batch.fds.values())
        for entry in files:
            ref, plain, zero = entry
            node = ref.node
            if ref.dir_fd not in known:
                rest.append(entry)
                continue
            mtime = node.get("mtime_ns", 0)
            owner = owner_of(node)
            try:
                parts += pack_record(
                    ref.dir_fd,
                    ref.name,
                    node.get("mode", 0o644),
                    None if ref.ours and owner == ids else owner,
                    (node.get("atime_ns", mtime), mtime),
                    zero,
                    plain,
                )
            except (struct.error, TypeError, ValueError):
                rest.append(entry)
                continue
            handed.append(entry)
        if not handed:
            return files
        child.send_range(batch, umask, parts, handed)
        return rest

    def _from_child(self, child: _SecondCreator, kind: bytes, payload) -> None:
        """What the second process answered: a range created (its bytes and warnings), an error, its
        confirmation of the end, or its end."""
        if kind == b"D":
            number, written, count = DONE.unpack_from(payload)
            batch, files = child.pending.pop(number)
            pos = DONE.size
            for _ in range(count):
                rec, code, length = WARNING.unpack_from(payload, pos)
                pos += WARNING.size
                detail = payload[pos : pos + length].decode("utf-8", "replace")
                pos += length
                self._warn(warning_text(files[rec][0].shown, code, detail))
            sparse = 0
            self._child_files += len(files)
            for ref, plain, zero in files:
                ref.pending = 0
                if zero:
                    sparse += len(plain)
            with self._lock:
                self.stats.bytes_written += written
                self.stats.bytes_sparse += sparse
                if self.progress is not None:
                    self.progress.done_bytes = self.stats.bytes_written + self.stats.bytes_sparse
            self._child_range_done(child, batch)
        elif kind == b"F":
            number, rec, code, length = FATAL.unpack_from(payload)
            text = payload[FATAL.size : FATAL.size + length].decode("utf-8", "replace")
            batch, files = child.pending.pop(number)
            shown = files[rec][0].shown if rec < len(files) else files[0][0].shown
            if code:
                self._fail(OSError(code, text, shown))
            else:
                self._fail(SnapflowError(f"{shown}: cannot create the file ({text})"))
            self._child_range_done(child, batch)
        elif kind == b"E":
            child.confirmed = True
        elif kind == b"":
            child.gone = True
            pending, child.pending = child.pending, {}
            gone: ChildGone = payload
            if not gone.started and not child.confirmed and not self._errors:
                # it never ran: this thread creates what it was given, and everything after
                self._warn(f"the second file creator did not start ({gone.detail}); files are created by one")
                for batch, files in pending.values():
                    try:
                        self._write_small(files)
                    except BaseException as err:
                        self._fail(err)
                    self._range_done(batch)
                return
            if not child.confirmed and not self._errors:
                first = next(iter(pending.values()), None)
                where = f"{first[1][0][0].shown}: " if first else ""
                self._fail(
                    SnapflowError(
                        f"{where}the process creating files ended unexpectedly ({gone.detail}); the restore"
                        " is incomplete"
                    )
                )
            for batch, _files in pending.values():
                self._range_done(batch)

    def _child_range_done(self, child: _SecondCreator, batch: _Batch) -> None:
        self._range_done(batch)
        if not batch.left and batch.serial is not None:  # its descriptors are closed: the child's too
            child.forget(batch.serial)

    def _connection(self, small: queue.Queue, slots: threading.Semaphore) -> None:
        """One connection: takes the next range of any planned batch, fetches, decrypts, checks and writes
        it, and hands the small one-blob files to the writing thread (one item per range, also when empty:
        it counts the batch's ranges)."""
        scratch = [lazy_buffer(1)]
        cv = self._cv
        try:
            while True:
                with cv:
                    while not self._feed and not self._errors and not self._planned:
                        cv.wait()
                    if self._errors or not self._feed:
                        return
                    batch, pack_no, ordered = self._feed.popleft()
                try:
                    files = self._fetch_range(batch.index, pack_no, ordered, batch.refs, scratch)
                except BaseException as err:
                    self._fail(err)
                    return
                slots.acquire()
                small.put((batch, files))
        finally:
            small.put(_DONE)

    def _range_done(self, batch: _Batch) -> None:
        """One range of ``batch`` fetched and its small files written; after its last, the batch is done:
        its directory descriptors are closed and the planner may plan one more."""
        batch.left -= 1
        if batch.left:
            return
        if not self._errors:
            for ref in batch.refs:
                if ref.pending:  # cannot happen unless a pack decoded fewer blobs than planned
                    self._fail(IntegrityError(f"{ref.shown}: {ref.pending} piece(s) were not restored"))
                    break
        with self._cv:
            self._inflight.remove(batch)
            self._cv.notify_all()
        batch.close()

    def _flush(self) -> None:
        """Plan the batch formed so far and hand its ranges to the connections (in the planning thread),
        then wait until the batch before it is written: the walk forms the next batch while this one is
        written, so the files of two batches at most are held."""
        batch = _Batch(self._batch, self._batch_fds)
        self._batch, self._batch_blobs, self._batch_fds = [], 0, {}
        cv = self._cv
        try:
            with cv:
                while len(self._inflight) > 1 and not self._errors:
                    cv.wait()
            self._stop_if_failed()
            ranges = self._plan(batch)
        except BaseException:
            batch.close()
            raise
        if not ranges:  # nothing to fetch: its files are written already
            batch.close()
            return
        batch.left = len(ranges)
        with cv:
            self._inflight.append(batch)
            self._feed.extend((batch, pack_no, ordered) for pack_no, ordered in ranges)
            cv.notify_all()
            # every batch planned before it is written first
            while self._inflight and self._inflight[0] is not batch and not self._errors:
                cv.wait()

    def _plan(self, batch: _Batch) -> list[tuple[int, list]]:
        """The ranges to fetch for ``batch``, interleaved; files without content are written here, files
        of several blobs created with their size."""
        refs = batch.refs
        if not refs:
            return []
        # Pack numbers belong to one index: the one in use now, even if a relocation reloads it meanwhile.
        index = batch.index = self.repo.index
        # pack number -> {blob ID: [pack offset, stored length, raw length, [(file no, file offset)]]}
        by_pack: dict[int, dict[bytes, list]] = {}
        for fno, ref in enumerate(refs):
            pieces = list(blob_offsets(self.repo, ref.node, ref.shown, index))
            if not pieces:  # empty, or only holes: its size and metadata are all there is
                fd = self._reopen(ref) if ref.created else self._open_new(ref)
                try:
                    size = ref.node.get("size", 0)
                    if size:
                        os.ftruncate(fd, size)
                    self._apply_meta_fd(fd, ref.shown, ref.node)
                finally:
                    os.close(fd)
                continue
            size = ref.node.get("size", 0)
            if not ref.created and len(pieces) == 1 and pieces[0][1] == 0 and pieces[0][2] == size:
                ref.whole = True
            elif not ref.created:
                self._create_sized(ref)
            ref.pending = len(pieces)
            for bid, off, raw, loc in pieces:
                blobs = by_pack.get(loc.pack_no)
                if blobs is None:
                    blobs = by_pack[loc.pack_no] = {}
                entry = blobs.get(bid)
                if entry is None:
                    blobs[bid] = [loc.offset, loc.length, raw, [(fno, off)]]
                else:
                    entry[3].append((fno, off))
        ranges = self._ranges(by_pack)
        del by_pack
        return interleave(ranges, min(self.downloaders, len(ranges)))

    def _decode(self, aead, bid: bytes, stored, raw: int, name: str, scratch: list):
        if len(stored) < NONCE_LEN + TAG_LEN + 1:
            raise IntegrityError(f"{name}: truncated")
        if len(scratch[0]) < len(stored):
            scratch[0] = lazy_buffer(max(len(stored), 4 * 1024 * 1024 + 64))
        try:
            plain = open_blob_into(aead, b"d", bid, stored, raw, scratch[0])
        except IntegrityError as err:
            raise IntegrityError(f"{name}: {err}") from None
        except Exception as err:  # zstd errors and the like: corrupt payload
            raise IntegrityError(f"{name}: cannot decode ({type(err).__name__})") from None
        if len(plain) != raw or self.repo.keys.blob_id(plain) != bid:
            raise IntegrityError(f"{name}: content does not match its ID")
        return plain

    def _write_whole(self, ref: FileRef, plain, zero: bool) -> int:
        """Create, write and close a one-blob file (see :func:`.file_creator.create_whole`)."""
        node = ref.node
        mtime = node.get("mtime_ns", 0)
        owner = self._owner(node)
        return create_whole(
            ref.dir_fd,
            ref.name,
            plain,
            len(plain),
            zero,
            node.get("mode", 0o644),
            None if ref.ours and owner == self._ids else owner,
            (node.get("atime_ns", mtime), mtime),
            self._umask,
            self._is_root,
            lambda code, detail: self._warn(warning_text(ref.shown, code, detail)),
        )

    def _write_small(self, files: list[tuple[FileRef, bytes, bool]]) -> None:
        """Create and write the small one-blob files a connection fetched (see ``_fetch_range``)."""
        written = sparse = 0
        for ref, plain, zero in files:
            written += self._write_whole(ref, plain, zero)
            if zero:
                sparse += len(plain)
            ref.pending = 0
        with self._lock:
            self.stats.bytes_written += written
            self.stats.bytes_sparse += sparse
            if self.progress is not None:
                self.progress.done_bytes = self.stats.bytes_written + self.stats.bytes_sparse

    def _write_piece(self, ref: FileRef, plain, zero: bool, offset: int) -> int:
        written = 0
        fd = self._reopen(ref)
        try:
            if not zero:
                written = os.pwrite(fd, plain, offset)
                while written < len(plain):
                    written += os.pwrite(fd, memoryview(plain)[written:], offset + written)
            with self._lock:
                ref.pending -= 1
                last = ref.pending == 0
            if last:
                self._apply_meta_fd(fd, ref.shown, ref.node)
        finally:
            os.close(fd)
        return written

    def _ranges(self, by_pack: dict[int, dict[bytes, list]]) -> list[tuple[int, list]]:
        """The ranged GETs to make, in pack order: the needed blobs of a pack, cut where the range would
        pass ``SNAPFLOW_RESTORE_RANGE_MIB`` (a response is held whole in memory while its blobs are
        written) or skip more than a MiB of blobs nobody needs."""
        limit = _env_int(runtime.RESTORE_RANGE_MIB, 4) * MiB
        out: list[tuple[int, list]] = []
        for pack_no in sorted(by_pack):
            ordered = sorted(by_pack[pack_no].items(), key=lambda kv: kv[1][0])
            group = [ordered[0]]
            start = ordered[0][1][0]
            end = start + ordered[0][1][1]
            for item in ordered[1:]:
                off, length = item[1][0], item[1][1]
                if off + length - start > limit or off - end > MiB:
                    out.append((pack_no, group))
                    group, start = [], off
                group.append(item)
                end = off + length
            out.append((pack_no, group))
        return out

    def _fetch_range(
        self,
        index,
        pack_no: int,
        ordered: list,
        batch: list[FileRef],
        scratch: list,
    ) -> list[tuple[FileRef, bytes, bool]]:
        """Fetch one range of a pack and write its blobs (``ordered``: ``(ID, [offset, stored length, raw
        length, targets])`` by offset); one-blob files of up to ``SMALL_WHOLE`` bytes are returned instead
        (with a copy of their content), for the writing thread to create.
        When the pack is gone because prune deleted it as a duplicate while this restore ran, the blobs
        not yet written are read from where the new index puts them."""
        pack_id = index.pack_ids[pack_no]
        aead = self.repo.keys.pack_aead(index.pack_salts[pack_no])
        start = ordered[0][1][0]
        end = ordered[-1][1][0] + ordered[-1][1][1]  # blobs of a pack do not overlap
        done: set[bytes] = set()
        counts = [0, 0]  # bytes written, bytes left sparse
        handed: list[tuple[FileRef, bytes, bool]] = []  # small one-blob files for the batch's thread

        def emit(bid: bytes, plain, raw: int, targets: list) -> None:
            zero = _is_zero(plain)
            copy = None
            for fno, foff in targets:
                ref = batch[fno]
                if ref.whole and raw <= SMALL_WHOLE:
                    if copy is None:  # ``plain`` lives in this connection's reused buffer
                        copy = bytes(len(plain)) if zero else bytes(plain)
                    handed.append((ref, copy, zero))
                    continue
                if ref.whole:
                    counts[0] += self._write_whole(ref, plain, zero)
                    ref.pending = 0
                else:
                    counts[0] += self._write_piece(ref, plain, zero, foff)
                if zero:
                    counts[1] += raw
            done.add(bid)

        def write(data: bytes) -> None:
            # A replaced or damaged pack fails to decode here; pack_range then runs this again on an
            # older, intact version: blobs already written (each was authenticated) are skipped.
            view = memoryview(data)
            for bid, (off, length, raw, targets) in ordered:
                if bid in done:
                    continue
                name = f"blob {bid.hex()} in pack {pack_id}"
                plain = self._decode(aead, bid, view[off - start : off - start + length], raw, name, scratch)
                emit(bid, plain, raw, targets)

        try:
            self.repo.pack_range(pack_id, start, end - start, write)
        except IntegrityError:
            if self.repo.store.stat(pack_key(pack_id)) is not None:
                raise  # there but damaged in every version: nothing to relocate
            for bid, (_off, _length, raw, targets) in ordered:
                if bid not in done:
                    emit(bid, self.repo.read_blob(bid), raw, targets)  # read_blob relocates
            with self._lock:
                self.stats.relocated_packs += 1
        with self._lock:
            self.stats.bytes_written += counts[0]
            self.stats.bytes_sparse += counts[1]
            self.stats.packs_fetched += 1
            self.stats.bytes_fetched += end - start
            if self.progress is not None:
                self.progress.done_bytes = self.stats.bytes_written + self.stats.bytes_sparse
                self.progress.files = self.stats.files
        return handed
