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

from steps.errors import IntegrityError, UsageError

from .crypto import NONCE_LEN, TAG_LEN, open_blob_into
from .pack import lazy_buffer, pack_key
from .pipeline import _env_int
from .repo import Repository, Snapshot
from .tree import file_regions

if TYPE_CHECKING:
    from steps.manifests.transforms import IdRange

BATCH_BLOBS = 8192  # blobs planned at once: their files' nodes and targets are held until written
MiB = 1024 * 1024
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_ZEROS = bytes(4 * 1024 * 1024)


def _has_default_acl(path: bytes) -> bool:
    try:
        os.getxattr(path, "system.posix_acl_default")
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
    """One file to write. ``created``: it exists with its final size (pieces are pwritten into it);
    otherwise it is created, written and closed when its only blob arrives (``whole``)."""

    __slots__ = ("created", "node", "ours", "path", "pending", "whole")

    def __init__(self, path: bytes, node: dict, created: bool = False, ours: bool = False):
        self.path = path
        self.node = node
        self.created = created
        self.ours = ours  # a file created there belongs to our uid and gid (the directory is not set-gid)
        self.whole = False
        self.pending = 0


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
    ):
        self.repo = repo
        self.snapshot = snapshot
        self.target = os.path.abspath(target)
        self.includes = list(includes)
        self.excludes = list(excludes)
        self.progress = progress
        self.stats = RestoreStats()
        self._lock = threading.Lock()
        self._hardlinks: dict[tuple[int, int], bytes] = {}
        self._dirs: list[tuple[bytes, dict]] = []
        self._batch: list[_FileRef] = []
        self._batch_blobs = 0
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
                self.stats.warnings.append(msg)

    def _owner(self, node: dict) -> tuple[int, int]:
        """The (uid, gid) to give a restored entry: as recorded, through the ID maps when there are any."""
        uid, gid = node.get("uid", -1), node.get("gid", -1)
        if self._uid_map:
            uid = _mapped(uid, self._uid_map)
        if self._gid_map:
            gid = _mapped(gid, self._gid_map)
        return uid, gid

    def _apply_meta(self, path: bytes, node: dict, symlink: bool = False) -> None:
        try:
            os.chown(path, *self._owner(node), follow_symlinks=not symlink)
        except PermissionError:
            if self._is_root:
                self._warn(f"{os.fsdecode(path)}: cannot set owner")
        except OSError:
            pass
        if not symlink:
            try:
                os.chmod(path, node.get("mode", 0o644))
            except OSError as err:
                self._warn(f"{os.fsdecode(path)}: cannot set mode ({err.strerror})")
        try:
            os.utime(
                path,
                ns=(node.get("atime_ns", node.get("mtime_ns", 0)), node.get("mtime_ns", 0)),
                follow_symlinks=not symlink,
            )
        except (OSError, NotImplementedError) as err:
            if not symlink:
                self._warn(f"{os.fsdecode(path)}: cannot set times ({err})")

    def _apply_meta_fd(self, fd: int, path: bytes, node: dict) -> None:
        """Owner, then mode (a chown clears set-id bits), then times (after the last write)."""
        try:
            os.fchown(fd, *self._owner(node))
        except PermissionError:
            if self._is_root:
                self._warn(f"{os.fsdecode(path)}: cannot set owner")
        except OSError:
            pass
        try:
            os.fchmod(fd, node.get("mode", 0o644))
        except OSError as err:
            self._warn(f"{os.fsdecode(path)}: cannot set mode ({err.strerror})")
        mtime = node.get("mtime_ns", 0)
        try:
            os.utime(fd, ns=(node.get("atime_ns", mtime), mtime))
        except (OSError, NotImplementedError) as err:
            self._warn(f"{os.fsdecode(path)}: cannot set times ({err})")

    @staticmethod
    def _clear(path: bytes) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat_mod.S_ISDIR(st.st_mode):
            import shutil

            shutil.rmtree(path)
        else:
            os.unlink(path)

    # -- walk ---------------------------------------------------------------------------------
    def _ensure_dir(self, path: bytes) -> bool:
        """Create the directory; True when it is new (so nothing in it needs clearing)."""
        try:
            os.mkdir(path, 0o700)
            return True
        except FileExistsError:
            if not os.path.isdir(path) or os.path.islink(path):
                self._clear(path)
                os.mkdir(path, 0o700)
                return True
            return False

    def _restore_tree(
        self, tree_id: str, dirpath: bytes, rel: str, fresh: bool = False, ours: bool = False
    ) -> None:
        """``fresh``: this restore created ``dirpath``, so nothing in it needs clearing; ``ours``: files
        created in it get our uid and gid (neither it nor, for new ones, its parent is set-gid)."""
        for node in self.repo.load_tree(tree_id):
            name = node["name"]
            child_rel = f"{rel}/{name}" if rel else name
            if self.excludes and self._excluded(child_rel, name):
                continue
            path = os.path.join(dirpath, os.fsencode(name))
            kind = node["type"]
            if kind == "dir":
                if not self._may_contain(child_rel):
                    continue
                if fresh:  # nothing can be in the way in a directory this restore created
                    os.mkdir(path, 0o700)
                    created, sub_ours = True, ours
                else:
                    created = self._ensure_dir(path)
                    sub_ours = ours if created else not os.stat(path).st_mode & stat_mod.S_ISGID
                    if not created and _has_default_acl(path):
                        self._umask = 0o7777  # modes come from the ACL: always set them explicitly
                self._dirs.append((path, node))
                self.stats.dirs += 1
                if node.get("subtree"):
                    self._restore_tree(node["subtree"], path, child_rel, created, sub_ours)
                continue
            if not self._included(child_rel):
                continue
            self._restore_leaf(path, node, fresh, ours)

    def _restore_leaf(self, path: bytes, node: dict, fresh: bool = False, ours: bool = False) -> None:
        kind = node["type"]
        if kind == "file":
            self.stats.files += 1
            nlink = node.get("nlink", 1)
            key = (node.get("dev", 0), node.get("inode", 0))
            if nlink > 1 and key in self._hardlinks:
                if not fresh:
                    self._clear(path)
                try:
                    os.link(self._hardlinks[key], path)
                    return
                except OSError as err:
                    self._warn(f"{os.fsdecode(path)}: cannot hard-link ({err.strerror}); writing a copy")
            size = node.get("size", 0)
            if not fresh:
                self._clear(path)
            ref = _FileRef(path, node, ours=ours)
            if nlink > 1:
                self._hardlinks[key] = path
                self._create_sized(ref)  # later links need it to exist now
            self.stats.bytes_total += size
            self._batch.append(ref)
            self._batch_blobs += len(node.get("content") or ())
            if self._batch_blobs >= BATCH_BLOBS:
                self._flush()
            return
        if not fresh:
            self._clear(path)
        self.stats.others += 1
        if kind == "symlink":
            os.symlink(os.fsencode(node.get("target", "")), path)
            self._apply_meta(path, node, symlink=True)
        elif kind == "fifo":
            os.mkfifo(path, 0o600)
            self._apply_meta(path, node)
        elif kind in ("chardev", "blockdev"):
            mode = (stat_mod.S_IFCHR if kind == "chardev" else stat_mod.S_IFBLK) | 0o600
            try:
                os.mknod(path, mode, node.get("rdev", 0))
                self._apply_meta(path, node)
            except PermissionError:
                self._warn(f"{os.fsdecode(path)}: cannot create device node (needs root); skipped")
        else:
            self._warn(f"{os.fsdecode(path)}: {kind} entries are not restored")

    # -- content ------------------------------------------------------------------------------
    @staticmethod
    def _create_sized(ref: _FileRef) -> None:
        fd = os.open(ref.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _O_CLOEXEC, 0o600)
        try:
            size = ref.node.get("size", 0)
            if size:
                os.ftruncate(fd, size)
        finally:
            os.close(fd)
        ref.created = True

    def _flush(self) -> None:
        batch, self._batch, self._batch_blobs = self._batch, [], 0
        if not batch:
            return
        # Pack numbers belong to one index: the one in use now, even if a relocation reloads it meanwhile.
        index = self.repo.index
        # pack number -> {blob ID: [pack offset, stored length, raw length, [(file no, file offset)]]}
        by_pack: dict[int, dict[bytes, list]] = {}
        for fno, ref in enumerate(batch):
            pieces = list(_blob_offsets(self.repo, ref.node, ref.path, index))
            if not pieces:  # empty, or only holes: its size and metadata are all there is
                fd = os.open(ref.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _O_CLOEXEC, 0o600)
                try:
                    size = ref.node.get("size", 0)
                    if size:
                        os.ftruncate(fd, size)
                    self._apply_meta_fd(fd, ref.path, ref.node)
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
                raise IntegrityError(f"{os.fsdecode(ref.path)}: {ref.pending} piece(s) were not restored")

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
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC
        try:
            fd = os.open(ref.path, flags, mode if direct else 0o600)
        except FileExistsError:
            self._clear(ref.path)
            fd = os.open(ref.path, flags, mode if direct else 0o600)
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
                        self._warn(f"{os.fsdecode(ref.path)}: cannot set owner")
                except OSError:
                    pass
            if not direct:
                try:
                    os.fchmod(fd, mode)
                except OSError as err:
                    self._warn(f"{os.fsdecode(ref.path)}: cannot set mode ({err.strerror})")
            mtime = node.get("mtime_ns", 0)
            try:
                os.utime(fd, ns=(node.get("atime_ns", mtime), mtime))
            except (OSError, NotImplementedError) as err:
                self._warn(f"{os.fsdecode(ref.path)}: cannot set times ({err})")
        finally:
            os.close(fd)
        return written

    def _write_piece(self, ref: _FileRef, plain, zero: bool, offset: int) -> int:
        written = 0
        if not zero:
            fd = os.open(ref.path, os.O_WRONLY | _O_CLOEXEC)
            try:
                written = os.pwrite(fd, plain, offset)
                while written < len(plain):
                    written += os.pwrite(fd, memoryview(plain)[written:], offset + written)
            finally:
                os.close(fd)
        with self._lock:
            ref.pending -= 1
            last = ref.pending == 0
        if last:
            self._apply_meta(ref.path, ref.node)
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
    def run(self) -> RestoreStats:
        t0 = time.monotonic()
        snap = self.snapshot.data
        total = snap.get("summary", {}).get("bytes_total", 0)
        if self.progress is not None and total:
            self.progress.total_bytes, self.progress.total_final = total, True
        self.repo.index  # noqa: B018
        single = snap.get("source_type") in ("file", "block")
        target_b = os.fsencode(self.target)
        if single and os.path.exists(self.target) and not os.path.isdir(self.target):
            self._restore_into_existing(target_b)
        else:
            os.makedirs(self.target, exist_ok=True)
            with os.scandir(target_b) as it:
                empty = next(it, None) is None
            ours = not os.stat(target_b).st_mode & stat_mod.S_ISGID
            if _has_default_acl(target_b):  # new files take their mode from the ACL, not the umask
                self._umask = 0o7777
            self._restore_tree(snap["tree"], target_b, "", empty, ours)
            self._flush()
            for path, node in reversed(self._dirs):
                self._apply_meta(path, node)
            root = snap.get("root")
            if root and not single and not self.includes:
                self._apply_meta(target_b, root)
        self.stats.duration_s = time.monotonic() - t0
        return self.stats

    def _restore_into_existing(self, target: bytes) -> None:
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
            for bid, off, _raw, _loc in _blob_offsets(self.repo, node):
                data = self.repo.read_blob(bid)
                fd = os.open(target, os.O_WRONLY)
                try:
                    os.pwrite(fd, data, off)
                finally:
                    os.close(fd)
                self.stats.bytes_written += len(data)
            return
        if stat_mod.S_ISREG(st.st_mode):
            fd = os.open(target, os.O_WRONLY | os.O_TRUNC)
            os.ftruncate(fd, node.get("size", 0))
            os.close(fd)
        self._batch.append(_FileRef(target, node, created=True))
        self._flush()


def restore_snapshot(
    repo: Repository,
    snapshot: Snapshot,
    target: str,
    includes=(),
    excludes=(),
    progress=None,
    uid_map: Sequence[IdRange] = (),
    gid_map: Sequence[IdRange] = (),
) -> RestoreStats:
    """Restore ``snapshot`` into ``target``; owners go through ``uid_map`` / ``gid_map`` (see the module)."""
    import sys

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20000))
    return Restorer(repo, snapshot, target, includes, excludes, progress, uid_map, gid_map).run()
