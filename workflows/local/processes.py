"""The processes of a local run: a step's stderr tailed into its log, its Argo progress file and last
stdout line read, its process group signalled, and the pipeline's mutex as a lock file."""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

from workflows.local.step_runs import StepRun


def tail_stderr(run: StepRun, stream, log) -> None:
    for raw in iter(stream.readline, b""):
        log.write(raw)
        log.flush()
        text = raw.decode(errors="replace").rstrip("\r\n").split("\r")[-1].strip()
        if text:
            run.message = text
            if text.startswith("error:"):
                run.error = text
    stream.close()


def read_progress(path: Path) -> tuple[int, int] | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    done, sep, total = text.partition("/")
    try:
        return (int(done), int(total)) if sep else None
    except ValueError:
        return None


def last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def kill_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


@contextlib.contextmanager
def app_lock(lock_dir: Path, name: str, note: Callable[[str], None]) -> Iterator[None]:
    """The pipeline's mutex: one run holding ``name`` at a time on this machine."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    path = lock_dir / f"{name}.lock"
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            note(f"waiting for another run holding {name} to finish ({path})")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
