"""A holder interrupted while it freezes (SIGTERM, Ctrl-C), a deadline that passes while a target is
still freezing, and bad output paths: every target is released by the holder itself, at once, and the
command ends with one error line — never a traceback, never a ready file for a hold that is not there."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from steps.drivers.runner_local import LocalRunner
from steps.errors import ConsistencyError
from steps.plan import plan_from_dict
from steps.quiesce.engine import Quiescer, build_hooks, default_runner
from tests.fixtures.quiesce import local_plan, run_step, start_step, wait_until


class Markers:
    """Two custom targets: ``one`` freezes at once, ``two`` announces its freeze, then takes a while."""

    def __init__(self, tmp_path, slow_s: float):
        self.m1, self.m2, self.started2 = tmp_path / "m1", tmp_path / "m2", tmp_path / "two-freezing"
        self.volume = tmp_path / "vol"
        self.volume.mkdir()
        self.targets = [
            {
                "name": "one",
                "hook": "custom",
                "params": {"freeze": [f"touch {self.m1}"], "thaw": [f"rm -f {self.m1}"]},
            },
            {
                "name": "two",
                "hook": "custom",
                "params": {
                    "freeze": [f"touch {self.started2}; sleep {slow_s}; touch {self.m2}"],
                    "thaw": [f"rm -f {self.m2}"],
                },
            },
        ]

    def plan(self, tmp_path, **freeze) -> dict:
        return local_plan(
            self.targets,
            [{"name": "v", "path": str(self.volume)}],
            local_dir=str(tmp_path / "snaps"),
            **freeze,
        )

    def frozen(self) -> bool:
        return self.m1.exists() or self.m2.exists()

    def cleanup(self) -> None:
        # The watchers' own deadline would thaw too; a test that failed must not leave markers behind.
        self.m1.unlink(missing_ok=True)
        self.m2.unlink(missing_ok=True)


@pytest.mark.parametrize(
    "command, sig",
    [("consistent-point", signal.SIGTERM), ("freeze", signal.SIGTERM), ("freeze", signal.SIGINT)],
)
def test_a_signal_while_the_second_target_freezes_releases_both_at_once(tmp_path, plan_file, command, sig):
    # GIVEN a holder whose second target is still freezing (watchers would thaw only after ~61 s)
    markers = Markers(tmp_path, slow_s=3)
    plan = plan_file(markers.plan(tmp_path, deadline_s=60))
    ready = tmp_path / "ready"
    extra = ["--backup-id", "bk-term"] if command == "consistent-point" else ["--ready-file", str(ready)]
    holder = start_step(command, "--plan", str(plan), *extra)
    try:
        wait_until(markers.started2.exists, 20, "target two never started freezing")
        assert markers.m1.exists() and not markers.m2.exists()

        # WHEN the holder is told to stop
        holder.send_signal(sig)
        rc = holder.wait(30)

        # THEN target one is released at once, target two as soon as its freeze returned: both far
        # sooner than any watcher deadline
        assert not markers.m1.exists()
        assert wait_until(lambda: not markers.frozen(), 10, "a target stayed frozen") < 10
        time.sleep(3.5)  # target two's freeze has surely returned by now: it must not be left frozen
        assert not markers.frozen()
        # ... it ends with 128+signal (or 4), one error line and no traceback; no ready file was written
        stderr = holder.stderr.read()
        assert rc in (128 + sig, 4), stderr
        assert "Traceback" not in stderr
        errors = [line for line in stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and sig.name in errors[0], stderr
        assert not ready.exists()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)
        markers.cleanup()


def test_a_signal_inside_freeze_all_releases_what_it_froze_before_unwinding(tmp_path):
    # GIVEN a holder process (this one) whose SIGTERM handler unwinds, like the consistent-point step
    markers = Markers(tmp_path, slow_s=3)
    plan = plan_from_dict(markers.plan(tmp_path, deadline_s=60))
    quiescer = Quiescer(build_hooks(plan, "bk", atomic=lambda _t: True), deadline_s=60)

    def unwind(signum, _frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, unwind)

    def send_when_two_freezes():
        wait_until(markers.started2.exists, 20, "target two never started freezing")
        os.kill(os.getpid(), signal.SIGTERM)

    sender = threading.Thread(target=send_when_two_freezes, daemon=True)
    sender.start()
    try:
        # WHEN SIGTERM arrives while target two is freezing
        with pytest.raises(SystemExit):
            quiescer.freeze_all()
        # THEN target one was released by the holder before the exception left freeze_all (its watcher
        # is still running and would only thaw on its deadline, ~61 s from now)
        assert not markers.m1.exists()
        hook_one = quiescer.hooks[0]
        assert hook_one.released is not None and hook_one.released_by == "interrupted"
    finally:
        signal.signal(signal.SIGTERM, previous)
        sender.join(30)
        quiescer.abort_all("test")
        markers.cleanup()


class SlowConnectRunner(LocalRunner):
    """A local runner whose sessions take ``delay`` seconds to open (as an exec stream can)."""

    def __init__(self, delay: float):
        super().__init__()
        self.delay = delay

    def open_session(self, argv):
        time.sleep(self.delay)
        return super().open_session(argv)


def test_a_target_that_finishes_freezing_after_the_deadline_is_released_at_once(tmp_path):
    # GIVEN two targets, the second one's session still opening when the freeze deadline passes
    markers = Markers(tmp_path, slow_s=0)
    plan = plan_from_dict(markers.plan(tmp_path, deadline_s=60))  # watchers: ~61 s

    def runners(p, target):
        return SlowConnectRunner(2.0) if target.name == "two" else default_runner(p, target)

    quiescer = Quiescer(build_hooks(plan, "bk", atomic=lambda _t: True, runner_factory=runners), deadline_s=1)
    try:
        # WHEN freeze_all runs into the deadline
        with pytest.raises(ConsistencyError, match="deadline"):
            quiescer.freeze_all()
        # THEN both targets are released when it returns, the late one included
        assert markers.m2.exists() is False and markers.m1.exists() is False
        assert all(h.released is not None for h in quiescer.hooks)
    finally:
        quiescer.abort_all("test")
        markers.cleanup()


@pytest.mark.parametrize(
    "command, option, make_bad",
    [
        ("freeze", "--ready-file", lambda d: (d / "a-file").touch() or d / "a-file" / "ready"),
        ("freeze", "--result", lambda d: (d / "a-dir").mkdir() or d / "a-dir"),
        ("freeze", "--release-file", lambda d: (d / "stale").touch() or d / "stale"),
        ("freeze", "--release-file", lambda d: (d / "a-file").touch() or d / "a-file" / "release"),
        ("consistent-point", "--out", lambda d: (d / "a-file").touch() or d / "a-file" / "cp.json"),
    ],
)
def test_bad_output_paths_are_refused_before_anything_is_frozen(
    tmp_path, plan_file, command, option, make_bad
):
    # GIVEN an output path that cannot be written (or a release file that is already there)
    markers = Markers(tmp_path, slow_s=0)
    plan = plan_file(markers.plan(tmp_path))
    bad = make_bad(tmp_path)
    extra = ["--backup-id", "bk"] if command == "consistent-point" else []
    try:
        # WHEN the command starts
        res = run_step(command, "--plan", str(plan), *extra, option, str(bad), timeout=60)

        # THEN it is refused with one line naming the option, before any target was frozen
        assert res.returncode == 2, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1 and option in res.stderr, res.stderr
        assert not markers.m1.exists() and not markers.m2.exists() and not markers.started2.exists()
    finally:
        markers.cleanup()
