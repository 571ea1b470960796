"""The restore's rules for creating a file and giving it its metadata, in one place.

Provides :func:`open_new` (the flags a new file is created with, and what happens to whatever stands
under its name), :func:`direct_mode` (when a file is created with its final mode), :func:`create_whole`
(a one-blob file created, written and given its metadata through one descriptor),
:func:`set_owner_and_mode` and :func:`set_times` (the owner -> mode -> times sequence every restored
entry goes through) and the warning texts of :func:`warning_text`. Used by
``steps.repository.restore_content`` and ``steps.repository.restorer``.

Owner before mode: a chown clears the set-user-ID and set-group-ID bits, so the mode is set after it.
When the owner cannot be set (any error: EPERM for a restore that is not root, EINVAL for an owner
that a user namespace does not map), those two bits are left out of the mode and a warning names the
file, so that a set-id file never ends up owned by the user running the restore (as ``cp -p`` does).
"""

from __future__ import annotations

import os

from steps.drivers import beneath
from steps.errors import SnapflowError, TemporaryError, is_network_error

O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_NOFOLLOW | O_CLOEXEC
SET_ID_BITS = 0o6000  # set-user-ID and set-group-ID

# warning codes and their texts
WARN_OWNER, WARN_MODE, WARN_TIMES, WARN_SET_ID = 0, 1, 2, 3
_WARNING_TEXTS = (
    "{}: cannot set owner",
    "{}: cannot set mode ({})",
    "{}: cannot set times ({})",
    "{}: cannot set owner; set-user-ID/set-group-ID bits not restored",
)


def warning_text(shown: str, code: int, detail: object = None) -> str:
    return _WARNING_TEXTS[code].format(shown, detail)


def named_error(shown: str, err: OSError) -> SnapflowError:
    """An error creating or writing the entry shown as ``shown`` (a file, directory, symlink, fifo or
    device node), as one line naming it: ``/a/b: No space left on device``; a temporary one (exit 75,
    which the workflows retry) when the target's file system lost its server."""
    what = os.strerror(err.errno) if err.errno else (err.strerror or str(err) or type(err).__name__)
    return (TemporaryError if is_network_error(err) else SnapflowError)(f"{shown}: {what}")


def open_new(dir_fd: int, name: bytes, mode: int = 0o600) -> int:
    """A new file ``name`` in ``dir_fd``; whatever appeared in its place since the walk is removed, not
    followed."""
    try:
        return os.open(name, NEW_FILE_FLAGS, mode, dir_fd=dir_fd)
    except FileExistsError:
        beneath.remove(dir_fd, name)
        return os.open(name, NEW_FILE_FLAGS, mode, dir_fd=dir_fd)


def direct_mode(mode: int, umask: int) -> bool:
    """Whether a file created with ``mode`` gets it whole (no set-id or sticky bit, nothing the umask
    removes), so that it needs no chmod."""
    return not mode & 0o7000 and not mode & umask


def set_owner_and_mode(chown, chmod, owner: tuple[int, int] | None, mode: int, is_root: bool, warn) -> None:
    """``chown(uid, gid)`` with ``owner`` (left out when None: the entry is ours already), then
    ``chmod(mode)`` (left out when ``chmod`` is None). A failed chown is a warning as root (EPERM: "cannot
    set owner") and silent otherwise, except that when ``mode`` holds set-id bits they are left out of
    the chmod and one warning says so, whoever runs the restore. Warnings go to ``warn(code, detail)``."""
    if owner is not None:
        try:
            chown(*owner)
        except OSError as err:
            if mode & SET_ID_BITS:
                mode &= ~SET_ID_BITS
                warn(WARN_SET_ID, None)
            elif is_root and isinstance(err, PermissionError):
                warn(WARN_OWNER, None)
    if chmod is not None:
        try:
            chmod(mode)
        except OSError as err:
            warn(WARN_MODE, err.strerror)


def set_times(utime, times: tuple[int, int], warn) -> None:
    """``utime(times)``, a warning when it fails."""
    try:
        utime(times)
    except (OSError, NotImplementedError) as err:
        warn(WARN_TIMES, err)


def write_all(fd: int, data, size: int, offset: int = 0) -> int:
    """``size`` bytes of ``data`` written at ``offset``; returns them."""
    written = os.pwrite(fd, data, offset)
    while written < size:
        written += os.pwrite(fd, memoryview(data)[written:], offset + written)
    return written


def create_whole(
    dir_fd: int,
    name: bytes,
    data,
    size: int,
    zero: bool,
    mode: int,
    owner: tuple[int, int] | None,
    times: tuple[int, int],
    umask: int,
    is_root: bool,
    warn,
) -> int:
    """Create, write and close a one-blob file; returns the bytes written. Metadata goes through the same
    descriptor, and the calls that would change nothing are left out: a file created with its final mode
    needs no chmod, one that is ours already no chown (``owner`` None). Warnings go to ``warn(code,
    detail)``; any other failure is raised."""
    direct = direct_mode(mode, umask)
    fd = open_new(dir_fd, name, mode if direct else 0o600)
    try:
        if zero:
            os.ftruncate(fd, size)
            written = 0
        else:
            written = write_all(fd, data, size)
        if owner is not None or not direct:
            set_owner_and_mode(
                lambda uid, gid: os.fchown(fd, uid, gid),
                None if direct else lambda m: os.fchmod(fd, m),
                owner,
                mode,
                is_root,
                warn,
            )
        set_times(lambda ns: os.utime(fd, ns=ns), times, warn)
    finally:
        os.close(fd)
    return written
