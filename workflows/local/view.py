"""The live view of a local run: one line per step, redrawn in place on a terminal, and at the end a
timeline with the freeze window marked.

On a terminal every step shows its status, duration, a progress bar for the data steps (copy, verify,
restore; read from the Argo progress file each step writes) and the last line it wrote to stderr.
Anywhere else (a log, CI) the view prints one line per event and a progress line every few seconds.
Used by :mod:`workflows.local.runner` callers: ``snapflow run --local``, ``snapflow restore --local``
and the demo.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import TextIO

from workflows.local.step_runs import (
    FAILED,
    OMITTED,
    PENDING,
    RETRYING,
    RUNNING,
    SKIPPED,
    SUCCEEDED,
    RunResult,
    StepRun,
    View,
)
from workflows.pipeline_sources import SOURCE_COMMANDS

DATA_COMMANDS = ("copy", "verify", "restore", *sorted(SOURCE_COMMANDS))
PLAIN_PROGRESS_EVERY_S = 5.0

_UNICODE = {
    PENDING: "·",
    RUNNING: "▶",
    RETRYING: "↻",
    SUCCEEDED: "✔",
    FAILED: "✘",
    SKIPPED: "○",
    OMITTED: "○",
    "bar": "█",
    "bar_empty": "░",
    "freeze": "❄",
    "edge": "│",
}
_ASCII = {
    PENDING: ".",
    RUNNING: ">",
    RETRYING: "~",
    SUCCEEDED: "+",
    FAILED: "x",
    SKIPPED: "-",
    OMITTED: "-",
    "bar": "#",
    "bar_empty": "-",
    "freeze": "*",
    "edge": "|",
}
_COLOUR = {
    SUCCEEDED: "32",
    FAILED: "31",
    RETRYING: "33",
    RUNNING: "36",
    SKIPPED: "2",
    OMITTED: "2",
    PENDING: "2",
}


def _supports_unicode(stream: TextIO) -> bool:
    encoding = (getattr(stream, "encoding", None) or "").lower()
    return "utf" in encoding


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


def progress_bar(done: int, total: int, width: int, chars: dict[str, str]) -> str:
    total = max(total, 1)
    filled = min(width, round(width * min(done, total) / total))
    return chars["bar"] * filled + chars["bar_empty"] * (width - filled)


def step_line(run: StepRun, chars: dict[str, str], width: int, name_width: int, now: float) -> str:
    """One line of the live view for one step (without colour)."""
    icon = chars.get(run.status, "?")
    status = run.status
    if run.attempts > 1:
        status += f" ({run.attempts} attempts)"
    parts = [f" {icon} {run.name:<{name_width}}  {status:<22} {format_duration(run.duration(now)):>8}"]
    if run.step.command in DATA_COMMANDS and run.progress is not None and run.status in (RUNNING, SUCCEEDED):
        done, total = run.progress
        pct = 100 * min(done, total) / max(total, 1)
        parts.append(f"  {progress_bar(done, total, 20, chars)} {pct:3.0f}% {done}/{total} MiB")
    if run.status == FAILED and run.error:
        parts.append(f"  {run.error}")
    elif run.status == RETRYING and run.next_attempt_at:
        parts.append(f"  exit {run.exit_code}, next attempt in {max(0.0, run.next_attempt_at - now):.0f} s")
    elif run.status == RUNNING and run.message:
        parts.append(f"  {run.message}")
    line = "".join(parts)
    return line if len(line) <= width else line[: max(width - 1, 10)] + "…"


class TerminalView(View):
    """Live per-step view on a terminal (redrawn in place), or event lines when not a terminal."""

    def __init__(self, stream: TextIO | None = None, tty: bool | None = None, colour: bool | None = None):
        self.stream = stream or sys.stdout
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)()) if tty is None else tty
        self.colour = (self.tty and not os.environ.get("NO_COLOR")) if colour is None else colour
        self.chars = _UNICODE if _supports_unicode(self.stream) else _ASCII
        self.runs: list[StepRun] = []
        self.t0 = time.time()
        self._drawn = 0
        self._last_plain: dict[str, float] = {}

    # -- output helpers ------------------------------------------------------------------------
    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass

    def _width(self) -> int:
        return max(60, shutil.get_terminal_size((120, 24)).columns) if self.tty else 160

    def _paint(self, text: str, status: str) -> str:
        code = _COLOUR.get(status)
        return f"\x1b[{code}m{text}\x1b[0m" if self.colour and code else text

    def _erase(self) -> None:
        if self.tty and self._drawn:
            self._write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0

    def _draw(self) -> None:
        now = time.time()
        width = self._width()
        name_width = max((len(r.name) for r in self.runs), default=10)
        lines = [self._paint(step_line(r, self.chars, width, name_width, now), r.status) for r in self.runs]
        self._write("".join(line + "\x1b[K\n" for line in lines))
        self._drawn = len(lines)

    def _say(self, text: str) -> None:
        if self.tty:
            self._erase()
            self._write(text + "\n")
            self._draw()
        else:
            self._write(f"[{time.time() - self.t0:6.1f} s] {text}\n")

    # -- View ------------------------------------------------------------------------------------
    def start(self, title: str, runs: list[StepRun], run_dir: Path) -> None:
        self.runs = runs
        self.t0 = time.time()
        self._write(f"{title}\n  logs: {run_dir}\n")
        if self.tty:
            self._draw()

    def event(self, run: StepRun, what: str) -> None:
        if self.tty:
            if run.status == FAILED and run.error:
                self._say(f"{run.name}: {run.error} (log: {run.stderr_path})")
            else:
                self.refresh(self.runs, force=True)
            return
        detail = ""
        if run.status in (SUCCEEDED, FAILED) and run.duration() is not None:
            detail = f" in {format_duration(run.duration())}"
        if run.status == FAILED:
            detail += f": {run.error} (log: {run.stderr_path})"
        self._say(f"{run.name}: {what}{detail}")

    def note(self, text: str) -> None:
        self._say(text)

    def refresh(self, runs: list[StepRun], force: bool = False) -> None:
        if self.tty:
            self._erase()
            self._draw()
            return
        now = time.time()
        for r in runs:
            if r.status != RUNNING or r.step.command not in DATA_COMMANDS:
                continue
            if now - self._last_plain.get(r.name, r.started or now) < PLAIN_PROGRESS_EVERY_S:
                continue
            self._last_plain[r.name] = now
            bar = ""
            if r.progress is not None:
                done, total = r.progress
                bar = f"{progress_bar(done, total, 20, self.chars)} {done}/{total} MiB  "
            self._say(f"{r.name}: {bar}{r.message}")

    def finish(self, result: RunResult) -> None:
        if self.tty:
            self._erase()
            self._draw()
            self._drawn = 0
        self._write("\n" + "\n".join(summary_lines(result, self.chars, self._width())) + "\n")


# --------------------------------------------------------------------------------------------------
# The timeline at the end.


def _clock(t: float) -> str:
    return datetime.fromtimestamp(t).strftime("%H:%M:%S.%f")[:-3]


def timeline_lines(result: RunResult, chars: dict[str, str] | None = None, width: int = 100) -> list[str]:
    """A text Gantt chart of the run: one row per step, and a row marking the freeze window."""
    chars = chars or _UNICODE
    runs = [r for r in result.all_steps() if r.started is not None]
    if not runs:
        return ["(no step ran)"]
    t0 = min(r.started for r in runs if r.started is not None)
    t1 = max((r.finished or result.finished) for r in runs)
    window = result.freeze_window()
    span = max(t1 - t0, 1e-3)
    name_width = max(max(len(r.name) for r in result.all_steps()), len("freeze window"))
    cols = max(20, min(60, width - name_width - 40))

    def col(t: float) -> int:
        return min(cols - 1, max(0, int((t - t0) / span * cols)))

    legend = f"; {chars['freeze']} = freeze window" if window else ""
    lines = [f"Timeline ({format_duration(span)}, one column = {span / cols:.2f} s{legend})"]
    for r in result.all_steps():
        cells = [" "] * cols
        if r.started is not None:
            a, b = col(r.started), col(r.finished or result.finished)
            for i in range(a, b + 1):
                cells[i] = chars["bar"]
            if window and r.step.holds_freeze:
                for i in range(col(window["quiesced"]), col(window["released"]) + 1):
                    cells[i] = chars["freeze"]
            when = f"{(r.started - t0):6.2f} → {((r.finished or result.finished) - t0):6.2f} s"
        else:
            when = " " * 17
        lines.append(
            f"  {r.name:<{name_width}} {chars['edge']}{''.join(cells)}{chars['edge']} {when}  {r.status}"
        )
    if window:
        cells = [" "] * cols
        for i in range(col(window["quiesced"]), col(window["released"]) + 1):
            cells[i] = chars["freeze"]
        ms = window.get("window_ms")
        length = f"{ms:.1f} ms" if isinstance(ms, int | float) else "?"
        lines.append(
            f"  {'freeze window':<{name_width}} {chars['edge']}{''.join(cells)}{chars['edge']} "
            f"{length} (quiesced {_clock(window['quiesced'])}, released {_clock(window['released'])})"
        )
    return lines


def summary_lines(result: RunResult, chars: dict[str, str] | None = None, width: int = 100) -> list[str]:
    """The timeline, the pipeline's outputs and the outcome, for the end of a run."""
    chars = chars or _UNICODE
    lines = timeline_lines(result, chars, width)
    if result.verdict:
        lines.append(f"Consistency: {result.verdict.get('verdict')}")
        for reason in (result.verdict.get("reasons") or [])[:5]:
            lines.append(f"  because {reason}")
    shown = {k: v for k, v in result.outputs.items() if v is not None}
    if shown:
        lines.append("Outputs: " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    failed = [r for r in result.all_steps() if r.status == FAILED]
    for r in failed:
        lines.append(f"Failed: {r.name} (exit {r.exit_code}): {r.error}  log: {r.stderr_path}")
    if result.pipeline == "backup":
        if result.committed:
            lines.append(f"Backup {result.backup_id} committed: a restore point.")
        else:
            lines.append(f"Backup {result.backup_id} NOT committed: no restore point was created.")
    else:
        lines.append(f"{result.pipeline} {result.backup_id}: {result.status}")
    if result.interrupted:
        lines.append("Interrupted: the running steps were stopped; the finalizer ran (the app is thawed).")
    for w in result.warnings:
        lines.append(f"warning: {w}")
    lines.append(f"Logs: {result.run_dir}")
    return lines
