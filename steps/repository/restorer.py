"""Restore: write a snapshot back to disk, byte- and metadata-identical (the engine behind ``restore``).

Provides :func:`restore_snapshot`, :func:`load_files` (in-memory read of a small snapshot, e.g. stored
manifests) and :func:`iter_nodes` (tree walk used by ``ls``). Called by ``steps.commands.restore``.

Files are created and pre-sized first, then the packs they need are fetched in order over several
connections (one ranged GET per pack and batch) and each blob is written with ``pwrite`` at its offset;
all-zero blobs and recorded holes are never written, so sparse files stay sparse. Modes, owners (where
permitted) and times are applied after the content, directories last and deepest first.
"""

from __future__ import annotations

import fnmatch
import os
import stat as stat_mod
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from steps.errors import IntegrityError, UsageError

from .pipeline import _env_int
from .repo import Repository, Snapshot
from .tree import file_regions

BATCH_BLOBS = 50_000


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
    warnings: list[str] = field(default_factory=list)


@dataclass
class _FileRef:
    path: bytes
    node: dict


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
            pos_iter = _blob_offsets(repo, node)
            for bid, off, raw in pos_iter:
                buf[off : off + raw] = repo.read_blob(bid)
            out[rel] = bytes(buf)
    return out


def _blob_offsets(repo: Repository, node: dict) -> Iterator[tuple[bytes, int, int]]:
    """(blob ID, file offset, length) for each content blob, skipping the recorded holes."""
    regions = file_regions(node)
    content = node.get("content", [])
    ri, pos, region_end = 0, 0, 0
    if regions:
        pos, region_end = regions[0][0], regions[0][0] + regions[0][1]
    index = repo.index
    for hexid in content:
        bid = bytes.fromhex(hexid)
        raw = index.raw_length(bid)
        if raw is None:
            raise IntegrityError(f"blob {hexid} of {node['name']!r} is not in the index")
        while pos >= region_end and ri + 1 < len(regions):
            ri += 1
            pos, region_end = regions[ri][0], regions[ri][0] + regions[ri][1]
        yield bid, pos, raw
        pos += raw


