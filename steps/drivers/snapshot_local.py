"""The ``local`` snapshot driver: volumes are directories on this machine.

Where a volume is the root of a btrfs subvolume the cut is ``btrfs subvolume snapshot -r`` — atomic,
and its creation time (read from the subvolume with the GET_SUBVOL_INFO ioctl, nanoseconds) is the cut
time. Anywhere else the cut is a file-by-file copy, which is NOT atomic: the result says so, records
the interval the copy spanned, and leaves out the sub-paths a hook asks to defer (PostgreSQL's pg_wal,
copied after ``pg_backup_stop``). Reflinks per file would not help: they are atomic per file only.

Snapshots go to ``local_dir`` (plan ``snapshot.local_dir``), by default ``.snapflow-snapshots`` next
to the volume (a btrfs snapshot must stay on the same file system). The holder never writes to a file
system it froze (a writer there sleeps uninterruptibly until the thaw, and cannot even be killed): a
``local_dir`` on a file system an fsfreeze hook freezes is refused before anything is frozen, and the
default place of a volume on such a file system moves next to that file system's mount point, onto the
file system below it (the volume is copied there; a btrfs snapshot would block on the freeze).
File systems are compared by their superblock (``/proc/self/mountinfo``), after resolving symlinks, so
that a btrfs subvolume (its own ``st_dev``) or a bind mount of a frozen file system counts as frozen.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import shutil
import stat
import struct
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from steps.drivers import beneath
from steps.drivers.mounts import mounts
from steps.drivers.snapshot import CutResult, SnapshotDriver
from steps.errors import PermanentError, TemporaryError, UsageError
from steps.plan import Volume

CLOCK_REALTIME_COARSE = 5  # Linux: what the kernel stamps inode and subvolume times with

# struct btrfs_ioctl_get_subvol_info_args (linux/btrfs.h): treeid, name[256], parent_id, dirid,
# generation, flags, uuid[16], parent_uuid[16], received_uuid[16], ctransid, otransid, stransid,
# rtransid, then ctime, otime, stime, rtime as {u64 sec; u32 nsec} padded to 16 bytes, reserved[8].
_SUBVOL_INFO_SIZE = 504
_OTIME_OFFSET = 8 + 256 + 8 * 4 + 16 * 3 + 8 * 4 + 16
BTRFS_IOC_GET_SUBVOL_INFO = (2 << 30) | (_SUBVOL_INFO_SIZE << 16) | (0x94 << 8) | 60


def _existing(path: Path) -> Path:
    """``path`` with symlinks resolved, or its nearest existing ancestor's (a directory still to be made
    lands on the file system of the directory it is made in)."""
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    return p.resolve()


def file_system_of(path: str | os.PathLike) -> str:
    """Identifies the file system (superblock) ``path`` lies on: equal for every path on it, whatever
    the subvolume or bind mount it is reached through; fsfreeze freezes a whole superblock."""
    real = _existing(Path(path))
    best = None
    for point, device, _type in mounts():
        inside = real == Path(point) or Path(point) in real.parents
        if inside and (best is None or len(point) >= len(best[0])):
            best = (point, device)  # the longest mount point wins; a later mount over it, too
    if best is not None:
        return best[1]
    return f"st_dev:{os.stat(real).st_dev}"


class FrozenFileSystems:
    """The file systems a plan's fsfreeze hooks freeze, by superblock: ``where(path)`` names the mount
    that freezes the file system ``path`` lies on (None when it is not frozen)."""

    def __init__(self, mounts: list[str]):
        self.by_fs: dict[str, str] = {}
        for mount in mounts:
            if os.path.isdir(mount):  # a mount that is not here is no local file system
                self.by_fs.setdefault(file_system_of(mount), mount)

    def __bool__(self) -> bool:
        return bool(self.by_fs)

    def where(self, path: str | os.PathLike) -> str | None:
        if not self.by_fs:
            return None
        return self.by_fs.get(file_system_of(path))


def _fs_type(path: Path) -> str:
    r = subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else ""


def is_btrfs_subvolume(path: Path) -> bool:
    """True when ``path`` is the root directory of a btrfs subvolume (inode 256 on btrfs)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_ino == 256 and _fs_type(path) == "btrfs"


def subvolume_creation_time(path: Path) -> float:
    """The subvolume's creation time (otime) as the file system recorded it."""
    buf = bytearray(_SUBVOL_INFO_SIZE)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.ioctl(fd, BTRFS_IOC_GET_SUBVOL_INFO, buf, True)
    finally:
        os.close(fd)
    sec, nsec = struct.unpack_from("=QI", buf, _OTIME_OFFSET)
    return sec + nsec / 1e9


def _syncfs(path: Path) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if libc.syncfs(fd) != 0:
            raise OSError(ctypes.get_errno(), f"syncfs {path}")
    finally:
        os.close(fd)


