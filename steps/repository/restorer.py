"""Restore: write a snapshot back to disk, byte- and metadata-identical (the engine behind ``restore``).

Provides :func:`restore_snapshot`, :func:`load_files` (in-memory read of a small snapshot, e.g. stored
manifests) and :func:`iter_nodes` (tree walk used by ``ls``). Called by ``steps.commands.restore``.

The trees are walked in a planning thread: directories are created once, and every file is planned,
a batch at a time, as the blobs it needs (batch N+1 is planned and fetched while batch N is written).
Files made of one blob (most small files) are created when their blob arrives, and written, given
their owner, mode and times through one descriptor; larger files are pre-sized with
``ftruncate`` and get their metadata when their last piece is written. The packs are then fetched over
several connections (one ranged GET per pack and batch), each blob is decrypted into a per-thread
buffer (GCM authenticates it; its keyed hash is checked too) and written with ``pwrite`` at its offsets.
All-zero blobs and recorded holes are never written, so sparse files stay sparse. Directories get their
metadata last, deepest first.

Owners are restored as recorded, or through ``uid_map`` / ``gid_map`` (ranges ``FROM:TO:COUNT`` of
:class:`steps.manifests.transforms.IdRange`, e.g. a namespace's own UID range on OpenShift): every
owner set — files, directories, symlinks, special files, the target itself — goes through them, and an
ID outside every range stays as it is.
"""

from __future__ import annotations

import fnmatch
import os
import stat as stat_mod
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from steps import runtime
from steps.drivers import beneath
from steps.drivers.cpus import default_threads
from steps.errors import UsageError, printable

from .blob_sink import _env_int
from .excludes import excluded
from .file_creator import named_error, set_owner_and_mode, set_times, warning_text
from .repo import Repository, Snapshot
from .restore_content import ContentWriter, FileRef, interleave
from .restore_survey import DamagedSnapshotError, Survey, shorten
from .snapshot_read import blob_offsets, iter_nodes, load_files
from .tree import MAX_FILE_SIZE, OVERWRITE_MODES, RestoreLimits, is_blob_id

__all__ = ["DamagedSnapshotError", "RestoreStats", "Restorer", "iter_nodes", "load_files", "restore_snapshot"]
_interleave = interleave  # the name the tests know

if TYPE_CHECKING:
    from steps.manifests.transforms import IdRange

# A batch's files' nodes and targets are held until it is written, and two batches are held at once (one
# written while the next is planned and fetched): batches of 4 096 hold about what one of 8 192 did (two
# of 8 192 held 20-35 MiB more at 30 000 files). A range never spans two batches, so smaller batches
# cost more GETs.
BATCH_BLOBS = 4096  # blobs planned per batch
BATCH_DIRS = 256  # directories with planned files per batch: each holds a descriptor until written
BATCH_FILES = 4096  # files planned per batch (empty ones need no blob but are held all the same)
MAX_LISTED_DAMAGE = 1000  # damaged paths listed (--skip-damaged); the count goes on
MiB = 1024 * 1024
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _has_default_acl(fd: int) -> bool:
    try:
        os.getxattr(fd, "system.posix_acl_default")
        return True
    except (OSError, AttributeError):
        return False


def _current_umask() -> int:
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o077  # unknown: assume the strictest usual umask, so modes are always set explicitly


@dataclass
class RestoreStats:
    files: int = 0
    dirs: int = 0
    others: int = 0
    bytes_total: int = 0
    bytes_written: int = 0
    bytes_sparse: int = 0
    packs_fetched: int = 0
    bytes_fetched: int = 0
    duration_s: float = 0.0
    relocated_packs: int = 0  # packs deleted by a concurrent prune; their blobs were read elsewhere
    kept: int = 0  # entries already in the target that stayed (--overwrite never / if-changed)
    deleted: int = 0  # entries removed from the target because the snapshot has none (--delete)
    damaged: list[str] = field(
        default_factory=list
    )  # "<path>: <why>" skipped with --skip-damaged (the first)
    damaged_total: int = 0  # how many were skipped
    warnings: list[str] = field(default_factory=list)


