"""Throw-away infrastructure for the demo: a loop-mounted btrfs and a PostgreSQL server.

:class:`LoopBtrfs` (root only) makes a sparse image file, attaches it to a loop device, formats it
with btrfs and mounts it, so that a data directory can live in a subvolume and be snapshotted
atomically; :meth:`LoopBtrfs.destroy` unfreezes, unmounts and detaches whatever happened.
:class:`LocalPostgres` runs ``initdb`` / ``pg_ctl`` from the Debian packages in a directory of its
own, on a free loopback port, as the ``postgres`` user when run as root (PostgreSQL refuses root),
with a password kept in a file. Both clean up on :meth:`destroy` / :meth:`stop` and never touch the
system's own instances. Used by :mod:`workflows.demo`, and by the test fixtures of the database
hooks and of btrfs snapshots.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from steps.api import SnapflowError, runtime
from workflows.demo.seaweedfs import free_port


def _quiet(argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def _check(argv: list[str], what: str, timeout: float = 120) -> subprocess.CompletedProcess:
    r = _quiet(argv, timeout)
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
        raise SnapflowError(f"{what} failed (exit {r.returncode}): {' | '.join(tail)}")
    return r


# --------------------------------------------------------------------------------------------------
# btrfs on a loop device.


def btrfs_unavailable_reason() -> str | None:
    """None when a loop-mounted btrfs can be made here, else why not."""
    if os.geteuid() != 0:
        return "not running as root (loop devices and mount need root)"
    for tool in ("mkfs.btrfs", "btrfs", "losetup", "mount", "umount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian package btrfs-progs)"
    return None


class LoopBtrfs:
    """A btrfs file system on a sparse image, mounted at ``mountpoint``."""

    def __init__(self, base: Path, size_mb: int = 2048):
        self.base = Path(base)
        self.image = self.base / "btrfs.img"
        self.mountpoint = self.base / "mnt"
        self.size_mb = size_mb
        self.device: str | None = None
        self.mounted = False

    def create(self) -> LoopBtrfs:
        self.base.mkdir(parents=True, exist_ok=True)
        with open(self.image, "wb") as f:
            f.truncate(self.size_mb * 1024 * 1024)
        self.device = _check(["losetup", "--find", "--show", str(self.image)], "losetup").stdout.strip()
        try:
            _check(["mkfs.btrfs", "-q", "-f", self.device], "mkfs.btrfs")
            self.mountpoint.mkdir(exist_ok=True)
            _check(["mount", self.device, str(self.mountpoint)], "mount")
            self.mounted = True
            os.chmod(self.mountpoint, 0o755)  # the database user must reach its data directory
        except BaseException:
            self.destroy()
            raise
        return self

    def subvolume(self, name: str) -> Path:
        path = self.mountpoint / name
        _check(["btrfs", "subvolume", "create", str(path)], "btrfs subvolume create")
        return path

    def destroy(self) -> None:
        """Unfreeze, unmount (lazily if still busy), detach the loop device, delete the image."""
        if self.mounted:
            _quiet(["fsfreeze", "-u", str(self.mountpoint)])
            if _quiet(["umount", str(self.mountpoint)]).returncode != 0:
                _quiet(["fsfreeze", "-u", str(self.mountpoint)])
                _quiet(["umount", "-l", str(self.mountpoint)])
            self.mounted = False
        if self.device:
            _quiet(["losetup", "-d", self.device])
            self.device = None
        with contextlib.suppress(FileNotFoundError):
            self.image.unlink()


# --------------------------------------------------------------------------------------------------
# PostgreSQL.


def postgres_bin_dir() -> Path | None:
    """The newest Debian PostgreSQL server binaries (or $SNAPFLOW_PG_BIN), None when not installed."""
    env = os.environ.get(runtime.PG_BIN)
    candidates = [Path(env)] if env else []

    def version(path: str) -> float:
        try:
            return float(Path(path).parent.parent.name)
        except ValueError:
            return 0.0

    candidates += [
        Path(p).parent
        for p in sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version, reverse=True)
    ]
    for c in candidates:
        if all((c / tool).exists() for tool in ("initdb", "pg_ctl", "psql", "pgbench")):
            return c
    return None


def chown_tree(path: Path, user: str) -> None:
    """Give ``path`` (a file, or a directory and everything below it) to ``user``."""
    pw = pwd.getpwnam(user)
    os.lchown(path, pw.pw_uid, pw.pw_gid)
    for root, dirs, files in os.walk(path):
        os.chown(root, pw.pw_uid, pw.pw_gid)
        for name in dirs + files:
            os.lchown(os.path.join(root, name), pw.pw_uid, pw.pw_gid)


def unreachable_parent(path: Path) -> Path | None:
    """The first parent of ``path`` that other users cannot enter (the database user must), or None."""
    for parent in [Path(path).absolute(), *Path(path).absolute().parents]:
        if not os.stat(parent).st_mode & 0o001:
            return parent
    return None


# Server settings for a short-lived instance: few checkpoints, no waiting for the disk.
POSTGRES_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "max_wal_size": "1GB",
    "checkpoint_timeout": "30min",
    "synchronous_commit": "off",
    "shared_buffers": "64MB",
}


class LocalPostgres:
    """One throw-away PostgreSQL server: data in ``datadir``, socket and password in ``rundir``.

    ``settings`` (``-c NAME=VALUE`` of the server) are added to, or replace, :data:`POSTGRES_SETTINGS`.
    """

    def __init__(
        self,
        bindir: Path,
        datadir: Path,
        rundir: Path,
        port: int | None = None,
        settings: dict[str, str] | None = None,
    ):
        self.bin = Path(bindir)
        self.datadir = Path(datadir)
        self.rundir = Path(rundir)
        self.port = port or free_port()
        self.settings = {**POSTGRES_SETTINGS, **(settings or {})}
        self.as_root = os.geteuid() == 0
        self.user = "postgres" if self.as_root else pwd.getpwuid(os.geteuid()).pw_name
        self.password_file = self.rundir / "password"
        self.logfile = self.rundir / "server.log"
        self.started = False

    # -- helpers ---------------------------------------------------------------------------------
    def _as_owner(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *argv] if self.as_root else argv

    def _chown(self, path: Path) -> None:
        if self.as_root:
            chown_tree(path, "postgres")

    def _password(self) -> str:
        return self.password_file.read_text().strip()

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "PGHOST": "127.0.0.1",
            "PGPORT": str(self.port),
            "PGUSER": "postgres",
            "PGDATABASE": "postgres",
            "PGPASSWORD": self._password(),
            "PGCONNECT_TIMEOUT": "10",
        }

    @property
    def conn_params(self) -> dict[str, object]:
        """Connection parameters of the ``postgresql`` hook (no credential: it reads the password file)."""
        return {
            "host": "127.0.0.1",
            "port": self.port,
            "user": "postgres",
            "dbname": "postgres",
            "password_file": str(self.password_file),
        }

    @property
    def hook_params(self) -> dict[str, object]:
        """Parameters of the ``postgresql`` hook: :attr:`conn_params` and this server's own ``psql``."""
        return {**self.conn_params, "psql": str(self.bin / "psql")}

    # -- life cycle ------------------------------------------------------------------------------
    def initdb(self) -> LocalPostgres:
        self.rundir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.rundir, 0o755)
        if not self.password_file.exists():
            self.password_file.write_text(secrets.token_urlsafe(18) + "\n")
            os.chmod(self.password_file, 0o600)
        self.datadir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.datadir, 0o700)
        self._chown(self.datadir)
        with tempfile.NamedTemporaryFile("w", dir=self.rundir, prefix="initpw.", delete=False) as f:
            f.write(self._password() + "\n")
        pwfile = Path(f.name)
        try:
            os.chmod(pwfile, 0o600)
            self._chown(pwfile)
            _check(
                self._as_owner(
                    [
                        str(self.bin / "initdb"),
                        "-D", str(self.datadir),
                        "-U", "postgres",
                        "--no-sync",
                        "--auth-local=trust",
                        "--auth-host=scram-sha-256",
                        f"--pwfile={pwfile}",
                    ]
                ),
                "initdb",
            )  # fmt: skip
        finally:
            pwfile.unlink(missing_ok=True)
        return self

    def start(self, timeout: float = 60) -> LocalPostgres:
        sockdir = self.rundir / "socket"
        sockdir.mkdir(exist_ok=True)
        os.chmod(sockdir, 0o777)
        if self.as_root:
            self.logfile.touch()
            self._chown(self.logfile)
        opts = " ".join([f"-p {self.port} -k {sockdir}", *(f"-c {k}={v}" for k, v in self.settings.items())])
        r = _quiet(
            self._as_owner(
                [str(self.bin / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.logfile), "-w",
                 "-t", str(int(timeout)), "-o", opts, "start"]
            ),
            timeout=timeout + 10,
        )  # fmt: skip
        if r.returncode != 0:
            raise SnapflowError(f"PostgreSQL did not start on {self.datadir}: {self.log_tail()}")
        self.started = True
        return self

    def log_tail(self, lines: int = 6) -> str:
        try:
            text = self.logfile.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(text[-lines:])

    def stop(self, mode: str = "fast") -> None:
        if not (self.datadir / "postmaster.pid").exists():
            self.started = False
            return
        r = _quiet(
            self._as_owner(
                [str(self.bin / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "-t", "60", "stop"]
            ),
            timeout=90,
        )
        if r.returncode != 0:
            with contextlib.suppress(OSError, ValueError, IndexError):
                pid = int((self.datadir / "postmaster.pid").read_text().split()[0])
                os.kill(pid, signal.SIGKILL)
        self.started = False

    # -- use ---------------------------------------------------------------------------------------
    def _client(
        self, tool: str, args: tuple[str, ...], timeout: float, what: str
    ) -> subprocess.CompletedProcess:
        """Run client program ``tool`` (psql, pgbench) against this server; a failure names ``what``."""
        r = subprocess.run(
            [str(self.bin / tool), *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if r.returncode != 0:
            raise SnapflowError(f"{what} failed: {r.stderr.strip()[-300:]}")
        return r

    def sql(self, query: str, timeout: float = 60) -> str:
        args = ("-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", query)
        return self._client("psql", args, timeout, "psql").stdout.strip()

    def pgbench(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """Run ``pgbench ARGS`` to completion against this server."""
        return self._client("pgbench", args, timeout, f"pgbench {' '.join(args[:1])}")

    def pgbench_init(self, scale: int) -> None:
        self.pgbench("-i", "-s", str(scale), "-q", timeout=600)

    def pgbench_load(self, clients: int = 4, seconds: int = 600) -> subprocess.Popen:
        """TPC-B-like load until stopped (terminate the returned process)."""
        return subprocess.Popen(
            [str(self.bin / "pgbench"), "-c", str(clients), "-j", "2", "-T", str(seconds), "-n"],
            env=self.env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def tpcb_sums(self) -> dict[str, int]:
        """The TPC-B invariant's terms: every sum equals the others in a consistent database."""
        row = self.sql(
            "SELECT (SELECT coalesce(sum(abalance),0) FROM pgbench_accounts),"
            " (SELECT coalesce(sum(tbalance),0) FROM pgbench_tellers),"
            " (SELECT coalesce(sum(bbalance),0) FROM pgbench_branches),"
            " (SELECT coalesce(sum(delta),0) FROM pgbench_history),"
            " (SELECT count(*) FROM pgbench_history)"
        )
        a, t, b, h, n = (int(x) for x in row.split("|"))
        return {"accounts": a, "tellers": t, "branches": b, "history": h, "transactions": n}


def tpcb_invariant_holds(sums: dict[str, int]) -> bool:
    """True when the balances of :meth:`LocalPostgres.tpcb_sums` agree (a consistent database)."""
    return sums["accounts"] == sums["tellers"] == sums["branches"] == sums["history"]


def stop_process(proc: subprocess.Popen | None, timeout: float = 10) -> None:
    """Stop a process started in its own session (and its children)."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)
