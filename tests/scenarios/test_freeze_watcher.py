"""The paired-hook watcher (POSIX sh) as a local process: release on hangup, on its own deadline, and
the plain release; a thaw that never depends on the holder."""

from __future__ import annotations

import json
import signal
import time

from steps.plan import plan_from_dict
from steps.quiesce.engine import Quiescer, build_hooks
from tests.fixtures.quiesce import local_plan, run_step, start_step


def _custom(marker, **params):
    return {
        "name": "app",
        "hook": "custom",
        "params": {"freeze": [f"touch {marker}"], "thaw": [f"rm -f {marker}"], **params},
    }


def _wait(cond, bound, what):
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < bound, what
        time.sleep(0.05)
    return time.monotonic() - t0


def test_watcher_releases_when_the_holder_is_killed(tmp_path, plan_file):
    marker = tmp_path / "frozen"
    plan = plan_file(local_plan([_custom(marker)], [{"name": "v", "path": str(tmp_path)}], deadline_s=120))
    ready = tmp_path / "ready"
    holder = start_step("freeze", "--plan", str(plan), "--ready-file", str(ready))
    try:
        _wait(ready.exists, 20, "never ready")
        assert marker.exists()
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        assert _wait(lambda: not marker.exists(), 5, "watcher did not thaw on hangup") < 5
    finally:
        if holder.poll() is None:
            holder.kill()


def test_watcher_releases_on_its_own_deadline_even_if_the_holder_hangs(tmp_path):
    # GIVEN a hold whose holder neither releases nor dies (in-process deadline far away)
    marker = tmp_path / "frozen"
    plan = plan_from_dict(local_plan([_custom(marker)], [{"name": "v", "path": str(tmp_path)}], deadline_s=1))
    hooks = build_hooks(plan, "bk", atomic=lambda _t: True)
    quiescer = Quiescer(hooks, deadline_s=3600)  # only the watcher's deadline (1 s + margin) is left
    quiescer.freeze_all()
    try:
        assert marker.exists()
        # THEN the watcher unfreezes by itself, and the hold check reports it
        assert _wait(lambda: not marker.exists(), 10, "the watcher's deadline did not release") < 10
        lost = quiescer.check_all()
        assert "deadline" in lost["app"]
    finally:
        quiescer.abort_all("test")


def test_release_runs_the_thaw_and_reports_the_window(tmp_path, plan_file):
    marker = tmp_path / "frozen"
    plan = plan_file(local_plan([_custom(marker)], [{"name": "v", "path": str(tmp_path)}]))
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
    )
    try:
        _wait(ready.exists, 20, "never ready")
        assert marker.exists()
        release.touch()
        assert holder.wait(20) == 0, holder.stderr.read()
        assert not marker.exists()
        out = json.loads(result.read_text())
        assert out["released_by"] == "release-file" and out["targets"][0]["window_ms"] > 0
    finally:
        if holder.poll() is None:
            holder.kill()


def test_thaw_runs_the_unfreeze_without_a_holder(tmp_path, plan_file):
    marker = tmp_path / "frozen"
    marker.touch()
    plan = plan_file(local_plan([_custom(marker)], [{"name": "v", "path": str(tmp_path)}]))
    res = run_step("thaw", "--plan", str(plan))
    assert res.returncode == 0 and not marker.exists()
    assert run_step("thaw", "--plan", str(plan)).returncode == 0


def test_bad_plans_fail_with_one_line_naming_the_field(tmp_path, plan_file):
    plan = plan_file(
        local_plan([{"name": "fs", "hook": "fsfreeze", "params": {}}], [{"name": "v", "path": str(tmp_path)}])
    )
    res = run_step("freeze", "--plan", str(plan))
    assert res.returncode == 2
    assert "params.mount" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = run_step("consistent-point", "--plan", str(tmp_path / "missing.json"), "--backup-id", "b")
    assert res.returncode == 2 and "--plan" in res.stderr
