"""The mount table: which file system each mount is, from ``/proc/self/mountinfo``.

Provides :func:`mounts` (every mount: its point, the major:minor of its superblock, its file system type)
and :func:`devices_open_may_wait` (the devices whose ``open`` may wait on a network or a user-space
server). Used by ``steps.drivers.snapshot_local`` (which file system a path lies on) and
``steps.repository.file_reading`` (which files a copy may read in batches with the interpreter lock
held).
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple

MOUNTINFO = "/proc/self/mountinfo"

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
