"""The copy's cache warmer: a second process that lists and stats the source ahead of the walk, so that
the walk's own ``lstat`` calls find the kernel's inode and directory caches warm.

Provides :class:`ScanWarmer` (the copy's side, started and stopped by :class:`~.scan.Prescan`) and the
child's entry (``python -m steps.repository.scan_warmer FD PPID``, through :mod:`.helper_process`).

Why a process: with cold caches each ``lstat`` is mostly the kernel's work (reading inode tables), and
the prescan's thread gives up the interpreter lock at every one of them. While the walk keeps the lock
busy, that thread waits for it after each call, so the kernel's work ran one entry at a time between
the walk's turns instead of beside it. A process of its own has a lock of its own: it does the same
calls on the second CPU, and the prescan's ``lstat`` then only reads the caches (measured with 200 000
files on 2 CPUs: the cold incremental copy took about the time of a warm one, 4.0-4.9 s against
6.3 s). It keeps nothing: it only makes the kernel read what the walk is about to read.

It stays at most :data:`LEAD` entries ahead of the walk (the prescan tells it how far the walk got), so
that what it warms is still cached when the walk comes (the kernel's caches count against a pod's
memory); it checks that every 4 096 entries, inside a large directory too, and keeps only the names
of subdirectories still to visit. It honours the same excludes as the walk (names decoded as the copy
decodes them). It opens each directory relative to its parent's descriptor with ``O_NOFOLLOW``, so a
directory replaced by a symlink meanwhile is not entered, and with ``O_NOATIME``: listing a directory
would otherwise set its access time, which the snapshot records (a directory it may not open so is not
warmed). Like every helper, it runs with an environment holding only ``PYTHONPATH``, dies with the copy
and is killed when the prescan stops. When it cannot start, or ends early, the copy goes on as without
it: it changes nothing the copy reads or records.
"""

from __future__ import annotations

import json
import os
import socket
import stat as stat_mod
import sys

from .excludes import excluded
from .helper_process import HelperProcess, child_main, cut_frame, frame, helpers_wanted

LEAD = 65536  # entries the warmer may be ahead of the walk (about 64 MiB of the kernel's caches)


class ScanWarmer:
    """The copy's handle on the warmer of ``root`` (bytes). :meth:`start` returns None when helper
    processes are off or the child cannot start; :meth:`walked` tells it how many entries the walk has
    taken; :meth:`stop` kills it. ``done`` is the count of entries it listed, once it finished."""

    def __init__(self, root: bytes, excludes=(), lead: int | None = None):
        self.root = root
        self.excludes = list(excludes)
        self.lead = lead = lead or LEAD
        self.done: int | None = None
        self.waiting: int | None = None  # entries listed when it last waited for the walk
        self.gone: str | None = None
        self._told = 0
        self._helper = HelperProcess(__name__, "scan-warm", self._deliver)

    @classmethod
    def start(cls, root: bytes, excludes=(), lead: int | None = None) -> ScanWarmer | None:
        if not helpers_wanted():
            return None
        warmer = cls(root, excludes, lead)
        try:
            warmer._helper.start()
        except OSError:
            return None
        setup = {
            "root": root.hex(),
            "excludes": warmer.excludes,
            "lead": warmer.lead,
            "encoding": [sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()],
        }
        warmer._helper.send(frame(b"W", json.dumps(setup).encode("utf-8", "surrogatepass")))
        return warmer

    def walked(self, entries: int) -> None:
        """The walk has taken ``entries`` entries so far; told to the child once a quarter lead on."""
        if entries - self._told >= self.lead // 4:
            self._told = entries
            self._helper.send(frame(b"P", entries.to_bytes(8, "little")))

    def stop(self) -> None:
        self._helper.kill()
        self._helper.close()

    @property
    def pid(self) -> int | None:
        return self._helper.proc.pid if self._helper.proc is not None else None

    def _deliver(self, kind: bytes, payload) -> None:
        if kind == b"D":
            self.done = int.from_bytes(payload, "little")
        elif kind == b"H":
            self.waiting = int.from_bytes(payload, "little")
        elif kind == b"":
            self.gone = payload.detail


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


def _open_dir(name, dir_fd: int | None) -> int | None:
    """A descriptor of directory ``name`` (in ``dir_fd``), never through a symlink and without touching
    its access time (a snapshot records it); None when that cannot be had (it is then not warmed)."""
    try:
        return os.open(name, _OPEN | _NOATIME, dir_fd=dir_fd)
    except OSError:
        return None  # a symlink now (ELOOP), gone, or not ours to open without atime (EPERM)


def _serve(sock: socket.socket) -> None:
    sock.sendall(frame(b"R", b""))
    frames = _Frames(sock)
    kind, payload = frames.next()
    if kind != b"W":
        return
    setup = json.loads(payload.decode("utf-8", "surrogatepass"))
    root, excludes, lead = bytes.fromhex(setup["root"]), setup["excludes"], int(setup["lead"])
    encoding, errors = setup["encoding"]  # the copy's: names are matched against excludes as it decodes them
    step = max(1, min(4096, lead // 4))
    allowed = lead
    listed = 0

    def wait_for_walk() -> bool:
        nonlocal allowed
        if listed <= allowed:
            return True
        sock.sendall(frame(b"H", listed.to_bytes(8, "little")))
        while listed > allowed:
            kind, payload = frames.next()
            if kind is None:
                return False  # the copy is done
            if kind == b"P":
                allowed = int.from_bytes(payload, "little") + lead
        return True

    def list_dir(fd: int, rel: str) -> list[str] | None:
        """Stat every entry of the directory open as ``fd``; its subdirectories' names, sorted (the
        walk's order), or None once the copy is done. Only those names are kept: a directory of a
        million entries costs no more memory here than one of ten."""
        nonlocal listed
        below = []
        with os.scandir(fd) as it:
            for entry in it:
                listed += 1
                if not listed % step and not wait_for_walk():
                    return None
                if excludes:
                    name = os.fsencode(entry.name).decode(encoding, errors)
                    if excluded(f"{rel}/{name}" if rel else name, name, excludes):
                        continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat_mod.S_ISDIR(st.st_mode):
                    below.append(entry.name)
        below.sort(key=os.fsencode)
        return below

    stack: list[tuple[int, str, list[str]]] = []

    def enter(fd: int, rel: str) -> bool:
        """List the directory open as ``fd`` and put it on the stack; False (``fd`` closed) once the
        copy is done."""
        names = list_dir(fd, rel)
        if names is None:
            os.close(fd)
            return False
        stack.append((fd, rel, names[::-1]))
        return True

    fd = _open_dir(root, None)
    if fd is None:
        return
    try:
        if not enter(fd, ""):
            return
        while stack:
            fd, rel, todo = stack[-1]
            if not todo:
                os.close(fd)
                stack.pop()
                continue
            name = todo.pop()
            sub = _open_dir(name, fd)
            if sub is None:
                continue
            shown = os.fsencode(name).decode(encoding, errors)
            sub_rel = f"{rel}/{shown}" if rel else shown
            if not wait_for_walk():
                os.close(sub)
                return
            if not enter(sub, sub_rel):
                return
    finally:
        for fd, _rel, _todo in stack:
            os.close(fd)
    sock.sendall(frame(b"D", listed.to_bytes(8, "little")))


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:], _serve))
