"""PostgreSQL session hook: backup mode held in one session, and what ends it when the holder dies."""

from __future__ import annotations

import json
import time

import pytest

from tests.fixtures.quiesce import freeze_holder, local_plan, orphaned_session, run_step, wait_until

pytestmark = pytest.mark.slow


def _plan(server, tmp_path, plan_file, **freeze):
    target = {"name": "pg-0", "hook": "postgresql", "params": {**server.conn_params, "mode": "backup"}}
    return plan_file(local_plan([target], [{"name": "d", "path": str(tmp_path)}], **freeze))


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
    args = ("--release-file", str(release), "--result", str(result), "--backup-id", "bk-pg")
    with freeze_holder(plan, ready, *args) as holder:
        # WHILE held: one session in backup mode, its WAL pinned by a temporary slot
        assert _holding(postgres_server) == (1, 1)
        time.sleep(3.5)  # beyond idle_session_timeout (3 s): keepalives keep it
        assert _holding(postgres_server) == (1, 1)
        # WHEN released
        release.touch()
        assert holder.wait(20) == 0, holder.stderr.read()
    # THEN the label came back and nothing is left on the server
    out = json.loads(result.read_text())["targets"][0]
    assert out["method"] == "backup" and "LABEL: snapflow bk-pg" in out["backup_label"]
    assert _holding(postgres_server) == (0, 0)


def test_idle_session_timeout_ends_backup_mode_when_the_client_goes_silent(
    postgres_server, tmp_path, plan_file
):
    # GIVEN a backup-mode hold whose psql stops answering (a half-open stream) and whose holder dies
    plan = _plan(postgres_server, tmp_path, plan_file, keepalive_s=1, deadline_s=120)
    with (
        freeze_holder(plan, tmp_path / "ready") as holder,
        orphaned_session(holder, "psql") as clients,
    ):
        # THEN the server ends the session (backup aborted, temporary slot gone) within ~3x keepalive
        wait_until(
            lambda: _holding(postgres_server) == (0, 0),
            10,
            "the session outlived its idle_session_timeout",
            interval=0.2,
        )
        assert all(c.is_running() for c in clients)


def test_thaw_terminates_an_orphaned_backup_session_and_is_idempotent(postgres_server, tmp_path, plan_file):
    plan = _plan(postgres_server, tmp_path, plan_file, keepalive_s=30, deadline_s=300)
    res = run_step("thaw", "--plan", str(plan))
    assert res.returncode == 0 and json.loads(res.stdout)["thawed"] is False

    with freeze_holder(plan, tmp_path / "ready") as holder, orphaned_session(holder, "psql"):
        assert _holding(postgres_server) == (1, 1)

        first = run_step("thaw", "--plan", str(plan))
        second = run_step("thaw", "--plan", str(plan))
        assert first.returncode == 0 and json.loads(first.stdout)["thawed"] is True
        assert second.returncode == 0 and json.loads(second.stdout)["thawed"] is False
        wait_until(lambda: _holding(postgres_server) == (0, 0), 5, "the thaw left a session", interval=0.1)
