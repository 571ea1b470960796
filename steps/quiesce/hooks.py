"""Hook runtimes: how one target is frozen, checked, stopped and released through a runner.

- :class:`SessionHook` holds a database session through the client's interactive standard input
  (psql, mariadb). Statements are followed by a marker so that each phase waits for exactly its own
  output; a keepalive thread keeps the session under the database's own idle limit, which ends the
  session (and what it holds) when the holder goes silent.
- :class:`PairedHook` runs a watcher (templates/hooks/_watcher.sh.j2) next to the application: it
  freezes, and unfreezes on release, on hangup or on its own deadline.
- :class:`PrepareHook` runs commands once (CHECKPOINT-like flushes); nothing stays held.

Every hook's :meth:`Hook.abort` releases without waiting on the application; :meth:`Hook.thaw` is the
idempotent standalone thaw (another process, no session) used by ``thaw`` and the exit handler.
"""

from __future__ import annotations

import base64
import math
import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any

from steps.drivers.runner import Runner, Session, SessionClosed
from steps.errors import ConsistencyError
from steps.plan import Target
from steps.quiesce.hook_specs import DEADLINE_MARGIN_S, session_limit_s

# A failed unfreeze is retried a few times, with a short back-off, before the hold is reported stuck.
THAW_RETRIES = 2
THAW_BACKOFF_S = 0.5


class HookTimeout(Exception):
    pass