def _copy_entry(src: Path, dst: Path) -> None:
    """Copy one file, symlink or directory tree with mode, owner and times; files that vanish while
    the copy runs (a live application deletes and renames) are skipped."""
    try:
        st = os.lstat(src)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(src), dst)
    elif stat.S_ISDIR(st.st_mode):
        dst.mkdir()
        try:
            names = sorted(os.listdir(src))
        except FileNotFoundError:
            names = []
        for name in names:
            _copy_entry(src / name, dst / name)
    elif stat.S_ISREG(st.st_mode):
        try:
            shutil.copyfile(src, dst, follow_symlinks=False)
        except FileNotFoundError:
            return
    else:
        return  # sockets, fifos and devices are not data
    if stat.S_ISLNK(st.st_mode):
        try:
            os.lchown(dst, st.st_uid, st.st_gid)
        except PermissionError:
            pass
        return
    _owner_then_mode(dst, st)
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))


def _owner_then_mode(dst: Path, st: os.stat_result) -> None:
    """``st``'s owner, then its mode (see :func:`beneath.owner_then_mode`)."""
    beneath.owner_then_mode(
        lambda uid, gid: os.chown(dst, uid, gid, follow_symlinks=False),
        lambda m: os.chmod(dst, m),
        st,
        stat.S_IMODE(st.st_mode),
    )


