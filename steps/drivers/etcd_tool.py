"""etcd's own tools on this machine: ``snapshot status`` of a snapshot file, and ``snapshot restore``
into a new data directory.

etcd 3.5 and later ship ``etcdutl`` for offline work on files; etcd 3.4 (Debian bookworm) has only
``etcdctl snapshot status`` / ``etcdctl snapshot restore``. :func:`find_tool` picks one (``etcdutl``
first) and reads its version, so that a restore can use the tool of the version that took the snapshot.
:func:`prepare_data_dir` and :func:`restore_data_dir` write the new data directory: the tool writes into
a fresh directory inside the target, whose contents then move into place, so that the target may be a
mount point (a hostPath or a volume's root). Called by ``etcd-snapshot`` and ``etcd-restore``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

from steps.errors import PermanentError, UsageError

TOOL_NAMES = ("etcdutl", "etcdctl")
TOOL_TIMEOUT = 3600
IGNORED_IN_EMPTY_DIR = ("lost+found",)


@dataclass(frozen=True)
class EtcdTool:
    path: str
    name: str  # etcdutl or etcdctl
    version: str  # e.g. 3.4.23

    def __str__(self) -> str:
        return f"{self.name} {self.version}"


def _run(argv: list[str], what: str, timeout: float = TOOL_TIMEOUT) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    except OSError as err:
        raise UsageError(f"{what}: cannot run {argv[0]!r} ({err.strerror})") from None
    except subprocess.TimeoutExpired:
        raise PermanentError(f"{what}: {argv[0]} did not finish within {timeout:g} s") from None


def _last_error_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.lower().startswith(("error", '{"level":"fatal"', '{"level":"error"')):
            return ln[:300]
    return lines[-1][:300] if lines else "no output"


def tool_version(path: str) -> str:
    out = _run([path, "version"], "--etcd-tool", timeout=30)
    m = re.search(r"(?:etcdctl|etcdutl) version:\s*v?(\d+\.\d+\.\d+\S*)", out.stdout)
    if out.returncode != 0 or not m:
        raise UsageError(f"--etcd-tool: {path!r} does not report an etcdctl or etcdutl version")
    return m.group(1)


def find_tool(explicit: str | None = None) -> EtcdTool | None:
    """The etcd tool at ``explicit`` (UsageError when it is not one), else ``etcdutl`` or ``etcdctl`` on
    the PATH, else None."""
    if explicit:
        path = shutil.which(explicit) or explicit
        if not os.path.isfile(path):
            raise UsageError(f"--etcd-tool: {explicit!r} does not exist")
        name = "etcdutl" if "etcdutl" in os.path.basename(path) else "etcdctl"
        return EtcdTool(path, name, tool_version(path))
    for name in TOOL_NAMES:
        path = shutil.which(name)
        if path:
            return EtcdTool(path, name, tool_version(path))
    return None


def snapshot_status(tool: EtcdTool, db: str) -> dict:
    """``snapshot status -w json`` of a snapshot file: ``{"hash", "revision", "totalKey", "totalSize"}``.
    The file is only read."""
    out = _run([tool.path, "snapshot", "status", "-w", "json", db], f"{tool.name} snapshot status")
    if out.returncode != 0:
        raise PermanentError(f"{tool.name} snapshot status {db}: {_last_error_line(out.stderr + out.stdout)}")
    for line in reversed(out.stdout.splitlines()):
        line = line.strip()
        if line.startswith("{") and '"revision"' in line:
            try:
                return json.loads(line)
            except ValueError:
                break
    raise PermanentError(f"{tool.name} snapshot status {db}: no JSON status in its output")


def prepare_data_dir(path: str) -> None:
    """Refuse a target that holds anything but an empty ``lost+found``; create a missing one (0700)."""
    if os.path.lexists(path) and not os.path.isdir(path):
        raise UsageError(f"--data-dir: {path!r} exists and is not a directory")
    if os.path.isdir(path):
        entries = sorted(os.listdir(path))
        held = [
            e for e in entries if not (e in IGNORED_IN_EMPTY_DIR and not os.listdir(os.path.join(path, e)))
        ]
        if held:
            shown = ", ".join(held[:5]) + (", ..." if len(held) > 5 else "")
            raise UsageError(
                f"--data-dir: {path!r} is not empty (it holds {shown}); etcd's data directory is restored only"
                " into an empty one: move the old one aside first"
            )
    else:
        try:
            os.makedirs(path, mode=0o700)
        except OSError as err:
            raise UsageError(f"--data-dir: cannot create {path!r} ({err.strerror})") from None
    try:
        os.chmod(path, 0o700)
    except OSError:
        pass


def restore_data_dir(
    tool: EtcdTool,
    db: str,
    data_dir: str,
    name: str,
    initial_cluster: str,
    peer_urls: str,
    token: str,
    check: Callable[[str], None] | None = None,
) -> list[str]:
    """Write a new etcd data directory from ``db`` into ``data_dir`` (see :func:`prepare_data_dir`) for
    member ``name`` of ``initial_cluster`` with a new cluster ``token``. Returns the entries written.
    ``check(directory)`` runs on the written directory before anything is moved into ``data_dir``: the
    move is the last step, so an interrupted or failed restore never leaves a data directory that looks
    finished; a move that fails halfway takes back what it moved."""
    prepare_data_dir(data_dir)
    work = tempfile.mkdtemp(prefix=".snapflow-etcd-restore-", dir=data_dir)
    inner = os.path.join(work, "data")
    argv = [
        tool.path,
        "snapshot",
        "restore",
        db,
        "--name",
        name,
        "--initial-cluster",
        initial_cluster,
        "--initial-cluster-token",
        token,
        "--initial-advertise-peer-urls",
        peer_urls,
        "--data-dir",
        inner,
    ]
    try:
        out = _run(argv, f"{tool.name} snapshot restore")
        if out.returncode != 0:
            raise PermanentError(
                f"{tool.name} snapshot restore of {os.path.basename(db)}: {_last_error_line(out.stderr + out.stdout)}"
            )
        if check is not None:
            check(inner)
        written = sorted(os.listdir(inner))
        moved: list[str] = []
        try:
            for entry in written:
                os.rename(os.path.join(inner, entry), os.path.join(data_dir, entry))
                moved.append(entry)
        except OSError as err:
            left = remove_written(data_dir, moved)
            raise PermanentError(
                f"--data-dir: cannot move the restored data into {data_dir} ({err.strerror or err})"
                + (f"; could not remove {', '.join(left)} again: remove them by hand" if left else "")
            ) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return written


def verify_data_dir(tool: EtcdTool, data_dir: str, revision: int | None) -> dict:
    """Open the database of a data directory just written (``member/snap/db``) with ``tool``'s
    ``snapshot status`` (bbolt opens it, every bucket is read and hashed) and check that its revision
    is the snapshot's (a restore keeps it). Returns the status; PermanentError naming what is wrong."""
    db = os.path.join(data_dir, "member", "snap", "db")
    if not os.path.isfile(db):
        raise PermanentError(f"--data-dir: {tool} wrote no member/snap/db into {data_dir!r}")
    status = snapshot_status(tool, db)
    got = status.get("revision")
    if revision is not None and got != revision:
        raise PermanentError(
            f"--data-dir: the database {tool} wrote has revision {got}, the snapshot's is {revision}"
        )
    return status


def remove_written(data_dir: str, written: list[str]) -> list[str]:
    """Remove the entries :func:`restore_data_dir` moved into ``data_dir`` (a data directory that did
    not verify must not be started); returns those that could not be removed."""
    left: list[str] = []
    for entry in written:
        path = os.path.join(data_dir, entry)
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError:
            left.append(entry)
    return left


class StatusInBackground:
    """:func:`snapshot_status` of a file in a thread, so that it reads the file while the copy does;
    :meth:`result` waits for it and returns the status or raises its error."""

    def __init__(self, tool: EtcdTool, db: str):
        import threading

        self.tool, self._status, self._error = tool, None, None
        self._thread = threading.Thread(target=self._run, args=(db,), name="etcd-status", daemon=True)
        self._thread.start()

    def _run(self, db: str) -> None:
        try:
            self._status = snapshot_status(self.tool, db)
        except BaseException as err:  # handed to the caller of result()
            self._error = err

    def wait(self) -> None:
        self._thread.join()

    def result(self) -> dict:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._status
