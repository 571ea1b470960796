"""MariaDB session hook: FLUSH TABLES WITH READ LOCK held through the client, its guards and its
dead-man layers (the holder killed, the client silenced, the deadline, a queued lock request)."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from steps.drivers.snapshot_local import LocalSnapshotDriver
from steps.plan import plan_from_dict
from steps.quiesce.cut import run_consistent_point
from tests.fixtures.databases import (
    MariaDBServer,
    TransferWorkload,
    bank_state,
    mariadb_writable,
)
from tests.fixtures.quiesce import freeze_holder, local_plan, orphaned_session, run_step

pytestmark = pytest.mark.slow


def _target(server, name="mdb-0", **params):
    return {"name": name, "hook": "mariadb", "params": {**server.conn_params, **params}}


def _plan(server, tmp_path, plan_file, **freeze):
    """A plan holding ``server`` (its one target) with a volume of no interest."""
    return plan_file(local_plan([_target(server)], [{"name": "d", "path": str(tmp_path)}], **freeze))


def _seconds_until_writable(server, bound: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < bound:
        if mariadb_writable(server, wait_s=1):
            return time.monotonic() - t0
    return float("inf")


@pytest.mark.root
def test_atomic_snapshot_under_the_read_lock_keeps_the_total(btrfs_mount, tmp_path):
    # GIVEN MariaDB on a btrfs subvolume, moving money between accounts
    datadir = btrfs_mount.subvolume("mysql")
    server = MariaDBServer(datadir)
    load = None
    try:
        server.start()
        load = TransferWorkload(server).start()
        time.sleep(1.5)
        plan = local_plan(
            [_target(server)],
            [{"name": "mysql", "path": str(datadir)}],
            local_dir=str(btrfs_mount.mountpoint / "snaps"),
        )
        (tmp_path / "plan.json").write_text(json.dumps(plan))

        # WHEN the consistent point runs under the global read lock
        res = run_step("consistent-point", "--plan", str(tmp_path / "plan.json"), "--backup-id", "bk-m")
        time.sleep(0.5)
        load.stop()

        # THEN app-consistent, and the workload kept going after the release
        assert res.returncode == 0, res.stderr
        record = json.loads(res.stdout)
        assert record["verdict"] == "app-consistent", record["reasons"]
        assert record["timeline"]["targets"][0]["method"] == "ftwrl"
        total, transfers = bank_state(server)
        assert total == load.total and transfers > 0

        # AND a fresh server on the snapshot recovers with the total intact
        restored = btrfs_mount.mountpoint / "restored"
        subprocess.run(
            ["btrfs", "subvolume", "snapshot", record["snapshots"][0]["snapshot"], str(restored)],
            check=True,
            capture_output=True,
        )
        copy = MariaDBServer(restored, initialise=False)
        try:
            started, log = copy.try_start()
            assert started, log
            total, transfers_at_cut = bank_state(copy)
            assert total == load.total
            assert 0 < transfers_at_cut <= transfers
        finally:
            copy.cleanup()
    finally:
        if load is not None:
            load.stop()
        server.cleanup()


def test_database_is_writable_again_soon_after_the_holder_is_killed(mariadb_server, tmp_path, plan_file):
    # GIVEN a freeze holding the global read lock
    plan = _plan(mariadb_server, tmp_path, plan_file, keepalive_s=1, deadline_s=120)
    with freeze_holder(plan, tmp_path / "ready") as holder:
        assert not mariadb_writable(mariadb_server, wait_s=1)

        # WHEN the holder is killed outright
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)

        # THEN the database takes writes again within the bound (3x keepalive + slack)
        assert _seconds_until_writable(mariadb_server, bound=5) < 5


def test_wait_timeout_releases_the_lock_when_the_session_client_goes_silent(
    mariadb_server, tmp_path, plan_file
):
    # GIVEN a freeze holding the lock with a 1 s keepalive (wait_timeout 3 s in the held session)
    plan = _plan(mariadb_server, tmp_path, plan_file, keepalive_s=1, deadline_s=120)
    # WHEN the client stops answering (a half-open exec stream) and the holder dies
    with (
        freeze_holder(plan, tmp_path / "ready") as holder,
        orphaned_session(holder, "mariadb", "mysql") as clients,
    ):
        t0 = time.monotonic()

        # THEN the server ends the silent session by itself: writable within ~3x keepalive
        waited = _seconds_until_writable(mariadb_server, bound=10)
        assert waited < 10
        assert all(c.is_running() for c in clients), "the client must still be alive (half-open)"
        assert time.monotonic() - t0 >= 1.5, "released too early to be the session limit"


def test_thaw_ends_a_hold_whose_holder_died_and_is_idempotent(mariadb_server, tmp_path, plan_file):
    # GIVEN nothing frozen: thaw is a no-op that succeeds, twice
    plan = _plan(mariadb_server, tmp_path, plan_file, keepalive_s=20, deadline_s=300)
    for _ in range(2):
        res = run_step("thaw", "--plan", str(plan))
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout.splitlines()[0])["thawed"] is False

    # GIVEN a lock whose holder died while its client is stuck (wait_timeout 60 s would be slow)
    with (
        freeze_holder(plan, tmp_path / "ready") as holder,
        orphaned_session(holder, "mariadb", "mysql"),
    ):
        assert not mariadb_writable(mariadb_server, wait_s=1)

        # WHEN thaw runs (twice)
        first = run_step("thaw", "--plan", str(plan))
        second = run_step("thaw", "--plan", str(plan))

        # THEN the first ended the holding session, the second found nothing, and writes go through
        assert first.returncode == 0, first.stderr
        assert json.loads(first.stdout.splitlines()[0])["thawed"] is True
        assert second.returncode == 0 and json.loads(second.stdout.splitlines()[0])["thawed"] is False
        assert mariadb_writable(mariadb_server, wait_s=2)


def test_freeze_releases_at_its_deadline(mariadb_server, tmp_path, plan_file):
    # GIVEN a freeze with a 1.5 s deadline and nobody releasing it
    plan = _plan(mariadb_server, tmp_path, plan_file, keepalive_s=1, deadline_s=60)
    result = tmp_path / "result.json"
    t0 = time.monotonic()

    # WHEN it runs
    res = run_step("freeze", "--plan", str(plan), "--deadline", "1.5", "--result", str(result), timeout=60)

    # THEN it released by itself at the deadline and the database takes writes
    assert res.returncode == 0, res.stderr
    out = json.loads(result.read_text())
    assert out["released_by"] == "deadline"
    assert out["targets"][0]["released_by"] == "deadline"
    assert 1.4 <= out["targets"][0]["window_ms"] / 1000 < 5
    assert time.monotonic() - t0 < 20
    assert mariadb_writable(mariadb_server, wait_s=1)


def test_freeze_holds_until_the_release_file_appears(mariadb_server, tmp_path, plan_file):
    plan = _plan(mariadb_server, tmp_path, plan_file, keepalive_s=1, deadline_s=60)
    release, result = tmp_path / "release", tmp_path / "result.json"
    args = ("--release-file", str(release), "--result", str(result))
    with freeze_holder(plan, tmp_path / "ready", *args) as holder:
        time.sleep(2.5)  # longer than the session limit: keepalives keep the hold
        assert not mariadb_writable(mariadb_server, wait_s=1)
        release.touch()
        assert holder.wait(20) == 0, holder.stderr.read()
        assert json.loads(result.read_text())["released_by"] == "release-file"
        assert mariadb_writable(mariadb_server, wait_s=1)


def test_sigterm_releases_the_hold(mariadb_server, tmp_path, plan_file):
    plan = _plan(mariadb_server, tmp_path, plan_file, keepalive_s=1, deadline_s=60)
    result = tmp_path / "result.json"
    with freeze_holder(plan, tmp_path / "ready", "--result", str(result)) as holder:
        holder.send_signal(signal.SIGTERM)
        assert holder.wait(20) == 0, holder.stderr.read()
        assert json.loads(result.read_text())["released_by"] == "SIGTERM"
        assert mariadb_writable(mariadb_server, wait_s=1)


def test_lock_request_queued_behind_a_long_query_is_killed_by_the_watchdog(
    mariadb_server, tmp_path, plan_file
):
    # GIVEN a long-running write statement (the global read lock has to wait for it)
    mariadb_server.sql(
        "CREATE DATABASE app; CREATE TABLE app.t (x INT) ENGINE=InnoDB; INSERT INTO app.t VALUES (1);"
        " CREATE TABLE app.other (y INT) ENGINE=InnoDB"
    )
    long_query = subprocess.Popen(
        [*mariadb_server.client(), "-e", "UPDATE app.t SET x = x + 0 * SLEEP(60)"],
        env=mariadb_server.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        plan = plan_file(
            local_plan(
                [_target(mariadb_server, watchdog_s=2, lock_wait_timeout_s=60)],
                [{"name": "d", "path": str(tmp_path)}],
                keepalive_s=1,
                deadline_s=60,
            )
        )

        # WHEN a freeze asks for the global read lock (queued behind it, it would block every writer)
        t0 = time.monotonic()
        res = run_step("freeze", "--plan", str(plan), "--deadline", "30", timeout=60)
        elapsed = time.monotonic() - t0

        # THEN the watchdog killed the lock request: the freeze fails (exit 4) quickly, nothing stalls
        assert res.returncode == 4, res.stderr
        assert "watchdog" in res.stderr
        assert elapsed < 15
        mariadb_server.sql("SET SESSION lock_wait_timeout = 3; INSERT INTO app.other VALUES (1)", timeout=10)
        assert long_query.poll() is None, "the long query itself must not be killed"
    finally:
        long_query.kill()
        long_query.wait()


def test_hook_failure_on_target_two_of_three_thaws_target_one(mariadb_server, tmp_path, plan_file):
    # GIVEN three targets: MariaDB, a custom hook that fails, a custom hook that would freeze
    marker = tmp_path / "third.frozen"
    targets = [
        _target(mariadb_server, name="one"),
        {
            "name": "two",
            "hook": "custom",
            "params": {"freeze": ["echo refusing >&2; exit 3"], "thaw": ["true"]},
        },
        {
            "name": "three",
            "hook": "custom",
            "params": {"freeze": [f"touch {marker}"], "thaw": [f"rm -f {marker}"]},
        },
    ]
    plan = plan_file(
        local_plan(targets, [{"name": "d", "path": str(tmp_path)}], keepalive_s=1, deadline_s=60)
    )

    # WHEN freeze runs
    res = run_step("freeze", "--plan", str(plan), timeout=60)

    # THEN it exits 4 naming target two, target one is thawed, target three was never frozen
    assert res.returncode == 4
    assert "two" in res.stderr and "refusing" in res.stderr
    assert mariadb_writable(mariadb_server, wait_s=1)
    assert (
        mariadb_server.sql(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = 'snapflow'"
            " AND ID <> CONNECTION_ID()"
        )
        == "0"
    )
    assert not marker.exists()


@pytest.mark.root
def test_deadline_passing_before_the_cut_gives_a_crash_consistent_verdict(btrfs_mount, tmp_path):
    # GIVEN MariaDB on btrfs and a driver whose cut starts only after the freeze deadline
    datadir = btrfs_mount.subvolume("mysql")
    server = MariaDBServer(datadir)
    writable_before_cut = []

    class LateDriver(LocalSnapshotDriver):
        def cut(self, volumes, labels, defer=None):
            time.sleep(2.5)
            writable_before_cut.append(mariadb_writable(server, wait_s=1))
            return super().cut(volumes, labels, defer)

    try:
        server.start()
        plan = plan_from_dict(
            local_plan(
                [_target(server)], [{"name": "mysql", "path": str(datadir)}], deadline_s=1.0, keepalive_s=1
            )
        )
        # WHEN the consistent point runs
        record = run_consistent_point(plan, "bk-late", LateDriver(local_dir=btrfs_mount.mountpoint / "snaps"))

        # THEN the deadline released the lock before the cut, and the verdict says crash-consistent
        assert writable_before_cut == [True]
        assert record["deadline_passed"] is True
        assert record["verdict"] == "crash-consistent"
        assert any("deadline" in r for r in record["reasons"]), record["reasons"]
        assert record["timeline"]["targets"][0]["released_by"] == "deadline"
    finally:
        server.cleanup()


def test_credentials_never_appear_in_records_or_errors(mariadb_server, tmp_path, plan_file):
    from tests.fixtures.databases import MARIADB_PASSWORD

    plan = _plan(mariadb_server, tmp_path, plan_file)
    res = run_step("thaw", "--plan", str(plan))
    assert res.returncode == 0
    assert MARIADB_PASSWORD not in res.stdout + res.stderr + plan.read_text()
    # a password given inline is refused with a one-line error naming the field
    bad = plan_file(
        local_plan([_target(mariadb_server, password="x")], [{"name": "d", "path": str(tmp_path)}]),
        name="bad.json",
    )
    res = run_step("thaw", "--plan", str(bad))
    assert res.returncode == 2
    assert "params.password" in res.stderr and len(res.stderr.strip().splitlines()) == 1
