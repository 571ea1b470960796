"""freeze's hold: quiesce every target of a plan, hold until SIGTERM/SIGINT, a release file or the
deadline (checking the holds every keepalive), then release; the timeline of each target.

The engine of ``python -m steps freeze`` (:mod:`steps.commands.freeze`, which documents the files it
writes). It installs the process's SIGTERM and SIGINT handlers: a signal while freezing unwinds at
once (the engine releases what it froze), while holding it releases.
"""

from __future__ import annotations

from typing import Any


def hold(
    plan,
    backup_id: str,
    *,
    ready_file: str | None = None,
    release_file: str | None = None,
    result_file: str | None = None,
) -> dict[str, Any]:
    """Freeze, hold and release every target of ``plan``; the result (``released_by``, ``targets``,
    ``lost``, ``errors``), also written to ``result_file``. The caller fails when holds were lost or
    releases failed (:func:`failure`)."""
    import os
    import signal
    import sys
    import threading
    import time

    from steps.drivers import files
    from steps.drivers.files import write_json_atomic
    from steps.errors import ConsistencyError
    from steps.quiesce.cut import fsfreeze_mounts, volumes_of
    from steps.quiesce.engine import Quiescer, build_hooks
    from steps.quiesce.verdict import iso

    def atomic(target) -> bool:
        if plan.snapshot.driver == "local":
            from steps.drivers.snapshot_local import LocalSnapshotDriver

            driver = LocalSnapshotDriver()
            driver.avoid_snapshots_under(fsfreeze_mounts(plan))  # as consistent-point would cut them
            return driver.is_atomic(volumes_of(plan, target))
        return plan.consistency == "group" or len(volumes_of(plan, target)) == 1

    hooks = build_hooks(plan, backup_id, atomic=atomic)
    stop = threading.Event()
    why: dict[str, str] = {}
    holding = threading.Event()

    def on_signal(signum, _frame):
        first = not stop.is_set()
        why.setdefault("by", signal.Signals(signum).name)
        stop.set()
        if first and not holding.is_set():
            # Still freezing: unwind now (the engine releases what it froze or is freezing) instead of
            # waiting for the remaining targets to freeze first.
            raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def on_event(event, _data):
        if event == "deadline":
            why.setdefault("by", "deadline")
            stop.set()

    quiescer = Quiescer(hooks, plan.freeze.deadline_s, on_event=on_event)
    released = False
    try:
        try:
            quiescer.freeze_all()  # on any failure or interruption it aborts what it froze, then raises
        except SystemExit:
            if why.get("by"):
                print(
                    f"error: interrupted by {why['by']} while freezing: the targets frozen so far "
                    "were released",
                    file=sys.stderr,
                )
            raise
        holding.set()
        print(f"freeze: {len(hooks)} target(s) held (deadline {plan.freeze.deadline_s:g} s)", file=sys.stderr)
        if ready_file:
            write_json_atomic(
                ready_file,
                {
                    "targets": [
                        {
                            "name": h.name,
                            "hook": h.target.hook,
                            "method": h.spec.get("method"),
                            "quiesced": iso(h.quiesced),
                        }
                        for h in hooks
                    ],
                    "deadline_s": plan.freeze.deadline_s,
                    "pid": os.getpid(),
                },
            )
        lost: dict[str, str] = {}
        next_check = time.monotonic() + plan.freeze.keepalive_s
        while not stop.wait(0.1):
            if release_file and files.exists(release_file):
                why.setdefault("by", "release-file")
                break
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + plan.freeze.keepalive_s
                lost = quiescer.check_all()
                if lost:
                    why.setdefault("by", "hold-lost")
                    break
        if quiescer.expired.is_set():  # the deadline already aborted every hold
            errors = [f"target {h.name} ({h.target.hook}): {h.thaw_error}" for h in hooks if h.thaw_error]
        else:
            errors = quiescer.release_all()
        released = True
    except OSError as err:  # e.g. the ready file could not be written: released (below), then reported
        raise ConsistencyError(f"freeze: {err}") from err
    finally:
        if not released:  # whatever went wrong while holding, the application is released first
            quiescer.release_all()
    result = {
        "released_by": why.get("by", "release"),
        "targets": [],
        "lost": lost,
        "errors": errors,
    }
    for h in hooks:
        t = {
            "name": h.name,
            "hook": h.target.hook,
            "method": h.spec.get("method"),
            "recovery": h.spec.get("recovery"),
            "quiesced": iso(h.quiesced),
            "released": iso(h.released),
            "released_by": h.released_by,
            "window_ms": None
            if h.quiesced is None or h.released is None
            else round((h.released - h.quiesced) * 1000, 3),
        }
        t.update({k: v for k, v in h.info.items() if v})
        result["targets"].append(t)
    if result_file:
        write_json_atomic(result_file, result)
    return result


def failure(result: dict[str, Any]) -> str | None:
    """Why a hold failed (lost holds, failed releases), in one line; None when it held."""
    lost, errors = result["lost"], result["errors"]
    if lost or errors:
        return "; ".join([f"target {n}: {r}" for n, r in lost.items()] + errors)
    return None
