"""Restore: write a snapshot back to disk, byte- and metadata-identical (the engine behind ``restore``).

Provides :func:`restore_snapshot`, :func:`load_files` (in-memory read of a small snapshot, e.g. stored
manifests) and :func:`iter_nodes` (tree walk used by ``ls``). Called by ``steps.commands.restore``.

The trees are walked first: directories are created once, and every file is planned as the blobs it
needs. Files made of one blob (most small files) are created when their blob arrives, and written,
given their owner, mode and times through one descriptor; larger files are pre-sized with
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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from steps.drivers import beneath
from steps.errors import IntegrityError, SnapflowError, UsageError, printable

from .crypto import NONCE_LEN, TAG_LEN, open_blob_into
from .pack import BLOB_DATA, lazy_buffer, pack_key
from .pipeline import _env_int
from .repo import Repository, Snapshot
from .tree import MAX_FILE_SIZE, OVERWRITE_MODES, RestoreLimits, file_regions, is_blob_id, node_problem

if TYPE_CHECKING:
    from steps.manifests.transforms import IdRange

BATCH_BLOBS = 8192  # blobs planned at once: their files' nodes and targets are held until written
BATCH_DIRS = 256  # directories with planned files at once: each holds a descriptor until written
BATCH_FILES = 8192  # files planned at once (empty ones need no blob but are held all the same)
MAX_LISTED_DAMAGE = 1000  # damaged paths listed (--skip-damaged); the count goes on
MiB = 1024 * 1024
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_ZEROS = bytes(4 * 1024 * 1024)


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


def _is_zero(data) -> bool:
    n = len(data)
    if not n or data[0]:
        return not n
    if n <= len(_ZEROS):
        return _ZEROS.startswith(data)
    view = memoryview(data)
    return all(_ZEROS.startswith(view[i : i + len(_ZEROS)]) for i in range(0, n, len(_ZEROS)))


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


def _interleave(items: list, ways: int) -> list:
    """``items`` cut into ``ways`` consecutive parts, taken one from each part in turn: connections
    working at the same moment write files of different directories (creating files in one directory
    is serialised by the kernel) while each still reads its part of the packs in order."""
    if ways <= 1:
        return items
    size = -(-len(items) // ways)
    parts = [items[i : i + size] for i in range(0, len(items), size)]
    return [p[i] for i in range(size) for p in parts if i < len(p)]


class _FileRef:
    """One file to write: ``name`` in the directory ``dir_fd``, whose path below the target is ``comps``
    (a tuple shared by the files of one directory, so a batch holds no path per file; or the path of a
    file target). ``created``: it exists with its final size (pieces are pwritten into it); otherwise it
    is created, written and closed when its only blob arrives (``whole``)."""

    __slots__ = ("comps", "created", "dir_fd", "ident", "name", "node", "ours", "pending", "whole")

    def __init__(
        self,
        dir_fd: int,
        name: bytes,
        comps: tuple[bytes, ...] | str,
        node: dict,
        created: bool = False,
        ours: bool = False,
    ):
        self.dir_fd = dir_fd
        self.name = name
        self.comps = comps
        self.node = node
        self.created = created
        self.ident: tuple[int, int] | None = None  # (st_dev, st_ino) of the file created for it
        self.ours = ours  # a file created there belongs to our uid and gid (the directory is not set-gid)
        self.whole = False
        self.pending = 0

    @property
    def shown(self) -> str:
        """The file's path in messages."""
        if isinstance(self.comps, str):
            return self.comps
        return printable("/" + os.fsdecode(b"/".join((*self.comps, self.name))))


def iter_nodes(repo: Repository, tree_id: str, prefix: str = "") -> Iterator[tuple[str, dict]]:
    """Depth-first (path, node) for every entry below ``tree_id``; paths are relative, '/'-separated."""
    for node in repo.load_tree(tree_id):
        rel = f"{prefix}/{node['name']}" if prefix else node["name"]
        yield rel, node
        if node["type"] == "dir" and node.get("subtree"):
            yield from iter_nodes(repo, node["subtree"], rel)


