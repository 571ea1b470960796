"""After a paired hook's release the watcher is gone, all of it: no process of its process group is
left (its deadline timer's ``sleep`` included) and its output stream closes at once, so that neither a
local session nor an exec stream (a kubelet keeps it open while any process holds the output) waits
for a grace period."""

from __future__ import annotations

import os
import signal
import time

from steps.drivers.runner import SessionClosed
from steps.drivers.runner_kube import KubeRunner
from steps.plan import plan_from_dict
from steps.quiesce.engine import Quiescer, build_hooks
from tests.fixtures.quiesce import local_plan, wait_until

NS = "shop"


def _group_alive(pgid: int) -> bool:
    """True while a process of the group still runs (a zombie is dead: it holds no stream, it only
    waits for whoever reaps orphans here)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = open(f"/proc/{entry}/stat").read()  # noqa: SIM115 - read at once
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def _custom_plan(marker, tmp_path, pod: str | None = None) -> dict:
    target = {
        "name": "app",
        "hook": "custom",
        "params": {"freeze": [f"touch {marker}"], "thaw": [f"rm -f {marker}"]},
    }
    plan = local_plan([target], [{"name": "v", "path": str(tmp_path)}], deadline_s=60)
    if pod:
        target.update(local=False, pod=pod)
    return plan


def _output_ends_within(session, bound: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < bound:
        try:
            session.read_line(0.05)
        except SessionClosed:
            return time.monotonic() - t0
    raise AssertionError(f"the watcher's output was still open {bound} s after the release")


def test_local_watcher_leaves_no_process_and_closes_its_output_at_release(tmp_path):
    # GIVEN a paired hook held by its watcher, whose deadline timer sleeps for a minute
    marker = tmp_path / "frozen"
    plan = plan_from_dict(_custom_plan(marker, tmp_path))
    quiescer = Quiescer(build_hooks(plan, "bk", atomic=lambda _t: True), deadline_s=60)
    quiescer.freeze_all()
    hook = quiescer.hooks[0]
    pgid = hook.session.pid  # the watcher leads its own process group; its timer and sleep are in it
    try:
        assert marker.exists() and _group_alive(pgid)

        # WHEN the holder releases
        t0 = time.monotonic()
        assert quiescer.release_all() == []
        released_in = time.monotonic() - t0

        # THEN thawed, the output closed at once, and nothing of the watcher is left
        assert not marker.exists()
        assert released_in < 1.0, f"release took {released_in:.2f} s"
        assert _output_ends_within(hook.session, 1.0) < 1.0
        assert wait_until(lambda: not _group_alive(pgid), 1.0, "a watcher process outlived the release") < 1
    finally:
        quiescer.abort_all("test")
        if _group_alive(pgid):
            os.killpg(pgid, signal.SIGKILL)


def test_watcher_through_pod_exec_closes_the_stream_at_release(kube_server, kube_client, tmp_path):
    # GIVEN a paired hook held by a watcher running in a pod (the fake kubelet runs it here and keeps
    # the stream open while any process holds the command's output, as a real one does)
    kube_server.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "app-0", "namespace": NS},
            "spec": {"containers": [{"name": "app", "image": "busybox"}]},
        }
    )
    kube_server.wait_for("pods", "app-0", NS, lambda o: (o.get("status") or {}).get("phase") == "Running")
    marker = tmp_path / "frozen"
    plan = _custom_plan(marker, tmp_path, pod="app-0")
    plan["app"]["namespace"] = NS
    hooks = build_hooks(
        plan_from_dict(plan),
        "bk",
        atomic=lambda _t: True,
        runner_factory=lambda p, t: KubeRunner(NS, t.pod, api_client=kube_client),
    )
    quiescer = Quiescer(hooks, deadline_s=60)
    quiescer.freeze_all()
    try:
        assert marker.exists()
        watcher = [s for s in kube_server.exec_sessions if s.stdin and s.running]
        assert len(watcher) == 1 and watcher[0].pid

        # WHEN the holder releases
        t0 = time.monotonic()
        assert quiescer.release_all() == []
        released_in = time.monotonic() - t0

        # THEN the stream closed at once (no 5 s grace, no kill) and no process of the watcher is left
        assert not marker.exists()
        assert released_in < 2.0, f"release took {released_in:.2f} s (the stream stayed open)"
        assert not watcher[0].running and watcher[0].exit_code == 0
        assert not _group_alive(watcher[0].pid), "a watcher process outlived the release"
    finally:
        quiescer.abort_all("test")
