"""The holder never writes to a file system it froze: where an fsfreeze hook freezes the file system a
volume lies on, its snapshot goes elsewhere (the default layout) or is refused before anything is
frozen (an explicit snapshot directory there, reached directly, through a symlink or a bind mount).
A write there would sleep uninterruptibly until the thaw; the holder could not even be killed.

Every test unfreezes from this process in a ``finally``: a test that failed must not leave writers
(and the file system's unmount) hanging."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.fixtures.local_runs import hook_events, recording_hook, write_local_policy
from tests.fixtures.quiesce import local_plan, run_step

pytestmark = [pytest.mark.root, pytest.mark.slow]


def _unfreeze(fs) -> None:
    subprocess.run(["fsfreeze", "-u", str(fs.mountpoint)], capture_output=True)


def _files(directory, n=20):
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (directory / f"f{i}").write_text(str(i) * 1000)
    return directory


def test_default_layout_under_a_frozen_mount_backs_up_app_consistently_with_snapflow_run_local(
    btrfs_mount, s3_repo, s3_server, snapflow
):
    # GIVEN a policy next to a loop-mounted btrfs: volume mnt/files, quiesced by fsfreeze of mnt (both
    # paths relative to the policy file), and no snapshot directory: the default layout
    base = btrfs_mount.base
    _files(btrfs_mount.mountpoint / "files")
    policy = write_local_policy(
        base / "p.yaml",
        Path("mnt/files"),
        s3_repo,
        s3_server.endpoint,
        quiesce=[{"hook": "fsfreeze", "name": "fs", "local": True, "params": {"mount": "mnt"}}],
    )
    doc = yaml.safe_load(policy.read_text())
    doc["spec"]["freeze"]["deadlineSeconds"] = 8
    policy.write_text(yaml.safe_dump(doc, sort_keys=False))
    state = str(base / "state")
    try:
        init = snapflow("run", str(policy), "--local", "--pipeline", "init", "--state-dir", state, "--plain")
        assert init.returncode == 0, init.stderr + init.stdout

        # WHEN the backup pipeline runs locally
        t0 = time.monotonic()
        run = snapflow("run", str(policy), "--local", "--state-dir", state, "--plain", "--json", timeout=120)
        took = time.monotonic() - t0

        # THEN committed, app-consistent, and the app was frozen for milliseconds, not the deadline
        assert run.returncode == 0, run.stderr
        summary = json.loads(run.stdout.strip().splitlines()[-1])
        assert summary["status"] == "Succeeded" and summary["committed"] is True
        assert summary["verdict"] == "app-consistent"
        assert summary["freeze"]["window_ms"] < 2000, summary["freeze"]
        assert took < 60
        assert not btrfs_mount.frozen()
        # ... the copy went next to the mount point, not onto the frozen file system, and said so
        cp_stderr = next((base / "state" / "runs").glob("*/steps/consistent-point/stderr*"))
        assert f"snapshot goes to {base / '.snapflow-snapshots'}" in cp_stderr.read_text()
        assert not (btrfs_mount.mountpoint / ".snapflow-snapshots").exists()
        # ... and was deleted after the copy (deleteAfterCopy), its folder too
        assert not (base / ".snapflow-snapshots").exists()
    finally:
        _unfreeze(btrfs_mount)


@pytest.mark.parametrize("reach", ["direct", "symlink", "bind-mount"])
def test_a_snapshot_dir_on_the_frozen_file_system_is_refused_before_anything_is_frozen(
    btrfs_mount, tmp_path, plan_file, reach
):
    # GIVEN a plan that first quiesces a recording hook, then freezes the btrfs mount, and a snapshot
    # directory on that file system (reached directly, through a symlink, or through a bind mount)
    base, mnt = btrfs_mount.base, btrfs_mount.mountpoint
    vol = _files(tmp_path / "vol", n=3)
    log = tmp_path / "hook.log"
    if reach == "direct":
        snaps = mnt / "snaps"
    elif reach == "symlink":
        (base / "link").symlink_to(mnt)
        snaps = base / "link" / "snaps"
    else:
        (base / "bind").mkdir()
        subprocess.run(["mount", "--bind", str(mnt), str(base / "bind")], check=True)
        snaps = base / "bind" / "snaps"
    targets = [
        recording_hook(log),
        {"name": "fs", "hook": "fsfreeze", "params": {"mount": str(mnt)}},
    ]
    plan = plan_file(local_plan(targets, [{"name": "v", "path": str(vol)}], local_dir=str(snaps)))
    try:
        # WHEN the consistent point starts
        res = run_step("consistent-point", "--plan", str(plan), "--backup-id", "bk", timeout=60)

        # THEN refused with one line naming the setting and the mount, before any target was frozen
        assert res.returncode == 2, res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and "snapshot.local_dir" in lines[0] and str(mnt) in lines[0], res.stderr
        assert hook_events(log) == []
        assert not btrfs_mount.frozen()
        assert not (mnt / "snaps").exists()
    finally:
        _unfreeze(btrfs_mount)
        if reach == "bind-mount":
            subprocess.run(["umount", "-l", str(base / "bind")], capture_output=True)


def test_a_subvolume_reached_through_a_bind_mount_is_copied_next_to_the_mount_not_snapshotted(
    btrfs_mount, tmp_path, plan_file
):
    # GIVEN a volume that is a btrfs subvolume (its own st_dev) of the frozen file system, reached
    # through a bind mount (no path under the frozen mount point), with the default snapshot layout
    base, mnt = btrfs_mount.base, btrfs_mount.mountpoint
    subprocess.run(["btrfs", "subvolume", "create", str(mnt / "sub")], check=True, capture_output=True)
    _files(mnt / "sub")
    (base / "bind").mkdir()
    subprocess.run(["mount", "--bind", str(mnt), str(base / "bind")], check=True)
    vol = base / "bind" / "sub"
    assert os.stat(vol).st_dev != os.stat(mnt).st_dev
    target = {"name": "fs", "hook": "fsfreeze", "params": {"mount": str(mnt)}}
    plan = plan_file(local_plan([target], [{"name": "v", "path": str(vol)}], deadline_s=8))
    try:
        # WHEN the consistent point runs
        t0 = time.monotonic()
        res = run_step("consistent-point", "--plan", str(plan), "--backup-id", "bk-sub", timeout=60)
        took = time.monotonic() - t0

        # THEN app-consistent in far less than the deadline: copied (a btrfs snapshot would block on
        # the freeze), next to the bind mount point, on the file system below it
        assert res.returncode == 0, res.stderr
        record = json.loads(res.stdout)
        assert record["verdict"] == "app-consistent", record["reasons"]
        assert record["freeze_window_ms"] < 2000 and took < 8
        snap = record["snapshots"][0]
        assert snap["atomic"] is False
        assert snap["snapshot"] == str(base / ".snapflow-snapshots" / "v.bk-sub")
        assert sorted(os.listdir(snap["snapshot"])) == sorted(os.listdir(vol))
        assert not btrfs_mount.frozen()
    finally:
        _unfreeze(btrfs_mount)
        subprocess.run(["umount", "-l", str(base / "bind")], capture_output=True)


@pytest.mark.parametrize("option", ["--ready-file", "--result"])
def test_freeze_refuses_an_output_file_on_the_file_system_it_freezes(
    btrfs_mount, tmp_path, plan_file, option
):
    target = {"name": "fs", "hook": "fsfreeze", "params": {"mount": str(btrfs_mount.mountpoint)}}
    plan = plan_file(local_plan([target], [{"name": "v", "path": str(_files(tmp_path / "v", 1))}]))
    try:
        res = run_step("freeze", "--plan", str(plan), option, str(btrfs_mount.mountpoint / "out.json"))
        assert res.returncode == 2, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1 and option in res.stderr, res.stderr
        assert not btrfs_mount.frozen()
    finally:
        _unfreeze(btrfs_mount)


def test_snapflow_run_local_with_a_snapshot_dir_on_the_frozen_file_system_fails_before_freezing(
    btrfs_mount, s3_repo, s3_server, snapflow, tmp_path
):
    # GIVEN a local policy whose first hook records its freezes and whose second freezes the mount
    base, mnt = btrfs_mount.base, btrfs_mount.mountpoint
    _files(mnt / "files")
    log = tmp_path / "hook.log"
    quiesce = [
        recording_hook(log),
        {"hook": "fsfreeze", "name": "fs", "local": True, "params": {"mount": "mnt"}},
    ]
    policy = write_local_policy(
        base / "p.yaml", Path("mnt/files"), s3_repo, s3_server.endpoint, quiesce=quiesce
    )
    state = str(base / "state")
    try:
        init = snapflow("run", str(policy), "--local", "--pipeline", "init", "--state-dir", state, "--plain")
        assert init.returncode == 0, init.stderr + init.stdout

        # WHEN the backup runs with a snapshot directory on the file system the hook freezes
        run = snapflow(
            "run",
            str(policy),
            "--local",
            "--state-dir",
            state,
            "--plain",
            "--snapshot-dir",
            str(mnt / "snaps"),
        )

        # THEN the run fails, saying why, with nothing frozen and nothing written there
        assert run.returncode != 0
        out = run.stdout + run.stderr
        assert "--snapshot-dir" in out and "fsfreeze" in out and str(mnt) in out, out
        assert "Traceback" not in out
        assert "frozen" not in hook_events(log)
        assert not btrfs_mount.frozen()
        assert not (mnt / "snaps").exists()
    finally:
        _unfreeze(btrfs_mount)
