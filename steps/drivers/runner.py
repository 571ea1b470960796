"""The runner interface: how hooks run commands next to the application, locally or in a pod.

A runner runs one-shot commands (:meth:`Runner.run`) and opens *sessions* (:meth:`Runner.open_session`):
a process whose standard input stays open, so that a database client can hold a session (a lock, a
backup mode) while Snapflow sends it more statements, and whose end of input is the signal for a
watcher to release what it holds. Implementations: :mod:`steps.drivers.runner_local` (processes on this
machine) and :mod:`steps.drivers.runner_kube` (pods/exec over the Kubernetes API), whose sessions share
:class:`PumpedOutput`. The hook engine in :mod:`steps.quiesce` only talks to this interface.
"""

from __future__ import annotations

import collections
import queue
from dataclasses import dataclass
from typing import Protocol


class SessionClosed(Exception):
    """The session's process ended (or its stream closed) while Snapflow still expected output."""


@dataclass(frozen=True)
class RunResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class Session(Protocol):
    """A running process with an open standard input."""

    description: str

    def send(self, text: str) -> None:
        """Write ``text`` to the process's standard input; raises :class:`SessionClosed` if it is gone."""

    def read_line(self, timeout: float) -> str | None:
        """Next line of standard output without its newline; None after ``timeout`` seconds without one;
        raises :class:`SessionClosed` once the output ended."""

    def alive(self) -> bool:
        """True while the process (or stream) is still running."""

    def close_input(self) -> None:
        """Close standard input (end of file for the process); never blocks."""

    def wait(self, timeout: float) -> int | None:
        """Exit code, or None if still running after ``timeout`` seconds."""

    def kill(self) -> None:
        """End the process (or drop the stream) now; never blocks."""

    def stderr_tail(self) -> str:
        """The last lines the process wrote on standard error (for error messages)."""


class Runner(Protocol):
    """Runs commands for one target (this machine, or one container of one pod)."""

    description: str

    def run(self, argv: list[str], *, stdin: str | None = None, timeout: float = 60.0) -> RunResult:
        """Run ``argv`` to completion, feeding ``stdin``; kill it after ``timeout`` seconds (returncode -9)."""

    def open_session(self, argv: list[str]) -> Session:
        """Start ``argv`` with an interactive standard input."""


_EOF = object()


class PumpedOutput:
    """The output side of a session whose output a background thread pumps: standard output as a queue
    of lines (:meth:`read_line`), the last lines of standard error (:meth:`stderr_tail`). The pump calls
    :meth:`_output_line` / :meth:`_error_line` per line and :meth:`_output_ended` once at the end."""

    def __init__(self, description: str):
        self.description = description
        self._lines: queue.Queue = queue.Queue()
        self._stderr: collections.deque[str] = collections.deque(maxlen=20)
        self._done = False

    def _output_line(self, line: str) -> None:
        self._lines.put(line)

    def _error_line(self, line: str) -> None:
        self._stderr.append(line)

    def _output_ended(self) -> None:
        self._lines.put(_EOF)

    def read_line(self, timeout: float) -> str | None:
        if self._done:
            raise SessionClosed(f"{self.description}: output ended")
        try:
            item = self._lines.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return None
        if item is _EOF:
            self._done = True
            raise SessionClosed(f"{self.description}: output ended")
        return item

    def stderr_tail(self) -> str:
        return " | ".join(self._stderr)
