"""The S3 client never hangs: a server that does not answer fails a command within 30 s (exit 75,
naming the endpoint), a transfer that stalls fails after one read timeout, and a slow transfer that
keeps moving is never cut off (timeouts are per read and per 64 KiB written, not per transfer)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from steps.drivers.objectstore_s3 import S3Settings, S3Store
from steps.errors import EXIT_TEMPORARY, StoreUnavailable

ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def silent_server():
    """A TCP server on a free loopback port that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.settimeout(0.1)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        listener.close()
        for conn in accepted:
            conn.close()
        thread.join(5)


class TrickleProxy:
    """A TCP proxy in front of ``upstream`` that forwards each direction in ``chunk``-byte pieces with a
    pause of ``up_delay`` (request bytes) or ``down_delay`` (response bytes) after each piece; after
    ``up_stall_after`` request bytes or ``down_stall_after`` response bytes it stops forwarding that
    direction (the connection stays open)."""

    def __init__(self, upstream: str, chunk: int = 64 * 1024):
        host, _, port = upstream.removeprefix("http://").partition(":")
        self.upstream = (host, int(port))
        self.chunk = chunk
        self.up_delay = 0.0
        self.down_delay = 0.0
        self.up_stall_after: int | None = None
        self.down_stall_after: int | None = None
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.listener.settimeout(0.1)
        self.endpoint = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self._spawn(self._accept)

    def _spawn(self, fn, *args):
        t = threading.Thread(target=fn, args=args, daemon=True)
        self._threads.append(t)
        t.start()

    def _accept(self):
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            server = socket.create_connection(self.upstream, timeout=10)
            server.settimeout(None)
            self._sockets += [client, server]
            self._spawn(self._pump, client, server, "up")
            self._spawn(self._pump, server, client, "down")

    def _pump(self, src: socket.socket, dst: socket.socket, direction: str):
        forwarded = 0
        try:
            while not self._stop.is_set():
                data = src.recv(self.chunk)
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                stall_after = self.up_stall_after if direction == "up" else self.down_stall_after
                if stall_after is not None:
                    allowed = max(0, stall_after - forwarded)
                    if len(data) > allowed:
                        dst.sendall(data[:allowed])
                        self._stop.wait()  # hold the connection open, forward nothing more
                        return
                dst.sendall(data)
                forwarded += len(data)
                self._stop.wait(self.up_delay if direction == "up" else self.down_delay)
        except OSError:
            return

    def close(self):
        self._stop.set()
        self.listener.close()
        for s in self._sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)  # wakes a pump blocked in recv
            with contextlib.suppress(OSError):
                s.close()
        for t in self._threads:
            t.join(5)


@pytest.fixture
def trickle_proxy(s3_server, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    proxy = TrickleProxy(s3_server.endpoint)
    try:
        yield proxy
    finally:
        proxy.close()


def test_a_server_that_never_answers_fails_the_command_within_30_seconds(tmp_path):
    # GIVEN a server that accepts connections and never answers, and the default client settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("SNAPFLOW_S3_")}
    env.update(SNAPFLOW_PASSWORD="pw", AWS_ACCESS_KEY_ID="key", AWS_SECRET_ACCESS_KEY="secret")
    with silent_server() as endpoint:
        # WHEN a step opens a repository there
        started = time.monotonic()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "steps",
                "snapshots",
                "--repo",
                "s3://silent-bucket/p",
                "--endpoint",
                endpoint,
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        elapsed = time.monotonic() - started
    # THEN it fails as a temporary error within the bound, in one line naming the endpoint
    assert elapsed < 35, f"took {elapsed:.1f} s"
    assert proc.returncode == EXIT_TEMPORARY, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"object store {endpoint} did not answer GET config after 2 attempts" in proc.stderr


def test_the_timeouts_and_retry_budget_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("SNAPFLOW_S3_CONNECT_TIMEOUT", "0.5")
    monkeypatch.setenv("SNAPFLOW_S3_READ_TIMEOUT", "0.5")
    monkeypatch.setenv("SNAPFLOW_S3_RETRIES", "10")
    monkeypatch.setenv("SNAPFLOW_S3_RETRY_SECONDS", "2.5")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    with silent_server() as endpoint:
        settings = S3Settings.from_env(endpoint + "/")
        assert (settings.connect_timeout, settings.read_timeout, settings.retries) == (0.5, 0.5, 10)
        assert settings.endpoint == endpoint  # the trailing '/' is dropped
        store = S3Store(settings, "silent-bucket", "p")
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as err:
            store.get("config")
        elapsed = time.monotonic() - started
    # 10 retries allowed, but only those that can end within 2.5 s are started
    assert elapsed < 3.5, f"took {elapsed:.1f} s"
    assert "did not answer GET config after" in str(err.value)
    attempts = int(str(err.value).split(" after ")[1].split()[0])
    assert 1 < attempts < 5


def test_the_help_states_the_default_timeouts():
    from steps.commands._repo import CONNECTION_EPILOG
    from steps.drivers import objectstore_s3 as s3

    s = S3Settings("http://127.0.0.1:1")
    assert (s.connect_timeout, s.read_timeout, s.retries, s.retry_seconds) == (
        s3.DEFAULT_CONNECT_TIMEOUT,
        s3.DEFAULT_READ_TIMEOUT,
        s3.DEFAULT_RETRIES,
        s3.DEFAULT_RETRY_SECONDS,
    )
    assert f"SNAPFLOW_S3_CONNECT_TIMEOUT ({s.connect_timeout:g} s)" in CONNECTION_EPILOG
    assert f"SNAPFLOW_S3_READ_TIMEOUT ({s.read_timeout:g} s" in CONNECTION_EPILOG
    assert f"SNAPFLOW_S3_RETRIES ({s.retries})" in CONNECTION_EPILOG
    assert f"SNAPFLOW_S3_RETRY_SECONDS ({s.retry_seconds:g}:" in CONNECTION_EPILOG
    # a silent server costs at most the retry budget
    assert s.connect_timeout + s.read_timeout <= s.retry_seconds <= 30


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        (
            "SNAPFLOW_S3_READ_TIMEOUT",
            "nan",
            "SNAPFLOW_S3_READ_TIMEOUT: expected a number of seconds > 0, got 'nan'",
        ),
        ("SNAPFLOW_S3_CONNECT_TIMEOUT", "0", "SNAPFLOW_S3_CONNECT_TIMEOUT: expected a number of seconds > 0"),
        ("SNAPFLOW_S3_RETRY_SECONDS", "-1", "SNAPFLOW_S3_RETRY_SECONDS: expected a number of seconds >= 0"),
        ("SNAPFLOW_S3_RETRIES", "-5", "SNAPFLOW_S3_RETRIES: expected a whole number from 0 to 100, got '-5'"),
    ],
)
def test_bad_connection_settings_are_one_line_usage_errors(monkeypatch, name, value, expected):
    from steps.errors import UsageError

    monkeypatch.setenv(name, value)
    with pytest.raises(UsageError) as err:
        S3Settings.from_env("http://127.0.0.1:1")
    assert str(err.value).startswith(expected)


