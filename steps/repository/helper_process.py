"""A helper process: work that would otherwise share the interpreter lock with the rest of a step, run by
a second Python process over a socket pair.

Provides :class:`HelperProcess` (the parent's side: start ``python -m MODULE FD``, a sender thread, a
reader thread that cuts the child's answers into frames, reaping), :func:`frame`, :data:`HEADER`,
:class:`ChildGone`, :func:`helpers_wanted` (``SNAPFLOW_HELPER_PROCESSES``) and :func:`child_main` (the
child's entry). Used by :mod:`.creator_process` (a restore's small files) and :mod:`.scan_warmer` (a
copy's cache warmer).

Frames, both ways: a type byte and a little-endian 32-bit payload length, then the payload. A child
sends ``R`` first, when it runs, and ``Z`` with the reason when it fails. Its environment holds only
``PYTHONPATH``: no credentials reach it, and it gets nothing but what its frames carry. It runs in a
process group of its own (a terminal's Ctrl-C goes to the step, which ends it) and is killed by the
kernel when the step's thread that started it dies, so that it never goes on alone.
"""

from __future__ import annotations

import os
import queue
import socket
import struct
import subprocess
import sys
import threading

from steps import runtime
from steps.drivers.cpus import available_cpus

HEADER = struct.Struct("<cI")
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def helpers_wanted() -> bool:
    """Whether helper processes are used (``SNAPFLOW_HELPER_PROCESSES``: ``1``, ``0`` (everything runs
    in the step's own process, as when a helper cannot start), or unset: with two CPUs or more)."""
    value = os.environ.get(runtime.HELPER_PROCESSES, "").strip()
    if value in ("0", "1"):
        return value == "1"
    return available_cpus() >= 2


def frame(kind: bytes, payload) -> bytes:
    return HEADER.pack(kind, len(payload)) + payload


def cut_frame(buf: bytearray) -> tuple[bytes, bytes] | None:
    """The first whole frame of ``buf`` as (kind, payload), taken out of it; None until one is whole."""
    if len(buf) < HEADER.size:
        return None
    kind, length = HEADER.unpack_from(buf)
    if len(buf) < HEADER.size + length:
        return None
    payload = bytes(buf[HEADER.size : HEADER.size + length])
    del buf[: HEADER.size + length]
    return kind, payload


class ChildGone(Exception):
    """The child ended (or never started): ``started`` tells which."""

    def __init__(self, started: bool, detail: str):
        super().__init__(detail)
        self.started = started
        self.detail = detail


class HelperProcess:
    """The parent's handle on a child running ``python -m module FD``: ``send`` queues frames (with
    descriptors) for its sender thread, and every frame the child sends back goes to
    ``deliver(kind, payload)`` from its reader thread; when the child ends, ``deliver(b"", ChildGone)``.
    ``name`` names the threads."""

    def __init__(self, module: str, name: str, deliver):
        self._module = module
        self._name = name
        self._deliver = deliver
        self._out: queue.Queue = queue.Queue()
        self._threads: list[threading.Thread] = []
        self.proc: subprocess.Popen | None = None
        self.sock: socket.socket | None = None
        self.started = False  # the child said it runs
        self._reason = ""  # why it failed, as it said (Z)
        self._send_error = ""

    def start(self) -> None:
        """Start the child (OSError when it cannot be started)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-P", "-m", self._module, str(theirs.fileno()), str(os.getpid())],
                pass_fds=(theirs.fileno(),),
                env={"PYTHONPATH": _ROOT},
                stdin=subprocess.DEVNULL,
                cwd="/",
                process_group=0,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.sock = ours
        for target, name in ((self._send_loop, f"{self._name}-send"), (self._read_loop, self._name)):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def send(self, data: bytes, fds: list[int] | None = None) -> None:
        self._out.put((data, fds))

    def _send_loop(self) -> None:
        sock = self.sock
        while True:
            item = self._out.get()
            if item is None:
                return
            data, fds = item
            try:
                if fds:
                    sent = socket.send_fds(sock, [data], fds)
                    if sent < len(data):
                        sock.sendall(memoryview(data)[sent:])
                elif isinstance(data, list):  # parts, sent a MiB or so at a time (no copy of the whole)
                    group: list = []
                    size = 0
                    for part in data:
                        group.append(part)
                        size += len(part)
                        if size >= 1 << 20:
                            sock.sendall(b"".join(group))
                            group, size = [], 0
                    if group:
                        sock.sendall(b"".join(group))
                else:
                    sock.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                return  # the child closed its end: it ended, which the reader reports
            except OSError as err:
                # The child cannot be reached (refused descriptors, no memory...) while it waits for
                # this frame: it is ended, and the reader reports why.
                self._send_error = err.strerror or type(err).__name__
                self.kill()
                return

    def _read_loop(self) -> None:
        sock = self.sock
        buf = bytearray()
        detail = "closed its connection"
        try:
            while True:
                while (cut := cut_frame(buf)) is not None:
                    kind, payload = cut
                    if kind == b"R":
                        self.started = True
                    if kind == b"Z":
                        self._reason = payload.decode("utf-8", "replace")
                        continue
                    self._deliver(kind, payload)
                chunk = sock.recv(1 << 16)
                if not chunk:
                    break
                buf += chunk
        except OSError as err:
            detail = f"connection failed ({err.strerror})"
        code = self._reap(5.0 if self.started else 30.0)
        if self._send_error:
            detail = f"it could not be sent its work ({self._send_error})"
        elif code is not None and code < 0:
            detail = f"killed by signal {-code}"
        elif code:
            detail = f"exited with status {code}"
        if self._reason:
            detail = f"{detail}: {self._reason}"
        self._deliver(b"", ChildGone(self.started, detail))

    def _reap(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill(self) -> None:
        """Stop the child now."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.kill()
            except OSError:
                pass

    def close(self) -> None:
        """End the threads and reap the child (killed unless it ended already); closes the socket."""
        self._out.put(None)
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        for t in self._threads:
            t.join(10.0)
            if t.is_alive():  # the child does not end on its own: kill it
                self.kill()
                t.join()
        if self.proc is not None and self.proc.poll() is None:
            self.kill()
            self.proc.wait()
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def _die_with_parent(parent: int) -> bool:
    """Ask the kernel to kill this process when the thread that started it dies; False when the parent
    is gone already."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL
    except (OSError, AttributeError):
        pass  # not Linux: the socket's end still ends it
    return os.getppid() == parent


def child_main(argv: list[str], serve) -> int:
    """A child's entry: ``serve(sock)`` on the socket whose number is ``argv[0]`` (``argv[1]``: the
    parent's process ID); 1, after a ``Z`` frame with the reason, when it fails (the parent reports the
    child's end)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles an interrupt and ends this process
    sock = socket.socket(fileno=int(argv[0]))
    try:
        if not _die_with_parent(int(argv[1])):
            return 1
        serve(sock)
    except Exception as err:
        try:
            sock.sendall(frame(b"Z", f"{type(err).__name__}: {err}".encode("utf-8", "replace")[:2000]))
        except OSError:
            pass
        return 1
    finally:
        sock.close()
    return 0