def load_files(repo: Repository, snapshot: Snapshot | str) -> dict[str, bytes]:
    """Every regular file of a (small) snapshot, read into memory: ``{"relative/path": bytes}``."""
    snap = repo.find_snapshot(snapshot) if isinstance(snapshot, str) else snapshot
    out = {}
    for rel, node in iter_nodes(repo, snap.data["tree"]):
        if node["type"] == "file":
            buf = bytearray(node.get("size", 0))
            for bid, off, raw, _loc in _blob_offsets(repo, node):
                buf[off : off + raw] = repo.read_blob(bid)
            out[rel] = bytes(buf)
    return out


def _blob_offsets(repo: Repository, node: dict, where: bytes | None = None, index=None) -> Iterator[tuple]:
    """(blob ID, file offset, length, index location) for each content blob, skipping recorded holes.
    Locations come from ``index`` (default: the repository's current index)."""
    content = node.get("content") or ()
    if not content:
        return
    regions = file_regions(node)
    ri, pos, region_end = 0, 0, 0
    if regions:
        pos, region_end = regions[0][0], regions[0][0] + regions[0][1]
    get = (index if index is not None else repo.index).get
    for hexid in content:
        bid = bytes.fromhex(hexid)
        loc = get(bid)
        if loc is None:
            name = os.fsdecode(where) if where is not None else repr(node["name"])
            raise IntegrityError(f"blob {hexid} of {name} is not in the index")
        while pos >= region_end and ri + 1 < len(regions):
            ri += 1
            pos, region_end = regions[ri][0], regions[ri][0] + regions[ri][1]
        yield bid, pos, loc.raw_length, loc
        pos += loc.raw_length


def _mapped(value: int, ranges: Sequence[IdRange]) -> int:
    """``value`` through the first range holding it; unknown (-1) and unmapped IDs stay as they are."""
    if value >= 0:
        for r in ranges:
            m = r.map(value)
            if m is not None:
                return m
    return value


class DamagedSnapshotError(SnapflowError):
    """The snapshot's trees break the tree rules or its limits: nothing was written (exit 1)."""