def test_a_slow_transfer_that_keeps_moving_is_not_cut_off(s3_server, trickle_proxy):
    # GIVEN a bucket behind a proxy that passes a pack up at ~2 MiB/s and down in 64 KiB steps every
    # 0.25 s, and a client whose connect timeout is far shorter than the upload and whose read timeout
    # is far shorter than the download
    bucket = f"slow-{uuid.uuid4().hex[:12]}"
    direct = S3Store(S3Settings(s3_server.endpoint, retries=0), bucket, "")
    direct.ensure_container()
    settings = S3Settings(trickle_proxy.endpoint, retries=0, connect_timeout=0.5, read_timeout=1.5)
    slow = S3Store(settings, bucket, "")
    pack = os.urandom(6 * 1024 * 1024)

    # WHEN it uploads (the body takes ~3 s to pass)
    trickle_proxy.up_delay = 0.03
    started = time.monotonic()
    slow.put("data/pack", pack)
    upload = time.monotonic() - started
    trickle_proxy.up_delay = 0.0
    assert direct.get("data/pack") == pack

    # AND downloads 768 KiB (12 steps of 0.25 s)
    trickle_proxy.down_delay = 0.25
    started = time.monotonic()
    got = slow.get_range("data/pack", 1000, 768 * 1024)
    download = time.monotonic() - started

    # THEN both complete, each taking longer than any single timeout
    assert got == pack[1000 : 1000 + 768 * 1024]
    assert upload > 2 * settings.connect_timeout, upload
    assert download > 2 * settings.read_timeout, download


def test_a_transfer_that_stalls_fails_after_one_read_timeout(s3_server, trickle_proxy):
    # GIVEN an object whose download stops after 100 KiB (the connection stays open)
    bucket = f"stall-{uuid.uuid4().hex[:12]}"
    S3Store(S3Settings(s3_server.endpoint, retries=0), bucket, "").ensure_container()
    slow = S3Store(S3Settings(trickle_proxy.endpoint, retries=0, read_timeout=1), bucket, "")
    slow.put("data/pack", os.urandom(1024 * 1024))
    trickle_proxy.down_stall_after = 100 * 1024
    # WHEN it is read THEN the read fails as a temporary error soon after the stall, naming the endpoint
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as err:
        slow.get("data/pack")
    assert time.monotonic() - started < 5
    assert f"object store {trickle_proxy.endpoint} did not answer GET data/pack after 1 attempt" in str(
        err.value
    )


def test_an_upload_that_stalls_fails_after_one_read_timeout(s3_server, trickle_proxy):
    # GIVEN a bucket behind a proxy that stops passing a request body on after 1 MiB
    bucket = f"stall-{uuid.uuid4().hex[:12]}"
    S3Store(S3Settings(s3_server.endpoint, retries=0), bucket, "").ensure_container()
    slow = S3Store(S3Settings(trickle_proxy.endpoint, retries=0, read_timeout=1), bucket, "")
    slow.put("config", b"{}")  # the connection is open and the bucket's region known
    trickle_proxy.up_stall_after = 1024 * 1024
    # WHEN a 6 MiB pack is uploaded THEN it fails soon after the stall, naming the endpoint
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as err:
        slow.put("data/pack", os.urandom(6 * 1024 * 1024))
    assert time.monotonic() - started < 5
    assert f"object store {trickle_proxy.endpoint} did not answer PUT data/pack after 1 attempt" in str(
        err.value
    )
