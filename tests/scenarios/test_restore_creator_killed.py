"""``restore`` from the command line, with the process that creates its small files (see
steps/repository/creator_process.py) killed mid-restore: the restore fails on one line, never reports
success, and leaves no process behind."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from tests.fixtures.hostile import PASSWORD, TEST_KDF, run_cli


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def _holds_below(pid: int, target) -> bool:
    """Whether ``pid`` runs the creating process and holds a descriptor of a directory below ``target``
    (it was handed one: between fork and exec the new process holds all of the restore's)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"creator_process" not in f.read():
                return False
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(f"{target}/"):
                    return True
            except OSError:
                pass
    except OSError:
        pass
    return False


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


@pytest.mark.slow
def test_the_creating_process_killed_mid_restore_fails_the_restore_on_one_line(tmp_path):
    # GIVEN a repository holding 6 000 small files
    rng = random.Random(5)
    src = tmp_path / "src"
    for d in range(8):
        (src / f"d{d}").mkdir(parents=True)
        for i in range(750):
            (src / f"d{d}" / f"f{i}").write_bytes(rng.randbytes(rng.randrange(1, 3000)))
    url = f"file://{tmp_path / 'repo'}"
    assert run_cli("init", "--repo", url).returncode == 0
    assert run_cli("copy", "--repo", url, "--source", src).returncode == 0
    env = {**os.environ, "SNAPFLOW_PASSWORD": PASSWORD, "SNAPFLOW_KDF_TEST_N": str(TEST_KDF["n"])}
    env.pop("SNAPFLOW_PASSWORD_FILE", None)
    for attempt in range(5):  # a run that ends before its creating process is caught is run again
        # WHEN its creating process is killed (SIGKILL) while the restore runs
        target = tmp_path / f"out-{attempt}"
        argv = [sys.executable, "-m", "steps", "restore", "--repo", url, "--snapshot", "latest"]
        proc = subprocess.Popen(
            [*argv, "--target", str(target)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        child = None
        deadline = time.monotonic() + 60
        # (it runs once it holds descriptors of the target's directories)
        while proc.poll() is None and time.monotonic() < deadline:
            kids = _children(proc.pid)
            if kids and _holds_below(kids[0], target):
                child = kids[0]
                break
            time.sleep(0.001)
        caught = False
        if child is not None:
            os.kill(proc.pid, signal.SIGSTOP)  # hold the restore while its creating process is killed
            caught = _state(child) not in ("Z", "X", "gone")
            os.kill(child, signal.SIGKILL)
            os.kill(proc.pid, signal.SIGCONT)
        out, err = proc.communicate(timeout=120)
        if caught:
            break
    assert caught, "the creating process was never caught running"
    # THEN the restore failed on one line that says why, and reported no success
    assert proc.returncode != 0, (out, err)
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "ended unexpectedly (killed by signal 9)" in lines[0], err
    assert "restored snapshot" not in out, out
    # and the creating process was reaped by the restore: no process is left, not even a zombie
    assert _state(child) == "gone"
