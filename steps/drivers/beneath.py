"""Local file access of the copy and the restore: the source read, and the target written below one
directory without ever following a symlink.

Provides, for reading a source (the copy, ``steps.repository.archiver`` and ``.scan``):
:func:`source_stat`, :func:`list_dir`, :func:`open_source`, :func:`device_size`, :func:`read_link` and
:func:`data_regions`; each is the bare system call (the walk's per-entry metadata comes from
:func:`list_dir`'s cached ``lstat``), so going through here costs one Python call per directory or file.

Provides, for writing a target: :func:`open_root`, :func:`open_dir`, :func:`open_path`,
:func:`make_dir`, :func:`remove`, :func:`lstat`, :func:`write_file` and :class:`DirChain`. Called by
the restorer (``steps.repository.restorer``) and the writers of files into a restored tree
(PostgreSQL's ``backup_label``).

Every name handed in is one directory entry (the trees validated it: no ``/``, not ``.`` or ``..``), and
every call is relative to an open directory descriptor: ``O_NOFOLLOW`` on opens, ``follow_symlinks=False``
on metadata calls, and removals through descriptors (``shutil.rmtree(dir_fd=...)``, which never follows a
symlink). A symlink in the way is an entry to replace, never a path to take, so a crafted or racing
symlink cannot lead a write outside the root.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat as stat_mod
from collections.abc import Sequence

O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC


O_NOATIME = getattr(os, "O_NOATIME", 0)


# -- reading a source ----------------------------------------------------------------------------
def source_stat(path: str | bytes) -> os.stat_result:
    """The source's own metadata (the user named it: a symlink to it is followed)."""
    return os.stat(path)


def list_dir(path: bytes) -> list[os.DirEntry]:
    """The entries of directory ``path``; each entry's ``stat(follow_symlinks=False)`` is one lstat,
    cached in the entry."""
    with os.scandir(path) as it:
        return list(it)


def open_source(path: bytes) -> int:
    """A descriptor to read ``path``, without updating its access time where the caller may do so."""
    flags = os.O_RDONLY | O_CLOEXEC
    try:
        return os.open(path, flags | O_NOATIME)
    except PermissionError:  # O_NOATIME needs the file's owner (or CAP_FOWNER)
        return os.open(path, flags)


def device_size(path: bytes) -> int:
    """The size of a block device (its stat says 0)."""
    fd = os.open(path, os.O_RDONLY | O_CLOEXEC)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def read_link(path: bytes) -> bytes:
    return os.readlink(path)


def data_regions(fd: int, st: os.stat_result, size: int) -> list[tuple[int, int]]:
    """(offset, length) of the data regions; holes are skipped. Cheap when the file is not sparse."""
    if size == 0:
        return []
    if not stat_mod.S_ISREG(st.st_mode) or st.st_blocks * 512 >= size:
        return [(0, size)]
    regions, pos = [], 0
    try:
        while pos < size:
            try:
                d = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as err:
                if err.errno == errno.ENXIO:
                    break
                raise
            if d >= size:
                break
            h = min(os.lseek(fd, d, os.SEEK_HOLE), size)
            regions.append((d, h - d))
            pos = h
    except OSError:
        return [(0, size)]
    return regions


class NotADirectoryBeneath(OSError):
    """A path component below the root is not a directory (a file, or a symlink that is not followed)."""


def open_root(path: str | bytes) -> int:
    """The root directory's descriptor. The root itself is the user's choice, so symlinks in ITS path
    are followed; nothing below it is."""
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | O_CLOEXEC)


def open_dir(dir_fd: int, name: bytes) -> int:
    """Descriptor of the directory ``name`` in ``dir_fd``; OSError (ELOOP/ENOTDIR) when it is a
    symlink or no directory."""
    return os.open(name, DIR_FLAGS, dir_fd=dir_fd)


