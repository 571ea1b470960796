"""pods/exec through the fake API server with the real `kubernetes.stream` client: output channels,
exit codes, interactive stdin, and what the process sees when the client goes away."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from pathlib import Path

import pytest
from kubernetes import client, stream, watch

from tests.fakes.kubeapi import FakeKubeAPI

PY = sys.executable


def _exec(core: client.CoreV1Api, pod: str, command: list[str], **kwargs):
    options = {"stdout": True, "stderr": True, "stdin": False, "tty": False}
    options.update(kwargs)
    return stream.stream(core.connect_get_namespaced_pod_exec, pod, "default", command=command, **options)


def _wait_for_file(path: Path, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.01)
    raise AssertionError(f"{path} was not written within {timeout} s")


@pytest.fixture
def core(kube_server: FakeKubeAPI, kube_client) -> client.CoreV1Api:
    kube_server.pod("default", "db", containers=["postgres"])
    return client.CoreV1Api(kube_client)


def test_exec_returns_stdout_and_stderr(core):
    out = _exec(core, "db", ["sh", "-c", "echo out; echo err >&2"])
    assert sorted(out.splitlines()) == ["err", "out"]


def test_exec_keeps_channels_apart_and_reports_exit_codes(core, kube_server: FakeKubeAPI):
    resp = _exec(core, "db", ["sh", "-c", "echo to-out; echo to-err >&2; exit 3"], _preload_content=False)
    resp.run_forever(timeout=10)
    assert resp.read_stdout() == "to-out\n" and resp.read_stderr() == "to-err\n"
    assert resp.returncode == 3
    ok = _exec(core, "db", ["true"], _preload_content=False)
    ok.run_forever(timeout=10)
    assert ok.returncode == 0
    session = kube_server.exec_sessions[0]
    assert (session.pod, session.container, session.exit_code) == ("db", "postgres", 3)
    assert session.protocol == "v5.channel.k8s.io"


def test_exec_speaks_v4_when_the_client_asks_for_it(kube_server: FakeKubeAPI, core):
    with kube_server.api_client() as api_client:
        api_client.set_default_header("sec-websocket-protocol", "v4.channel.k8s.io")
        resp = _exec(
            client.CoreV1Api(api_client), "db", ["sh", "-c", "echo v4; exit 7"], _preload_content=False
        )
        resp.run_forever(timeout=10)
        assert resp.read_stdout() == "v4\n" and resp.returncode == 7
    assert kube_server.exec_sessions[-1].protocol == "v4.channel.k8s.io"


def test_interactive_session_over_stdin(core, kube_server: FakeKubeAPI):
    # GIVEN a held session that answers each line it reads, like a database shell
    program = "import sys\nfor line in sys.stdin:\n    print(line.strip().upper(), flush=True)\nprint('bye', flush=True)"
    resp = _exec(core, "db", [PY, "-u", "-c", program], stdin=True, _preload_content=False)
    # WHEN lines are sent one by one THEN each reply comes back while the session stays open
    resp.write_stdin("select 1\n")
    assert resp.readline_stdout(timeout=10) == "SELECT 1"
    resp.write_stdin("checkpoint\n")
    assert resp.readline_stdout(timeout=10) == "CHECKPOINT"
    assert resp.is_open()
    # AND closing stdin (v5) ends the program normally
    resp.close_channel(0)
    resp.run_forever(timeout=10)
    assert "bye" in resp.read_stdout() and resp.returncode == 0


def test_client_disconnect_closes_the_process_stdin(core, kube_server: FakeKubeAPI, tmp_path: Path):
    # GIVEN a holder that waits on stdin and records what ended its wait
    marker = tmp_path / "released"
    program = (
        "import sys\n"
        f"marker = {str(marker)!r}\n"
        "print('holding', flush=True)\n"
        "sys.stdin.read()\n"
        "open(marker, 'w').write('stdin-eof')\n"
    )
    resp = _exec(core, "db", [PY, "-u", "-c", program], stdin=True, _preload_content=False)
    assert resp.readline_stdout(timeout=10) == "holding"
    # WHEN the client goes away without closing stdin
    resp.close()
    # THEN the process sees end-of-file on stdin, and the session is recorded as disconnected
    assert _wait_for_file(marker) == "stdin-eof"
    session = kube_server.exec_sessions[-1]
    assert kube_server.wait_exec_done(session) == 0 and session.client_disconnected


def test_client_disconnect_can_also_send_a_signal(core, kube_server: FakeKubeAPI, tmp_path: Path):
    marker = tmp_path / "signalled"
    kube_server.exec_settings.signal_on_disconnect = 1  # SIGHUP
    program = (
        "import signal, time\n"
        f"marker = {str(marker)!r}\n"
        "def hup(*_):\n"
        "    open(marker, 'w').write('SIGHUP')\n"
        "    raise SystemExit(0)\n"
        "signal.signal(signal.SIGHUP, hup)\n"
        "print('ready', flush=True)\n"
        "time.sleep(30)\n"
    )
    resp = _exec(core, "db", [PY, "-u", "-c", program], _preload_content=False)
    assert resp.readline_stdout(timeout=10) == "ready"
    resp.close()
    assert _wait_for_file(marker) == "SIGHUP"


def test_tty_disconnect_hangs_up_the_terminal(core, kube_server: FakeKubeAPI, tmp_path: Path):
    marker = tmp_path / "hangup"
    program = (
        "import signal, sys, time\n"
        f"marker = {str(marker)!r}\n"
        "def hup(*_):\n"
        "    open(marker, 'w').write('SIGHUP')\n"
        "    raise SystemExit(0)\n"
        "signal.signal(signal.SIGHUP, hup)\n"
        "print('tty' if sys.stdin.isatty() else 'no-tty', flush=True)\n"
        "time.sleep(30)\n"
    )
    resp = _exec(
        core, "db", [PY, "-u", "-c", program], stdin=True, tty=True, stderr=False, _preload_content=False
    )
    assert resp.readline_stdout(timeout=10).strip() == "tty"
    resp.close()
    assert _wait_for_file(marker) == "SIGHUP"


def test_exec_env_comes_from_the_pod_spec_secrets_and_test_configuration(
    kube_server: FakeKubeAPI, kube_client, tmp_path: Path
):
    core = client.CoreV1Api(kube_client)
    core.create_namespaced_secret(
        "default", {"metadata": {"name": "creds"}, "stringData": {"password": "s3cret"}}
    )
    kube_server.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "b64", "namespace": "default"},
            "data": {"k": "dmFsdWU="},
        }
    )
    kube_server.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "app", "namespace": "default"},
            "spec": {
                "containers": [
                    {
                        "name": "main",
                        "image": "x",
                        "env": [
                            {"name": "LITERAL", "value": "1"},
                            {
                                "name": "FROM_SECRET",
                                "valueFrom": {"secretKeyRef": {"name": "b64", "key": "k"}},
                            },
                            {
                                "name": "POD_NAMESPACE",
                                "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
                            },
                        ],
                    }
                ]
            },
        }
    )
    kube_server.wait_for("pods", "app", "default", lambda p: p["status"]["phase"] == "Running")
    kube_server.configure_exec("default", "app", env={"PGPORT": "55432"}, cwd=tmp_path)
    out = _exec(
        core, "app", ["sh", "-c", 'echo "$LITERAL $FROM_SECRET $POD_NAMESPACE $PGPORT $HOSTNAME $(pwd)"']
    )
    assert out.strip() == f"1 value default 55432 app {tmp_path}"


def test_exec_wrapper_rewrites_the_command(kube_server: FakeKubeAPI, core):
    kube_server.configure_exec("default", "db", wrap=lambda cmd: ["env", "WRAPPED=yes", *cmd])
    assert _exec(core, "db", ["sh", "-c", "echo $WRAPPED"]).strip() == "yes"


def test_exec_into_a_missing_pod_or_container_fails(core):
    with pytest.raises(client.ApiException) as missing:
        _exec(core, "ghost", ["true"])
    assert "404" in str(missing.value)
    with pytest.raises(client.ApiException) as bad_container:
        _exec(core, "db", ["true"], container="nope")
    assert "400" in str(bad_container.value)


def test_exec_of_a_missing_program_reports_the_runtime_error(core):
    resp = _exec(core, "db", ["no-such-program-anywhere"], _preload_content=False)
    resp.run_forever(timeout=10)
    error = resp.read_channel(3)
    assert "executable file not found" in error and "InternalError" in error


def test_exec_large_output_arrives_complete(core):
    out = _exec(core, "db", [PY, "-c", "import sys; sys.stdout.write('x' * 300000)"])
    assert len(out) == 300000


def test_deleting_the_pod_kills_its_exec_processes(core, kube_server: FakeKubeAPI):
    resp = _exec(core, "db", ["sh", "-c", "echo started; sleep 30"], _preload_content=False)
    assert resp.readline_stdout(timeout=10) == "started"
    core.delete_namespaced_pod("db", "default")
    resp.run_forever(timeout=10)
    assert resp.returncode == 137


def test_stopping_the_server_ends_watches_and_exec_processes(tmp_path: Path):
    server = FakeKubeAPI(tmp_path / "kube").start()
    try:
        server.pod("default", "p")
        api_client = server.api_client()
        core = client.CoreV1Api(api_client)
        resp = _exec(core, "p", ["sh", "-c", "echo up; sleep 60"], _preload_content=False)
        assert resp.readline_stdout(timeout=10) == "up"
        (session,) = server.exec_sessions
        ended = threading.Event()

        def watch_pods() -> None:
            with contextlib.suppress(Exception):
                for _ in watch.Watch().stream(core.list_namespaced_pod, "default", timeout_seconds=60):
                    pass
            ended.set()

        threading.Thread(target=watch_pods, daemon=True).start()
        time.sleep(0.2)
    finally:
        started = time.monotonic()
        server.stop()
    assert time.monotonic() - started < 5
    assert ended.wait(5)
    assert session.exit_code == 137
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(session.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.02)
    else:
        raise AssertionError(f"exec process {session.pid} survived the server")
    resp.close()
    api_client.close()
