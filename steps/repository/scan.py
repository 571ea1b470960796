"""The copy's prescan: list and stat the source tree ahead of the walk, in the walk's order.

Provides :class:`Prescan`. Started by ``steps.commands.copy`` before the repository opens, and taken
over by :class:`~.archiver.Archiver`, whose walk then reads the listings made here. The source is read
through :mod:`steps.drivers.beneath`.
"""

from __future__ import annotations

import heapq
import os
import stat as stat_mod
import threading
import time

from steps import runtime
from steps.drivers import beneath

from .blob_sink import _env_int
from .excludes import excluded
from .scan_warmer import ScanWarmer

# entries the walk takes before the cache warmer starts (measured on 1 GiB of mixed data, 20 000 files:
# no faster with it from the start, 0.1 s slower on average)
WARM_AFTER = 16384

# states of a directory known to the prescan
_QUEUED, _LISTING, _READY, _FAILED = range(4)


class _Listing:
    __slots__ = ("entries", "key", "pending", "state")

    def __init__(self, key: tuple):
        self.key = key  # its place in the walk's order: the names of its path below the root
        self.entries: list | None = None
        self.pending = 0  # slices not yet stat'ed
        self.state = _QUEUED


class Prescan:
    """Lists and stats the source tree in the order the walk takes it, in a thread of its own.

    It starts before the repository is even opened (key derivation, index loading) and sums the sizes for
    the progress total (Argo's N/M). Directories are listed in the walk's order (depth first, entries
    sorted by name: the order of the tuples of names of their paths), each entry's ``lstat`` cached in its
    ``os.DirEntry``, and handed to the walk (:meth:`take`), which then makes no system call per entry: it
    runs while the file workers are busy, and every call that releases the interpreter lock would make
    it wait for a worker to hand the lock back. Every entry is stat'ed once.

    At most about ``SNAPFLOW_SCAN_AHEAD`` entries (4 096, about 830 bytes each) are held, plus the
    directory each thread is listing: when the window is full the threads wait until the walk has taken
    half of it (one wake-up per half window, not per directory); a directory the walk waits for is
    always listed. With more threads (``SNAPFLOW_SCAN_THREADS``; one by default: on two CPUs a second
    one cost CPU and lock hand-offs, cold caches included, and saved no time), directories with many
    entries are split into slices that different threads stat at once. The total is final once the
    scan reached the end of the tree, a window ahead of the walk;
    until then :meth:`provisional_total` (the parent snapshot's size) may stand in for it.
    """

    SLICE = 256

    def __init__(
        self, source: str, excludes=(), progress=None, threads: int | None = None, warm: bool = True
    ):
        self.root = os.fsencode(os.path.abspath(source))
        self.excludes = list(excludes)
        self.progress = progress
        self.total = 0
        self.started_ns = time.time_ns()
        self.finished = threading.Event()
        self._stop = threading.Event()
        self._cv = threading.Condition()
        self._dirs_todo: list = []  # heap of (key, path, listing): directories to list, walk order first
        self._slices: list = []  # (self._stat, entries, listing): slices of listed directories to stat
        self._busy = 0
        self._known: dict[bytes, _Listing] = {}  # queued, being listed, or listed and not yet taken
        self._ready: list = []  # heap of (key, path) of listings made, to drop those the walk passed
        self._held = 0
        self._budget = max(1, _env_int(runtime.SCAN_AHEAD, 4096))
        self._full = False  # the window filled up: list no new directory until half of it was taken
        self._passed: tuple | None = None  # key of the last listing taken (the walk is past it)
        self._wanted: tuple | None = None  # key of the listing the walk waits for
        try:
            st = beneath.source_stat(self.root)
        except OSError:
            self.finished.set()
            return
        if not stat_mod.S_ISDIR(st.st_mode):
            self._publish(st.st_size if stat_mod.S_ISREG(st.st_mode) else 0, final=True)
            self.finished.set()
            return
        self._queue(self.root, ())
        self._warm = warm
        self._start_warmer()
        n = threads or _env_int(runtime.SCAN_THREADS, 1)
        self._threads = [
            threading.Thread(target=self._worker, name=f"scan-{i}", daemon=True) for i in range(n)
        ]
        for t in self._threads:
            t.start()

    @property
    def held(self) -> int:
        """Entries listed and not yet taken."""
        return self._held

    def stop(self) -> None:
        self._stop.set()
        warmer, self._warmer = self._warmer, None
        if warmer is not None:
            warmer.stop()
        with self._cv:
            self._known.clear()
            self._ready.clear()
            self._dirs_todo.clear()
            self._held = 0
            self._cv.notify_all()

    def take(self, path: bytes) -> list | None:
        """The entries of directory ``path`` (each with its lstat cached), listed ahead; None when the
        prescan does not list it (unknown to it, unreadable, or stopped): the caller lists it itself.
        Waits while the listing is under way. Each listing is handed out once; directories are expected in
        the walk's order, and listings of directories the walk passed without taking them are dropped."""
        entries = self._take(path)
        if entries is not None:
            self._taken += len(entries)  # only the walk takes
            if self._warmer is not None:
                self._warmer.walked(self._taken)
            else:
                self._start_warmer()
        return entries

    def _start_warmer(self) -> None:
        """Start the cache warmer (see :mod:`.scan_warmer`: the kernel's share of the stats, done ahead
        by a process of its own) once the walk has taken WARM_AFTER entries: a smaller tree is listed
        before a process would have started."""
        if self._warm and self._taken >= WARM_AFTER and not self._stop.is_set():
            self._warm = False  # one try
            self._warmer = ScanWarmer.start(self.root, self.excludes)
            if self._stop.is_set():
                self.stop()

    def _take(self, path: bytes) -> list | None:
        with self._cv:
            listing = self._known.get(path)
            if listing is None:
                return None
            self._wanted = listing.key
            try:
                while listing.state != _READY or listing.pending:
                    if listing.state == _FAILED or self._stop.is_set() or not self._running():
                        self._known.pop(path, None)
                        return None
                    self._cv.notify_all()  # a thread held back by a full window lists it now
                    self._cv.wait(0.5)
            finally:
                self._wanted = None
            del self._known[path]
            entries = listing.entries
            self._held -= len(entries)
            self._passed = key = listing.key
            ready = self._ready
            while ready and ready[0][0] <= key:  # listings the walk will not come back for
                _k, p = heapq.heappop(ready)
                old = self._known.get(p)
                if old is not None and old.state == _READY and not old.pending:
                    del self._known[p]
                    self._held -= len(old.entries)
            if self._full and self._held <= self._budget // 2:
                self._full = False
                self._cv.notify_all()
            return entries

    _threads: list = []
    _warmer: ScanWarmer | None = None
    _warm = False  # a warmer is still to be started (not for a source that is no directory)
    _taken = 0  # entries handed to the walk

    def _running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def _queue(self, path: bytes, key: tuple) -> None:
        listing = self._known[path] = _Listing(key)
        heapq.heappush(self._dirs_todo, (key, path, listing))

    def provisional_total(self, size: int) -> None:
        """Show at least ``size`` as the total (e.g. the parent snapshot's) until the scan has finished."""
        with self._cv:
            self._guess = size
            progress = self.progress
            if progress is not None and not progress.total_final:
                progress.total_bytes = max(progress.total_bytes, size)

    _guess = 0

    def _publish(self, add: int, final: bool = False) -> None:
        with self._cv:
            self.total += add
            total = self.total
            progress = self.progress
            if progress is not None:
                if final:
                    progress.total_bytes, progress.total_final = total, True
                elif not progress.total_final:
                    progress.total_bytes = max(total, self._guess)

    def _next(self):
        """The next piece of work (called with the lock held): a slice to stat, else the first directory
        in the walk's order if the window has room or the walk waits for it; None to wait."""
        if self._slices:
            return self._slices.pop()
        todo = self._dirs_todo
        while todo:
            key, path, listing = todo[0]
            passed = self._passed
            if passed is not None and key <= passed:  # the walk went past it (it changed, or vanished)
                heapq.heappop(todo)
                if self._known.get(path) is listing:
                    del self._known[path]
                continue
            wanted = self._wanted
            if self._full and not (wanted is not None and key <= wanted):
                return None
            heapq.heappop(todo)
            listing.state = _LISTING
            return (self._list, path, listing)
        return None

    def _worker(self) -> None:
        cv = self._cv
        while True:
            with cv:
                while True:
                    if self._stop.is_set():
                        cv.notify_all()
                        return
                    item = self._next()
                    if item is not None:
                        break
                    if not self._dirs_todo and not self._slices and not self._busy:
                        cv.notify_all()
                        self._publish(0, final=True)
                        self.finished.set()
                        return
                    cv.wait(0.5)
                self._busy += 1
            try:
                item[0](*item[1:])  # each leaves its listing's state right, also when it fails
            except Exception:
                pass

    def _list(self, path: bytes, listing: _Listing) -> None:
        try:
            entries = sorted(beneath.list_dir(path), key=lambda e: e.name)
        except Exception:
            entries = None
        with self._cv:
            self._busy -= 1
            if entries is None:
                listing.state = _FAILED
            else:
                slices = [entries[i : i + self.SLICE] for i in range(0, len(entries), self.SLICE)]
                listing.entries = entries
                listing.pending = len(slices)
                listing.state = _READY
                self._held += len(entries)
                if self._held >= self._budget:
                    self._full = True
                heapq.heappush(self._ready, (listing.key, path))
                # the last slice first: popped from the end, the first slice is stat'ed first
                stat = self._stat
                self._slices.extend((stat, part, listing) for part in reversed(slices))
            self._cv.notify_all()

    def _stat(self, entries: list, listing: _Listing) -> None:
        found, size = [], 0
        try:
            excludes = self.excludes
            base = listing.key
            rel = "/".join(os.fsdecode(n) for n in base) if excludes else ""
            for entry in entries:
                if excludes:
                    name = os.fsdecode(entry.name)
                    child = f"{rel}/{name}" if rel else name
                    if excluded(child, name, excludes):
                        continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                mode = st.st_mode
                if stat_mod.S_ISREG(mode):
                    size += st.st_size
                elif stat_mod.S_ISDIR(mode):
                    found.append((entry.path, (*base, entry.name)))
        finally:
            with self._cv:
                self._publish(size)  # before the count of busy threads falls: the total is final at 0
                self._busy -= 1
                listing.pending -= 1
                if not self._stop.is_set():
                    for path, key in found:
                        self._queue(path, key)
                self._cv.notify_all()
