"""pods/exec for the fake Kubernetes API server: the WebSocket channel protocol (v5.channel.k8s.io and
v4.channel.k8s.io) the real `kubernetes.stream.stream(...)` speaks, with the command run as a local
process.

Channels: 0 stdin, 1 stdout, 2 stderr, 3 error/status (a v1 Status JSON with the exit code when the
command ends), 4 resize, and in v5 the close signal (255, channel). The process runs in its own session
(process group) with the test's environment, the container's literal env / secretKeyRef /
configMapKeyRef / fieldRef values, and what the test configured for the pod (`PodExec`: env, cwd, a
command wrapper). With tty=true it gets a pseudo-terminal, so a client disconnect closes the terminal
and the kernel sends SIGHUP; without a tty a disconnect closes its stdin (EOF), as containerd does, and
`ExecSettings.signal_on_disconnect` can add a signal. Every run is recorded as an `ExecSession`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import fcntl
import json
import os
import pty
import signal
import struct
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import WSMsgType, web

from tests.fakes.kube_objects import ApiError, bad_request, get_path, not_found

if TYPE_CHECKING:
    from tests.fakes.kubeapi import FakeKubeAPI

V4 = "v4.channel.k8s.io"
V5 = "v5.channel.k8s.io"
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255


@dataclass
class PodExec:
    """How commands exec'd into one pod (or one of its containers) run locally."""

    env: dict[str, str] = field(default_factory=dict)
    cwd: str | Path | None = None
    wrap: Callable[[list[str]], list[str]] | None = None


@dataclass
class ExecSettings:
    signal_on_disconnect: int | None = None
    """Signal sent to the command's process group when the client disconnects (besides closing stdin)."""


@dataclass
class ExecSession:
    namespace: str
    pod: str
    container: str
    command: list[str]
    stdin: bool
    tty: bool
    protocol: str
    pid: int | None = None
    started_at: float = 0.0
    ended_at: float | None = None
    exit_code: int | None = None
    client_disconnected: bool = False

    @property
    def running(self) -> bool:
        return self.ended_at is None


def _status(exit_code: int) -> dict:
    if exit_code == 0:
        return {"metadata": {}, "status": "Success"}
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: exit status {exit_code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(exit_code)}]},
    }


def _start_failure(command: list[str], error: OSError) -> dict:
    what = (
        f'exec: "{command[0]}": executable file not found in $PATH'
        if isinstance(error, FileNotFoundError)
        else (f'exec: "{command[0]}": {error.strerror or error}')
    )
    detail = (
        "error executing command in container: failed to exec in container: failed to start exec: "
        f"OCI runtime exec failed: exec failed: unable to start container process: {what}: unknown"
    )
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"Internal error occurred: {detail}",
        "reason": "InternalError",
        "details": {"causes": [{"message": detail}]},
        "code": 500,
    }