class LocalSnapshotDriver(SnapshotDriver):
    """btrfs snapshots where possible, copies otherwise.

    ``copy_hook(volume, entry)`` is called after each top-level entry of a copied volume; it lets a
    caller interleave work with a copy (the tests force a CHECKPOINT in the middle of one).
    """

    name = "local"

    def __init__(
        self,
        local_dir: str | os.PathLike | None = None,
        force_copy: bool = False,
        copy_hook: Callable[[Volume, str], None] | None = None,
    ):
        self.local_dir = Path(local_dir) if local_dir else None
        self.force_copy = force_copy
        self.copy_hook = copy_hook
        self.copy_under: list[Path] = []
        self.frozen = FrozenFileSystems([])
        self._roots: dict[str, Path] = {}

    def avoid_snapshots_under(self, paths: list[str]) -> None:
        """The mounts the hooks freeze. Volumes on those file systems are copied (never
        btrfs-snapshotted: a snapshot needs a transaction commit, which blocks on a frozen file system
        until the freeze ends), and no snapshot is written to them (see :meth:`prepare`)."""
        self.copy_under = [Path(p).resolve() for p in paths]
        self.frozen = FrozenFileSystems(list(paths))

    def snapshot_root(self, volume: Volume) -> tuple[Path, str | None]:
        """The directory that will hold ``volume``'s snapshot, and why it is not the usual one (None
        when it is). Raises UsageError for a ``local_dir`` on a frozen file system."""
        if self.local_dir is not None:
            mount = self.frozen.where(self.local_dir)
            if mount is not None:
                raise UsageError(
                    f"snapshot.local_dir (snapflow run --snapshot-dir): {self.local_dir} lies on the file "
                    f"system that an fsfreeze hook freezes (mount {mount}), and a write there would block "
                    "until the thaw; expected a directory on another file system"
                )
            return self.local_dir, None
        src = self._source(volume)
        root = src.parent / ".snapflow-snapshots"
        mount = self.frozen.where(root)
        if mount is None:
            return root, None
        below = _existing(src.parent)
        while self.frozen.where(below) is not None and below != below.parent:
            below = below.parent
        if self.frozen.where(below) is not None:
            raise UsageError(
                f"volumes[{volume.name}]: its snapshot cannot go next to it ({root} lies on the file "
                f"system that an fsfreeze hook freezes, mount {mount}); set snapshot.local_dir to a "
                "directory on another file system"
            )
        return below / ".snapflow-snapshots", (
            f"next to {mount}, not next to the volume: the fsfreeze hook freezes that file system"
        )

    def prepare(self, volumes: list[Volume], labels: dict[str, str]) -> list[str]:
        """Before anything is frozen: check every volume and where its snapshot goes, and create those
        directories, so that nothing is created, and no bad path found, inside the hold. Returns notes
        on snapshots that go elsewhere than usual."""
        notes = []
        for volume in volumes:
            root, why = self.snapshot_root(volume)
            try:
                root.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                where = "snapshot.local_dir" if self.local_dir is not None else f"volumes[{volume.name}]"
                raise UsageError(
                    f"{where}: cannot create the snapshot directory {root}: {err.strerror}"
                ) from None
            self._roots[volume.name] = root
            self._destination(volume, labels)  # refuses a backup ID used twice, now rather than later
            if why:
                notes.append(f"volume {volume.name}: snapshot goes to {root}, {why}")
        return notes

    def settle(self, after: float) -> None:
        # A subvolume's creation time comes from the kernel's coarse clock (one tick, a few ms, behind
        # the fine clock, or the last fine time handed out): wait until that clock has passed ``after``
        # so that a cut made from now on is stamped later than the quiesce it follows.
        deadline = time.monotonic() + 0.1
        while time.clock_gettime(CLOCK_REALTIME_COARSE) <= after and time.monotonic() < deadline:
            time.sleep(0.0005)

    def _source(self, volume: Volume) -> Path:
        if not volume.path:
            raise UsageError(f"volumes[{volume.name}].path: the local snapshot driver needs a local path")
        src = Path(volume.path)
        if not src.is_dir():
            raise UsageError(f"volumes[{volume.name}].path: {src} is not a directory")
        return src

    def _atomic(self, volume: Volume) -> bool:
        src = self._source(volume).resolve()
        if self.force_copy or any(src == p or p in src.parents for p in self.copy_under):
            return False
        if self.frozen.where(src) is not None:
            return False
        return is_btrfs_subvolume(src)

    def is_atomic(self, volumes: list[Volume]) -> bool:
        # Separate btrfs snapshots are each atomic, but not at one instant together.
        return len(volumes) == 1 and self._atomic(volumes[0])

    def _destination(self, volume: Volume, labels: dict[str, str]) -> Path:
        root = self._roots.get(volume.name)
        if root is None:  # not prepared (a driver used on its own, no hook frozen by it)
            root = self.snapshot_root(volume)[0]
            root.mkdir(parents=True, exist_ok=True)
        backup = labels.get("backup", "manual")
        dst = root / f"{volume.name}.{backup}"
        if dst.exists():
            raise PermanentError(f"snapshot {dst} already exists (backup id {backup!r} used twice?)")
        return dst

    def cut(
        self, volumes: list[Volume], labels: dict[str, str], defer: dict[str, list[str]] | None = None
    ) -> list[CutResult]:
        results = []
        for volume in volumes:
            src = self._source(volume)
            dst = self._destination(volume, labels)
            if self._atomic(volume):
                started = self.now()
                r = subprocess.run(
                    ["btrfs", "subvolume", "snapshot", "-r", str(src), str(dst)],
                    capture_output=True,
                    text=True,
                )
                finished = self.now()
                if r.returncode != 0:
                    raise TemporaryError(f"btrfs snapshot of {src} failed: {r.stderr.strip()}")
                results.append(
                    CutResult(
                        volume=volume.name,
                        snapshot=str(dst),
                        atomic=True,
                        cut_time=subvolume_creation_time(dst),
                        started=started,
                        finished=finished,
                        handle={"kind": "btrfs", "path": str(dst)},
                    )
                )
                continue
            skip = [p.strip("/") for p in (defer or {}).get(volume.name, [])]
            started = self.now()
            dst.mkdir()
            for name in sorted(os.listdir(src)):
                if name in skip:
                    continue
                _copy_entry(src / name, dst / name)
                if self.copy_hook is not None:
                    self.copy_hook(volume, name)
            for rel in skip:  # keep the directory itself (empty) so the layout stays complete
                s = src / rel
                if s.is_dir() and not (dst / rel).exists():
                    (dst / rel).mkdir(parents=True)
                    _owner_then_mode(dst / rel, os.stat(s))
            _owner_then_mode(dst, os.stat(src))
            finished = self.now()
            results.append(
                CutResult(
                    volume=volume.name,
                    snapshot=str(dst),
                    atomic=False,
                    cut_time=None,
                    started=started,
                    finished=finished,
                    deferred=skip,
                    handle={"kind": "copy", "path": str(dst), "source": str(src)},
                )
            )
        return results

    def copy_deferred(self, result: CutResult) -> None:
        if not result.deferred:
            return
        src = Path(result.handle["source"])
        dst = Path(result.snapshot)
        for rel in result.deferred:
            target = dst / rel
            if target.exists():
                shutil.rmtree(target)
            _copy_entry(src / rel, target)
        result.deferred_copied = self.now()

    def wait_ready(self, results: list[CutResult], timeout: float) -> None:
        for r in results:
            try:
                _syncfs(Path(r.snapshot))
            except OSError as err:
                if err.errno in (errno.EROFS, errno.EINVAL):
                    pass
                else:
                    raise TemporaryError(f"snapshot {r.snapshot} could not be synced: {err}") from None
            r.ready = True

    def delete(self, result: CutResult) -> None:
        path = Path(result.snapshot)
        if result.handle.get("kind") == "btrfs":
            subprocess.run(["btrfs", "subvolume", "delete", str(path)], capture_output=True, check=False)
        else:
            shutil.rmtree(path, ignore_errors=True)