def _output_lines(session: Session, timeout: float) -> Iterator[str]:
    """The session's output lines as they come, until the caller has what it waits for; raises
    :class:`HookTimeout` once ``timeout`` seconds passed."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise HookTimeout(f"no answer within {timeout:g} s")
        line = session.read_line(min(remaining, 0.5))
        if line is not None:
            yield line


class Hook:
    """Common state: the rendered spec, when the hold began and ended, and what the stop returned."""

    def __init__(
        self,
        target: Target,
        spec: dict[str, Any],
        runner: Runner,
        freeze_timeout_s: float,
        keepalive_s: float,
    ):
        self.target = target
        self.spec = spec
        self.runner = runner
        self.freeze_timeout_s = freeze_timeout_s
        self.keepalive_s = keepalive_s
        self.quiesced: float | None = None
        self.released: float | None = None
        self.released_by: str | None = None
        self.info: dict[str, Any] = {}
        self.lost: str | None = None
        # When the in-process deadline fires (set by the Quiescer when it arms it); the dead-man limits
        # inside a held session count towards it.
        self.deadline_at: float | None = None
        # Set when every thaw attempt failed: the application may still be frozen (not released).
        self.thaw_error: str | None = None
        self._state_lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.target.name

    @property
    def kind(self) -> str:
        return self.spec.get("kind", "none")

    def describe(self) -> dict[str, Any]:
        return {
            "method": self.spec.get("method"),
            "recovery": self.spec.get("recovery"),
            "non_atomic_ok": bool(self.spec.get("non_atomic_ok")),
            "defer": list(self.spec.get("defer") or []),
        }

    def _mark_released(self, by: str) -> bool:
        with self._state_lock:
            if self.released is not None:
                return False
            self.released = time.time()
            self.released_by = by
            return True

    def freeze(self) -> None:
        self.quiesced = time.time()

    def check(self) -> str | None:
        """None while the hold is in force, else why it is not."""
        if self.released is not None:
            return f"released by {self.released_by} before the check"
        return self.lost

    def stop(self) -> None:
        self._mark_released("release")

    def release(self) -> None:
        """Let go of what remains after :meth:`stop` (slot, session); never blocks long."""

    def abort(self, by: str) -> None:
        self._mark_released(by)

    def thaw(self) -> dict[str, Any]:
        return {"target": self.name, "hook": self.target.hook, "thawed": False, "detail": "nothing to thaw"}


class NoHook(Hook):
    """Hook kind ``none``: nothing is quiesced (the verdict can be crash-consistent at best)."""


class SessionHook(Hook):
    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.session: Session | None = None
        self.session_id: str | None = None
        self._io = threading.Lock()
        self._stop_keepalive = threading.Event()
        self._limited = False  # from the freeze to the stop: every statement renews the session limit

    # -- the marker protocol -------------------------------------------------------------------
    def _limit_sql(self, final: bool = False) -> str:
        """The statement setting the session's own idle limit (spec ``limit``; ``{ms}`` / ``{s}``).

        While held, the limit never reaches past the deadline plus :data:`DEADLINE_MARGIN_S`: a holder
        that goes silent (stopped, killed while stuck, behind a half-open stream) leaves a session the
        server ends by then. The whole seconds of MariaDB's wait_timeout are rounded down, so it never
        ends a session before the in-process deadline. ``final``: the plain limit (after the stop,
        when nothing is held any more but deferred copies may still need the session)."""
        template = self.spec.get("limit") or ""
        if not template:
            return ""
        seconds = float(session_limit_s(self.keepalive_s))
        if not final and self.deadline_at is not None:
            seconds = min(seconds, self.deadline_at + DEADLINE_MARGIN_S - time.time())
        ms = max(int(seconds * 1000), 100)  # 0 would mean "no limit"
        whole = max(math.floor(seconds), 1)
        return template.replace("{ms}", str(ms)).replace("{s}", str(whole)).rstrip("\n") + "\n"

    def _exec(self, sql: str, timeout: float) -> list[str]:
        """Send ``sql`` (while held, after a renewal of the session limit) and return the output lines
        up to this call's marker."""
        if not sql.strip():
            return []
        assert self.session is not None
        token = f"SNAPFLOW-MARK-{secrets.token_hex(6)}"
        marker = self.spec["marker"].replace("{token}", token)
        with self._io:
            if self._limited:
                sql = self._limit_sql() + sql
            self.session.send(sql.rstrip("\n") + "\n" + marker + "\n")
            lines: list[str] = []
            for line in _output_lines(self.session, timeout):
                if line.strip() == token:
                    return lines
                lines.append(line)

    def _fail(self, what: str, err: Exception) -> ConsistencyError:
        detail = str(err)
        if self.session is not None:
            tail = self.session.stderr_tail()
            if tail:
                detail = f"{detail}: {tail}"
        return ConsistencyError(f"target {self.name} ({self.target.hook}): {what} failed: {detail}")

    @staticmethod
    def _value(lines: list[str], key: str) -> str | None:
        for line in lines:
            if line.startswith(key + " "):
                return line[len(key) + 1 :].strip()
        return None

    def _keepalive(self) -> None:
        while not self._stop_keepalive.wait(self.keepalive_s):
            if not self._io.acquire(blocking=False):
                continue  # a phase is talking to the session: that is a keepalive too
            self._io.release()
            try:
                self._exec(self.spec["keepalive"], timeout=max(self.keepalive_s, 5.0))
            except (HookTimeout, SessionClosed) as err:
                if self.released is None:
                    self.lost = f"session lost during the hold ({err})"
                return

    # -- phases --------------------------------------------------------------------------------
    def freeze(self) -> None:
        self.session = self.runner.open_session(list(self.spec["client"]))
        try:
            lines = self._exec(self.spec["setup"], timeout=max(self.freeze_timeout_s, 10.0))
        except (HookTimeout, SessionClosed) as err:
            self.session.kill()
            raise self._fail("connecting", err) from None
        self.session_id = self._value(lines, "SNAPFLOW-SESSION")
        guard = self._value(lines, "SNAPFLOW-GUARD")
        if guard is not None and guard != "1":
            self.session.kill()
            raise ConsistencyError(
                f"target {self.name} ({self.target.hook}): another Snapflow hold is active "
                "on this database (run `thaw` if its holder died)"
            )
        watchdog = self.spec.get("watchdog")
        first_wait = float(watchdog["after_s"]) if watchdog else self.freeze_timeout_s
        self._limited = True
        try:
            try:
                self._exec(self.spec["freeze"], timeout=min(first_wait, self.freeze_timeout_s))
            except HookTimeout:
                if not watchdog:
                    raise
                # The lock request is queued (behind a long query, stalling the server): kill it.
                self.runner.run(
                    list(watchdog["argv"]),
                    stdin=watchdog["stdin"].replace("{session}", str(int(self.session_id or 0))),
                    timeout=10,
                )
                self.session.kill()
                raise ConsistencyError(
                    f"target {self.name} ({self.target.hook}): lock request still queued after "
                    f"{first_wait:g} s (a long-running statement?); the watchdog killed it"
                ) from None
        except (HookTimeout, SessionClosed) as err:
            self.session.kill()
            raise self._fail("freeze", err) from None
        self.quiesced = time.time()
        threading.Thread(target=self._keepalive, name=f"keepalive-{self.name}", daemon=True).start()

    def check(self) -> str | None:
        reason = super().check()
        if reason:
            return reason
        try:
            lines = self._exec(self.spec["check"], timeout=10)
        except (HookTimeout, SessionClosed) as err:
            return f"session did not answer the hold check ({err})"
        held = self._value(lines, "SNAPFLOW-HOLD")
        if held is None or (self.session_id is not None and held != self.session_id):
            return "the hold is no longer in force (session ended or lock gone)"
        return None

    def stop(self) -> None:
        if self.released is not None:
            raise ConsistencyError(f"target {self.name}: hold already ended ({self.released_by})")
        self._stop_keepalive.set()
        stop = self.spec["stop"]
        with self._io:
            self._limited = False
        if stop.strip():
            stop = self._limit_sql(final=True) + stop
        try:
            lines = self._exec(stop, timeout=max(self.freeze_timeout_s, 10.0))
        except (HookTimeout, SessionClosed) as err:
            self.abort("failure")
            raise self._fail("release", err) from None
        self._mark_released("release")
        label = self._value(lines, "SNAPFLOW-LABEL")
        if label:
            lsn, label_b64, map_b64 = label.split(" ")
            self.info["stop_lsn"] = lsn
            self.info["backup_label"] = base64.b64decode(label_b64).decode()
            if map_b64 != "-":
                self.info["tablespace_map"] = base64.b64decode(map_b64).decode()

    def release(self) -> None:
        self._stop_keepalive.set()
        if self.session is None:
            return
        try:
            self._exec(self.spec.get("release") or "", timeout=10)
            self.session.send(self.spec.get("quit", "") + "\n")
        except (HookTimeout, SessionClosed):
            pass
        self.session.close_input()
        if self.session.wait(5) is None:
            self.session.kill()

    def abort(self, by: str) -> None:
        """Ending the client ends the database session, and with it the lock or the backup."""
        self._stop_keepalive.set()
        self._mark_released(by)
        if self.session is not None:
            self.session.kill()

    def thaw(self) -> dict[str, Any]:
        spec = self.spec["thaw"]
        res = self.runner.run(list(spec["argv"]), stdin=spec["stdin"], timeout=30)
        if not res.ok:
            raise ConsistencyError(
                f"target {self.name} ({self.target.hook}): thaw failed: "
                f"{(res.stderr or res.stdout).strip()[-300:]}"
            )
        count = self._value(res.stdout.splitlines(), "SNAPFLOW-TERMINATED") or "0"
        n = int(count) if count.isdigit() else 0
        return {
            "target": self.name,
            "hook": self.target.hook,
            "thawed": n > 0,
            "detail": f"ended {n} holding session(s)" if n else "no hold found",
        }


