"""``restore`` from the command line, with the process that creates its small files (see
steps/repository/creator_process.py) killed mid-restore: the restore creates the rest itself, says so
on one line, restores the tree byte for byte and leaves no process behind; and with the restore killed:
the creating process ends with it."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from tests.fixtures.hostile import PASSWORD, TEST_KDF, run_cli
from tests.fixtures.processes import children, runs
from tests.fixtures.repository import describe_tree


def _holds_below(pid: int, target) -> bool:
    """Whether ``pid`` runs the creating process and holds a descriptor of a directory below ``target``
    (it was handed one: between fork and exec the new process holds all of the restore's)."""
    if not runs(pid, b"creator_process"):
        return False
    try:
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


def _snapshot(tmp_path) -> tuple[str, dict, object]:
    """A repository holding 6 000 small files; its URL, the environment to restore it with, the source."""
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
    env["SNAPFLOW_HELPER_PROCESSES"] = "1"
    env["SNAPFLOW_RESTORE_RANGE_MIB"] = "1"  # several ranges in flight
    return url, env, src


def _restore_until_the_creator_runs(url: str, env: dict, target) -> tuple[subprocess.Popen, int | None]:
    """A restore started, and its creating process once it holds descriptors of the target's
    directories (None when the restore ended before)."""
    argv = [sys.executable, "-m", "steps", "restore", "--repo", url, "--snapshot", "latest"]
    proc = subprocess.Popen(
        [*argv, "--target", str(target)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        kids = children(proc.pid)
        if kids and _holds_below(kids[0], target):
            return proc, kids[0]
        time.sleep(0.001)
    return proc, None


@pytest.mark.slow
def test_the_creating_process_killed_mid_restore_leaves_the_rest_to_the_restore(tmp_path):
    # GIVEN a repository holding 6 000 small files
    url, env, src = _snapshot(tmp_path)
    for attempt in range(5):  # a run that ends before its creating process is caught is run again
        # WHEN its creating process is killed (SIGKILL) while the restore runs
        target = tmp_path / f"out-{attempt}"
        proc, child = _restore_until_the_creator_runs(url, env, target)
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
    # THEN the restore succeeded, with one warning that says what happened and no traceback
    assert proc.returncode == 0, (out, err)
    assert "Traceback" not in err, err
    assert "restored snapshot" in err, err
    warned = [line for line in err.splitlines() if "process that creates small files" in line]
    assert warned == [
        "warning: a process that creates small files ended (killed by signal 9); the restore creates"
        " them itself"
    ], err
    # and the tree is the source's, byte for byte
    assert describe_tree(target) == describe_tree(src)
    # and the creating process was reaped by the restore: no process is left, not even a zombie
    assert _state(child) == "gone"


@pytest.mark.slow
def test_the_creating_process_ends_with_a_killed_restore(tmp_path):
    # GIVEN a restore of 6 000 small files whose creating process runs
    url, env, _src = _snapshot(tmp_path)
    for attempt in range(5):
        target = tmp_path / f"out-{attempt}"
        proc, child = _restore_until_the_creator_runs(url, env, target)
        if child is not None and _state(child) not in ("Z", "X", "gone"):
            break
        proc.communicate(timeout=120)
    assert child is not None, "the creating process was never caught running"
    # WHEN the restore is killed (SIGKILL: it cannot stop anything itself)
    os.kill(proc.pid, signal.SIGSTOP)
    creators = [pid for pid in children(proc.pid) if runs(pid, b"creator_process")]
    assert child in creators
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    # THEN every creating process ends at once instead of going on creating files alone
    deadline = time.monotonic() + 10
    while any(_state(c) not in ("Z", "X", "gone") for c in creators) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert all(_state(c) in ("Z", "X", "gone") for c in creators), [(c, _state(c)) for c in creators]
    counted = sum(len(files) for _dir, _dirs, files in os.walk(target))
    time.sleep(0.5)
    assert sum(len(files) for _dir, _dirs, files in os.walk(target)) == counted