def _mapped(value: int, ranges: Sequence[IdRange]) -> int:
    """``value`` through the first range holding it; unknown (-1) and unmapped IDs stay as they are."""
    if value >= 0:
        for r in ranges:
            m = r.map(value)
            if m is not None:
                return m
    return value


def _rel_name(rel: str, name: str) -> str:
    return f"{rel}/{name}" if rel else name


class Restorer(ContentWriter):
    def __init__(
        self,
        repo: Repository,
        snapshot: Snapshot,
        target: str,
        includes=(),
        excludes=(),
        progress=None,
        uid_map: Sequence[IdRange] = (),
        gid_map: Sequence[IdRange] = (),
        overwrite: str | None = None,
        delete: bool = False,
        skip_damaged: bool = False,
        limits: RestoreLimits | None = None,
    ):
        if overwrite is not None and overwrite not in OVERWRITE_MODES:
            raise UsageError(f"--overwrite: expected one of {', '.join(OVERWRITE_MODES)}, got {overwrite!r}")
        self.repo = repo
        self.snapshot = snapshot
        self.target = os.path.abspath(target)
        self.includes = list(includes)
        self.excludes = list(excludes)
        self.progress = progress
        if overwrite == "refuse":
            overwrite = None
        self.overwrite = overwrite or ("always" if delete else None)
        self.delete = delete
        self.skip_damaged = skip_damaged
        self.limits = limits or RestoreLimits()
        self.stats = RestoreStats()
        self._lock = threading.Lock()
        self._survey: Survey | None = None
        self._root_fd = -1
        self._hardlinks: dict[tuple[int, int], tuple[tuple[bytes, ...], bytes, int, int]] = {}
        self._dirs: list[tuple[tuple[bytes, ...], dict]] = []
        self._batch: list[FileRef] = []
        self._batch_blobs = 0
        self._batch_fds: dict[tuple[bytes, ...], int] = {}
        self._is_root = os.geteuid() == 0
        self._ids = (os.geteuid(), os.getegid())
        self._uid_map = tuple(uid_map)
        self._gid_map = tuple(gid_map)
        self._umask = _current_umask()
        self.downloaders = _env_int(runtime.RESTORE_CONNECTIONS, default_threads("restore_connections"))
        self._init_pipeline()
        self._batch_dirs = BATCH_DIRS

    # -- selection ----------------------------------------------------------------------------
    def _excluded(self, rel: str, name: str) -> bool:
        return excluded(rel, name, self.excludes)

    def _included(self, rel: str) -> bool:
        if not self.includes:
            return True
        for p in self.includes:
            p = p.strip("/")
            if fnmatch.fnmatchcase(rel, p) or rel.startswith(p + "/"):
                return True
            parts = rel.split("/")
            if any(fnmatch.fnmatchcase("/".join(parts[:i]), p) for i in range(1, len(parts))):
                return True
        return False

    def _may_contain(self, rel: str) -> bool:
        if not self.includes:
            return True
        for p in self.includes:
            p = p.strip("/")
            depth = rel.count("/") + 1
            head = "/".join(p.split("/")[:depth])
            if fnmatch.fnmatchcase(rel, head) or self._included(rel):
                return True
        return False

    # -- metadata -----------------------------------------------------------------------------
    def _warn(self, msg: str) -> None:
        with self._lock:
            if len(self.stats.warnings) < 1000:
                self.stats.warnings.append(printable(msg))

    def _owner(self, node: dict) -> tuple[int, int]:
        """The (uid, gid) to give a restored entry: as recorded, through the ID maps when there are any."""
        uid, gid = node.get("uid", -1), node.get("gid", -1)
        if self._uid_map:
            uid = _mapped(uid, self._uid_map)
        if self._gid_map:
            gid = _mapped(gid, self._gid_map)
        return uid, gid

    def _meta_warn(self, shown: str):
        return lambda code, detail: self._warn(warning_text(shown, code, detail))

    def _apply_meta_at(self, dir_fd: int, name: bytes, node: dict, shown: str) -> None:
        """Metadata of a symlink, fifo or device node ``name`` in ``dir_fd``, never following a symlink."""
        symlink = node["type"] == "symlink"
        warn = self._meta_warn(shown)
        chmod = None
        if not symlink:
            st = beneath.lstat(dir_fd, name)
            if st is not None and not stat_mod.S_ISLNK(st.st_mode):  # just created by us: no symlink
                chmod = lambda mode: os.chmod(name, mode, dir_fd=dir_fd)  # noqa: E731
        set_owner_and_mode(
            lambda uid, gid: os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False),
            chmod,
            self._owner(node),
            node.get("mode", 0o644),
            self._is_root,
            warn,
        )
        mtime = node.get("mtime_ns", 0)
        set_times(
            lambda ns: os.utime(name, ns=ns, dir_fd=dir_fd, follow_symlinks=False),
            (node.get("atime_ns", mtime), mtime),
            (lambda code, detail: None) if symlink else warn,
        )

    def _apply_meta_fd(self, fd: int, shown: str, node: dict) -> None:
        """Owner, then mode (a chown clears set-id bits; see :func:`.file_creator.set_owner_and_mode`),
        then times (after the last write)."""
        warn = self._meta_warn(shown)
        set_owner_and_mode(
            lambda uid, gid: os.fchown(fd, uid, gid),
            lambda mode: os.fchmod(fd, mode),
            self._owner(node),
            node.get("mode", 0o644),
            self._is_root,
            warn,
        )
        mtime = node.get("mtime_ns", 0)
        set_times(lambda ns: os.utime(fd, ns=ns), (node.get("atime_ns", mtime), mtime), warn)

    def _skip_damaged(self, path: str, why: str) -> None:
        self.stats.damaged_total += 1
        if len(self.stats.damaged) < MAX_LISTED_DAMAGE:
            self.stats.damaged.append(printable(f"{shorten(path)}: {shorten(why, 400)}"))

    # -- what is in the way ---------------------------------------------------------------------
    def _keep_existing(self, st: os.stat_result, node: dict) -> bool:
        """With --overwrite never / if-changed: whether the entry already there stays as it is."""
        if self.overwrite == "never":
            return True
        if self.overwrite != "if-changed":
            return False
        kind = node["type"]
        if kind == "file":
            return (
                stat_mod.S_ISREG(st.st_mode)
                and st.st_size == node.get("size", 0)
                and st.st_mtime_ns == node.get("mtime_ns", 0)
            )
        return False

    def _delete_extra(self, dir_fd: int, rel: str, names: set[bytes]) -> None:
        """--delete: remove what the directory holds that the snapshot's directory does not (within the
        --include / --exclude selection); an empty lost+found at the target's root stays."""
        for raw in os.listdir(dir_fd):
            name = os.fsencode(raw)
            if name in names:
                continue
            child_rel = _rel_name(rel, raw)
            if (self.excludes and self._excluded(child_rel, raw)) or not self._included(child_rel):
                continue
            if not rel and name == b"lost+found":
                continue
            beneath.remove(dir_fd, name)
            self.stats.deleted += 1

    # -- walk ---------------------------------------------------------------------------------
    def _enter_dir(self, dir_fd: int, name: bytes, fresh: bool) -> tuple[int, bool] | None:
        """(descriptor, created) of the directory ``name`` to restore into; None when an entry that stays
        (--overwrite never) is in the way."""
        if fresh:  # nothing can be in the way in a directory this restore created
            os.mkdir(name, 0o700, dir_fd=dir_fd)
            return beneath.open_dir(dir_fd, name), True
        st = beneath.lstat(dir_fd, name)
        if st is not None and not stat_mod.S_ISDIR(st.st_mode) and self.overwrite == "never":
            self.stats.kept += 1
            return None
        return beneath.make_dir(dir_fd, name, replace=True)

    def _restore_tree(
        self,
        tree_id: str,
        dir_fd: int,
        comps: tuple[bytes, ...],
        rel: str,
        fresh: bool = False,
        ours: bool = False,
    ) -> None:
        """``fresh``: this restore created the directory, so nothing in it needs clearing; ``ours``: files
        created in it get our uid and gid (neither it nor, for new ones, its parent is set-gid)."""
        survey = self._survey
        shown_dir = "/" + rel
        if survey is not None and tree_id in survey.damaged_trees:
            self._skip_damaged(shown_dir, survey.damaged_trees[tree_id])
            return
        nodes = self.repo.load_tree(tree_id)
        # (a million files pass here: what only some need is looked at only when there is some)
        damaged_files = survey.damaged_files if survey is not None else None
        filtered = bool(self.excludes or self.includes)
        for node in nodes:
            if self._errors:  # another thread failed: end the walk
                self._stop_if_failed()
            name_s = node["name"]
            name = os.fsencode(name_s)
            kind = node["type"]
            if kind == "file" and fresh and not filtered and not damaged_files:
                self._restore_leaf(dir_fd, comps, name, node, rel, name_s, ours)  # the common case
                continue
            child_rel = _rel_name(rel, name_s)
            if self.excludes and self._excluded(child_rel, name_s):
                continue
            if kind == "dir":
                if not self._may_contain(child_rel):
                    continue
                try:
                    entered = self._enter_dir(dir_fd, name, fresh)
                except OSError as err:
                    raise named_error("/" + child_rel, err) from err
                if entered is None:
                    continue
                sub_fd, created = entered
                try:
                    child_comps = (*comps, name)
                    if created:
                        sub_ours = ours
                        self._dirs.append((child_comps, node))
                    else:
                        st = os.fstat(sub_fd)
                        sub_ours = not st.st_mode & stat_mod.S_ISGID
                        if _has_default_acl(sub_fd):
                            self._umask = 0o7777  # modes come from the ACL: always set them explicitly
                        kept = {"atime_ns": st.st_atime_ns, "mtime_ns": st.st_mtime_ns, "keep": True}
                        # never: it stays as it was (owner, mode and times)
                        self._dirs.append((child_comps, kept if self.overwrite == "never" else node))
                    self.stats.dirs += 1
                    if node.get("subtree"):
                        self._restore_tree(node["subtree"], sub_fd, child_comps, child_rel, created, sub_ours)
                finally:
                    os.close(sub_fd)
                continue
            if not self._included(child_rel):
                continue
            if damaged_files and (tree_id, name_s) in damaged_files:
                self._skip_damaged("/" + child_rel, damaged_files[(tree_id, name_s)])
                continue
            if not fresh:
                st = beneath.lstat(dir_fd, name)
                if st is not None:
                    if self._keep_existing(st, node):
                        self.stats.kept += 1
                        continue
                    beneath.remove(dir_fd, name, st)
            self._restore_leaf(dir_fd, comps, name, node, rel, name_s, ours)
        if self.delete and not fresh:
            self._delete_extra(dir_fd, rel, {os.fsencode(n["name"]) for n in nodes})

    def _batch_fd(self, dir_fd: int, comps: tuple[bytes, ...]) -> int:
        fd = self._batch_fds.get(comps)
        if fd is None:
            fd = self._batch_fds[comps] = os.dup(dir_fd)
        return fd

    def _restore_leaf(
        self,
        dir_fd: int,
        comps: tuple[bytes, ...],
        name: bytes,
        node: dict,
        rel: str,
        name_s: str,
        ours: bool,
    ) -> None:
        """Restore the entry ``name`` (``name_s`` in the directory ``rel``) that is no directory."""
        kind = node["type"]
        if kind == "file":  # (its path string is made only for a hard link: the others need none)
            self.stats.files += 1
            nlink = node.get("nlink", 1)
            key = (node.get("dev", 0), node.get("inode", 0))
            if (
                nlink > 1
                and key in self._hardlinks
                and self._link(dir_fd, name, self._hardlinks[key], "/" + _rel_name(rel, name_s))
            ):
                return
            ref = FileRef(self._batch_fd(dir_fd, comps), name, comps, node, ours=ours)
            if nlink > 1:
                st = self._create_sized(ref)  # later links need it to exist now
                self._hardlinks[key] = (comps, name, st.st_dev, st.st_ino)
            self.stats.bytes_total += node.get("size", 0)
            self._batch.append(ref)
            self._batch_blobs += len(node.get("content") or ())
            if (
                self._batch_blobs >= BATCH_BLOBS
                or len(self._batch) >= BATCH_FILES
                or len(self._batch_fds) >= self._batch_dirs
            ):
                self._flush()
            return
        shown = "/" + _rel_name(rel, name_s)
        self.stats.others += 1
        try:
            if kind == "symlink":
                os.symlink(os.fsencode(node.get("target", "")), name, dir_fd=dir_fd)
            elif kind == "fifo":
                os.mkfifo(name, 0o600, dir_fd=dir_fd)
            elif kind in ("chardev", "blockdev"):
                mode = (stat_mod.S_IFCHR if kind == "chardev" else stat_mod.S_IFBLK) | 0o600
                try:
                    os.mknod(name, mode, node.get("rdev", 0), dir_fd=dir_fd)
                except PermissionError:
                    self._warn(f"{shown}: cannot create device node (needs root); skipped")
                    return
            else:
                self._warn(f"{shown}: {kind} entries are not restored")
                return
        except OSError as err:
            raise named_error(shown, err) from err
        self._apply_meta_at(dir_fd, name, node, shown)

    def _link(self, dir_fd: int, name: bytes, first: tuple, shown: str) -> bool:
        """Hard-link ``name`` to the group's first member, which this restore wrote inside the target
        (checked: still a regular file with the inode it was created with). False: write a copy."""
        comps, first_name, dev, ino = first
        try:
            src_fd = beneath.open_path(self._root_fd, comps)
        except OSError as err:
            self._warn(f"{shown}: cannot hard-link ({err.strerror}); writing a copy")
            return False
        try:
            st = beneath.lstat(src_fd, first_name)
            if st is None or not stat_mod.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (dev, ino):
                self._warn(f"{shown}: the first name of its hard-link group was replaced; writing a copy")
                return False
            os.link(first_name, name, src_dir_fd=src_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
            return True
        except OSError as err:
            self._warn(f"{shown}: cannot hard-link ({err.strerror}); writing a copy")
            return False
        finally:
            os.close(src_fd)

    # -- main ---------------------------------------------------------------------------------
    def _conflicts(self) -> list[str]:
        """The entries of an existing target directory, bar an empty lost+found at its root (a fresh
        ext4 volume has one): a restore into them needs an explicit --overwrite or --delete."""
        out = []
        with os.scandir(self.target) as it:
            for entry in it:
                if entry.name == "lost+found" and entry.is_dir(follow_symlinks=False):
                    with os.scandir(entry.path) as inner:
                        if next(inner, None) is None:
                            continue
                out.append(entry.name)
        return sorted(out)

    def _check_target(self, single: bool) -> bool:
        """Refuses a target that cannot take the snapshot or holds data no mode was chosen for; True
        when the snapshot goes onto an existing file or device (a file or block-volume snapshot)."""
        try:
            st = os.stat(self.target)
        except FileNotFoundError:
            return False
        except OSError as err:
            raise UsageError(f"--target {self.target}: {err.strerror}") from None
        if stat_mod.S_ISDIR(st.st_mode):
            conflicts = self._conflicts()
            if conflicts and self.overwrite is None:
                shown = ", ".join(conflicts[:5]) + (
                    f" and {len(conflicts) - 5} more" if len(conflicts) > 5 else ""
                )
                raise UsageError(
                    f"--target {self.target} is not empty ({shown}); nothing was written: choose"
                    " --overwrite always|if-changed|never, or --delete, or restore into an empty directory"
                )
            return False
        if not single:
            raise UsageError(f"--target {self.target}: not a directory (this snapshot is a directory tree)")
        if not (stat_mod.S_ISREG(st.st_mode) or stat_mod.S_ISBLK(st.st_mode)):
            raise UsageError(
                f"--target {self.target}: expected a directory, a regular file or a block device"
            )
        if self.overwrite is None and (stat_mod.S_ISBLK(st.st_mode) or st.st_size):
            raise UsageError(
                f"--target {self.target} exists and holds data; nothing was written: choose --overwrite always"
                " to write the snapshot onto it"
            )
        return True

    def run(self) -> RestoreStats:
        t0 = time.monotonic()
        snap = self.snapshot.data
        tree = snap.get("tree")
        if not (isinstance(tree, str) and is_blob_id(tree)):
            raise DamagedSnapshotError(
                f"snapshot {self.snapshot.short_id}: its tree is not a blob ID; nothing was written"
            )
        summary = snap.get("summary")
        total = summary.get("bytes_total", 0) if isinstance(summary, dict) else 0
        if self.progress is not None and isinstance(total, int) and 0 < total <= MAX_FILE_SIZE:
            self.progress.total_bytes, self.progress.total_final = total, True
        self.repo.index  # noqa: B018
        single = snap.get("source_type") in ("file", "block")
        onto_existing = self._check_target(single)
        survey = Survey(self.repo, self.limits, self.snapshot.short_id)
        survey.check_root(snap.get("root"))
        survey.run(tree)
        if survey.first_damage is not None and not self.skip_damaged:
            raise DamagedSnapshotError(
                f"snapshot {self.snapshot.short_id} is damaged at {shorten(survey.first_damage, 600)}; nothing was"
                " written (--skip-damaged restores the rest; verify lists every problem)"
            )
        self._survey = survey
        if onto_existing:
            if survey.first_damage is not None:  # --skip-damaged: the one file is all there is
                self._skip_damaged(self.target, survey.first_damage)
            elif self.overwrite == "never":
                self.stats.kept = 1
            else:
                self._restore_into_existing(os.path.realpath(self.target))
        else:
            self._restore_dir(snap, single)
        self.stats.duration_s = time.monotonic() - t0
        return self.stats

    def _restore_dir(self, snap: dict, single: bool) -> None:
        os.makedirs(self.target, exist_ok=True)
        self._batch_dirs = _batch_dirs(_raise_open_file_limit())
        self._root_fd = root_fd = beneath.open_root(self.target)
        try:
            empty = not os.listdir(root_fd)
            ours = not os.fstat(root_fd).st_mode & stat_mod.S_ISGID
            if _has_default_acl(root_fd):  # new files take their mode from the ACL, not the umask
                self._umask = 0o7777
            if not empty and self.overwrite is None:  # only an empty lost+found is there: it must stay
                for node in self.repo.load_tree(snap["tree"]):
                    if node["name"] == "lost+found" and node["type"] != "dir":
                        raise UsageError(
                            f"--target {self.target}: its lost+found would be replaced by the snapshot's"
                            " lost+found; nothing was written: choose --overwrite always to replace it"
                        )

            def walk() -> None:
                self._restore_tree(snap["tree"], root_fd, (), "", empty, ours)
                self._flush()

            try:
                self._run_content(walk)
            finally:
                for fd in self._batch_fds.values():
                    os.close(fd)
                self._batch_fds = {}
            chain = beneath.DirChain(root_fd)
            try:
                for comps, node in reversed(self._dirs):
                    try:
                        fd = chain.open(comps)
                    except OSError as err:
                        self._warn(f"/{os.fsdecode(b'/'.join(comps))}: cannot set metadata ({err.strerror})")
                        continue
                    if node.get("keep"):  # only its times, which the entries created in it changed
                        os.utime(fd, ns=(node["atime_ns"], node["mtime_ns"]))
                    else:
                        self._apply_meta_fd(fd, "/" + os.fsdecode(b"/".join(comps)), node)
            finally:
                chain.close()
            root = snap.get("root")
            if self._survey is not None and self._survey.root_damage:
                self._skip_damaged("/", self._survey.root_damage)
            elif root and not single and not self.includes and (empty or self.overwrite != "never"):
                self._apply_meta_fd(root_fd, self.target, root)
        finally:
            os.close(root_fd)
            self._root_fd = -1

    def _restore_into_existing(self, target: str) -> None:
        """A file or block-device snapshot written onto an existing file or device (no truncation of devices)."""
        nodes = [n for n in self.repo.load_tree(self.snapshot.data["tree"]) if n["type"] == "file"]
        if len(nodes) != 1:
            raise UsageError("--target: this snapshot holds no single file; give a directory")
        node = nodes[0]
        st = os.stat(target)
        self.stats.files = 1
        self.stats.bytes_total = node.get("size", 0)
        # devices are not pre-sized; zero blobs must be written explicitly there
        if stat_mod.S_ISBLK(st.st_mode):
            fd = os.open(target, os.O_WRONLY | _O_CLOEXEC)
            try:
                for bid, off, _raw, _loc in blob_offsets(self.repo, node):
                    data = self.repo.read_blob(bid)
                    os.pwrite(fd, data, off)
                    self.stats.bytes_written += len(data)
            finally:
                os.close(fd)
            return
        fd = os.open(target, os.O_WRONLY | os.O_TRUNC | _O_CLOEXEC)
        try:
            os.ftruncate(fd, node.get("size", 0))
        finally:
            os.close(fd)
        parent, name = os.path.split(target)
        dir_fd = beneath.open_root(parent)
        self._batch_fds[()] = dir_fd
        ref = FileRef(dir_fd, os.fsencode(name), target, node, created=True)
        ref.ident = (st.st_dev, st.st_ino)
        self._batch.append(ref)
        self._run_content(self._flush)


def _raise_open_file_limit() -> int | None:
    """Directory descriptors stay open while their files are written: lift the soft limit to the hard one.
    Returns the soft limit now in force (None: unknown or unlimited)."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = hard if hard == resource.RLIM_INFINITY else min(hard, 65536)
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        return None if soft == resource.RLIM_INFINITY else soft
    except (ImportError, ValueError, OSError):
        return None


def _batch_dirs(open_files: int | None) -> int:
    """Directories per batch: two batches hold descriptors at once (one written while the next is formed,
    planned and fetched), so under a low open-file limit a batch spans fewer directories."""
    if open_files is None:
        return BATCH_DIRS
    return max(16, min(BATCH_DIRS, (open_files - 256) // 2))


def restore_snapshot(
    repo: Repository,
    snapshot: Snapshot,
    target: str,
    includes=(),
    excludes=(),
    progress=None,
    uid_map: Sequence[IdRange] = (),
    gid_map: Sequence[IdRange] = (),
    overwrite: str | None = None,
    delete: bool = False,
    skip_damaged: bool = False,
    limits: RestoreLimits | None = None,
) -> RestoreStats:
    """Restore ``snapshot`` into ``target``; owners go through ``uid_map`` / ``gid_map`` (see the module).
    A non-empty target needs ``overwrite`` (always, if-changed, never) or ``delete``."""
    import sys

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20000))
    restorer = Restorer(
        repo,
        snapshot,
        target,
        includes,
        excludes,
        progress,
        uid_map,
        gid_map,
        overwrite,
        delete,
        skip_damaged,
        limits,
    )
    return restorer.run()
