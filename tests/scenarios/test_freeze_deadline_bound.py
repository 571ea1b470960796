"""The stated bound on a hold, measured: whatever happens to the holder, a target is released at most
``deadline + THAW_BOUND`` seconds after its hold began (docs/consistency.md, "The bound").

For every hook kind that can hold here — fsfreeze and custom paired hooks (the watcher), PostgreSQL
and MariaDB (the session's own limits) — the holder (the ``freeze`` step) is killed outright and
stopped with SIGSTOP; a killed holder stuck in uninterruptible sleep (it wrote to the file system it
froze) is reproduced for real with fsfreeze. Each test measures when the hold actually ended, from
the ``quiesced`` time the holder wrote, and checks it against the bound. MongoDB's hook is paired
(the same watcher as fsfreeze and custom), but no MongoDB server can run here, so it has no test of
its own.

The deadline is short (3 s for sessions, 5 s for watchers) and the session keepalive long enough
(2 s: a plain 3x-keepalive idle limit would be 6 s) that the bound can only hold because the limits
count towards the deadline.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import psutil
import pytest

from tests.fixtures.quiesce import ROOT, freeze_holder, local_plan, orphaned_session, wait_until

pytestmark = pytest.mark.slow

THAW_BOUND_S = 2.0  # as documented: released by deadline + 2 s
SESSION_DEADLINE_S, SESSION_KEEPALIVE_S = 3.0, 2.0
WATCHER_DEADLINE_S = 5.0


def _quiesced(ready: Path) -> float:
    stamp = json.loads(ready.read_text())["targets"][0]["quiesced"]
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _held_for(quiesced: float, held: Callable[[], bool], bound: float, interval: float = 0.05) -> float:
    """Seconds from ``quiesced`` until ``held()`` turned false (fails beyond ``bound`` from now)."""
    wait_until(lambda: not held(), bound, f"still held {bound} s later", interval=interval)
    return time.time() - quiesced


def _check_bound(held_s: float, deadline_s: float) -> None:
    print(f"held {held_s:.3f} s for a {deadline_s:g} s deadline")
    assert held_s <= deadline_s + THAW_BOUND_S, f"held {held_s:.2f} s for a {deadline_s:g} s deadline"


# -- paired hooks: the watcher ---------------------------------------------------------------------


def _custom_plan(marker: Path, tmp_path: Path, plan_file) -> Path:
    target = {
        "name": "app",
        "hook": "custom",
        "params": {"freeze": [f"touch {marker}"], "thaw": [f"rm -f {marker}"]},
    }
    vol = tmp_path / "v"
    vol.mkdir()
    return plan_file(local_plan([target], [{"name": "v", "path": str(vol)}], deadline_s=WATCHER_DEADLINE_S))


def test_custom_paired_hook_killed_holder_releases_at_once(tmp_path, plan_file):
    marker = tmp_path / "frozen"
    ready = tmp_path / "ready"
    with freeze_holder(_custom_plan(marker, tmp_path, plan_file), ready) as holder:
        assert marker.exists()
        killed = time.time()
        holder.send_signal(signal.SIGKILL)
        held = _held_for(_quiesced(ready), marker.exists, WATCHER_DEADLINE_S + 5, interval=0.02)
    assert time.time() - killed < 2
    _check_bound(held, WATCHER_DEADLINE_S)


def test_custom_paired_hook_stopped_holder_is_released_by_the_watcher_within_the_bound(tmp_path, plan_file):
    marker = tmp_path / "frozen"
    ready = tmp_path / "ready"
    try:
        with freeze_holder(_custom_plan(marker, tmp_path, plan_file), ready) as holder:
            holder.send_signal(signal.SIGSTOP)  # its deadline timer stops too; its pipes stay open
            held = _held_for(_quiesced(ready), marker.exists, WATCHER_DEADLINE_S + 5, interval=0.02)
            assert holder.poll() is None
    finally:
        marker.unlink(missing_ok=True)
    assert held >= WATCHER_DEADLINE_S - 0.5, "released before the deadline: not the watcher's doing"
    _check_bound(held, WATCHER_DEADLINE_S)


def _fs_plan(fs, tmp_path: Path, plan_file) -> Path:
    target = {"name": "fs", "hook": "fsfreeze", "params": {"mount": str(fs.mountpoint)}}
    (fs.mountpoint / "vol").mkdir(exist_ok=True)
    return plan_file(
        local_plan(
            [target],
            [{"name": "vol", "path": str(fs.mountpoint / "vol")}],
            deadline_s=WATCHER_DEADLINE_S,
            local_dir=str(tmp_path / "snaps"),
        )
    )


def _unfreeze(fs) -> None:
    subprocess.run(["fsfreeze", "-u", str(fs.mountpoint)], capture_output=True)


@pytest.mark.root
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP], ids=["SIGKILL", "SIGSTOP"])
def test_fsfreeze_holder_killed_or_stopped_is_thawed_within_the_bound(btrfs_mount, tmp_path, plan_file, sig):
    ready = tmp_path / "ready"
    try:
        with freeze_holder(_fs_plan(btrfs_mount, tmp_path, plan_file), ready) as holder:
            assert btrfs_mount.frozen()
            signalled = time.time()
            holder.send_signal(sig)
            held = _held_for(_quiesced(ready), btrfs_mount.frozen, WATCHER_DEADLINE_S + 5)
    finally:
        _unfreeze(btrfs_mount)
    if sig == signal.SIGKILL:  # end of the watcher's input: at once
        assert time.time() - signalled < 2
    else:  # nothing tells the watcher: its own deadline
        assert held >= WATCHER_DEADLINE_S - 0.5
    _check_bound(held, WATCHER_DEADLINE_S)


STUCK_HOLDER = """
import json, sys
from steps.drivers.files import load_plan
from steps.quiesce.engine import Quiescer, build_hooks
from steps.quiesce.verdict import iso

