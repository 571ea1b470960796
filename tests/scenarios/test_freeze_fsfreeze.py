"""fsfreeze paired hook on a real (loop-mounted btrfs) file system: the watcher guarantees the thaw."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from tests.fixtures.quiesce import freeze_holder, local_plan, run_step, wait_until

pytestmark = [pytest.mark.root, pytest.mark.slow]


def _fs_plan(fs, plan_file, tmp_path, **kw):
    target = {"name": "fs", "hook": "fsfreeze", "params": {"mount": str(fs.mountpoint)}}
    vol = fs.mountpoint / "vol"
    vol.mkdir(exist_ok=True)
    return plan_file(
        local_plan([target], [{"name": "vol", "path": str(vol)}], local_dir=str(tmp_path / "snaps"), **kw)
    )


def _wait_unfrozen(fs, bound):
    return wait_until(lambda: not fs.frozen(), bound, f"still frozen after {bound} s", interval=0.1)


def test_watcher_unfreezes_when_the_holder_is_killed(btrfs_mount, tmp_path, plan_file):
    # GIVEN a freeze holding the file system frozen, and a writer blocked on it
    plan = _fs_plan(btrfs_mount, plan_file, tmp_path, deadline_s=120)
    writer = None
    try:
        with freeze_holder(plan, tmp_path / "ready") as holder:
            assert btrfs_mount.frozen()
            writer = subprocess.Popen(
                [
                    "sh",
                    "-c",
                    f"echo data > {btrfs_mount.mountpoint}/vol/file && sync -f {btrfs_mount.mountpoint}/vol/file",
                ]
            )
            time.sleep(0.3)
            assert writer.poll() is None, "a writer on a frozen file system must block"

            # WHEN the holder is killed outright
            holder.send_signal(signal.SIGKILL)
            holder.wait(10)

            # THEN the watcher (end of its input) unfreezes, and the blocked writer completes
            assert _wait_unfrozen(btrfs_mount, bound=5) < 5
            assert writer.wait(10) == 0
            assert (btrfs_mount.mountpoint / "vol" / "file").read_text() == "data\n"
    finally:
        subprocess.run(["fsfreeze", "-u", str(btrfs_mount.mountpoint)], capture_output=True)
        if writer is not None:
            writer.wait(10)


def test_fsfreeze_thaw_is_idempotent_and_never_waits_on_writers(btrfs_mount, tmp_path, plan_file):
    plan = _fs_plan(btrfs_mount, plan_file, tmp_path)
    # nothing frozen: thaw succeeds, twice
    for _ in range(2):
        res = run_step("thaw", "--plan", str(plan))
        assert res.returncode == 0, res.stderr
    # frozen by someone else, writers piling up: thaw still returns at once
    subprocess.run(["fsfreeze", "-f", str(btrfs_mount.mountpoint)], check=True)
    writers = [
        subprocess.Popen(["sh", "-c", f"echo {i} > {btrfs_mount.mountpoint}/vol/w{i}; sync"])
        for i in range(3)
    ]
    try:
        time.sleep(0.3)
        t0 = time.monotonic()
        res = run_step("thaw", "--plan", str(plan))
        assert res.returncode == 0, res.stderr
        assert time.monotonic() - t0 < 10
        assert not btrfs_mount.frozen()
        assert all(w.wait(10) == 0 for w in writers)
    finally:
        subprocess.run(["fsfreeze", "-u", str(btrfs_mount.mountpoint)], capture_output=True)
        for w in writers:
            w.wait(10)


def test_consistent_point_copies_a_frozen_file_system_app_consistently(btrfs_mount, tmp_path, plan_file):
    # GIVEN files on the btrfs mount, quiesced by fsfreeze (a btrfs snapshot would block on the freeze,
    # so the local driver copies to another file system instead)
    vol = btrfs_mount.mountpoint / "vol"
    vol.mkdir()
    for i in range(20):
        (vol / f"f{i}").write_text(str(i) * 100)
    plan = _fs_plan(btrfs_mount, plan_file, tmp_path, deadline_s=30)

    # WHEN the consistent point runs
    res = run_step("consistent-point", "--plan", str(plan), "--backup-id", "bk-fs", timeout=60)

    # THEN app-consistent, thawed, and the copy is complete
    assert res.returncode == 0, res.stderr
    record = json.loads(res.stdout)
    assert record["verdict"] == "app-consistent", record["reasons"]
    assert record["snapshots"][0]["atomic"] is False
    assert not btrfs_mount.frozen()
    copy = tmp_path / "snaps" / "vol.bk-fs"
    assert sorted(p.name for p in copy.iterdir()) == sorted(p.name for p in vol.iterdir())