class _Survey:
    """The walk before the first write: every tree the restore may apply is loaded and validated, file
    sizes are checked against their blobs and holes, and the limits are applied, counting a tree as often
    as the snapshot references it (without expanding it: results are kept per tree ID)."""

    def __init__(self, repo: Repository, limits: RestoreLimits, snapshot: str):
        self.repo = repo
        self.limits = limits
        self.snapshot = snapshot
        self.index = repo.index
        self.damaged_trees: dict[str, str] = {}  # tree ID -> why
        self.damaged_files: dict[tuple[str, str], str] = {}  # (tree ID, name) -> why
        self.first_damage: str | None = None  # "<path>: <why>" of the first damage met
        self.root_damage: str | None = None  # why the snapshot record's root metadata is unusable
        self._memo: dict[str, tuple[int, int]] = {}  # tree ID -> (entries below, depth below)

    def _limit(self, flag: str, value: int, where: str) -> DamagedSnapshotError:
        return DamagedSnapshotError(
            f"snapshot {self.snapshot} exceeds {flag} {value}; nothing was written (raise {flag} if the"
            f" snapshot is genuine): {_shorten(where)}"
        )

    def _damage(self, path: str, why: str) -> None:
        if self.first_damage is None:
            self.first_damage = printable(f"{path}: {why}")

    def check_root(self, root) -> None:
        """The snapshot record's metadata of the target itself, from the record (not a tree)."""
        if root is None:
            return
        why = node_problem({**root, "type": "dir"}) if isinstance(root, dict) else "not an entry"
        if why is not None:
            self.root_damage = f"the target's own metadata in the snapshot record: {why}"
            self._damage("/", self.root_damage)

    def run(self, root: str) -> None:
        entries, _depth = self._tree(root, "/", 0)
        if entries > self.limits.max_entries:
            raise self._limit("--max-entries", self.limits.max_entries, f"its {entries} entries")

    def _tree(self, tree_hex: str, path: str, depth: int) -> tuple[int, int]:
        known = self._memo.get(tree_hex)
        if known is None:
            known = self._memo[tree_hex] = self._survey(tree_hex, path, depth)
        if depth + known[1] > self.limits.max_depth:
            raise self._limit("--max-depth", self.limits.max_depth, f"the depth of {path}")
        return known

    def _survey(self, tree_hex: str, path: str, depth: int) -> tuple[int, int]:
        if depth > self.limits.max_depth:
            raise self._limit("--max-depth", self.limits.max_depth, f"the depth of {path}")
        try:
            nodes = self.repo.load_tree(tree_hex)
        except IntegrityError as err:  # crafted, damaged or missing: the whole directory is damage
            self.damaged_trees[tree_hex] = str(err)
            self._damage(path, str(err))
            return 0, 0
        if len(nodes) > self.limits.max_tree_entries:
            raise self._limit(
                "--max-tree-entries", self.limits.max_tree_entries, f"directory {path} ({len(nodes)} entries)"
            )
        entries, below = len(nodes), 0
        for node in nodes:
            child = f"{path.rstrip('/')}/{node['name']}"
            if node["type"] == "dir":  # a level of its own, with or without a subtree
                n, d = self._tree(node["subtree"], child, depth + 1) if node.get("subtree") else (0, 0)
                entries += n
                below = max(below, d + 1)
                if depth + below > self.limits.max_depth:
                    raise self._limit("--max-depth", self.limits.max_depth, f"the depth of {child}")
            elif node["type"] == "file":
                why = self._file_problem(node)
                if why is not None:
                    self.damaged_files[(tree_hex, node["name"])] = why
                    self._damage(child, why)
        return entries, below

    def _file_problem(self, node: dict) -> str | None:
        """Why the file's size disagrees with its blobs and holes (None when it agrees)."""
        total = sum(length for _off, length in node.get("holes") or ())
        get = self.index.get
        for hexid in node.get("content") or ():
            loc = get(bytes.fromhex(hexid))
            if loc is None:
                return f"blob {hexid} is not in the index"
            if loc.type != BLOB_DATA:
                return f"blob {hexid} is not a data blob"
            total += loc.raw_length
        size = node.get("size", 0)
        if total != size:
            return f"size {size} but its blobs and holes hold {total} bytes"
        return None


def _shorten(text: str, keep: int = 160) -> str:
    """``text`` cut in the middle when longer than ``keep`` characters (crafted paths can be huge)."""
    return text if len(text) <= keep else f"{text[: keep // 3]}...{text[-(keep - keep // 3) :]}"


def _rel_name(rel: str, name: str) -> str:
    return f"{rel}/{name}" if rel else name