plan = load_plan(sys.argv[1])
quiescer = Quiescer(build_hooks(plan, "bk", atomic=lambda _t: False), plan.freeze.deadline_s)
quiescer.freeze_all()
with open(sys.argv[2], "w") as f:
    json.dump({"targets": [{"quiesced": iso(quiescer.hooks[0].quiesced)}]}, f)
with open(sys.argv[3], "w") as f:  # on the frozen file system: uninterruptible sleep until the thaw
    f.write("late\\n")
"""


@pytest.mark.root
def test_fsfreeze_holder_killed_while_stuck_writing_to_the_frozen_file_system_is_thawed_within_the_bound(
    btrfs_mount, tmp_path, plan_file
):
    # GIVEN a holder that froze the file system, then wrote to it: stuck in uninterruptible sleep
    ready = tmp_path / "ready"
    plan = _fs_plan(btrfs_mount, tmp_path, plan_file)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            STUCK_HOLDER,
            str(plan),
            str(ready),
            str(btrfs_mount.mountpoint / "vol" / "late"),
        ],
        cwd=ROOT,
    )
    try:
        wait_until(ready.exists, 30, "the holder never froze")
        proc = psutil.Process(holder.pid)
        wait_until(lambda: proc.status() == psutil.STATUS_DISK_SLEEP, 5, "the holder did not block")

        # WHEN it is killed: it cannot die (nor close its pipes) while its write waits for the thaw
        holder.send_signal(signal.SIGKILL)
        time.sleep(0.3)
        assert holder.poll() is None, "a writer on a frozen file system cannot die before the thaw"

        # THEN the watcher's own deadline thaws, within the bound; the write completes, the holder dies
        held = _held_for(_quiesced(ready), btrfs_mount.frozen, WATCHER_DEADLINE_S + 5)
        assert held >= WATCHER_DEADLINE_S - 0.5
        _check_bound(held, WATCHER_DEADLINE_S)
        assert holder.wait(10) == -signal.SIGKILL
    finally:
        _unfreeze(btrfs_mount)
        holder.kill()
        holder.wait(10)


# -- session hooks: the database's own limits ------------------------------------------------------


def _session_plan(target: dict, tmp_path: Path, plan_file) -> Path:
    return plan_file(
        local_plan(
            [target],
            [{"name": "d", "path": str(tmp_path)}],
            deadline_s=SESSION_DEADLINE_S,
            keepalive_s=SESSION_KEEPALIVE_S,
        )
    )


def _session_case(plan: Path, tmp_path: Path, how: str, held: Callable[[], bool], clients: tuple[str, ...]):
    """Hold, then kill the holder behind a half-open stream (its client stopped) or stop the holder;
    returns how long the hold lasted from its quiesce."""
    ready = tmp_path / "ready"
    with freeze_holder(plan, ready) as holder:
        assert held()
        if how == "killed":
            with orphaned_session(holder, *clients) as stopped:
                seconds = _held_for(_quiesced(ready), held, SESSION_DEADLINE_S + 8, interval=0.1)
                assert all(c.is_running() for c in stopped), "the client must still be there (half-open)"
        else:
            holder.send_signal(signal.SIGSTOP)
            seconds = _held_for(_quiesced(ready), held, SESSION_DEADLINE_S + 8, interval=0.1)
            assert holder.poll() is None
    return seconds


@pytest.mark.parametrize("how", ["killed", "stopped"])
def test_postgresql_backup_mode_ends_within_the_bound_when_the_holder_is_killed_or_stopped(
    postgres_server, tmp_path, plan_file, how
):
    target = {
        "name": "pg-0",
        "hook": "postgresql",
        "params": {**postgres_server.conn_params, "mode": "backup"},
    }

    def held() -> bool:
        return (
            postgres_server.sql(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'snapflow-hold:default/db/pg-0'"
            )
            != "0"
        )

    seconds = _session_case(_session_plan(target, tmp_path, plan_file), tmp_path, how, held, ("psql",))
    assert seconds >= SESSION_DEADLINE_S - 0.5, "ended before the deadline: not the limit's doing"
    _check_bound(seconds, SESSION_DEADLINE_S)
    assert postgres_server.sql("SELECT count(*) FROM pg_replication_slots") == "0"


@pytest.mark.parametrize("how", ["killed", "stopped"])
def test_mariadb_read_lock_ends_within_the_bound_when_the_holder_is_killed_or_stopped(
    mariadb_server, tmp_path, plan_file, how
):
    target = {"name": "mdb-0", "hook": "mariadb", "params": dict(mariadb_server.conn_params)}

    def held() -> bool:
        return mariadb_server.sql("SELECT IS_USED_LOCK('snapflow-hold:default/db/mdb-0') IS NOT NULL") == "1"

    plan = _session_plan(target, tmp_path, plan_file)
    seconds = _session_case(plan, tmp_path, how, held, ("mariadb", "mysql"))
    assert seconds >= SESSION_DEADLINE_S - 0.5, "ended before the deadline: not the limit's doing"
    _check_bound(seconds, SESSION_DEADLINE_S)