def open_path(root_fd: int, components: Sequence[bytes]) -> int:
    """Descriptor of the directory ``root/c1/c2/...``, each component opened without following."""
    fd = os.dup(root_fd)
    try:
        for name in components:
            nxt = open_dir(fd, name)
            os.close(fd)
            fd = nxt
    except OSError as err:
        os.close(fd)
        if err.errno in (errno.ELOOP, errno.ENOTDIR):
            raise NotADirectoryBeneath(err.errno, "not a directory (or a symlink)", name) from None
        raise
    return fd


def lstat(dir_fd: int, name: bytes) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def remove(dir_fd: int, name: bytes, st: os.stat_result | None = None) -> None:
    """Remove whatever ``name`` is (a directory with its contents); a symlink is removed, not followed."""
    st = st if st is not None else lstat(dir_fd, name)
    if st is None:
        return
    if stat_mod.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=dir_fd)
    else:
        try:
            os.unlink(name, dir_fd=dir_fd)
        except FileNotFoundError:
            pass


def make_dir(dir_fd: int, name: bytes, replace: bool) -> tuple[int, bool]:
    """(descriptor, created) of directory ``name``: created when missing; an existing directory is
    opened; anything else in the way is removed first when ``replace``, else OSError(EEXIST)."""
    try:
        os.mkdir(name, 0o700, dir_fd=dir_fd)
        return open_dir(dir_fd, name), True
    except FileExistsError:
        pass
    try:
        return open_dir(dir_fd, name), False
    except OSError as err:
        if err.errno not in (errno.ELOOP, errno.ENOTDIR) or not replace:
            raise
    remove(dir_fd, name)
    os.mkdir(name, 0o700, dir_fd=dir_fd)
    return open_dir(dir_fd, name), True


def owner_then_mode(chown, chmod, owner: os.stat_result, mode: int) -> None:
    """``chown`` to ``owner``'s uid and gid, then ``chmod(mode)``: a chown clears set-user-ID and
    set-group-ID bits, so the mode comes after it; when the owner cannot be given (not root), the mode
    goes without those bits (never a set-id file owned by whoever writes it)."""
    try:
        chown(owner.st_uid, owner.st_gid)
    except PermissionError:
        mode &= ~0o6000
    chmod(mode)


def write_file(
    root_fd: int, components: Sequence[bytes], name: bytes, data: bytes, mode: int = 0o600
) -> None:
    """Write ``data`` as ``root/components.../name``, replacing whatever is there (never following it);
    the new file gets the owner of the directory it is written into."""
    fd = open_path(root_fd, components)
    try:
        st = os.fstat(fd)
        remove(fd, name)
        out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode, dir_fd=fd)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(out, view) :]
            owner_then_mode(lambda uid, gid: os.fchown(out, uid, gid), lambda m: os.fchmod(out, m), st, mode)
        finally:
            os.close(out)
    finally:
        os.close(fd)


class DirChain:
    """Opens directories below a root one path after another, keeping the descriptors of the last
    path's components so that paths sharing a prefix (a depth-first walk, in any order) reopen only
    what differs. ``open(components)`` returns a descriptor owned by the chain, valid until the next
    call; ``close()`` releases everything."""

    def __init__(self, root_fd: int):
        self.root_fd = root_fd
        self._names: list[bytes] = []
        self._fds: list[int] = []

    def open(self, components: Sequence[bytes]) -> int:
        keep = 0
        limit = min(len(components), len(self._names))
        while keep < limit and self._names[keep] == components[keep]:
            keep += 1
        self._truncate(keep)
        for name in components[keep:]:
            parent = self._fds[-1] if self._fds else self.root_fd
            try:
                fd = open_dir(parent, name)
            except OSError as err:
                if err.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise NotADirectoryBeneath(err.errno, "not a directory (or a symlink)", name) from None
                raise
            self._names.append(name)
            self._fds.append(fd)
        return self._fds[-1] if self._fds else self.root_fd

    def _truncate(self, keep: int) -> None:
        while len(self._fds) > keep:
            os.close(self._fds.pop())
            self._names.pop()

    def close(self) -> None:
        self._truncate(0)