class Restorer:
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
        self._survey: _Survey | None = None
        self._root_fd = -1
        self._hardlinks: dict[tuple[int, int], tuple[tuple[bytes, ...], bytes, int, int]] = {}
        self._dirs: list[tuple[tuple[bytes, ...], dict]] = []
        self._batch: list[_FileRef] = []
        self._batch_blobs = 0
        self._batch_fds: dict[tuple[bytes, ...], int] = {}
        self._is_root = os.geteuid() == 0
        self._ids = (os.geteuid(), os.getegid())
        self._uid_map = tuple(uid_map)
        self._gid_map = tuple(gid_map)
        self._umask = _current_umask()
        self.downloaders = _env_int("SNAPFLOW_RESTORE_CONNECTIONS", 6)

    # -- selection ----------------------------------------------------------------------------
    def _excluded(self, rel: str, name: str) -> bool:
        return any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(name, p) for p in self.excludes)

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

    def _apply_meta_at(self, dir_fd: int, name: bytes, node: dict, shown: str) -> None:
        """Metadata of a symlink, fifo or device node ``name`` in ``dir_fd``, never following a symlink."""
        symlink = node["type"] == "symlink"
        try:
            os.chown(name, *self._owner(node), dir_fd=dir_fd, follow_symlinks=False)
        except PermissionError:
            if self._is_root:
                self._warn(f"{shown}: cannot set owner")
        except OSError:
            pass
        if not symlink:
            st = beneath.lstat(dir_fd, name)
            if st is not None and not stat_mod.S_ISLNK(st.st_mode):  # just created by us: no symlink
                try:
                    os.chmod(name, node.get("mode", 0o644), dir_fd=dir_fd)
                except OSError as err:
                    self._warn(f"{shown}: cannot set mode ({err.strerror})")
        try:
            mtime = node.get("mtime_ns", 0)
            os.utime(name, ns=(node.get("atime_ns", mtime), mtime), dir_fd=dir_fd, follow_symlinks=False)
        except (OSError, NotImplementedError) as err:
            if not symlink:
                self._warn(f"{shown}: cannot set times ({err})")

    def _apply_meta_fd(self, fd: int, shown: str, node: dict) -> None:
        """Owner, then mode (a chown clears set-id bits), then times (after the last write)."""
        try:
            os.fchown(fd, *self._owner(node))
        except PermissionError:
            if self._is_root:
                self._warn(f"{shown}: cannot set owner")
        except OSError:
            pass
        try:
            os.fchmod(fd, node.get("mode", 0o644))
        except OSError as err:
            self._warn(f"{shown}: cannot set mode ({err.strerror})")
        mtime = node.get("mtime_ns", 0)
        try:
            os.utime(fd, ns=(node.get("atime_ns", mtime), mtime))
        except (OSError, NotImplementedError) as err:
            self._warn(f"{shown}: cannot set times ({err})")

    def _skip_damaged(self, path: str, why: str) -> None:
        self.stats.damaged_total += 1
        if len(self.stats.damaged) < MAX_LISTED_DAMAGE:
            self.stats.damaged.append(printable(f"{_shorten(path)}: {_shorten(why, 400)}"))

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
        for node in nodes:
            name_s = node["name"]
            name = os.fsencode(name_s)
            child_rel = _rel_name(rel, name_s)
            if self.excludes and self._excluded(child_rel, name_s):
                continue
            kind = node["type"]
            if kind == "dir":
                if not self._may_contain(child_rel):
                    continue
                entered = self._enter_dir(dir_fd, name, fresh)
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
            shown = "/" + child_rel
            if survey is not None and (tree_id, name_s) in survey.damaged_files:
                self._skip_damaged(shown, survey.damaged_files[(tree_id, name_s)])
                continue
            if not fresh:
                st = beneath.lstat(dir_fd, name)
                if st is not None:
                    if self._keep_existing(st, node):
                        self.stats.kept += 1
                        continue
                    beneath.remove(dir_fd, name, st)
            self._restore_leaf(dir_fd, comps, name, node, shown, ours)
        if self.delete and not fresh:
            self._delete_extra(dir_fd, rel, {os.fsencode(n["name"]) for n in nodes})

    def _batch_fd(self, dir_fd: int, comps: tuple[bytes, ...]) -> int:
        fd = self._batch_fds.get(comps)
        if fd is None:
            fd = self._batch_fds[comps] = os.dup(dir_fd)
        return fd

    def _restore_leaf(
        self, dir_fd: int, comps: tuple[bytes, ...], name: bytes, node: dict, shown: str, ours: bool
    ) -> None:
        kind = node["type"]
        if kind == "file":
            self.stats.files += 1
            nlink = node.get("nlink", 1)
            key = (node.get("dev", 0), node.get("inode", 0))
            if nlink > 1 and key in self._hardlinks and self._link(dir_fd, name, self._hardlinks[key], shown):
                return
            ref = _FileRef(self._batch_fd(dir_fd, comps), name, comps, node, ours=ours)
            if nlink > 1:
                st = self._create_sized(ref)  # later links need it to exist now
                self._hardlinks[key] = (comps, name, st.st_dev, st.st_ino)
            self.stats.bytes_total += node.get("size", 0)
            self._batch.append(ref)
            self._batch_blobs += len(node.get("content") or ())
            if (
                self._batch_blobs >= BATCH_BLOBS
                or len(self._batch) >= BATCH_FILES
                or len(self._batch_fds) >= BATCH_DIRS
            ):
                self._flush()
            return
        self.stats.others += 1
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

    # -- content ------------------------------------------------------------------------------
    @staticmethod
    def _open_new(ref: _FileRef, mode: int = 0o600) -> int:
        """A new file ``ref.name``; whatever appeared in its place since the walk is removed, not followed."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC
        try:
            return os.open(ref.name, flags, mode, dir_fd=ref.dir_fd)
        except FileExistsError:
            beneath.remove(ref.dir_fd, ref.name)
            return os.open(ref.name, flags, mode, dir_fd=ref.dir_fd)

    def _create_sized(self, ref: _FileRef) -> os.stat_result:
        fd = self._open_new(ref)
        try:
            size = ref.node.get("size", 0)
            if size:
                os.ftruncate(fd, size)
            st = os.fstat(fd)
        finally:
            os.close(fd)
        ref.created = True
        ref.ident = (st.st_dev, st.st_ino)
        return st

    @staticmethod
    def _reopen(ref: _FileRef) -> int:
        """The file created for ``ref``, opened again for writing: refused when something else stands
        under its name now (a hard link or file swapped in by another process), so that nothing is
        ever written through it."""
        fd = os.open(ref.name, os.O_WRONLY | _O_NOFOLLOW | _O_CLOEXEC, dir_fd=ref.dir_fd)
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != ref.ident:
            os.close(fd)
            raise SnapflowError(
                f"{printable(ref.shown)}: replaced by another process during the restore; nothing was"
                " written through it"
            )
        return fd

    def _flush(self) -> None:
        batch, self._batch, self._batch_blobs = self._batch, [], 0
        fds, self._batch_fds = self._batch_fds, {}
        try:
            self._write_batch(batch)
        finally:
            for fd in fds.values():
                os.close(fd)

    def _write_batch(self, batch: list[_FileRef]) -> None:
        if not batch:
            return
        # Pack numbers belong to one index: the one in use now, even if a relocation reloads it meanwhile.
        index = self.repo.index
        # pack number -> {blob ID: [pack offset, stored length, raw length, [(file no, file offset)]]}
        by_pack: dict[int, dict[bytes, list]] = {}
        for fno, ref in enumerate(batch):
            pieces = list(_blob_offsets(self.repo, ref.node, ref.shown, index))
            if not pieces:  # empty, or only holes: its size and metadata are all there is
                fd = self._reopen(ref) if ref.created else self._open_new(ref)
                try:
                    size = ref.node.get("size", 0)
                    if size:
                        os.ftruncate(fd, size)
                    self._apply_meta_fd(fd, ref.shown, ref.node)
                finally:
                    os.close(fd)
                continue
            size = ref.node.get("size", 0)
            if not ref.created and len(pieces) == 1 and pieces[0][1] == 0 and pieces[0][2] == size:
                ref.whole = True
            elif not ref.created:
                self._create_sized(ref)
            ref.pending = len(pieces)
            for bid, off, raw, loc in pieces:
                blobs = by_pack.get(loc.pack_no)
                if blobs is None:
                    blobs = by_pack[loc.pack_no] = {}
                entry = blobs.get(bid)
                if entry is None:
                    blobs[bid] = [loc.offset, loc.length, raw, [(fno, off)]]
                else:
                    entry[3].append((fno, off))
        ranges = self._ranges(by_pack)
        del by_pack
        ranges = _interleave(ranges, min(self.downloaders, len(ranges)))
        errors: list[BaseException] = []
        feed = iter(ranges)
        feed_lock = threading.Lock()

        def download() -> None:
            scratch = [lazy_buffer(1)]
            while not errors:
                with feed_lock:
                    item = next(feed, None)
                if item is None:
                    return
                try:
                    self._fetch_range(index, item[0], item[1], batch, scratch)
                except BaseException as err:
                    errors.append(err)
                    return

        threads = [
            threading.Thread(target=download, name=f"restore-{i}", daemon=True)
            for i in range(min(self.downloaders, len(ranges)))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        for ref in batch:
            if ref.pending:  # cannot happen unless a pack decoded fewer blobs than planned
                raise IntegrityError(f"{ref.shown}: {ref.pending} piece(s) were not restored")

    def _decode(self, aead, bid: bytes, stored, raw: int, name: str, scratch: list):
        if len(stored) < NONCE_LEN + TAG_LEN + 1:
            raise IntegrityError(f"{name}: truncated")
        if len(scratch[0]) < len(stored):
            scratch[0] = lazy_buffer(max(len(stored), 4 * 1024 * 1024 + 64))
        try:
            plain = open_blob_into(aead, b"d", bid, stored, raw, scratch[0])
        except IntegrityError as err:
            raise IntegrityError(f"{name}: {err}") from None
        except Exception as err:  # zstd errors and the like: corrupt payload
            raise IntegrityError(f"{name}: cannot decode ({type(err).__name__})") from None
        if len(plain) != raw or self.repo.keys.blob_id(plain) != bid:
            raise IntegrityError(f"{name}: content does not match its ID")
        return plain

    def _write_whole(self, ref: _FileRef, plain, zero: bool) -> int:
        """Create, write and close a one-blob file. Metadata goes through the same descriptor, and the
        calls that would change nothing are left out: a file created with its final mode (no set-id or
        sticky bit, nothing the umask removes) needs no chmod, one that is ours already no chown."""
        node = ref.node
        mode = node.get("mode", 0o644)
        direct = not mode & 0o7000 and not mode & self._umask
        fd = self._open_new(ref, mode if direct else 0o600)
        try:
            if zero:
                os.ftruncate(fd, len(plain))
                written = 0
            else:
                written = os.pwrite(fd, plain, 0)
                while written < len(plain):
                    written += os.pwrite(fd, memoryview(plain)[written:], written)
            owner = self._owner(node)
            if not (ref.ours and owner == self._ids):
                try:
                    os.fchown(fd, *owner)
                except PermissionError:
                    if self._is_root:
                        self._warn(f"{ref.shown}: cannot set owner")
                except OSError:
                    pass
            if not direct:
                try:
                    os.fchmod(fd, mode)
                except OSError as err:
                    self._warn(f"{ref.shown}: cannot set mode ({err.strerror})")
            mtime = node.get("mtime_ns", 0)
            try:
                os.utime(fd, ns=(node.get("atime_ns", mtime), mtime))
            except (OSError, NotImplementedError) as err:
                self._warn(f"{ref.shown}: cannot set times ({err})")
        finally:
            os.close(fd)
        return written

    def _write_piece(self, ref: _FileRef, plain, zero: bool, offset: int) -> int:
        written = 0
        fd = self._reopen(ref)
        try:
            if not zero:
                written = os.pwrite(fd, plain, offset)
                while written < len(plain):
                    written += os.pwrite(fd, memoryview(plain)[written:], offset + written)
            with self._lock:
                ref.pending -= 1
                last = ref.pending == 0
            if last:
                self._apply_meta_fd(fd, ref.shown, ref.node)
        finally:
            os.close(fd)
        return written

    def _ranges(self, by_pack: dict[int, dict[bytes, list]]) -> list[tuple[int, list]]:
        """The ranged GETs to make, in pack order: the needed blobs of a pack, cut where the range would
        pass ``SNAPFLOW_RESTORE_RANGE_MIB`` (a response is held whole in memory while its blobs are
        written) or skip more than a MiB of blobs nobody needs."""
        limit = _env_int("SNAPFLOW_RESTORE_RANGE_MIB", 4) * MiB
        out: list[tuple[int, list]] = []
        for pack_no in sorted(by_pack):
            ordered = sorted(by_pack[pack_no].items(), key=lambda kv: kv[1][0])
            group = [ordered[0]]
            start = ordered[0][1][0]
            end = start + ordered[0][1][1]
            for item in ordered[1:]:
                off, length = item[1][0], item[1][1]
                if off + length - start > limit or off - end > MiB:
                    out.append((pack_no, group))
                    group, start = [], off
                group.append(item)
                end = off + length
            out.append((pack_no, group))
        return out

    def _fetch_range(self, index, pack_no: int, ordered: list, batch: list[_FileRef], scratch: list) -> None:
        """Fetch one range of a pack and write its blobs (``ordered``: ``(ID, [offset, stored length, raw
        length, targets])`` by offset). When the pack is gone because prune deleted it as a duplicate
        while this restore ran, the blobs not yet written are read from where the new index puts them."""
        pack_id = index.pack_ids[pack_no]
        aead = self.repo.keys.pack_aead(index.pack_salts[pack_no])
        start = ordered[0][1][0]
        end = ordered[-1][1][0] + ordered[-1][1][1]  # blobs of a pack do not overlap
        done: set[bytes] = set()
        counts = [0, 0]  # bytes written, bytes left sparse

        def emit(bid: bytes, plain, raw: int, targets: list) -> None:
            zero = _is_zero(plain)
            for fno, foff in targets:
                ref = batch[fno]
                if ref.whole:
                    counts[0] += self._write_whole(ref, plain, zero)
                    ref.pending = 0
                else:
                    counts[0] += self._write_piece(ref, plain, zero, foff)
                if zero:
                    counts[1] += raw
            done.add(bid)

        def write(data: bytes) -> None:
            # A replaced or damaged pack fails to decode here; pack_range then runs this again on an
            # older, intact version: blobs already written (each was authenticated) are skipped.
            view = memoryview(data)
            for bid, (off, length, raw, targets) in ordered:
                if bid in done:
                    continue
                name = f"blob {bid.hex()} in pack {pack_id}"
                plain = self._decode(aead, bid, view[off - start : off - start + length], raw, name, scratch)
                emit(bid, plain, raw, targets)

        try:
            self.repo.pack_range(pack_id, start, end - start, write)
        except IntegrityError:
            if self.repo.store.stat(pack_key(pack_id)) is not None:
                raise  # there but damaged in every version: nothing to relocate
            for bid, (_off, _length, raw, targets) in ordered:
                if bid not in done:
                    emit(bid, self.repo.read_blob(bid), raw, targets)  # read_blob relocates
            with self._lock:
                self.stats.relocated_packs += 1
        with self._lock:
            self.stats.bytes_written += counts[0]
            self.stats.bytes_sparse += counts[1]
            self.stats.packs_fetched += 1
            self.stats.bytes_fetched += end - start
            if self.progress is not None:
                self.progress.done_bytes = self.stats.bytes_written + self.stats.bytes_sparse
                self.progress.files = self.stats.files

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
        survey = _Survey(self.repo, self.limits, self.snapshot.short_id)
        survey.check_root(snap.get("root"))
        survey.run(tree)
        if survey.first_damage is not None and not self.skip_damaged:
            raise DamagedSnapshotError(
                f"snapshot {self.snapshot.short_id} is damaged at {_shorten(survey.first_damage, 600)}; nothing was"
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
        _raise_open_file_limit()
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
            try:
                self._restore_tree(snap["tree"], root_fd, (), "", empty, ours)
                self._flush()
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
                for bid, off, _raw, _loc in _blob_offsets(self.repo, node):
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
        ref = _FileRef(dir_fd, os.fsencode(name), target, node, created=True)
        ref.ident = (st.st_dev, st.st_ino)
        self._batch.append(ref)
        self._flush()


def _raise_open_file_limit() -> None:
    """Directory descriptors stay open while their files are written: lift the soft limit to the hard one."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = hard if hard == resource.RLIM_INFINITY else min(hard, 65536)
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ImportError, ValueError, OSError):
        pass


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
