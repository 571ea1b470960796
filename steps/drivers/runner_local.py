"""Runs hook commands as processes on this machine (local targets, the local runner, tests).

Sessions run in their own process group, so that a signal meant for the holder (Ctrl-C, a group kill)
does not also end a watcher that must still release what it holds; when the holder dies, its end of
the session's standard input closes and the process sees end of file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading

from steps import runtime
from steps.drivers.runner import PumpedOutput, RunResult, SessionClosed

# The repository's and the object store's credentials. A hook, a database client or a check command
# run here needs none of them, so they are not passed on (a hook's password_env names a variable of
# the application's own, which is).
CREDENTIAL_ENV = runtime.CREDENTIAL_ENV


def child_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without :data:`CREDENTIAL_ENV`, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_ENV}
    env.update(extra or {})
    return env


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        try:
            proc.kill()
        except ProcessLookupError:
            pass


class LocalSession(PumpedOutput):
    def __init__(self, argv: list[str], env: dict[str, str] | None = None):
        super().__init__(f"local process {argv[0]}")
        self._proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
            text=True,
            bufsize=1,
        )
        self.pid = self._proc.pid
        threading.Thread(target=self._pump_stdout, daemon=True).start()
        threading.Thread(target=self._pump_stderr, daemon=True).start()

    def _pump_stdout(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self._output_line(line.rstrip("\n"))
        self._output_ended()

    def _pump_stderr(self) -> None:
        assert self._proc.stderr is not None
        for line in self._proc.stderr:
            self._error_line(line.rstrip("\n"))

    def send(self, text: str) -> None:
        stdin = self._proc.stdin
        if stdin is None or stdin.closed:
            raise SessionClosed(f"{self.description}: input already closed")
        try:
            stdin.write(text)
            stdin.flush()
        except (BrokenPipeError, OSError, ValueError) as err:
            raise SessionClosed(f"{self.description}: ended ({err.__class__.__name__})") from None

    def alive(self) -> bool:
        return self._proc.poll() is None

    def close_input(self) -> None:
        try:
            if self._proc.stdin is not None:
                self._proc.stdin.close()
        except OSError:
            pass

    def wait(self, timeout: float) -> int | None:
        try:
            return self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        if self._proc.poll() is None:
            _kill_group(self._proc)
        self.close_input()


class LocalRunner:
    """Runs commands on this machine, optionally with extra environment variables; never with
    Snapflow's own credentials (:func:`child_environment`)."""

    def __init__(self, env: dict[str, str] | None = None):
        self.description = "local"
        self._extra = dict(env or {})

    @property
    def _env(self) -> dict[str, str]:
        return child_environment(self._extra)

    def run(self, argv: list[str], *, stdin: str | None = None, timeout: float = 60.0) -> RunResult:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self._env,
            start_new_session=True,
            text=True,
        )
        try:
            out, err = proc.communicate(stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            out, err = proc.communicate()
            return RunResult(-9, out, (err + f"\nkilled after {timeout:g} s").strip())
        return RunResult(proc.returncode, out, err)

    def open_session(self, argv: list[str]) -> LocalSession:
        return LocalSession(argv, env=self._env)