class Restorer:
    def __init__(
        self, repo: Repository, snapshot: Snapshot, target: str, includes=(), excludes=(), progress=None
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
        self._deferred: set[bytes] = set()
        self._is_root = os.geteuid() == 0
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

    def _apply_meta(self, path: bytes, node: dict, symlink: bool = False) -> None:
        try:
            os.chown(path, node.get("uid", -1), node.get("gid", -1), follow_symlinks=not symlink)
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
    def _ensure_dir(self, path: bytes) -> None:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            if not os.path.isdir(path) or os.path.islink(path):
                self._clear(path)
                os.mkdir(path, 0o700)

    def _restore_tree(self, tree_id: str, dirpath: bytes, rel: str) -> None:
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
                self._ensure_dir(path)
                self._dirs.append((path, node))
                self.stats.dirs += 1
                if node.get("subtree"):
                    self._restore_tree(node["subtree"], path, child_rel)
                continue
            if not self._included(child_rel):
                continue
            self._restore_leaf(path, node)

    def _restore_leaf(self, path: bytes, node: dict) -> None:
        kind = node["type"]
        if kind == "file":
            self.stats.files += 1
            key = (node.get("dev", 0), node.get("inode", 0))
            if node.get("nlink", 1) > 1 and key in self._hardlinks:
                self._clear(path)
                try:
                    os.link(self._hardlinks[key], path)
                    return
                except OSError as err:
                    self._warn(f"{os.fsdecode(path)}: cannot hard-link ({err.strerror}); writing a copy")
            size = node.get("size", 0)
            if node.get("nlink", 1) > 1:
                self._hardlinks[key] = path
                self._create_file(path, size)  # later links need it to exist now
            else:
                self._deferred.add(path)  # created in parallel when the batch is flushed
            self.stats.bytes_total += size
            content = node.get("content") or []
            self._batch.append(_FileRef(path, node))
            self._batch_blobs += len(content)
            if self._batch_blobs >= BATCH_BLOBS:
                self._flush()
            return
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
    @classmethod
    def _create_file(cls, path: bytes, size: int) -> None:
        cls._clear(path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            if size:
                os.ftruncate(fd, size)
        finally:
            os.close(fd)

    def _flush(self) -> None:
        batch, self._batch, self._batch_blobs = self._batch, [], 0
        if not batch:
            return
        deferred, self._deferred = self._deferred, set()
        # file creation dominates restores of many small files on some file systems: do it in parallel
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(
                pool.map(
                    lambda r: self._create_file(r.path, r.node.get("size", 0)),
                    [r for r in batch if r.path in deferred],
                )
            )
        index = self.repo.index
        # pack number -> list of (pack offset, stored length, blob id, raw length, [(file no, file offset)])
        by_pack: dict[int, dict[bytes, list]] = {}
        order: list[int] = []
        for fno, ref in enumerate(batch):
            for bid, off, raw in _blob_offsets(self.repo, ref.node):
                loc = index.get(bid)
                if loc is None:
                    raise IntegrityError(f"blob {bid.hex()} of {os.fsdecode(ref.path)} is not in the index")
                blobs = by_pack.get(loc.pack_no)
                if blobs is None:
                    blobs = by_pack[loc.pack_no] = {}
                    order.append(loc.pack_no)
                entry = blobs.get(bid)
                if entry is None:
                    blobs[bid] = [loc.offset, loc.length, raw, [(fno, off)]]
                else:
                    entry[3].append((fno, off))
        with ThreadPoolExecutor(max_workers=self.downloaders) as pool:
            for _ in pool.map(lambda p: self._fetch_pack(p, by_pack[p], batch), order):
                pass
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(lambda r: self._apply_meta(r.path, r.node), batch))

    def _fetch_pack(self, pack_no: int, blobs: dict[bytes, list], batch: list[_FileRef]) -> None:
        index = self.repo.index
        pack_id = index.pack_ids[pack_no]
        salt = index.pack_salts[pack_no]
        start = min(v[0] for v in blobs.values())
        end = max(v[0] + v[1] for v in blobs.values())
        ordered = sorted(blobs.items(), key=lambda kv: kv[1][0])

        def write(data: bytes) -> tuple[int, int]:
            # A replaced or damaged pack fails to decode here; pack_range then runs this again on an
            # older, intact version, which rewrites the same offsets.
            view = memoryview(data)
            written = 0
            sparse = 0
            fds: dict[int, int] = {}
            try:
                for bid, (off, length, raw, targets) in ordered:
                    plain = self.repo.decode_blob(
                        bid,
                        b"d",
                        salt,
                        view[off - start : off - start + length],
                        raw,
                        f"blob {bid.hex()} in pack {pack_id}",
                    )
                    if plain[:1] == b"\0" and plain == bytes(len(plain)):
                        sparse += len(plain) * len(targets)
                        continue
                    for fno, foff in targets:
                        fd = fds.get(fno)
                        if fd is None:
                            fd = fds[fno] = os.open(
                                batch[fno].path, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0)
                            )
                        os.pwrite(fd, plain, foff)
                        written += len(plain)
            finally:
                for fd in fds.values():
                    os.close(fd)
            return written, sparse

        written, sparse = self.repo.pack_range(pack_id, start, end - start, write)
        with self._lock:
            self.stats.bytes_written += written
            self.stats.bytes_sparse += sparse
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
            self._restore_tree(snap["tree"], target_b, "")
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
        if stat_mod.S_ISREG(st.st_mode):
            fd = os.open(target, os.O_WRONLY | os.O_TRUNC)
            os.ftruncate(fd, node.get("size", 0))
            os.close(fd)
        self.stats.files = 1
        self.stats.bytes_total = node.get("size", 0)
        self._batch.append(_FileRef(target, node))
        batch = self._batch
        self._batch = []
        self._batch_blobs = 0
        # devices are not pre-sized; zero blobs must be written explicitly there
        if stat_mod.S_ISBLK(st.st_mode):
            for bid, off, _raw in _blob_offsets(self.repo, node):
                data = self.repo.read_blob(bid)
                fd = os.open(target, os.O_WRONLY)
                try:
                    os.pwrite(fd, data, off)
                finally:
                    os.close(fd)
                self.stats.bytes_written += len(data)
            return
        self._batch = batch
        self._flush()


def restore_snapshot(
    repo: Repository, snapshot: Snapshot, target: str, includes=(), excludes=(), progress=None
) -> RestoreStats:
    import sys

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20000))
    return Restorer(repo, snapshot, target, includes, excludes, progress).run()
