"""The copy's scanning process: a second process that lists and stats the source in the walk's order and
hands the listings, stat results included, to the copy.

Provides :class:`ScanStream` (the copy's side, used by :class:`~.scan.Prescan`) and the child's entry
(``python -m steps.repository.scan_process FD PPID``, through :mod:`.helper_process`).

Why a process: every ``lstat`` releases the interpreter lock, and a thread that released it waits for
it again after the call while another thread keeps it busy (up to the interpreter's switch interval).
A prescan thread listing beside the copy's imports, index loading and walk therefore made about one
system call per turn of the others, and the walk then waited for it: with 20 000 files a third of the
walk's time, though ``find`` lists and stats the same tree in 0.05 s with the caches dropped. The child
makes those calls under a lock of its own, on the second CPU, and sends each directory's listing in one
frame (``marshal``: names and the full ``lstat`` results); the copy's reader thread takes a frame per
``recv`` and builds the entries the walk reads (:class:`ListedEntry`), so the walk makes no system call
per entry and nothing waits for the lock per entry.

The child lists the walk's order exactly: a directory's entries sorted by name (bytes), then its
subdirectories depth first in that order, each opened relative to its parent's descriptor with
``O_NOFOLLOW`` (a directory replaced by a symlink meanwhile is not entered) and ``O_NOATIME`` where the
caller may use it. It skips what ``--exclude`` excludes (the same rule as the walk, with names decoded as
the copy decodes them). A directory it cannot open or list is sent as failed: the walk lists it itself
and reports the error as before. It starts a new directory only while fewer than ``lead`` listed entries
wait for the walk (the copy tells it how far the walk got), so the copy holds at most ``lead`` entries
plus the directory being listed. Like every helper, it runs with an environment holding only
``PYTHONPATH``, dies with the copy and is killed when the prescan stops. When it cannot start, the
prescan lists in a thread as before; when it ends early, the walk lists what it did not send.
"""

from __future__ import annotations

import collections
import json
import marshal
import os
import socket
import stat as stat_mod
import sys
import threading

from .excludes import excluded
from .helper_process import HelperProcess, child_main, cut_frame, frame

PIECE = 4096  # entries per frame: a large directory comes in several


class ListedEntry:
    """One entry of a listing made by the child: ``name`` and ``path`` (bytes) and its ``lstat``, as an
    ``os.DirEntry`` whose ``stat(follow_symlinks=False)`` was cached."""

    __slots__ = ("_st", "name", "path")

    def __init__(self, name: bytes, path: bytes, st: os.stat_result):
        self.name = name
        self.path = path
        self._st = st

    def stat(self, *, follow_symlinks: bool = True) -> os.stat_result:
        if follow_symlinks and stat_mod.S_ISLNK(self._st.st_mode):
            return os.stat(self.path)
        return self._st


class ScanStream:
    """The copy's handle on the scanning process of ``root`` (bytes). :meth:`start` returns None when
    the child cannot start. :meth:`take` hands out each directory's
    entries in the walk's order; ``on_size(bytes, final)`` is told the sizes of the regular files listed
    (``final`` once the child listed the whole tree)."""

    def __init__(self, root: bytes, excludes=(), lead: int = 4096, on_size=None):
        self.root = root
        self._base = root if root.endswith(b"/") else root + b"/"
        self.excludes = list(excludes)
        self.lead = max(1, lead)
        self.on_size = on_size
        self.gone: str | None = None
        self.done = False
        self._cv = threading.Condition()
        self._ready: collections.deque = collections.deque()  # (key, entries or None), the child's order
        self._piece: tuple | None = None  # (key, entries) of a directory whose last piece is to come
        self._consumed = 0  # entries taken by the walk or passed by it
        self._told = 0
        self._helper = HelperProcess(__name__, "scan", self._deliver)

    @classmethod
    def start(cls, root: bytes, excludes=(), lead: int = 4096, on_size=None) -> ScanStream | None:
        stream = cls(root, excludes, lead, on_size)
        try:
            stream._helper.start()
        except OSError:
            return None
        setup = {
            "root": root.hex(),
            "excludes": stream.excludes,
            "lead": stream.lead,
            "encoding": [sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()],
        }
        stream._helper.send(frame(b"W", json.dumps(setup).encode("utf-8", "surrogatepass")))
        return stream

    def stop(self) -> None:
        self._helper.kill()
        self._helper.close()
        with self._cv:
            self._ready.clear()
            self._piece = None
            self.done = True
            self._cv.notify_all()

    def take(self, path: bytes) -> list[ListedEntry] | None:
        """The entries of directory ``path``, sorted by name, each with its lstat; None when the child
        did not list it (it could not, it ended, or it never comes to it): the walk lists it itself.
        Listings of directories the walk passed without taking them are dropped."""
        if path == self.root:
            key: tuple = ()
        elif path.startswith(self._base):
            key = tuple(path[len(self._base) :].split(b"/"))
        else:
            return None
        with self._cv:
            while True:
                ready = self._ready
                while ready:
                    k, entries = ready[0]
                    if k > key:
                        return None  # the child went past it: it never lists it
                    ready.popleft()
                    self._consumed += len(entries) if entries else 1
                    if k == key:
                        self._tell()
                        return entries
                if self.done or self.gone is not None:
                    return None
                self._tell(waiting=True)
                self._cv.wait(0.5)

    def _tell(self, waiting: bool = False) -> None:
        """Tell the child how far the walk got, once a quarter lead on (or whenever the walk waits)."""
        consumed = self._consumed
        if consumed - self._told >= self.lead // 4 or (waiting and consumed > self._told):
            self._told = consumed
            self._helper.send(frame(b"P", consumed.to_bytes(8, "little")))

    def _deliver(self, kind: bytes, payload) -> None:
        if kind == b"L":
            self._listing(payload)
        elif kind == b"D":
            with self._cv:
                self.done = True
                self._cv.notify_all()
            if self.on_size is not None:
                self.on_size(0, True)
        elif kind == b"":
            with self._cv:
                self.gone = payload.detail
                self._cv.notify_all()

    def _listing(self, payload: bytes) -> None:
        rel, items, last = marshal.loads(payload)
        key = tuple(rel.split(b"/")) if rel else ()
        if items is None:
            entries = None
        else:
            base = self.root if not rel else self._base + rel
            base = base if base.endswith(b"/") else base + b"/"
            st_result, isreg = os.stat_result, stat_mod.S_ISREG
            entries = []
            size = 0
            for name, values in items:
                st = st_result(values)
                if isreg(st.st_mode):
                    size += st.st_size
                entries.append(ListedEntry(name, base + name, st))
            if size and self.on_size is not None:
                self.on_size(size, False)
        with self._cv:
            piece = self._piece
            if piece is not None and piece[0] == key and entries is not None:
                piece[1].extend(entries)
                entries = piece[1]
            if not last:
                self._piece = (key, entries)
                return
            self._piece = None
            self._ready.append((key, entries))
            self._cv.notify_all()


