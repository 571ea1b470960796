"""freeze → cut → check → release in one process, then the timeline and the verdict.

One process because every extra pod start would sit inside the freeze window, and because a retried
holder would quiesce again after the cut: once anything was quiesced, failures end in a
:class:`ConsistencyError` (exit 4), never a retryable code.

PostgreSQL's method follows the cut: when the driver cuts a target's volumes atomically, a CHECKPOINT
just before the cut (recovery: crash); otherwise backup mode, with the sub-paths the hook defers
(pg_wal) left out of the copy and copied after ``pg_backup_stop``, and ``wal`` volumes cut after it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from steps.drivers.snapshot import CutResult, SnapshotDriver
from steps.errors import ConsistencyError, SnapflowError
from steps.plan import Plan, Target, Volume
from steps.quiesce.engine import Quiescer, RunnerFactory, build_hooks, default_runner
from steps.quiesce.hooks import Hook
from steps.quiesce.verdict import TargetHold, build_record, iso


def volume_owners(plan: Plan) -> dict[str, list[str]]:
    """Which targets quiesce each volume: the volume's ``target`` when set, else every target."""
    every = [t.name for t in plan.targets]
    return {v.name: ([v.target] if v.target else every) for v in plan.volumes}


def volumes_of(plan: Plan, target: Target) -> list[Volume]:
    return [v for v in plan.volumes if v.target in (None, target.name)]


def fsfreeze_mounts(plan: Plan) -> list[str]:
    """The mounts the plan's local fsfreeze hooks freeze (a pod's mount paths mean nothing here)."""
    return [
        str(m)
        for t in plan.targets
        if t.hook == "fsfreeze" and t.local
        for m in (t.params.get("mounts") or [t.params.get("mount")])
        if m
    ]


def _defer_paths(hook: Hook, target_volumes: list[Volume], atomic: bool) -> dict[str, list[str]]:
    defer = hook.spec.get("defer") or []
    if atomic or not defer:
        return {}
    sub = str(hook.target.params.get("pgdata", "")).strip("/")
    return {
        v.name: [os.path.join(sub, d) if sub else d for d in defer] for v in target_volumes if v.role != "wal"
    }


def run_consistent_point(
    plan: Plan,
    backup_id: str,
    driver: SnapshotDriver,
    runner_factory: RunnerFactory = default_runner,
    log: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any]:
    """Returns the record (verdict, timeline, snapshots). Raises ConsistencyError when a target could
    not be quiesced (nothing was cut; the targets already frozen were released)."""
    started = time.time()
    owners = volume_owners(plan)
    frozen_mounts = fsfreeze_mounts(plan)
    if frozen_mounts and hasattr(driver, "avoid_snapshots_under"):
        driver.avoid_snapshots_under(frozen_mounts)
    atomic_by_target = {t.name: driver.is_atomic(volumes_of(plan, t)) for t in plan.targets}
    hooks = build_hooks(
        plan, backup_id, atomic=lambda t: atomic_by_target[t.name], runner_factory=runner_factory
    )
    labels = {"backup": backup_id, "app": plan.app.name, "namespace": plan.app.namespace}
    if hasattr(driver, "prepare"):
        # Where each snapshot goes is settled (and refused when it would be written to a file system
        # the hooks freeze) before anything is frozen.
        for note in driver.prepare(plan.volumes, labels):
            log(note)

    defer: dict[str, list[str]] = {}
    late_volumes: list[Volume] = []  # WAL volumes of a backup-mode target: cut after pg_backup_stop
    for hook in hooks:
        tvols = volumes_of(plan, hook.target)
        atomic = atomic_by_target[hook.name]
        for name, paths in _defer_paths(hook, tvols, atomic).items():
            defer.setdefault(name, []).extend(paths)
        if hook.spec.get("recovery") == "backup_label" and not atomic:
            late_volumes += [v for v in tvols if v.role == "wal" and v not in late_volumes]
    first_volumes = [v for v in plan.volumes if v not in late_volumes]

    quiescer = Quiescer(hooks, plan.freeze.deadline_s, on_event=lambda e, d: log(f"{e}: {d}"))
    quiescer.freeze_all()  # raises ConsistencyError after releasing what it froze

    cuts: list[CutResult] = []
    release_errors: list[str] = []
    try:
        quiesced = max((h.quiesced for h in hooks if h.quiesced is not None), default=time.time())
        driver.settle(quiesced)
        cuts = driver.cut(first_volumes, labels, defer)
        lost = quiescer.check_all()
        for name, reason in lost.items():
            for h in hooks:
                if h.name == name and h.lost is None:
                    h.lost = reason

        by_volume = {c.volume: c for c in cuts}

        def after_stop(hook: Hook) -> None:
            for v in volumes_of(plan, hook.target):
                cut = by_volume.get(v.name)
                if cut is not None and cut.deferred:
                    driver.copy_deferred(cut)
            late = [v for v in late_volumes if v in volumes_of(plan, hook.target)]
            if late:
                cuts.extend(driver.cut(late, labels, {}))

        release_errors = quiescer.release_all(after_stop=after_stop)
    except BaseException as err:
        quiescer.abort_all("failure")
        if isinstance(err, SnapflowError | OSError):
            raise ConsistencyError(f"consistent point failed after quiescing (not retried): {err}") from err
        raise
    stuck = [h for h in hooks if h.thaw_error]
    if stuck:
        # Not a verdict to record: the application is (maybe) still frozen. Exit 4 so that the
        # workflow stops here and its exit handler's thaw runs at once.
        raise ConsistencyError(
            "; ".join(f"target {h.name} ({h.target.hook}): {h.thaw_error}" for h in stuck)
            + " (not retried; the exit handler's thaw must release it)"
        )
    finished_hold = time.time()
    try:
        driver.wait_ready(cuts, timeout=plan.snapshot.timeout_s)
    except SnapflowError as err:  # even a temporary failure: a retry would quiesce again
        raise ConsistencyError(f"snapshots cut but not ready (not retried): {err}") from err

    holds = []
    for h in hooks:
        d = h.describe()
        recovery = d["recovery"]
        if recovery == "backup_label" and atomic_by_target[h.name]:
            recovery = "crash"  # an atomic cut must not be restored with a label (see docs/consistency.md)
        holds.append(
            TargetHold(
                name=h.name,
                hook=h.target.hook,
                method=d["method"],
                recovery=recovery,
                non_atomic_ok=d["non_atomic_ok"],
                quiesced=h.quiesced,
                released=h.released,
                released_by=h.released_by,
                lost=h.lost,
                info=dict(h.info),
            )
        )
    record = build_record(
        holds,
        cuts,
        owners,
        extra={
            "kind": "consistent-point",
            "backup_id": backup_id,
            "app": plan.app.to_dict(),
            "driver": driver.name,
            "consistency": plan.consistency,
            "started": iso(started),
            "finished": iso(time.time()),
            "hold_ended": iso(finished_hold),
            "deadline_s": plan.freeze.deadline_s,
            "deadline_passed": quiescer.expired.is_set(),
        },
    )
    notes = [
        f"target {h.name}: the thaw failed and was retried; released after attempt {h.info['thaw_attempts']}"
        for h in hooks
        if h.info.get("thaw_attempts")
    ]
    if notes:
        record["notes"] = notes
    if release_errors:
        record["release_errors"] = release_errors
        if record["verdict"] == "app-consistent":
            record["verdict"] = "crash-consistent"
        record["reasons"] = record["reasons"] + release_errors
    return record
