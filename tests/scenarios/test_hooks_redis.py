"""Redis prepare hook against a real server: the background save it waits for holds what was written
before the freeze, nothing is held or changed on the server, and failures end the freeze quickly."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time

import pytest

from steps.plan import plan_from_dict
from steps.quiesce.engine import build_hooks
from tests.fixtures.quiesce import freeze_holder, local_plan, run_step, wait_until
from tests.fixtures.redis import REDIS_PASSWORD, RedisServer, redis_workdir

pytestmark = pytest.mark.slow


def _plan_dict(server, tmp_path, **params):
    target = {"name": "redis-0", "hook": "redis", "params": {**server.conn_params, **params}}
    return local_plan([target], [{"name": "d", "path": str(server.datadir)}], keepalive_s=1, deadline_s=30)


def _plan(server, tmp_path, plan_file, **params):
    return plan_file(_plan_dict(server, tmp_path, **params))


def _saved_value(server, key: str) -> str:
    """``key`` as a fresh server loads it from a copy of the RDB file now on disk ("" when absent)."""
    base = redis_workdir()
    try:
        copy = RedisServer(base)
        shutil.copy2(server.datadir / "dump.rdb", copy.datadir / "dump.rdb")
        copy.start()
        try:
            return copy.cli("GET", key)
        finally:
            copy.kill()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _untouched(server, before: dict[str, str]) -> None:
    """No save left running and the persistence settings as they were before the freeze."""
    wait_until(lambda: server.persistence()["rdb_bgsave_in_progress"] == "0", 10, "a save is still running")
    assert {k: server.config(k) for k in before} == before


SETTINGS = ("save", "appendonly", "dir", "dbfilename", "rdb-key-save-delay")


def test_the_rdb_on_disk_holds_a_key_written_just_before_the_freeze(redis_server, tmp_path, plan_file):
    # GIVEN a server that never saved, and a key written just before the freeze
    settings = {k: redis_server.config(k) for k in SETTINGS}
    assert not (redis_server.datadir / "dump.rdb").exists()
    redis_server.cli("SET", "order:1", "paid")
    plan = _plan(redis_server, tmp_path, plan_file)
    release, result = tmp_path / "release", tmp_path / "result.json"

    # WHEN a freeze is held
    with freeze_holder(
        plan, tmp_path / "ready", "--release-file", str(release), "--result", str(result)
    ) as h:
        # THEN the saved file already holds the key, and writes go on during the hold (nothing held)
        assert _saved_value(redis_server, "order:1") == "paid"
        redis_server.cli("SET", "order:2", "during-hold", timeout=2)
        release.touch()
        assert h.wait(20) == 0, h.stderr.read()

    # AND the hold is reported as a bgsave, and the server is as it was
    out = json.loads(result.read_text())
    assert out["released_by"] == "release-file"
    assert out["targets"][0]["method"] == "bgsave"
    assert redis_server.cli("GET", "order:2") == "during-hold"
    _untouched(redis_server, settings)


def test_a_save_already_running_is_waited_for_and_a_new_one_holds_the_late_key(redis_server, tmp_path):
    # GIVEN a slow background save (started before the key below was written) still running
    for i in range(20):
        redis_server.cli("SET", f"k{i}", "v")
    redis_server.cli("CONFIG", "SET", "rdb-key-save-delay", "100000")  # 0.1 s a key: ~2 s in all
    assert redis_server.cli("BGSAVE") == "Background saving started"
    redis_server.cli("CONFIG", "SET", "rdb-key-save-delay", "0")
    redis_server.cli("SET", "late", "written-after-the-save-began")
    saves = int(redis_server.persistence()["rdb_saves"])
    assert redis_server.persistence()["rdb_bgsave_in_progress"] == "1"

    # WHEN the hook runs
    hooks = build_hooks(plan_from_dict(_plan_dict(redis_server, tmp_path)), "bk-r", lambda _t: True)
    hooks[0].freeze()

    # THEN it waited for that save, then made its own: the late key is in the file on disk
    info = redis_server.persistence()
    assert int(info["rdb_saves"]) >= saves + 1
    assert info["rdb_bgsave_in_progress"] == "0"
    assert _saved_value(redis_server, "late") == "written-after-the-save-began"


def test_a_freeze_right_after_another_save_finishes_in_the_same_second(redis_server, tmp_path):
    # GIVEN a save that just finished (LASTSAVE is this second)
    redis_server.cli("SET", "a", "1")
    assert redis_server.cli("BGSAVE") == "Background saving started"
    wait_until(lambda: redis_server.persistence()["rdb_bgsave_in_progress"] == "0", 10, "first save")
    redis_server.cli("SET", "b", "2")
    hooks = build_hooks(plan_from_dict(_plan_dict(redis_server, tmp_path)), "bk-r", lambda _t: True)

    # WHEN the hook runs at once
    t0 = time.monotonic()
    hooks[0].freeze()

    # THEN it returns as soon as its own save finished (not at its timeout), with the new key saved
    assert time.monotonic() - t0 < 2
    assert _saved_value(redis_server, "b") == "2"


def test_a_failing_save_fails_the_freeze_quickly_with_the_reason(redis_server, tmp_path, plan_file):
    # GIVEN a server whose data directory it cannot write (saves fail)
    redis_server.cli("SET", "a", "1")
    redis_server.datadir.chmod(0o555)
    probe = subprocess.run(["runuser", "-u", "redis", "--", "test", "-w", str(redis_server.datadir)])
    if probe.returncode == 0:
        pytest.fail("the redis user can still write its data directory")
    plan = _plan(redis_server, tmp_path, plan_file)

    # WHEN a freeze runs
    t0 = time.monotonic()
    res = run_step("freeze", "--plan", str(plan), "--deadline", "1", timeout=60)

    # THEN it fails (exit 4) well before the hook's timeout, saying the save failed
    assert res.returncode == 4, res.stderr
    assert "background save failed" in res.stderr
    assert time.monotonic() - t0 < 8
    assert redis_server.persistence()["rdb_last_bgsave_status"] == "err"


def test_a_wrong_password_fails_the_freeze_without_showing_a_password(redis_server, tmp_path, plan_file):
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not-the-password\n")
    plan = _plan(redis_server, tmp_path, plan_file, password_file=str(wrong))
    res = run_step("freeze", "--plan", str(plan), "--deadline", "1", timeout=60)
    assert res.returncode == 4
    assert "WRONGPASS" in res.stderr or "NOAUTH" in res.stderr, res.stderr
    assert "not-the-password" not in res.stdout + res.stderr
    assert REDIS_PASSWORD not in res.stdout + res.stderr + plan.read_text()


def test_server_is_never_left_changed_when_the_holder_is_killed(redis_server, tmp_path, plan_file):
    # GIVEN a held freeze
    settings = {k: redis_server.config(k) for k in SETTINGS}
    plan = _plan(redis_server, tmp_path, plan_file)
    with freeze_holder(plan, tmp_path / "ready") as holder:
        # WHEN the holder is killed outright
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        # THEN the server takes writes and its settings are unchanged
        redis_server.cli("SET", "after-kill", "ok", timeout=2)
        _untouched(redis_server, settings)

    # AND thaw finds nothing to undo, twice, and succeeds
    for _ in range(2):
        res = run_step("thaw", "--plan", str(plan))
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout.splitlines()[0])["thawed"] is False
