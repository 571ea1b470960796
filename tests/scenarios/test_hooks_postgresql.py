"""PostgreSQL session hook: backup mode held in one session, and what ends it when the holder dies."""

from __future__ import annotations

import json
import signal
import time

import psutil
import pytest

from tests.fixtures.quiesce import local_plan, run_step, start_step

pytestmark = pytest.mark.slow


def _plan(server, tmp_path, plan_file, **freeze):
    target = {"name": "pg-0", "hook": "postgresql", "params": {**server.conn_params, "mode": "backup"}}
    return plan_file(local_plan([target], [{"name": "d", "path": str(tmp_path)}], **freeze))


def _wait_ready(proc, ready, timeout=30):
    deadline = time.monotonic() + timeout
    while not ready.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.05)


def _holding(server) -> tuple[int, int]:
    """(Snapflow sessions, Snapflow replication slots) on the server."""
    sessions = int(
        server.sql("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'snapflow-hold:%'")
    )
    slots = int(server.sql("SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'snapflow_%'"))
    return sessions, slots


def test_backup_mode_hold_returns_the_label_and_drops_the_slot(postgres_server, tmp_path, plan_file):
    # GIVEN a freeze in backup mode
    plan = _plan(postgres_server, tmp_path, plan_file, keepalive_s=1, deadline_s=60)
    ready, release, result = tmp_path / "ready", tmp_path / "release", tmp_path / "result.json"
    holder = start_step(
        "freeze",
        "--plan",
        str(plan),
        "--ready-file",
        str(ready),
        "--release-file",
        str(release),
        "--result",
        str(result),
        "--backup-id",
        "bk-pg",
    )
    try:
        _wait_ready(holder, ready)
        # WHILE held: one session in backup mode, its WAL pinned by a temporary slot
        assert _holding(postgres_server) == (1, 1)
        time.sleep(3.5)  # beyond idle_session_timeout (3 s): keepalives keep it
        assert _holding(postgres_server) == (1, 1)
        # WHEN released
        release.touch()
        assert holder.wait(20) == 0, holder.stderr.read()
    finally:
        if holder.poll() is None:
            holder.kill()
    # THEN the label came back and nothing is left on the server
    out = json.loads(result.read_text())["targets"][0]
    assert out["method"] == "backup" and "LABEL: snapflow bk-pg" in out["backup_label"]
    assert _holding(postgres_server) == (0, 0)


def test_idle_session_timeout_ends_backup_mode_when_the_client_goes_silent(
    postgres_server, tmp_path, plan_file
):
    # GIVEN a backup-mode hold whose psql stops answering (a half-open stream) and whose holder dies
    plan = _plan(postgres_server, tmp_path, plan_file, keepalive_s=1, deadline_s=120)
    ready = tmp_path / "ready"
    holder = start_step("freeze", "--plan", str(plan), "--ready-file", str(ready))
    clients = []
    try:
        _wait_ready(holder, ready)
        clients = [p for p in psutil.Process(holder.pid).children(recursive=True) if p.name() == "psql"]
        assert clients
        for c in clients:
            c.send_signal(signal.SIGSTOP)
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)

        # THEN the server ends the session (backup aborted, temporary slot gone) within ~3x keepalive
        t0 = time.monotonic()
        while _holding(postgres_server) != (0, 0):
            assert time.monotonic() - t0 < 10, "the session outlived its idle_session_timeout"
            time.sleep(0.2)
        assert all(c.is_running() for c in clients)
    finally:
        for c in clients:
            try:
                c.send_signal(signal.SIGKILL)
                c.send_signal(signal.SIGCONT)
            except psutil.NoSuchProcess:
                pass
        if holder.poll() is None:
            holder.kill()


def test_thaw_terminates_an_orphaned_backup_session_and_is_idempotent(postgres_server, tmp_path, plan_file):
    plan = _plan(postgres_server, tmp_path, plan_file, keepalive_s=30, deadline_s=300)
    res = run_step("thaw", "--plan", str(plan))
    assert res.returncode == 0 and json.loads(res.stdout)["thawed"] is False

    ready = tmp_path / "ready"
    holder = start_step("freeze", "--plan", str(plan), "--ready-file", str(ready))
    clients = []
    try:
        _wait_ready(holder, ready)
        clients = [p for p in psutil.Process(holder.pid).children(recursive=True) if p.name() == "psql"]
        for c in clients:
            c.send_signal(signal.SIGSTOP)
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        assert _holding(postgres_server) == (1, 1)

        first = run_step("thaw", "--plan", str(plan))
        second = run_step("thaw", "--plan", str(plan))
        assert first.returncode == 0 and json.loads(first.stdout)["thawed"] is True
        assert second.returncode == 0 and json.loads(second.stdout)["thawed"] is False
        t0 = time.monotonic()
        while _holding(postgres_server) != (0, 0):
            assert time.monotonic() - t0 < 5
            time.sleep(0.1)
    finally:
        for c in clients:
            try:
                c.send_signal(signal.SIGKILL)
                c.send_signal(signal.SIGCONT)
            except psutil.NoSuchProcess:
                pass
        if holder.poll() is None:
            holder.kill()
