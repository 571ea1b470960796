"""The mount table: which file system each mount is, from ``/proc/self/mountinfo``.

Provides :func:`mounts` (every mount: its point, the major:minor of its superblock, its file system type),
:func:`devices_open_may_wait` (the devices whose ``open`` may wait on a network or a user-space
server) and :func:`creates_in_parallel` (whether several processes creating files on a file system
finish sooner than one). Used by ``steps.drivers.snapshot_local`` (which file system a path lies on),
``steps.repository.file_reading`` (which files a copy may read in batches with the interpreter lock
held) and ``steps.repository.restore_content`` (how many processes create a restore's small files).
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple

MOUNTINFO = "/proc/self/mountinfo"
JBD2 = "/proc/fs/jbd2"  # one entry per mounted ext4 (or ext3) journal: <block device name>-<inode>
SYS_DEV_BLOCK = "/sys/dev/block"  # MAJOR:MINOR -> the block device's directory (its name last)

# File systems on which two processes creating files (each in its own directories) took less time than
# one, measured (docs/performance.md, "Processes creating the small files"): ext4 with a journal, xfs
# and tmpfs. ext4 without a journal took five to eight times as long with two once files had been
# deleted on it (its inode allocator skips recently freed inodes, and two processes contend there);
# other file systems were not measured, so they get one.
PARALLEL_CREATE = frozenset({"xfs", "tmpfs"})

# File systems whose open() may wait on a server: NFS, SMB, CephFS, GlusterFS, Lustre, GPFS, BeeGFS,
# AFS, 9p and virtiofs (a host daemon), and every FUSE file system (fuse, fuseblk, fuse.<name>).
OPEN_MAY_WAIT = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "ceph",
        "glusterfs",
        "lustre",
        "gpfs",
        "beegfs",
        "afs",
        "9p",
        "virtiofs",
        "fuse",
        "fuseblk",
    }
)


class Mount(NamedTuple):
    point: str  # where it is mounted, unescaped
    device: str  # major:minor of its superblock (the st_dev of the files on it; btrfs subvolumes differ)
    fstype: str


def _unescape(text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def parse_mountinfo(text: str) -> list[Mount]:
    """The mounts of a ``mountinfo`` text, in mount order; lines that do not parse are left out. A line:
    ``ID PARENT MAJOR:MINOR ROOT POINT OPTIONS [OPTIONAL...] - TYPE SOURCE SUPER-OPTIONS``."""
    out = []
    for line in text.split("\n"):  # only a newline ends a line: the kernel escapes no other separator
        head, sep, tail = line.partition(" - ")
        fields, rest = head.split(" "), tail.split(" ")  # fields are separated by one space
        if not sep or len(fields) < 6 or not rest:
            continue
        out.append(Mount(_unescape(fields[4]), fields[2], rest[0]))
    return out


def mounts() -> list[Mount]:
    """Every mount of this process's mount namespace (none when the table cannot be read)."""
    try:
        with open(MOUNTINFO, encoding="utf-8", errors="surrogateescape") as f:
            return parse_mountinfo(f.read())
    except OSError:
        return []


def open_may_wait(fstype: str) -> bool:
    return fstype in OPEN_MAY_WAIT or fstype.startswith("fuse.")


def devices_open_may_wait() -> frozenset[int]:
    """The ``st_dev`` of every mounted file system whose ``open`` may wait on a server."""
    out = set()
    for m in mounts():
        major, _, minor = m.device.partition(":")
        if open_may_wait(m.fstype) and major.isdigit() and minor.isdigit():
            out.add(os.makedev(int(major), int(minor)))
    return frozenset(out)


def _device(st_dev: int) -> str:
    return f"{os.major(st_dev)}:{os.minor(st_dev)}"


def ext4_journal(st_dev: int, jbd2: str = JBD2, sys_dev_block: str = SYS_DEV_BLOCK) -> bool:
    """Whether the ext4 file system on ``st_dev`` keeps a journal: the kernel lists a mounted journal in
    ``jbd2`` under the block device's name (false when either cannot be read)."""
    try:
        name = os.path.basename(os.readlink(os.path.join(sys_dev_block, _device(st_dev))))
        return any(e.rpartition("-")[0] == name for e in os.listdir(jbd2))
    except OSError:
        return False


def creates_in_parallel(
    st_dev: int, table: list[Mount] | None = None, jbd2: str = JBD2, sys_dev_block: str = SYS_DEV_BLOCK
) -> bool:
    """Whether files are created sooner by several processes than by one on the file system whose
    ``st_dev`` this is (see :data:`PARALLEL_CREATE`); ``table``: the mounts (default :func:`mounts`)."""
    device = _device(st_dev)
    types = {m.fstype for m in (mounts() if table is None else table) if m.device == device}
    if len(types) != 1:  # not found, or two answers
        return False
    (fstype,) = types
    if fstype == "ext4":
        return ext4_journal(st_dev, jbd2, sys_dev_block)
    return fstype in PARALLEL_CREATE
