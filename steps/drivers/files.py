"""The steps' own local files: the plan, transform and patch files they are given, the JSON files they
write for the workflow (outputs, release and hold files, reports), and the checks of a path given as
an option. The data a backup reads and a restore writes goes through :mod:`steps.drivers.beneath`
and the repository's archiver and restorer, not through here.

Errors name the option the path came from and what was expected, in one line.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from steps.errors import UsageError


def read_text(path: str | os.PathLike, option: str) -> str:
    """The text of the file ``path`` given with ``option``; a missing file is a usage error."""
    p = Path(path)
    try:
        return p.read_text()
    except FileNotFoundError:
        raise UsageError(f"{option}: file {p} does not exist") from None


def write_text(path: str | os.PathLike, text: str) -> None:
    Path(path).write_text(text)


def write_json(path: str | os.PathLike, data: Any) -> None:
    """``data`` as indented, key-sorted JSON and a newline (a report, a list of volumes)."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def write_json_atomic(path: str | os.PathLike, data: dict[str, Any]) -> None:
    """Write JSON via a temporary file and a rename, so readers never see half a file."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n", mode=None)


def write_text_atomic(path: str | os.PathLike, text: str, mode: int | None = 0o644) -> None:
    """Write ``text`` (UTF-8, newlines as given) via a temporary file beside it and a rename, so that a
    reader never sees half a file and a failure leaves the old one; ``mode``: the file's permissions
    (None: the temporary file's 0600). Missing directories are created."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_output_path(option: str, path: str | os.PathLike) -> None:
    """Refuse (UsageError naming ``option``) a file path that could not be written: an existing
    directory, or a location whose nearest existing ancestor is not a writable directory (missing
    directories below that one are created on write)."""
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{option}: {p} is a directory; expected a file path")
    ancestor = p.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UsageError(f"{option}: {ancestor} is not a directory, so {p} cannot be created")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UsageError(f"{option}: directory {ancestor} is not writable")


def exists(path: str | os.PathLike) -> bool:
    """Whether ``path`` names something (a symlink is followed)."""
    return os.path.exists(path)


def lexists(path: str | os.PathLike) -> bool:
    """Whether ``path`` names something, a dangling symlink included."""
    return os.path.lexists(path)


def is_dir(path: str | os.PathLike) -> bool:
    return os.path.isdir(path)


def load_plan(path: str | os.PathLike):
    """Read and check a plan file (:mod:`steps.plan`); errors name the file and the field."""
    from steps.plan import plan_from_dict

    p = Path(path)
    try:
        data = json.loads(read_text(p, "--plan"))
    except json.JSONDecodeError as err:
        raise UsageError(f"{p}: not valid JSON (line {err.lineno}: {err.msg})") from None
    return plan_from_dict(data, str(p))


def scratch_directory(scratch: str | None, prefix: str) -> tuple[str, bool]:
    """``scratch`` (created if missing), or a new temporary directory named ``prefix...``; and whether
    it is a new one (the caller removes it)."""
    if scratch is None:
        return tempfile.mkdtemp(prefix=prefix), True
    os.makedirs(scratch, exist_ok=True)
    return scratch, False


def scratch_dir(scratch: str | None, prefix: str) -> str:
    """A new private directory under ``scratch`` (default: the system's temporary directory); the
    caller removes it with :func:`remove_dir`."""
    if scratch is not None and not os.path.isdir(scratch):
        raise UsageError(f"--scratch: {scratch!r} is not a directory")
    path = tempfile.mkdtemp(prefix=prefix, dir=scratch)
    os.chmod(path, 0o700)
    return path


def remove_dir(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def remove_tree(path: str | os.PathLike, *, ignore_errors: bool = False) -> None:
    """Remove the directory ``path`` and everything in it (nothing when it does not exist)."""
    if ignore_errors or os.path.exists(path):
        shutil.rmtree(path, ignore_errors=ignore_errors)


def free_bytes(path: str | os.PathLike) -> int:
    """The space left on the file system holding ``path``."""
    return shutil.disk_usage(path).free


def write_files_beneath(root: str | os.PathLike, sub: str, files: list[tuple[str, str]]) -> list[str]:
    """Write each (name, text) of ``files`` into the directory ``root/sub``, never following a symlink
    below ``root`` (each component of ``sub`` is opened as a directory entry; see
    :mod:`steps.drivers.beneath`); the names written."""
    from steps.drivers import beneath

    components = [os.fsencode(c) for c in sub.split("/") if c]
    written = []
    root_fd = beneath.open_root(os.fspath(root))
    try:
        for name, text in files:
            beneath.write_file(root_fd, components, name.encode(), text.encode())
            written.append(name)
    finally:
        os.close(root_fd)
    return written
