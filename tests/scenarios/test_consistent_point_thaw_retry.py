"""A paired hook whose thaw command fails: the thaw is retried a few times; the hold counts as released
only once a thaw succeeded, and a thaw that keeps failing stops the workflow (exit 4) instead of
recording a consistent point while the application is still frozen."""

from __future__ import annotations

import json
import time

import pytest

from tests.fixtures.quiesce import local_plan, run_step, start_step, wait_ready


@pytest.fixture
def frozen_marker(tmp_path):
    """The marker a custom hook's freeze creates; removed at the end even when the thaw never did."""
    marker = tmp_path / "frozen"
    yield marker
    marker.unlink(missing_ok=True)


def _plan(plan_file, tmp_path, marker, thaw: str, **freeze):
    volume = tmp_path / "vol"
    volume.mkdir(exist_ok=True)
    (volume / "data").write_text("payload\n")
    target = {
        "name": "app",
        "hook": "custom",
        "params": {"freeze": [f"touch {marker}"], "thaw": [thaw], "non_atomic_ok": True},
    }
    return plan_file(
        local_plan(
            [target], [{"name": "v", "path": str(volume)}], local_dir=str(tmp_path / "snaps"), **freeze
        )
    )


def _error_lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_a_thaw_that_fails_once_is_retried_and_the_release_recorded(tmp_path, plan_file, frozen_marker):
    # GIVEN a custom hook whose thaw command fails the first time only
    attempt = tmp_path / "thaw-attempted"
    thaw = f"if [ -e {attempt} ]; then rm -f {frozen_marker}; else touch {attempt}; echo busy >&2; exit 1; fi"
    plan = _plan(plan_file, tmp_path, frozen_marker, thaw)
    out = tmp_path / "cp.json"

    # WHEN a consistent point is taken
    res = run_step("consistent-point", "--plan", str(plan), "--backup-id", "bk-retry", "--out", str(out))

    # THEN the thaw was retried, the application is released, and the record says so
    assert res.returncode == 0, res.stderr
    assert attempt.exists() and not frozen_marker.exists()
    record = json.loads(out.read_text())
    target = record["timeline"]["targets"][0]
    assert target["released_by"] == "release" and target["thaw_attempts"] == 2
    assert record["verdict"] == "app-consistent", record["reasons"]
    assert any("retried" in note and "attempt 2" in note for note in record["notes"])


def test_a_thaw_that_always_fails_exits_4_and_records_no_release(tmp_path, plan_file, frozen_marker):
    # GIVEN a custom hook whose thaw command always fails
    plan = _plan(plan_file, tmp_path, frozen_marker, "echo device-busy >&2; exit 3")
    out = tmp_path / "cp.json"

    # WHEN a consistent point is taken
    started = time.monotonic()
    res = run_step("consistent-point", "--plan", str(plan), "--backup-id", "bk-stuck", "--out", str(out))

    # THEN it stops with 4 (not a success, not retryable) after a bounded number of attempts, with one
    # clear error line; the application is (truthfully) still frozen and no record claims a release
    assert res.returncode == 4, res.stderr
    assert time.monotonic() - started < 30
    errors = _error_lines(res.stderr)
    assert len(errors) == 1, res.stderr
    assert "target app (custom)" in errors[0] and "thaw command failed" in errors[0]
    assert "device-busy" in errors[0] and "still be frozen" in errors[0]
    assert frozen_marker.exists()
    assert not out.exists() and '"released_by": "release"' not in res.stdout

    # AND the exit handler's thaw reports the failure as well (non-zero), never a silent success
    assert run_step("thaw", "--plan", str(plan)).returncode != 0


def test_freeze_reports_a_thaw_that_always_fails_without_claiming_a_release(
    tmp_path, plan_file, frozen_marker
):
    # GIVEN a hold by the freeze command whose thaw always fails
    plan = _plan(plan_file, tmp_path, frozen_marker, "echo device-busy >&2; exit 3")
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
        wait_ready(holder, ready, timeout=20)

        # WHEN it is released
        release.touch()
        rc = holder.wait(30)

        # THEN it exits 4 with one error line, and the result does not say the hold was released
        stderr = holder.stderr.read()
        assert rc == 4, stderr
        assert len(_error_lines(stderr)) == 1 and "thaw command failed" in stderr
        target = json.loads(result.read_text())["targets"][0]
        assert target["released_by"] != "release" and target["released"] is None
        assert frozen_marker.exists()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)
