"""Runs hook commands inside a pod's container through the pods/exec API (``kubernetes.stream``).

One-shot commands get their input through the command line of a ``sh -c`` wrapper (stdin's end of
file cannot be signalled over the v4 channel protocol); sessions keep the exec stream's standard input
open and read its output on a background thread. Closing a session's input uses the v5 close signal
when the server speaks v5, else drops the stream — either way the process sees end of file (the
runtime closes its stdin), which is what a watcher waits for. ``kubernetes`` is imported lazily: data
commands never pay for it.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from steps.drivers.runner import PumpedOutput, RunResult, SessionClosed

_FEED_STDIN = 'printf "%s" "$0" | "$@"'


def _stream(core: Any, namespace: str, pod: str, container: str | None, argv: list[str], stdin: bool):
    from kubernetes.client.rest import ApiException
    from kubernetes.stream import stream

    from steps.errors import PermanentError, TemporaryError

    kwargs = {
        "command": argv,
        "stdin": stdin,
        "stdout": True,
        "stderr": True,
        "tty": False,
        "_preload_content": False,
    }
    if container:
        kwargs["container"] = container
    try:
        return stream(core.connect_get_namespaced_pod_exec, pod, namespace, **kwargs)
    except ApiException as err:
        where = f"pod {namespace}/{pod}" + (f" container {container}" if container else "")
        if err.status in (400, 403, 404):
            raise PermanentError(f"exec into {where} refused ({err.status} {err.reason})") from None
        raise TemporaryError(f"exec into {where} failed ({err.status} {err.reason})") from None
    except Exception as err:  # websocket handshake / connection errors
        raise TemporaryError(f"exec into pod {namespace}/{pod} failed: {err}") from None


class KubeSession(PumpedOutput):
    def __init__(self, ws: Any, description: str):
        super().__init__(description)
        self._ws = ws
        self._send = threading.Lock()
        self._finished = threading.Event()
        self._returncode: int | None = None
        self._input_closed = False
        threading.Thread(target=self._pump, name=f"exec-{description}", daemon=True).start()

    def _pump(self) -> None:
        out, err = "", ""
        try:
            while self._ws.is_open():
                self._ws.update(timeout=0.2)
                if self._ws.peek_stdout():
                    out += self._ws.read_stdout()
                    *lines, out = out.split("\n")
                    for line in lines:
                        self._output_line(line)
                if self._ws.peek_stderr():
                    err += self._ws.read_stderr()
                    *lines, err = err.split("\n")
                    for line in lines:
                        self._error_line(line)
        except Exception:
            pass
        finally:
            if out:
                self._output_line(out)
            if err:
                self._error_line(err)
            try:
                self._returncode = self._ws.returncode
            except Exception:
                self._returncode = None
            self._output_ended()
            self._finished.set()

    def send(self, text: str) -> None:
        if self._finished.is_set() or self._input_closed:
            raise SessionClosed(f"{self.description}: stream closed")
        try:
            with self._send:
                self._ws.write_stdin(text)
        except Exception as err:
            raise SessionClosed(f"{self.description}: stream closed ({err.__class__.__name__})") from None

    def alive(self) -> bool:
        return not self._finished.is_set()

    def close_input(self) -> None:
        if self._input_closed:
            return
        self._input_closed = True
        try:
            with self._send:
                if getattr(self._ws, "subprotocol", None) == "v5.channel.k8s.io":
                    self._ws.close_channel(0)
                    return
        except Exception:
            pass
        self.kill()

    def wait(self, timeout: float) -> int | None:
        if not self._finished.wait(timeout):
            return None
        return self._returncode if self._returncode is not None else -1

    def kill(self) -> None:
        try:
            self._ws.close()
        except Exception:
            pass


class KubeRunner:
    """Runs commands in ``pod`` (``container``) of ``namespace``."""

    def __init__(self, namespace: str, pod: str, container: str | None = None, api_client: Any = None):
        self.namespace = namespace
        self.pod = pod
        self.container = container
        self.description = f"pod {namespace}/{pod}" + (f"/{container}" if container else "")
        self._api_client = api_client
        self._core = None

    def _api(self):
        if self._core is None:
            from kubernetes import client

            if self._api_client is None:
                from steps.drivers.kube import api_client

                self._api_client = api_client()
            self._core = client.CoreV1Api(self._api_client)
        return self._core

    def run(self, argv: list[str], *, stdin: str | None = None, timeout: float = 60.0) -> RunResult:
        if stdin is not None:
            argv = ["sh", "-c", _FEED_STDIN, stdin, *argv]
        ws = _stream(self._api(), self.namespace, self.pod, self.container, argv, stdin=False)
        out, err = [], []
        deadline = time.monotonic() + timeout
        try:
            while ws.is_open():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return RunResult(
                        -9, "".join(out), ("".join(err) + f"\nkilled after {timeout:g} s").strip()
                    )
                ws.update(timeout=min(remaining, 0.5))
                if ws.peek_stdout():
                    out.append(ws.read_stdout())
                if ws.peek_stderr():
                    err.append(ws.read_stderr())
            rc = ws.returncode
        finally:
            ws.close()
        return RunResult(rc if rc is not None else -1, "".join(out), "".join(err))

    def open_session(self, argv: list[str]) -> KubeSession:
        ws = _stream(self._api(), self.namespace, self.pod, self.container, argv, stdin=True)
        return KubeSession(ws, f"{self.description} {argv[0]}")