# -- the child ----------------------------------------------------------------------------------------


class _Frames:
    """Frames read from the parent, one at a time: (kind, payload), or (None, b"") once it closed."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = bytearray()

    def next(self) -> tuple[bytes | None, bytes]:
        while (cut := cut_frame(self.buf)) is None:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                return None, b""
            self.buf += chunk
        return cut


_OPEN = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_NOATIME = getattr(os, "O_NOATIME", 0)


def open_dir(name, dir_fd: int | None, required: bool = False) -> int | None:
    """A descriptor of directory ``name`` (in ``dir_fd``), never through a symlink, without touching its
    access time where the caller may ask that (a snapshot records it); None when it cannot be opened so.
    ``required``: opened with its access time touched when only that is refused (EPERM: not the
    caller's), as the walk itself would list it."""
    try:
        return os.open(name, _OPEN | _NOATIME, dir_fd=dir_fd)
    except PermissionError:
        if not (required and _NOATIME):
            return None
        try:
            return os.open(name, _OPEN, dir_fd=dir_fd)
        except OSError:
            return None
    except OSError:
        return None  # a symlink now (ELOOP), gone


def _stat_values(st: os.stat_result) -> tuple:
    """Every field of ``st`` (its extra fields too: times in nanoseconds, blocks), in the order
    ``os.stat_result`` takes them back."""
    return (*st, *st.__reduce__()[1][1].values())


def _serve(sock: socket.socket) -> None:
    sock.sendall(frame(b"R", b""))
    frames = _Frames(sock)
    kind, payload = frames.next()
    if kind != b"W":
        return
    setup = json.loads(payload.decode("utf-8", "surrogatepass"))
    root, excludes, lead = bytes.fromhex(setup["root"]), setup["excludes"], int(setup["lead"])
    encoding, errors = setup["encoding"]  # the copy's: names are matched against excludes as it decodes them
    allowed = lead
    sent = 0

    def wait_for_walk() -> bool:
        nonlocal allowed
        while sent >= allowed:
            kind, payload = frames.next()
            if kind is None:
                return False  # the copy is done
            if kind == b"P":
                allowed = int.from_bytes(payload, "little") + lead
        return True

    def send(rel: bytes, items, last: bool) -> None:
        sock.sendall(frame(b"L", marshal.dumps((rel, items, last))))

    def list_dir(fd: int, rel: bytes) -> list[bytes]:
        """Send the listing of the directory open as ``fd`` (a failed one when it cannot be listed);
        its subdirectories' names, sorted."""
        nonlocal sent
        shown = rel.decode(encoding, errors) if excludes else ""
        try:
            with os.scandir(fd) as it:
                found = []
                for entry in it:
                    name = os.fsencode(entry.name)
                    if excludes:
                        text = name.decode(encoding, errors)
                        if excluded(f"{shown}/{text}" if shown else text, text, excludes):
                            continue
                    found.append((name, entry))
        except OSError:
            send(rel, None, True)
            sent += 1
            return []
        found.sort(key=lambda item: item[0])
        below, items = [], []
        for name, entry in found:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue  # vanished: the walk skips it as well
            if stat_mod.S_ISDIR(st.st_mode):
                below.append(name)
            items.append((name, _stat_values(st)))
            if len(items) >= PIECE:
                send(rel, items, False)
                sent += len(items)
                items = []
        send(rel, items, True)
        sent += len(items) or 1
        return below

    fd = open_dir(root, None, required=True)
    if fd is None:
        send(b"", None, True)
        sock.sendall(frame(b"D", b""))
        return
    stack: list[tuple[int, bytes, list[bytes]]] = []
    try:
        stack.append((fd, b"", list_dir(fd, b"")[::-1]))
        while stack:
            fd, rel, todo = stack[-1]
            if not todo:
                os.close(fd)
                stack.pop()
                continue
            name = todo.pop()
            sub_rel = rel + b"/" + name if rel else name
            if not wait_for_walk():
                return
            sub = open_dir(name, fd, required=True)
            if sub is None:
                send(sub_rel, None, True)
                sent += 1
                continue
            stack.append((sub, sub_rel, list_dir(sub, sub_rel)[::-1]))
    finally:
        for fd, _rel, _todo in stack:
            os.close(fd)
    sock.sendall(frame(b"D", b""))


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:], _serve))
