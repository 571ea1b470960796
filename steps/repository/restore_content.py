"""The restore's content path: planned files written from ranged pack reads over several connections.

Provides :class:`ContentWriter` (the part of :class:`~.restorer.Restorer` that creates files and writes
their blobs), :class:`FileRef`, :func:`interleave`, :func:`range_limit` and :func:`creators_wanted`. A
batch of planned files is turned into ranged GETs (at most a pack each), in pack order, cut into parts
that different connections fetch at once; each blob is decrypted into a per-thread buffer, checked
against its ID and written with ``pwrite``. A file of one blob is created, written and given its
metadata through one descriptor when its blob arrives; small ones (up to ``SMALL_WHOLE``) are handed, a
fetched range's worth at a time, to the thread that runs the restore, which hands each range to one of
the processes that create and write them (see :mod:`.creator_process`: one, and a further one whenever
all are full, up to :func:`creators_wanted`; with ``SNAPFLOW_HELPER_PROCESSES=0``, one CPU, or no
process that can start, this thread creates them), while the connections fetch, decrypt and check. The
walk and the planning of batches run in a thread of their own, one batch ahead: while batch N's files
are written, batch N+1 is planned and its ranges fetched.
How a file is created and given its owner, mode and times is :mod:`.file_creator`'s; an error creating
or writing a file names it.
"""

from __future__ import annotations

import os
import queue
import struct
import threading
from collections import deque

from steps import runtime
from steps.drivers.cpus import default_threads
from steps.drivers.mounts import creates_in_parallel
from steps.errors import IntegrityError, SnapflowError, printable

from .blob_sink import _env_int
from .creator_process import ChildCreator, pack_record
from .crypto import NONCE_LEN, TAG_LEN, open_blob_into
from .file_creator import create_whole, named_error, open_new, warning_text, write_all
from .helper_process import helpers_wanted
from .pack import lazy_buffer, pack_key
from .snapshot_read import piece_offsets

MiB = 1024 * 1024
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_ZEROS = bytes(4 * 1024 * 1024)
SMALL_WHOLE = 64 * 1024  # one-blob files up to this size go to the creating process (or the restore's thread)
_DONE = None  # a connection's last item on the writer queue
_CHILD = object()  # first element of the creating process's answers on the writer queue


def _blob_name(bid: bytes, pack_id: str) -> str:
    return f"blob {bid.hex()} in pack {pack_id}"


def _is_zero(data) -> bool:
    n = len(data)
    if not n or data[0]:
        return not n
    if n <= len(_ZEROS):
        return _ZEROS.startswith(data)
    view = memoryview(data)
    return all(_ZEROS.startswith(view[i : i + len(_ZEROS)]) for i in range(0, n, len(_ZEROS)))


def creators_wanted(st_dev: int | None) -> int:
    """How many creating processes a restore into the file system ``st_dev`` may start
    (``SNAPFLOW_RESTORE_CREATORS``; by default one per usable CPU, at most 4, where several create files
    sooner than one (:func:`steps.drivers.mounts.creates_in_parallel`), else one). A further one starts
    only while the others have as many ranges as they may hold."""
    parallel = st_dev is not None and creates_in_parallel(st_dev)
    return _env_int(runtime.RESTORE_CREATORS, default_threads("restore_creators") if parallel else 1)


