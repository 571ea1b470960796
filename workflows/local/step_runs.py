"""The state of a local run: step statuses (named like Argo's node phases), one step's run
(:class:`StepRun`), the run's result (:class:`RunResult`, also the run record ``pipeline``) and the
interface of a progress view (:class:`View`; :mod:`workflows.local.view` draws one on a terminal)."""

from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from steps.api import EXIT_FAILURE
from workflows.pipeline import Step

# Statuses, named like Argo's node phases.
PENDING = "Pending"
RUNNING = "Running"
RETRYING = "Retrying"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
SKIPPED = "Skipped"  # its `when` condition was false
OMITTED = "Omitted"  # not started because an earlier step failed or the run was interrupted
DONE = (SUCCEEDED, FAILED, SKIPPED, OMITTED)


def utc_iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


# --------------------------------------------------------------------------------------------------
# Run state.


@dataclass
class StepRun:
    """One step of a local run: its status, timing and what it reported."""

    step: Step
    dir: Path
    status: str = PENDING
    attempts: int = 0
    started: float | None = None  # first attempt
    finished: float | None = None
    exit_code: int | None = None
    message: str = ""  # the last line the step wrote to stderr
    error: str = ""  # the line explaining a failure ("error: ...")
    progress: tuple[int, int] | None = None  # Argo "N/M" from ARGO_PROGRESS_FILE
    result: Any = None  # last stdout line (JSON parsed when it is JSON)
    next_attempt_at: float | None = None
    proc: subprocess.Popen | None = field(default=None, repr=False)
    _threads: list[threading.Thread] = field(default_factory=list, repr=False)

    @property
    def name(self) -> str:
        return self.step.name

    @property
    def progress_file(self) -> Path:
        return self.dir / "progress"

    @property
    def stdout_path(self) -> Path:
        return self.dir / "stdout.log"

    @property
    def stderr_path(self) -> Path:
        return self.dir / "stderr.log"

    def duration(self, now: float | None = None) -> float | None:
        if self.started is None:
            return None
        end = self.finished if self.finished is not None else (now or time.time())
        return max(0.0, end - self.started)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "name": self.name,
            "command": self.step.command,
            "title": self.step.title,
            "volume": self.step.volume,
            "status": self.status,
            "attempts": self.attempts,
            "started": utc_iso(self.started),
            "finished": utc_iso(self.finished),
            "duration_s": None if self.duration() is None else round(self.duration() or 0.0, 3),
            "exit_code": self.exit_code,
            "error": self.error or None,
            "holds_freeze": self.step.holds_freeze,
        }
        if self.step.command == "check" and isinstance(self.result, dict):
            out["report"] = self.result  # the check's --json report, its restore test included
        return out


@dataclass
class RunResult:
    """What a local run did; ``status`` is Succeeded only when every step and the finalizer passed."""

    pipeline: str
    policy: str
    app: str
    backup_id: str
    run_dir: Path
    status: str
    graph_status: str
    started: float
    finished: float
    steps: list[StepRun]
    exit_step: StepRun | None
    outputs: dict[str, Any]
    verdict: dict[str, Any] | None = None  # consistent-point's record
    interrupted: bool = False
    committed: bool | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == SUCCEEDED

    def all_steps(self) -> list[StepRun]:
        return [*self.steps, *([self.exit_step] if self.exit_step else [])]

    def step(self, name: str) -> StepRun:
        for s in self.all_steps():
            if s.name == name:
                return s
        raise KeyError(name)

    def freeze_window(self) -> dict[str, Any] | None:
        """The freeze window from consistent-point's record: first quiesce, last release, length."""
        if not self.verdict:
            return None
        targets = (self.verdict.get("timeline") or {}).get("targets") or []
        quiesced = [parse_iso(t.get("quiesced")) for t in targets if t.get("quiesced")]
        released = [parse_iso(t.get("released")) for t in targets if t.get("released")]
        if not quiesced or not released:
            return None
        return {
            "quiesced": min(q for q in quiesced if q is not None),
            "released": max(r for r in released if r is not None),
            "window_ms": self.verdict.get("freeze_window_ms"),
        }

    def exit_code(self) -> int:
        if self.ok:
            return 0
        if self.interrupted:
            return 130
        for s in self.all_steps():
            if s.status == FAILED and s.exit_code:
                return s.exit_code if s.exit_code > 0 else EXIT_FAILURE
        return EXIT_FAILURE

    def to_dict(self) -> dict[str, Any]:
        window = self.freeze_window()
        return {
            "name": "pipeline",
            "pipeline": self.pipeline,
            "runner": "local",
            "policy": self.policy,
            "app": self.app,
            "backup_id": self.backup_id,
            "status": self.status,
            "graph_status": self.graph_status,
            "interrupted": self.interrupted,
            "committed": self.committed,
            "started": utc_iso(self.started),
            "finished": utc_iso(self.finished),
            "duration_s": round(self.finished - self.started, 3),
            "steps": [s.to_dict() for s in self.all_steps()],
            "freeze": None
            if window is None
            else {
                "quiesced": utc_iso(window["quiesced"]),
                "released": utc_iso(window["released"]),
                "window_ms": window["window_ms"],
            },
            "verdict": None if not self.verdict else self.verdict.get("verdict"),
            "outputs": self.outputs,
            "warnings": self.warnings,
        }


class View:
    """What the runner tells about progress (see :mod:`workflows.local.view`); this one is silent."""

    def start(self, title: str, runs: list[StepRun], run_dir: Path) -> None: ...

    def event(self, run: StepRun, what: str) -> None: ...

    def note(self, text: str) -> None: ...

    def refresh(self, runs: list[StepRun], force: bool = False) -> None: ...

    def finish(self, result: RunResult) -> None: ...