class ExecService:
    def __init__(self, server: FakeKubeAPI):
        self.server = server
        self.settings = ExecSettings()
        self.pods: dict[tuple[str, str, str | None], PodExec] = {}
        self.sessions: list[ExecSession] = []
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._tasks: set[asyncio.Task] = set()

    # -- request --------------------------------------------------------------------------------------

    def _config(self, namespace: str, pod: str, container: str) -> PodExec:
        return (
            self.pods.get((namespace, pod, container)) or self.pods.get((namespace, pod, None)) or PodExec()
        )

    def _container(self, pod: dict, wanted: str | None) -> dict:
        name = pod["metadata"]["name"]
        containers = list(get_path(pod, "spec", "containers", default=[]) or [])
        containers += list(get_path(pod, "spec", "ephemeralContainers", default=[]) or [])
        if wanted:
            for c in containers:
                if c.get("name") == wanted:
                    return c
            raise bad_request(f"container {wanted} is not valid for pod {name}")
        regular = get_path(pod, "spec", "containers", default=[]) or []
        default = (pod["metadata"].get("annotations") or {}).get("kubectl.kubernetes.io/default-container")
        if default:
            for c in regular:
                if c.get("name") == default:
                    return c
        if len(regular) == 1:
            return regular[0]
        names = " ".join(c.get("name", "") for c in regular)
        raise bad_request(f"a container name must be specified for pod {name}, choose one of: [{names}]")

    def _env(self, pod: dict, container: dict, config: PodExec) -> dict[str, str]:
        env = dict(os.environ)
        env["HOSTNAME"] = pod["metadata"]["name"]
        namespace = pod["metadata"].get("namespace", "")
        for item in container.get("env") or []:
            name = item.get("name")
            if "value" in item:
                env[name] = str(item["value"])
                continue
            source = item.get("valueFrom") or {}
            value = None
            if "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                secret = self.server.store.peek(
                    self.server.registry.resolve("secrets"), namespace, ref.get("name", "")
                )
                raw = get_path(secret or {}, "data", ref.get("key", ""))
                if raw is not None:
                    value = base64.b64decode(raw).decode(errors="replace")
                elif get_path(secret or {}, "stringData", ref.get("key", "")) is not None:
                    value = secret["stringData"][ref["key"]]
            elif "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                cm = self.server.store.peek(
                    self.server.registry.resolve("configmaps"), namespace, ref.get("name", "")
                )
                value = get_path(cm or {}, "data", ref.get("key", ""))
            elif "fieldRef" in source:
                path = source["fieldRef"].get("fieldPath", "")
                value = get_path(pod, *path.split("."))
            if value is not None:
                env[name] = str(value)
        env.update(config.env)
        return env

    def _cwd(self, namespace: str, pod: str, config: PodExec) -> str:
        if config.cwd is not None:
            return str(config.cwd)
        path = self.server.root / "pods" / namespace / pod
        path.mkdir(parents=True, exist_ok=True)
        return str(path)

    async def handle(self, request: web.Request, namespace: str, name: str) -> web.StreamResponse:
        pods = self.server.registry.resolve("pods")
        pod = self.server.store.peek(pods, namespace, name)
        if pod is None:
            raise not_found("pods", "", name)
        query = request.query
        command = query.getall("command", [])
        if not command:
            raise bad_request("you must specify at least 1 command")
        container = self._container(pod, query.get("container"))
        phase = get_path(pod, "status", "phase")
        if phase in ("Succeeded", "Failed"):
            raise bad_request(f"cannot exec into a container in a completed pod; current phase is {phase}")
        if phase != "Running":
            raise bad_request(
                f'unable to upgrade connection: container not found ("{container.get("name")}")'
            )
        want = {k: (query.get(k, "").lower() in ("true", "1")) for k in ("stdin", "stdout", "stderr", "tty")}
        ws = web.WebSocketResponse(protocols=(V5, V4), autoping=True, max_msg_size=0)
        ready = ws.can_prepare(request)
        if not ready.ok:
            raise ApiError(400, "BadRequest", "Upgrade request required")
        if ready.protocol not in (V4, V5):
            raise ApiError(400, "BadRequest", f"exec needs the {V5} or {V4} subprotocol")
        await ws.prepare(request)
        config = self._config(namespace, name, container.get("name"))
        argv = config.wrap(list(command)) if config.wrap else list(command)
        session = ExecSession(
            namespace=namespace,
            pod=name,
            container=container.get("name", ""),
            command=list(command),
            stdin=want["stdin"],
            tty=want["tty"],
            protocol=ws.ws_protocol or "",
            started_at=time.time(),
        )
        self.sessions.append(session)
        env, cwd = self._env(pod, container, config), self._cwd(namespace, name, config)
        try:
            runner = _TtyRun(argv, env, cwd) if want["tty"] else _PipeRun(argv, env, cwd, want)
            await runner.start()
        except OSError as error:
            session.ended_at, session.exit_code = time.time(), 127
            await _send(ws, ERROR, json.dumps(_start_failure(argv, error)).encode())
            await ws.close()
            return ws
        session.pid = runner.proc.pid
        self._procs[runner.proc.pid] = runner.proc
        waiter = asyncio.ensure_future(self._supervise(runner, session, ws))
        self._tasks.add(waiter)
        waiter.add_done_callback(self._tasks.discard)
        receiver = asyncio.ensure_future(self._receive(ws, runner, session))
        try:
            done, _ = await asyncio.wait({waiter, receiver}, return_when=asyncio.FIRST_COMPLETED)
            if waiter in done:
                exit_code = waiter.result()
                if not ws.closed:
                    with contextlib.suppress(Exception):
                        await _send(ws, ERROR, json.dumps(_status(exit_code)).encode())
                        await ws.close()
                receiver.cancel()
            else:
                self._hangup(runner, session)
        except asyncio.CancelledError:
            self._hangup(runner, session)
            receiver.cancel()
            raise
        return ws

    async def _receive(self, ws: web.WebSocketResponse, runner, session: ExecSession) -> None:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                data = msg.data.encode()
            elif msg.type == WSMsgType.BINARY:
                data = msg.data
            else:
                break
            if not data:
                continue
            channel, payload = data[0], data[1:]
            if channel == STDIN and session.stdin:
                await runner.write(payload)
            elif channel == RESIZE:
                runner.resize(payload)
            elif channel == CLOSE and ws.ws_protocol == V5 and payload[:1] == bytes([STDIN]):
                runner.close_stdin()

    async def _supervise(self, runner, session: ExecSession, ws: web.WebSocketResponse) -> int:
        async def forward(channel: int, chunk: bytes) -> None:
            if not ws.closed and not session.client_disconnected:
                with contextlib.suppress(Exception):
                    await _send(ws, channel, chunk)

        try:
            exit_code = await runner.run(forward)
        finally:
            self._procs.pop(runner.proc.pid, None)
        session.exit_code, session.ended_at = exit_code, time.time()
        return exit_code

    def _hangup(self, runner, session: ExecSession) -> None:
        if session.client_disconnected or not session.running:
            return
        session.client_disconnected = True
        runner.hangup()
        if self.settings.signal_on_disconnect is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(runner.proc.pid, self.settings.signal_on_disconnect)

    def kill_pod(self, namespace: str, pod: str) -> None:
        """The pod is gone: its containers' processes die (SIGKILL), as exec'd processes do."""
        for session in self.sessions:
            if session.namespace == namespace and session.pod == pod and session.running and session.pid:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(session.pid, signal.SIGKILL)

    async def shutdown(self) -> None:
        for proc in list(self._procs.values()):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        for task in list(self._tasks):
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(task, 5)


