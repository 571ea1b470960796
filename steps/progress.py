"""Progress reporting for long steps (copy, restore, verify).

Provides :class:`Progress`: on a terminal a single self-rewriting status line on stderr; otherwise a
plain line every ``SNAPFLOW_PROGRESS_INTERVAL`` seconds (default 10) so that logs stay readable; and,
when ``ARGO_PROGRESS_FILE`` is set, Argo's ``N/M`` progress (in MiB) written to that file. Called by the
data steps; the engines only bump counters.
"""

from __future__ import annotations

import os
import sys
import threading
import time

from steps import runtime

MiB = 1024 * 1024


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class Progress:
    """Counters (``done_bytes``, ``total_bytes``, ``files``) reported periodically by a daemon thread."""

    def __init__(
        self,
        label: str,
        stream=None,
        interval: float | None = None,
        enabled: bool = True,
        unit: str = "files",
    ):
        self.label = label
        self.unit = unit
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        if interval is None:
            try:
                interval = float(os.environ.get(runtime.PROGRESS_INTERVAL, "") or (0.5 if self.tty else 10.0))
            except ValueError:
                interval = 0.5 if self.tty else 10.0
        self.interval = interval
        self.argo_file = os.environ.get(runtime.ARGO_PROGRESS_FILE) or None
        self.enabled = enabled
        self.done_bytes = 0
        self.total_bytes = 0
        self.total_final = False
        self.files = 0
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Progress:
        self.started = time.monotonic()
        if self.enabled:
            self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2)
        if self.enabled:
            if exc[0] is None and self.total_final:
                self.done_bytes = max(self.done_bytes, self.total_bytes)
            self._report(final=exc[0] is None)
            if self.tty:
                self.stream.write("\n")
                self.stream.flush()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._report()

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        total = human_bytes(self.total_bytes) + ("" if self.total_final else "+") if self.total_bytes else "?"
        pct = (
            f" {100 * self.done_bytes / self.total_bytes:5.1f}%"
            if self.total_bytes and self.total_final
            else ""
        )
        return (
            f"{self.label}: {self.files} {self.unit}, {human_bytes(self.done_bytes)} / {total}{pct},"
            f" {human_bytes(self.done_bytes / elapsed)}/s, {elapsed:.0f} s"
        )

    def _report(self, final: bool = False) -> None:
        try:
            if self.tty:
                self.stream.write("\r\x1b[K" + self.line())
            else:
                self.stream.write(self.line() + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass
        if self.argo_file:
            done = self.done_bytes // MiB
            total = max(-(-self.total_bytes // MiB), done, 1)
            if final:
                done = total
            try:
                tmp = f"{self.argo_file}.tmp"
                with open(tmp, "w") as f:
                    f.write(f"{done}/{total}\n")
                os.replace(tmp, self.argo_file)
            except OSError:
                pass
