"""The runner interface: how hooks run commands next to the application, locally or in a pod.

A runner runs one-shot commands (:meth:`Runner.run`) and opens *sessions* (:meth:`Runner.open_session`):
a process whose standard input stays open, so that a database client can hold a session (a lock, a
backup mode) while Snapflow sends it more statements, and whose end of input is the signal for a
watcher to release what it holds. Implementations: :mod:`steps.drivers.runner_local` (processes on this
machine) and :mod:`steps.drivers.runner_kube` (pods/exec over the Kubernetes API). The hook engine in
:mod:`steps.quiesce` only talks to this interface.
"""

from __future__ import annotations

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