async def _send(ws: web.WebSocketResponse, channel: int, data: bytes) -> None:
    await ws.send_bytes(bytes([channel]) + data)


class _PipeRun:
    def __init__(self, argv: list[str], env: dict, cwd: str, want: dict):
        self.argv, self.env, self.cwd, self.want = argv, env, cwd, want
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        pipe, devnull = asyncio.subprocess.PIPE, asyncio.subprocess.DEVNULL
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=pipe if self.want["stdin"] else devnull,
            stdout=pipe,
            stderr=pipe,
            cwd=self.cwd,
            env=self.env,
            start_new_session=True,
        )

    async def run(self, forward) -> int:
        async def pump(stream: asyncio.StreamReader, channel: int, enabled: bool) -> None:
            while True:
                chunk = await stream.read(65536)
                if not chunk:
                    return
                if enabled:
                    await forward(channel, chunk)

        await asyncio.gather(
            pump(self.proc.stdout, STDOUT, self.want["stdout"]),
            pump(self.proc.stderr, STDERR, self.want["stderr"]),
        )
        code = await self.proc.wait()
        return 128 - code if code < 0 else code

    async def write(self, data: bytes) -> None:
        stdin = self.proc.stdin
        if stdin is None or stdin.is_closing():
            return
        try:
            stdin.write(data)
            await stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass

    def resize(self, payload: bytes) -> None:
        pass

    def close_stdin(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()

    def hangup(self) -> None:
        self.close_stdin()


class _TtyRun:
    """A command on a pseudo-terminal: closing the master on disconnect makes the kernel send SIGHUP."""

    def __init__(self, argv: list[str], env: dict, cwd: str):
        self.argv, self.env, self.cwd = argv, env, cwd
        self.proc: asyncio.subprocess.Process | None = None
        self.master: int | None = None

    async def start(self) -> None:
        master, slave = pty.openpty()
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                cwd=self.cwd,
                env=dict(self.env, TERM=self.env.get("TERM", "xterm")),
                start_new_session=True,
                preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
            )
        except OSError:
            os.close(master)
            raise
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        self.master = master

    async def run(self, forward) -> int:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        def readable() -> None:
            try:
                chunk = os.read(self.master, 65536)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if not chunk:
                loop.remove_reader(self.master)
            queue.put_nowait(chunk)

        loop.add_reader(self.master, readable)
        exit_task = asyncio.ensure_future(self.proc.wait())
        try:
            while True:
                get = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({get, exit_task}, return_when=asyncio.FIRST_COMPLETED)
                if get in done:
                    chunk = get.result()
                    if not chunk:
                        break
                    await forward(STDOUT, chunk)
                else:
                    get.cancel()
                    # the process is gone: drain what the terminal still holds
                    await asyncio.sleep(0.05)
                    while not queue.empty():
                        chunk = queue.get_nowait()
                        if chunk:
                            await forward(STDOUT, chunk)
                    break
        finally:
            self._close_master(loop)
        code = await exit_task
        return 128 - code if code < 0 else code

    def _close_master(self, loop=None) -> None:
        if self.master is None:
            return
        with contextlib.suppress(Exception):
            (loop or asyncio.get_running_loop()).remove_reader(self.master)
        with contextlib.suppress(OSError):
            os.close(self.master)
        self.master = None

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view and self.master is not None:
            try:
                written = os.write(self.master, view)
                view = view[written:]
            except BlockingIOError:
                await asyncio.sleep(0.01)
            except OSError as error:
                if error.errno in (errno.EIO, errno.EBADF):
                    return
                raise

    def resize(self, payload: bytes) -> None:
        try:
            size = json.loads(payload)
            if self.master is not None:
                fcntl.ioctl(
                    self.master, termios.TIOCSWINSZ, struct.pack("HHHH", size["Height"], size["Width"], 0, 0)
                )
        except (ValueError, KeyError, TypeError, OSError):
            pass

    def close_stdin(self) -> None:
        # a terminal has no separate stdin to close: send end-of-file (^D) instead
        if self.master is not None:
            with contextlib.suppress(OSError):
                os.write(self.master, b"\x04")

    def hangup(self) -> None:
        self._close_master()