class PairedHook(Hook):
    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.session: Session | None = None
        self._io = threading.Lock()
        self.expired = False
        self.thaw_failures = 0
        self._thaw_started = False

    def _read_until(self, wanted: tuple[str, ...], timeout: float) -> str:
        assert self.session is not None
        for line in _output_lines(self.session, timeout):
            if line.startswith("SNAPFLOW-EXPIRED"):
                self.expired = True
            if line.startswith(wanted):
                return line

    def _run_thaw(self) -> tuple[bool, str]:
        script = "snapflow_thaw() {\n" + self.spec["thaw"] + "\n}\nsnapflow_thaw\n"
        res = self.runner.run(["sh", "-c", script], timeout=max(self.freeze_timeout_s, 30.0))
        return res.ok, " | ".join((res.stderr or res.stdout).strip()[-300:].splitlines())

    def _thaw_failed(self, detail: str) -> None:
        self.thaw_failures += 1
        self.thaw_error = (
            f"thaw command failed {self.thaw_failures} time(s) (last: {detail or 'no output'}); "
            "the application may still be frozen"
        )

    def _thaw_once(self) -> bool:
        ok, detail = self._run_thaw()
        if ok:
            self.thaw_error = None
            if self.thaw_failures:
                self.info["thaw_attempts"] = self.thaw_failures + 1
        else:
            self._thaw_failed(detail)
        return ok

    def freeze(self) -> None:
        self.session = self.runner.open_session(["sh", "-c", self.spec["watcher"], "snapflow-watcher"])
        try:
            line = self._read_until(("SNAPFLOW-HELD", "SNAPFLOW-FAILED"), self.freeze_timeout_s)
        except (HookTimeout, SessionClosed) as err:
            self.abort("failure")
            raise ConsistencyError(
                f"target {self.name} ({self.target.hook}): freeze failed: {err}: {self.session.stderr_tail()}"
            ) from None
        if line.startswith("SNAPFLOW-FAILED"):
            self.session.wait(5)
            raise ConsistencyError(
                f"target {self.name} ({self.target.hook}): freeze command failed "
                f"(exit {line.split()[-1]}): {self.session.stderr_tail()}"
            )
        self.quiesced = time.time()

    def check(self) -> str | None:
        reason = super().check()
        if reason:
            return reason
        assert self.session is not None
        try:
            with self._io:
                self.session.send("check\n")
                self._read_until(("SNAPFLOW-HOLDING",), 10)
        except (HookTimeout, SessionClosed) as err:
            return f"the watcher did not answer the hold check ({err})"
        if self.expired:
            return "the watcher's deadline released the hold"
        if self.spec.get("check", "").strip():
            res = self.runner.run(["sh", "-c", self.spec["check"]], timeout=10)
            if not res.ok:
                return "the application reports it is not frozen"
        return None

    def stop(self) -> None:
        if self.released is not None:
            raise ConsistencyError(f"target {self.name}: hold already ended ({self.released_by})")
        assert self.session is not None
        try:
            with self._io:
                self.session.send("release\n")
                line = self._read_until(("SNAPFLOW-RELEASED",), max(self.freeze_timeout_s, 30.0))
        except (HookTimeout, SessionClosed) as err:
            self.abort("failure")
            raise ConsistencyError(
                f"target {self.name} ({self.target.hook}): release failed: {err}"
            ) from None
        if line.split()[-1] != "0":
            # Not released until a thaw succeeded: retry (bounded), then report the hold as stuck.
            self._thaw_failed(f"exit {line.split()[-1]}: {self.session.stderr_tail()}")
            for attempt in range(THAW_RETRIES):
                time.sleep(THAW_BACKOFF_S * 2**attempt)
                if self._thaw_once():
                    break
            else:
                raise ConsistencyError(f"target {self.name} ({self.target.hook}): {self.thaw_error}")
        self._mark_released("release")

    def release(self) -> None:
        if self.session is not None:
            self.session.close_input()
            if self.session.wait(5) is None:
                self.session.kill()

    def abort(self, by: str) -> None:
        """End of input makes the watcher unfreeze; the thaw also runs directly, in case the watcher
        itself is stuck. Neither waits on the application's writers. The hold counts as released only
        once a thaw succeeded (else :attr:`thaw_error` says the application may still be frozen)."""
        with self._state_lock:
            first = not self._thaw_started and self.released is None
            self._thaw_started = True
        if self.session is not None:
            self.session.close_input()
        if first and self._thaw_once():
            self._mark_released(by)
        # A watcher still in its freeze (bounded by the freeze timeout) unfreezes as soon as the freeze
        # ends, having seen the end of its input: give it that long before killing it.
        mid_freeze = self.quiesced is None
        grace = self.freeze_timeout_s + 1 if mid_freeze else 5
        if self.session is not None and self.session.wait(grace) is None:
            self.session.kill()
        if first and mid_freeze:
            # The freeze was still running when the thaw above ran: it may have completed since.
            self._thaw_once()

    def thaw(self) -> dict[str, Any]:
        ok, detail = self._run_thaw()
        if not ok:
            raise ConsistencyError(f"target {self.name} ({self.target.hook}): thaw failed: {detail}")
        return {"target": self.name, "hook": self.target.hook, "thawed": True, "detail": "thaw ran"}


class PrepareHook(Hook):
    def freeze(self) -> None:
        for i, cmd in enumerate(self.spec.get("prepare") or []):
            timeout = float(cmd.get("timeout_s", self.freeze_timeout_s))
            res = self.runner.run(["sh", "-c", cmd["run"]], timeout=timeout)
            if not res.ok:
                raise ConsistencyError(
                    f"target {self.name} ({self.target.hook}): prepare command {i + 1} failed "
                    f"(exit {res.returncode}): {(res.stderr or res.stdout).strip()[-300:]}"
                )
        self.quiesced = time.time()


def make_hook(
    target: Target, spec: dict[str, Any], runner: Runner, freeze_timeout_s: float, keepalive_s: float
) -> Hook:
    cls = {"session": SessionHook, "paired": PairedHook, "prepare": PrepareHook, "none": NoHook}[spec["kind"]]
    return cls(target, spec, runner, freeze_timeout_s, keepalive_s)
