"""The quiesce engine: freeze every target of a plan, check the holds, release them all — and make
sure they are released whatever happens.

Layers of the dead-man switch, outermost last: the in-process deadline (a timer thread that aborts
every hold; it never waits on the application), the database's own session limits set inside the held
session (hooks), the watcher inside the application container for paired hooks (hooks), and the exit
handler's ``thaw``. A failure while freezing target N releases targets 1..N-1 before the error is
raised. Used by the ``freeze`` and ``consistent-point`` commands.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from steps.drivers.runner import Runner
from steps.errors import ConsistencyError, UsageError
from steps.plan import Plan, Target
from steps.quiesce.hook_specs import RenderContext, hold_id, render_hook
from steps.quiesce.hooks import Hook, make_hook

RunnerFactory = Callable[[Plan, Target], Runner]


def default_runner(plan: Plan, target: Target) -> Runner:
    """Local targets run as processes here; others through pods/exec in the app's namespace."""
    if target.local:
        from steps.drivers.runner_local import LocalRunner

        return LocalRunner()
    if not target.pod:
        raise UsageError(f"targets[{target.name}].pod: required for a target that is not local")
    from steps.drivers.runner_kube import KubeRunner

    return KubeRunner(namespace=plan.app.namespace, pod=target.pod, container=target.container)


def freeze_timeout(plan: Plan, target: Target) -> float:
    value = target.params.get("freeze_timeout_s")
    if value is None:
        return max(1.0, min(30.0, plan.freeze.deadline_s / 3))
    return float(value)


def build_hooks(
    plan: Plan,
    backup_id: str,
    atomic: Callable[[Target], bool],
    runner_factory: RunnerFactory = default_runner,
) -> list[Hook]:
    hooks = []
    for i, target in enumerate(plan.targets):
        ctx = RenderContext(
            backup_id=backup_id,
            hold_id=hold_id(plan, target),
            atomic_cut=atomic(target),
            keepalive_s=plan.freeze.keepalive_s,
            deadline_s=plan.freeze.deadline_s,
            freeze_timeout_s=freeze_timeout(plan, target),
        )
        spec = render_hook(target, ctx, where=f"targets[{i}]")
        hooks.append(
            make_hook(
                target, spec, runner_factory(plan, target), ctx.freeze_timeout_s, plan.freeze.keepalive_s
            )
        )
    return hooks


class Quiescer:
    """Holds a list of hooks for at most ``deadline_s`` seconds from the first freeze."""

    def __init__(
        self,
        hooks: list[Hook],
        deadline_s: float,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
    ):
        self.hooks = hooks
        self.deadline_s = deadline_s
        self.on_event = on_event or (lambda _e, _d: None)
        self.frozen: list[Hook] = []
        self.expired = threading.Event()
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self.started: float | None = None

    def _arm(self) -> None:
        if self._timer is None:
            self.started = time.time()
            for hook in self.hooks:  # what the hooks' own dead-man limits count towards
                hook.deadline_at = self.started + self.deadline_s
            self._timer = threading.Timer(self.deadline_s, self._expire)
            self._timer.daemon = True
            self._timer.start()

    def _expire(self) -> None:
        self.expired.set()
        self.on_event("deadline", {"deadline_s": self.deadline_s})
        self.abort_all("deadline")

    def freeze_all(self) -> None:
        """Freeze targets in order; on a failure, an interruption (SIGTERM, Ctrl-C) or the deadline
        release every target already frozen or still freezing, then raise."""
        current: Hook | None = None
        try:
            for hook in self.hooks:
                if self.expired.is_set():
                    break
                self._arm()
                current = hook
                hook.freeze()
                with self._lock:  # the deadline timer takes its list of frozen hooks under this lock
                    self.frozen.append(hook)
                    late = self.expired.is_set()
                current = None
                self.on_event("quiesced", {"target": hook.name})
                if late:
                    break
        except BaseException as err:
            self.abort_all("failure" if isinstance(err, Exception) else "interrupted")
            if not isinstance(err, Exception):
                raise
            if self.expired.is_set():
                raise ConsistencyError(
                    f"the freeze deadline ({self.deadline_s:g} s) passed before every target was "
                    f"frozen: {err}"
                ) from err
            if isinstance(err, ConsistencyError) or current is None:
                raise
            raise ConsistencyError(
                f"target {current.name} ({current.target.hook}): freeze failed: {err}"
            ) from err
        if self.expired.is_set():
            # A hook that finished freezing after the timer took its list is released here.
            self.abort_all("deadline")
            raise ConsistencyError(
                f"the freeze deadline ({self.deadline_s:g} s) passed before every target was frozen"
            )

    def check_all(self) -> dict[str, str]:
        """Targets whose hold is no longer in force, with the reason."""
        lost = {}
        for hook in list(self.frozen):
            reason = hook.check()
            if reason:
                lost[hook.name] = reason
        return lost

    def release_all(self, after_stop: Callable[[Hook], None] | None = None) -> list[str]:
        """Stop every hold (reverse order), run ``after_stop`` for each (deferred copies), release.
        Returns the errors; every target is released even when another one fails."""
        self._cancel_timer()
        errors: list[str] = []
        for hook in reversed(list(self.frozen)):
            try:
                if hook.released is None:
                    hook.stop()
                    self.on_event("released", {"target": hook.name})
                if after_stop is not None:
                    after_stop(hook)
            except Exception as err:
                hook.abort("failure")
                # A thaw that still fails after the abort's own attempt: report where things stand.
                errors.append(
                    f"target {hook.name} ({hook.target.hook}): {hook.thaw_error}"
                    if hook.thaw_error
                    else str(err)
                )
            finally:
                try:
                    hook.release()
                except Exception as err:  # releasing what is left must not hide the other targets
                    errors.append(f"target {hook.name}: {err}")
        return errors

    def abort_all(self, by: str) -> None:
        """Release every frozen target now, without waiting on the application (reverse order)."""
        self._cancel_timer(keep_if_current=True)
        with self._lock:
            hooks = list(reversed(self.frozen))
        # A hook still in its freeze (not yet in `frozen`) is aborted too: its session may hold a lock.
        # Its input is closed at once (its watcher or client lets go as soon as the freeze returns), and
        # it is aborted after the frozen ones, so that they are not kept waiting on its freeze.
        pending = [h for h in self.hooks if h not in hooks and getattr(h, "session", None) is not None]
        for hook in pending:
            try:
                hook.session.close_input()
            except Exception:
                pass
        for hook in hooks + pending:
            try:
                hook.abort(by)
            except Exception:
                pass
            try:
                hook.release()
            except Exception:
                pass

    def _cancel_timer(self, keep_if_current: bool = False) -> None:
        timer = self._timer
        if timer is not None and not (keep_if_current and threading.current_thread() is timer):
            timer.cancel()


def thaw_plan(plan: Plan, runner_factory: RunnerFactory = default_runner) -> list[dict[str, Any]]:
    """Idempotent thaw of every target (no session needed): safe when nothing is frozen, when run
    twice and after the holder died. Every target is tried; a failed one has an ``error`` entry."""
    # Both PostgreSQL methods thaw the same way (end the holding session), so the cut kind is moot.
    hooks = build_hooks(plan, "thaw", atomic=lambda _t: True, runner_factory=runner_factory)
    results = []
    for hook in reversed(hooks):
        try:
            results.append(hook.thaw())
        except Exception as err:
            results.append(
                {"target": hook.name, "hook": hook.target.hook, "thawed": False, "error": str(err)}
            )
    return results