def range_limit(pack_size: int) -> int:
    """The most bytes one ranged GET of a restore spans: ``SNAPFLOW_RESTORE_RANGE_MIB``, or by default a
    whole pack (its target size and the MiB its last blob may add), between 4 and 16 MiB. A pack read in
    several ranges costs the object store more than the same bytes in one: SeaweedFS served a 1 GiB
    restore's packs with 1.1-1.3 s of CPU in 94 GETs against 1.8-2.1 s in 240 (docs/performance.md)."""
    default = min(max(pack_size + MiB, 4 * MiB), 16 * MiB)
    return _env_int(runtime.RESTORE_RANGE_MIB, -(-default // MiB)) * MiB


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

    __slots__ = ("fds", "index", "left", "refs")

    def __init__(self, refs: list[FileRef], fds: dict):
        self.refs = refs
        self.fds = fds
        self.index = None
        self.left = 0

    def close(self) -> None:
        fds, self.fds = self.fds, {}
        for fd in fds.values():
            os.close(fd)


def _usable(children: list[ChildCreator]) -> bool:
    return any(c.usable() for c in children)


def _room(children: list[ChildCreator]) -> ChildCreator | None:
    """The usable creating process with the fewest ranges waiting, if one has room for another."""
    best = None
    for c in children:
        if c.usable() and not c.full() and (best is None or len(c.pending) < len(best.pending)):
            best = c
    return best


class _Stopped(Exception):
    """Raised in the planning thread when another thread failed: the walk ends, the first error is raised."""


class ContentWriter:
    """File creation and content writing of :class:`~.restorer.Restorer` (which provides ``repo``,
    ``stats``, ``progress``, ``downloaders``, ``_lock``, ``_umask``, ``_ids``, ``_is_root``, ``_root_fd``,
    ``_batch``, ``_batch_blobs``, ``_batch_fds``, ``_warn``, ``_owner`` and ``_apply_meta_fd``). ``_batch`` and
    ``_batch_fds`` belong to the planning thread; a batch handed to ``_flush`` belongs to the pipeline."""

    # -- content ------------------------------------------------------------------------------
    @staticmethod
    def _open_new(ref: FileRef, mode: int = 0o600) -> int:
        """A new file ``ref.name``; whatever appeared in its place since the walk is removed, not followed."""
        return open_new(ref.dir_fd, ref.name, mode)

    def _create_sized(self, ref: FileRef) -> os.stat_result:
        try:
            fd = self._open_new(ref)
            try:
                size = ref.node.get("size", 0)
                if size:
                    os.ftruncate(fd, size)
                st = os.fstat(fd)
            finally:
                os.close(fd)
        except OSError as err:
            raise named_error(ref.shown, err) from err
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
        self._children: list[ChildCreator] = []  # the creating processes started, in order
        self._creators = 0  # how many may be started
        self._child_files = 0  # small files the creating processes created

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
        connections fetch and this thread hands the small one-blob files to the creating processes (or
        creates them): batch N+1 is planned and its ranges fetched while batch N's files are written,
        and at most one batch is ahead of the one being written. The first error stops every thread and
        process; it is raised here once all of them have ended. Returns once every file is created
        (each process has confirmed its last)."""
        self._init_pipeline()
        cv = self._cv
        ways = max(1, self.downloaders)
        # Small one-blob files of fetched ranges, decrypted and checked: one range's worth waits here
        # (``slots``; a range holds at most range_limit() of stored data), besides the one each
        # connection holds, the one waiting for a process to have room (``stash``) and those the
        # processes have (PENDING_RANGES each). Their answers come through the same queue, not bounded
        # by ``slots``.
        small: queue.Queue = queue.Queue()
        slots = threading.Semaphore(1)
        target = os.fstat(self._root_fd).st_dev if self._root_fd >= 0 else None
        self._creators = creators_wanted(target) if helpers_wanted() else 0
        children = self._children

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
        stash = None  # a range waiting until a process has room for it
        try:
            while running or stash is not None or any(c.pending for c in children):
                if self._errors:
                    for c in children:
                        c.stop()
                if stash is not None and (_room(children) is not None or not _usable(children)):
                    item, stash = stash, None
                else:
                    item = small.get()
                    if item is _DONE:
                        running -= 1
                        continue
                    if item[0] is _CHILD:
                        self._from_child(item[1], item[2], item[3])
                        continue
                    if (
                        item[1]
                        and _usable(children)
                        and _room(children) is None
                        and len(children) >= self._creators
                        and not self._errors
                    ):
                        stash = item  # its slot stays taken: the connections wait meanwhile
                        continue
                slots.release()
                batch, files = item
                if files and not self._errors:  # after an error the queue is only drained
                    try:
                        child = _room(children)
                        if child is None and len(children) < self._creators:  # one more: all are busy
                            child = self._start_child(small)
                        if child is not None:
                            rest = self._to_child(child, batch, files)
                            if rest is not files:  # handed (but for files it cannot take)
                                try:
                                    self._write_small(rest)
                                except BaseException as err:  # recorded: the queue is only drained now
                                    self._fail(err)
                                continue  # the range is done when the process confirms it
                        self._write_small(files)
                    except BaseException as err:
                        self._fail(err)
                self._range_done(batch)
            if not self._errors:
                for c in children:
                    if not c.gone:
                        c.finish()
                while not self._errors and not all(c.gone for c in children):
                    item = small.get()
                    if item[0] is _CHILD:
                        self._from_child(item[1], item[2], item[3])
        except BaseException as err:
            # interrupted: stop the others, and drain the queue so that no connection waits on it
            self._fail(err)
            for c in children:
                c.stop()
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
            for c in children:
                c.close()
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

    # -- the creating processes -----------------------------------------------------------------
    def _start_child(self, small: queue.Queue) -> ChildCreator | None:
        """One more creating process, started; None (and a warning) when it cannot be."""
        child = ChildCreator(lambda kind, payload: small.put((_CHILD, child, kind, payload)))
        try:
            child.proc.start()
        except OSError as err:
            self._creators = 0
            then = "the ones running go on" if _usable(self._children) else "the restore creates them itself"
            self._warn(f"cannot start a process that creates small files ({err.strerror or err}); {then}")
            return None
        self._children.append(child)
        return child

    def _to_child(self, child: ChildCreator, batch: _Batch, files: list) -> list:
        """Hand a range's small files to the process. Returns ``files`` itself when none could be handed,
        else the files it cannot take (values out of its record's range), for this thread."""
        owner_of, ids, umask = self._owner, self._ids, self._umask
        records: list[bytes] = []
        contents: list = []
        numbers: dict[int, int] = {}  # id() of a content (shared by a blob's files) -> its number
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
            number = 0 if zero else numbers.get(id(plain), len(contents))
            try:
                records.append(
                    pack_record(
                        ref.dir_fd,
                        ref.name,
                        node.get("mode", 0o644),
                        None if ref.ours and owner == ids else owner,
                        (node.get("atime_ns", mtime), mtime),
                        zero,
                        len(plain),
                        number,
                    )
                )
            except (struct.error, TypeError, ValueError):
                rest.append(entry)
                continue
            if not zero and number == len(contents):
                numbers[id(plain)] = number
                contents.append(plain)
            handed.append(entry)
        if not handed:
            return files
        child.send_range(batch, umask, contents, records, handed)
        return rest

    def _from_child(self, child: ChildCreator, kind: bytes, payload) -> None:
        """What one of the processes answered: a range created (its bytes and warnings), an error, its
        confirmation of the end, or its end."""
        if kind == b"D":
            number, written, warnings = child.done(payload)
            batch, files = child.pending.pop(number)
            for rec, code, detail in warnings:
                self._warn(warning_text(files[rec][0].shown, code, detail))
            self._child_files += len(files)
            self._small_written(files, written)
            self._range_done(batch)
        elif kind == b"F":
            number, rec, code, text = child.fatal(payload)
            batch, files = child.pending.pop(number)
            shown = files[rec][0].shown if rec < len(files) else files[0][0].shown
            if code:
                cause = OSError(code, text)
                err = named_error(shown, cause)
                err.__cause__ = cause  # as raised in this process (readers look for ENOSPC there)
                self._fail(err)
            else:
                self._fail(SnapflowError(f"{shown}: cannot create the file ({text})"))
            self._range_done(batch)
        elif kind == b"E":
            child.confirmed = True
        elif kind == b"":
            child.gone = True
            pending, child.pending = child.pending, {}
            # It never ran, or ended before it confirmed everything (killed, out of memory, a failed
            # send): this thread creates what it had not confirmed (replacing any file of those it
            # created); later ranges go to the other processes, or to this thread when none is left.
            take_over = not child.confirmed and not self._errors and (pending or not child.finishing)
            if take_over:
                self._creators = 0  # no other one is started (it may be short of memory)
                what = "ended" if payload.started else "did not start"
                self._warn(
                    f"a process that creates small files {what} ({payload.detail}); the restore creates"
                    " them itself"
                )
            for batch, files in pending.values():
                if take_over and not self._errors:
                    try:
                        self._write_small(files)
                    except Exception as err:
                        self._fail(err)
                self._range_done(batch)

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
        its directory descriptors are closed (the process's copies too) and the planner may plan one more."""
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
        for child in self._children:
            child.forget(batch)

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
        contents = [ref.node.get("content") or () for ref in refs]
        ids = [bytes.fromhex(hexid) for content in contents for hexid in content]
        places = index.places(ids)  # the whole batch's lookups at once
        k = 0
        for fno, (ref, content) in enumerate(zip(refs, contents, strict=True)):
            if not content:  # empty, or only holes: its size and metadata are all there is
                try:
                    fd = self._reopen(ref) if ref.created else self._open_new(ref)
                    try:
                        size = ref.node.get("size", 0)
                        if size:
                            os.ftruncate(fd, size)
                        self._apply_meta_fd(fd, ref.shown, ref.node)
                    finally:
                        os.close(fd)
                except OSError as err:
                    raise named_error(ref.shown, err) from err
                continue
            found = places[k : k + len(content)]
            if None in found:
                hexid = content[found.index(None)]
                raise IntegrityError(f"blob {hexid} of {ref.shown} is not in the index")
            size = ref.node.get("size", 0)
            if len(found) == 1 and "holes" not in ref.node:
                offsets = [0]  # the common case: one blob from the start
            else:
                offsets = piece_offsets(ref.node, [place[3] for place in found])
            if not ref.created and len(found) == 1 and offsets[0] == 0 and found[0][3] == size:
                ref.whole = True
            elif not ref.created:
                self._create_sized(ref)
            ref.pending = len(found)
            for bid, (pack_no, offset, length, raw), off in zip(
                ids[k : k + len(found)], found, offsets, strict=True
            ):
                blobs = by_pack.get(pack_no)
                if blobs is None:
                    blobs = by_pack[pack_no] = {}
                entry = blobs.get(bid)
                if entry is None:
                    blobs[bid] = [offset, length, raw, [(fno, off)]]
                else:
                    entry[3].append((fno, off))
            k += len(found)
        ranges = self._ranges(by_pack)
        del by_pack
        return interleave(ranges, min(self.downloaders, len(ranges)))

    def _decode(self, aead, bid: bytes, stored, raw: int, pack_id: str, scratch: list):
        """Blob ``bid`` of pack ``pack_id`` decrypted (into ``scratch``) and checked against its ID (its
        name, for errors, is made only for one)."""
        if len(stored) < NONCE_LEN + TAG_LEN + 1:
            raise IntegrityError(f"{_blob_name(bid, pack_id)}: truncated")
        if len(scratch[0]) < len(stored):
            scratch[0] = lazy_buffer(max(len(stored), 4 * 1024 * 1024 + 64))
        try:
            plain = open_blob_into(aead, b"d", bid, stored, raw, scratch[0])
        except IntegrityError as err:
            raise IntegrityError(f"{_blob_name(bid, pack_id)}: {err}") from None
        except Exception as err:  # zstd errors and the like: corrupt payload
            raise IntegrityError(
                f"{_blob_name(bid, pack_id)}: cannot decode ({type(err).__name__})"
            ) from None
        if len(plain) != raw or self.repo.keys.blob_id(plain) != bid:
            raise IntegrityError(f"{_blob_name(bid, pack_id)}: content does not match its ID")
        return plain

    def _write_whole(self, ref: FileRef, plain, zero: bool) -> int:
        """Create, write and close a one-blob file (see :func:`.file_creator.create_whole`): metadata goes
        through the same descriptor, and the calls that would change nothing are left out (a file created
        with its final mode needs no chmod, one that is ours already no chown)."""
        node = ref.node
        mtime = node.get("mtime_ns", 0)
        owner = self._owner(node)
        try:
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
        except OSError as err:
            raise named_error(ref.shown, err) from err

    def _write_small(self, files: list[tuple[FileRef, bytes, bool]]) -> None:
        """Create and write the small one-blob files a connection fetched (see ``_fetch_range``)."""
        written = 0
        for ref, plain, zero in files:
            written += self._write_whole(ref, plain, zero)
        self._small_written(files, written)

    def _small_written(self, files: list[tuple[FileRef, bytes, bool]], written: int) -> None:
        """``files`` created (``written`` bytes written, the all-zero ones left sparse): counted."""
        sparse = 0
        for ref, plain, zero in files:
            ref.pending = 0
            if zero:
                sparse += len(plain)
        with self._lock:
            self.stats.bytes_written += written
            self.stats.bytes_sparse += sparse
            if self.progress is not None:
                self.progress.done_bytes = self.stats.bytes_written + self.stats.bytes_sparse

    def _write_piece(self, ref: FileRef, plain, zero: bool, offset: int) -> int:
        written = 0
        try:
            fd = self._reopen(ref)
            try:
                if not zero:
                    written = write_all(fd, plain, len(plain), offset)
                with self._lock:
                    ref.pending -= 1
                    last = ref.pending == 0
                if last:
                    self._apply_meta_fd(fd, ref.shown, ref.node)
            finally:
                os.close(fd)
        except OSError as err:
            raise named_error(ref.shown, err) from err
        return written

    def _ranges(self, by_pack: dict[int, dict[bytes, list]]) -> list[tuple[int, list]]:
        """The ranged GETs to make, in pack order: the needed blobs of a pack, cut where the range would
        pass :func:`range_limit` (a response is held whole in memory while its blobs are written) or
        skip more than a MiB of blobs nobody needs."""
        limit = range_limit(self.repo.config.pack_size)
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
                plain = self._decode(
                    aead, bid, view[off - start : off - start + length], raw, pack_id, scratch
                )
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
