"""The copy's prescan: list and stat the source tree ahead of the walk, and sum its size.

Provides :class:`Prescan`. Started by ``steps.commands.copy`` before the repository opens, and taken
over by :class:`~.archiver.Archiver`, whose walk then reads the listings made here. The source is read
through :mod:`steps.drivers.beneath`.
"""

from __future__ import annotations

import fnmatch
import os
import stat as stat_mod
import threading
import time

from steps import runtime
from steps.drivers import beneath

from .blob_sink import _env_int


class _Listing:
    __slots__ = ("entries", "pending")

    def __init__(self, entries: list):
        self.entries = entries
        self.pending = 0  # slices not yet stat'ed


class Prescan:
    """Lists and stats the source tree with a few threads, ahead of the copy.

    It starts before the repository is even opened (key derivation, index loading) and sums the sizes for
    the progress total (Argo's N/M). It keeps the listings it made, with each entry's ``lstat`` cached in
    its ``os.DirEntry``, for the walk to take (:meth:`take`), up to ``SNAPFLOW_SCAN_AHEAD`` entries
    (beyond that it only warms the kernel's caches). The walk then makes no system call per entry: it
    runs while the file workers are busy, and every call that releases the interpreter lock would make
    it wait for a worker to hand the lock back. Directories with many entries are split into slices
    that different threads stat at once.
    """

    SLICE = 256

    def __init__(self, source: str, excludes=(), progress=None, threads: int | None = None):
        self.root = os.fsencode(os.path.abspath(source))
        self.excludes = list(excludes)
        self.progress = progress
        self.total = 0
        self.started_ns = time.time_ns()
        self.finished = threading.Event()
        self._stop = threading.Event()
        self._cv = threading.Condition()
        self._todo: list = []
        self._busy = 0
        self._listings: dict[bytes, _Listing] = {}
        self._held = 0
        self._budget = _env_int(runtime.SCAN_AHEAD, 4096)
        try:
            st = beneath.source_stat(self.root)
        except OSError:
            self.finished.set()
            return
        if not stat_mod.S_ISDIR(st.st_mode):
            self._publish(st.st_size if stat_mod.S_ISREG(st.st_mode) else 0, final=True)
            self.finished.set()
            return
        self._todo.append(("dir", self.root, "", None))
        n = threads or _env_int(runtime.SCAN_THREADS, 2)
        for i in range(n):
            threading.Thread(target=self._worker, name=f"scan-{i}", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        with self._cv:
            self._cv.notify_all()
            self._listings.clear()
            self._held = 0

    def take(self, path: bytes) -> list | None:
        """The entries of directory ``path`` (each with its lstat cached), if they were listed and stat'ed
        ahead; None otherwise (the caller lists the directory itself). Each listing is handed out once."""
        with self._cv:
            listing = self._listings.get(path)
            if listing is None or listing.pending:
                return None
            del self._listings[path]
            self._held -= len(listing.entries)
            return listing.entries

    def _publish(self, add: int, final: bool = False) -> None:
        with self._cv:
            self.total += add
            total = self.total
        if self.progress is not None:
            self.progress.total_bytes = max(self.progress.total_bytes, total) if not final else total
            if final:
                self.progress.total_final = True

    def _worker(self) -> None:
        while True:
            with self._cv:
                while not self._todo and self._busy and not self._stop.is_set():
                    self._cv.wait(0.5)
                if self._stop.is_set() or not self._todo:
                    self._cv.notify_all()
                    return
                item = self._todo.pop()
                self._busy += 1
            try:
                found = self._scan(item)
            except Exception:
                found = []
            with self._cv:
                if item[0] == "stat" and item[3] is not None:
                    item[3].pending -= 1
                self._todo.extend(found)
                self._busy -= 1
                done = not self._todo and not self._busy
                self._cv.notify_all()
            if done:
                self._publish(0, final=True)
                self.finished.set()
                return

    def _scan(self, item) -> list:
        kind, path, rel, listing = item
        if kind == "dir":
            entries = beneath.list_dir(path)
            slices = [entries[i : i + self.SLICE] for i in range(0, len(entries), self.SLICE)]
            with self._cv:
                if self._held + len(entries) <= self._budget and not self._stop.is_set():
                    listing = self._listings[path] = _Listing(entries)
                    listing.pending = len(slices)
                    self._held += len(entries)
                else:
                    listing = None
            return [("stat", part, rel, listing) for part in slices]
        out, size = [], 0
        excludes = self.excludes
        stop = self._stop
        for entry in path:
            if excludes:
                name = os.fsdecode(entry.name)
                child = f"{rel}/{name}" if rel else name
                if any(fnmatch.fnmatchcase(child, p) or fnmatch.fnmatchcase(name, p) for p in excludes):
                    continue
            else:
                child = ""
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            mode = st.st_mode
            if stat_mod.S_ISREG(mode):
                size += st.st_size
            elif stat_mod.S_ISDIR(mode):
                if stop.is_set():
                    return []
                out.append(("dir", entry.path, child, None))
        self._publish(size)
        return out
