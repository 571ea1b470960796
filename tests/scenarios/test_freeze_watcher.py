"""The paired-hook watcher (POSIX sh) as a local process: release on hangup, on its own deadline, and
the plain release; a thaw that never depends on the holder."""

from __future__ import annotations

import json
import signal

from steps.plan import plan_from_dict
from steps.quiesce.engine import Quiescer, build_hooks
from tests.fixtures.quiesce import freeze_holder, local_plan, run_step, wait_until


def _plan(marker, tmp_path, **freeze):
    """One custom paired hook that creates ``marker`` while frozen."""
    target = {
        "name": "app",
        "hook": "custom",
        "params": {"freeze": [f"touch {marker}"], "thaw": [f"rm -f {marker}"]},
    }
    return local_plan([target], [{"name": "v", "path": str(tmp_path)}], **freeze)


def test_watcher_releases_when_the_holder_is_killed(tmp_path, plan_file):
    marker = tmp_path / "frozen"
    plan = plan_file(_plan(marker, tmp_path, deadline_s=120))
    with freeze_holder(plan, tmp_path / "ready", timeout=20) as holder:
        assert marker.exists()
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        assert wait_until(lambda: not marker.exists(), 5, "watcher did not thaw on hangup") < 5


def test_watcher_releases_on_its_own_deadline_even_if_the_holder_hangs(tmp_path):
    # GIVEN a hold whose holder neither releases nor dies (in-process deadline far away)
    marker = tmp_path / "frozen"
    plan = plan_from_dict(_plan(marker, tmp_path, deadline_s=1))
    hooks = build_hooks(plan, "bk", atomic=lambda _t: True)
    quiescer = Quiescer(hooks, deadline_s=3600)  # only the watcher's deadline (1 s + margin) is left
    quiescer.freeze_all()
    try:
        assert marker.exists()
        # THEN the watcher unfreezes by itself, and the hold check reports it
        assert wait_until(lambda: not marker.exists(), 10, "the watcher's deadline did not release") < 10
        lost = quiescer.check_all()
        assert "deadline" in lost["app"]
    finally:
        quiescer.abort_all("test")


def test_release_runs_the_thaw_and_reports_the_window(tmp_path, plan_file):
    marker = tmp_path / "frozen"
    plan = plan_file(_plan(marker, tmp_path))
    release, result = tmp_path / "release", tmp_path / "result.json"
    args = ("--release-file", str(release), "--result", str(result))
    with freeze_holder(plan, tmp_path / "ready", *args, timeout=20) as holder:
        assert marker.exists()
        release.touch()
        assert holder.wait(20) == 0, holder.stderr.read()
        assert not marker.exists()
        out = json.loads(result.read_text())
        assert out["released_by"] == "release-file" and out["targets"][0]["window_ms"] > 0


def test_thaw_runs_the_unfreeze_without_a_holder(tmp_path, plan_file):
    marker = tmp_path / "frozen"
    marker.touch()
    plan = plan_file(_plan(marker, tmp_path))
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
