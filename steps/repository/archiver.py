"""Copy: turn a directory, a file or a block device into a snapshot (the engine behind ``copy``).

Provides :func:`copy_source` and :func:`store_files` (in-memory files, e.g. Kubernetes manifests, as a
snapshot tagged ``kind=manifests``), plus :class:`CopyOptions` and :class:`CopyResult`. Called by
``steps.commands.copy`` and by capture. A block device with ``CopyOptions.block_tracking`` is copied by
:func:`.block_copy.copy_block` instead (only the ranges CSI changed-block tracking reports are read).

Threads: a :class:`Prescan` lists and stats the source (and reads ahead what changed) while the
repository opens; the calling thread walks the source and compares with the parent snapshot; file
workers read, chunk, hash, and compress and encrypt new blobs into their own pack buffers; a finisher
builds tree blobs in post-order (reusing the parent's tree of an unchanged directory); the uploaders of
:class:`~.blob_sink.BlobSink` store packs and index files. Write order: packs → index files → snapshot
record (see docs/design.md, "Memory and speed").
"""

from __future__ import annotations

import os
import socket
import stat as stat_mod
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from steps import runtime
from steps.drivers import beneath
from steps.drivers.cpus import default_threads
from steps.errors import PermanentError, UsageError

from .blob_sink import Aborted, BlobSink, ByteQueue, _env_int
from .change_telemetry import ChangeCounter, content_key, snapshot_changes
from .chunker import Chunker
from .excludes import excluded
from .file_reading import FileJob, FileReading
from .pack import BLOB_TREE
from .repo import Repository, Snapshot
from .scan import Prescan
from .stored_files import store_files
from .tree import encode_fs_tree, node_from_stat

__all__ = ["Archiver", "CopyOptions", "CopyResult", "CopyStats", "Prescan", "copy_source", "store_files"]

RACY_WINDOW_NS = 2_000_000_000
_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
MiB = 1024 * 1024
SNAPSHOT_VERSION = 1
IDENTITY_FIELDS = ("cluster", "namespace", "app", "volume", "policy")


@dataclass
class CopyOptions:
    source: str
    tags: dict[str, str] = field(default_factory=dict)
    backup_id: str | None = None
    identity: dict[str, str] = field(default_factory=dict)  # cluster, namespace, app, volume, policy
    excludes: list[str] = field(default_factory=list)
    parent: str | None = "auto"  # "auto", a snapshot ID, or None for a full read
    consistency: dict | None = None
    file_workers: int | None = None
    allow_errors: bool = False  # record a snapshot even if some items could not be read (marked incomplete)
    # a block_copy.BlockCbt: copy a block device through CSI changed-block tracking (block_copy.copy_block)
    block_tracking: Any = None


@dataclass
class CopyStats:
    files: int = 0
    dirs: int = 0
    others: int = 0
    files_new: int = 0
    files_changed: int = 0
    files_unchanged: int = 0
    files_read: int = 0
    bytes_read: int = 0
    bytes_total: int = 0
    bytes_sparse: int = 0
    blobs_new: int = 0
    blob_bytes_new: int = 0
    bytes_added: int = 0
    packs_added: int = 0
    index_files: int = 0
    errors: int = 0
    duration_s: float = 0.0


@dataclass
class CopyResult:
    snapshot_id: str
    parent: str | None
    stats: CopyStats
    warnings: list[str]

    def summary(self) -> dict:
        s = self.stats
        return {
            "id": self.snapshot_id,
            "parent": self.parent,
            "files": s.files,
            "dirs": s.dirs,
            "files_new": s.files_new,
            "files_changed": s.files_changed,
            "files_unchanged": s.files_unchanged,
            "files_read": s.files_read,
            "bytes_read": s.bytes_read,
            "bytes_total": s.bytes_total,
            "bytes_added": s.bytes_added,
            "blobs_added": s.blobs_new,
            "packs_added": s.packs_added,
            "duration_s": round(s.duration_s, 3),
        }


class _DirJob:
    __slots__ = ("indexed", "node", "nodes", "prev_tree", "same", "subdirs", "waits")

    def __init__(self, node: dict | None, prev_tree: str | None = None):
        self.node = node  # this directory's own node in its parent (None for the root)
        self.nodes: list[dict] = []
        self.waits: list[FileJob] = []
        # The parent snapshot's tree of this directory, and whether every entry so far equals its
        # entry there: then the tree is the parent's (same nodes, same encoding, same ID) once the
        # subdirectories turned out the same too, and it needs no encoding or hashing.
        self.prev_tree = prev_tree
        self.same = prev_tree is not None
        self.subdirs: list[tuple[dict, str | None]] = []
        # every blob of the parent's files here is indexed (checked for the whole directory at once)
        self.indexed = False


class Archiver(FileReading):
    def __init__(
        self,
        repo: Repository,
        opts: CopyOptions,
        progress=None,
        before_commit: Callable[[Repository, Snapshot | None], None] | None = None,
        prescan: Prescan | None = None,
    ):
        self.repo = repo
        self.opts = opts
        self.progress = progress
        self.before_commit = before_commit
        self.prescan = prescan
        self.stats = CopyStats()
        self.warnings: list[str] = []
        self.abort = threading.Event()
        self.chunker = Chunker(
            repo.keys.chunker, repo.config.chunk_min, repo.config.chunk_avg, repo.config.chunk_max
        )
        self._lock = threading.Lock()
        # job completions: a worker notifies only when the finisher waits for that very job
        self._done_cv = threading.Condition(threading.Lock())
        self._awaited: FileJob | None = None
        self._hardlinks: dict[tuple[int, int], FileJob | dict] = {}
        self._small: list[FileJob] = []  # small files not yet handed to the workers
        self.parent: Snapshot | None = None
        self._parent_scan_ns = 0

    # -- helpers ------------------------------------------------------------------------------
    def _warn(self, msg: str, lost: bool = True) -> None:
        """Record a warning; ``lost`` when something of the source is missing from the snapshot."""
        with self._lock:
            if lost:
                self.stats.errors += 1
            if len(self.warnings) < 1000:
                self.warnings.append(msg)

    def _count(self, **kw) -> None:
        with self._lock:
            for k, v in kw.items():
                setattr(self.stats, k, getattr(self.stats, k) + v)
            if self.progress is not None:
                self.progress.done_bytes = self.stats.bytes_read + self._skipped_bytes
                self.progress.files = self.stats.files

    _skipped_bytes = 0
    _prescan: Prescan | None = None

    def _unchanged(self, prev: dict | None, st: os.stat_result, indexed: bool = False) -> bool:
        if not prev or prev.get("type") != "file" or "content" not in prev:
            return False
        if (prev.get("size"), prev.get("mtime_ns"), prev.get("ctime_ns"), prev.get("inode")) != (
            st.st_size,
            st.st_mtime_ns,
            st.st_ctime_ns,
            st.st_ino,
        ):
            return False
        if prev["mtime_ns"] >= self._parent_scan_ns - RACY_WINDOW_NS:
            return False  # modified too close to the parent's scan: its content may have changed unnoticed
        return indexed or self.repo.index.has_all(map(bytes.fromhex, prev["content"]))

    def _parent_children(self, prev: dict | None) -> dict[str, dict] | None:
        if not prev or prev.get("type") != "dir" or not prev.get("subtree"):
            return None
        try:
            return {n["name"]: n for n in self.repo.load_tree(prev["subtree"])}
        except Exception as err:  # a damaged parent only costs speed
            self._warn(
                f"parent tree {prev['subtree'][:12]} unreadable, reading everything below it ({err})",
                lost=False,
            )
            return None

    # -- file workers -------------------------------------------------------------------------
    SCALE_UP_BYTES = 128 * MiB

    def _sealed_new(self, new: int, sink: BlobSink) -> None:
        """Count ``new`` bytes of new data sealed; start another file worker once SCALE_UP_BYTES were."""
        if new and len(self._workers) < self._max_workers:
            with self._lock:
                self._new_bytes += new
                scale = self._new_bytes >= self.SCALE_UP_BYTES
            if scale:
                self._start_worker(sink)

    def _start_worker(self, sink: BlobSink) -> None:
        with self._lock:
            if self._workers_closed or len(self._workers) >= self._max_workers:
                return
            t = threading.Thread(
                target=self._file_worker, args=(sink,), name=f"file-{len(self._workers)}", daemon=True
            )
            self._workers.append(t)
            t.start()

    def _join_workers(self) -> None:
        """Wait for every worker, including ones started while waiting (only a running worker starts
        another, so once all known workers ended and no new one appeared, none can)."""
        while True:
            with self._lock:
                known = list(self._workers)
            for t in known:
                t.join()
            with self._lock:
                if len(self._workers) == len(known):
                    self._workers_closed = True
                    return

    def _stop_starting_workers(self) -> list[threading.Thread]:
        with self._lock:
            self._workers_closed = True
            return list(self._workers)

    def _job_done(self, job: FileJob) -> None:
        with self._done_cv:
            job.done = True
            if self._awaited is job:
                self._done_cv.notify()

    def _await_job(self, job: FileJob, sink: BlobSink) -> None:
        with self._done_cv:
            self._awaited = job
            try:
                while not job.done:
                    if not self._done_cv.wait(0.2):
                        sink.check()
            finally:
                self._awaited = None

    # -- finisher -----------------------------------------------------------------------------
    def _finisher(self, sink: BlobSink) -> None:
        channel = sink.channel()
        blob_id = self.repo.keys.blob_id
        while True:
            job = self.dir_q.get()
            if job is None:
                if not self.abort.is_set():
                    channel.flush()
                return
            for fj in job.waits:
                if not fj.done:
                    self._await_job(fj, sink)
                if fj.error is not None:
                    raise Aborted()
                for extra in fj.extra_nodes:  # hard links to this file share its content
                    for k in ("content", "size", "holes"):
                        if k in fj.node:
                            extra[k] = fj.node[k]
            if (
                job.same
                and all(n.get("subtree") == t for n, t in job.subdirs)
                and self.repo.index.has(bytes.fromhex(job.prev_tree))
            ):
                tree = job.prev_tree  # unchanged: the parent's tree, still indexed
            else:
                data = encode_fs_tree(job.nodes)
                tid = blob_id(data)
                if sink.claim(tid):
                    channel.add(BLOB_TREE, tid, data)
                tree = tid.hex()
            if job.node is not None:
                job.node["subtree"] = tree
            else:
                self.root_tree = tree

    # -- walker -------------------------------------------------------------------------------
    # Counters of the walk (files, dirs, others, files_new/changed/unchanged, bytes_total, skipped
    # bytes) are only written by the walking thread, so they need no lock; the file workers' counters
    # (bytes_read, files_read, bytes_sparse, errors) go through _count and _warn.
    def _add_file(self, dj: _DirJob, path: bytes, node: dict, st: os.stat_result, prev: dict | None) -> None:
        node["size"] = st.st_size
        stats = self.stats
        stats.files += 1
        stats.bytes_total += st.st_size
        if st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            first = self._hardlinks.get(key)
            if first is not None:
                if isinstance(first, FileJob):
                    first.extra_nodes.append(node)
                    if first.done:  # raced with the worker: copy now
                        for k in ("content", "size", "holes"):
                            if k in first.node:
                                node[k] = first.node[k]
                    else:
                        dj.waits.append(first)
                else:
                    for k in ("content", "size", "holes"):
                        if k in first:
                            node[k] = first[k]
                dj.nodes.append(node)
                self._skip(st.st_size)
                self.changes.linked(bool(prev and prev.get("type") == "file"))
                return
        if self._unchanged(prev, st, dj.indexed):
            node["content"] = prev["content"]
            if prev.get("holes"):
                node["holes"] = prev["holes"]
            stats.files_unchanged += 1
            self._skip(st.st_size)
            if st.st_nlink > 1:
                self._hardlinks[(st.st_dev, st.st_ino)] = node
        else:
            if prev and prev.get("type") == "file":
                stats.files_changed += 1
            else:
                stats.files_new += 1
            job = FileJob(path, node, st.st_size, st)
            if prev and prev.get("type") == "file":
                job.prev = (content_key(prev.get("content")),)
            dj.waits.append(job)
            if st.st_nlink > 1:
                self._hardlinks[(st.st_dev, st.st_ino)] = job
            if st.st_size > self.SMALL_FILE:
                self.file_q.put([job], 1)
            else:  # small files go to the workers in batches: one hand-off between threads per batch
                small = self._small
                small.append(job)
                if len(small) >= self.SMALL_BATCH:
                    self._flush_small()
        dj.nodes.append(node)

    SMALL_FILE = 64 * 1024
    SMALL_BATCH = 64

    def _flush_small(self) -> None:
        """Queue the small files gathered so far. Called before any directory goes to the finisher, so
        that every file it waits for (a hard link's first name too) is queued already."""
        if self._small:
            batch, self._small = self._small, []
            self.file_q.put(batch, len(batch))

    def _skip(self, n: int) -> None:
        self._skipped_bytes += n
        if self.progress is not None:
            self.progress.done_bytes = self.stats.bytes_read + self._skipped_bytes
            self.progress.files = self.stats.files

    def _walk(
        self,
        path: bytes,
        rel: str,
        dj: _DirJob,
        prev_children: dict[str, dict] | None,
        st: os.stat_result | None = None,
    ) -> None:
        """Walk directory ``path``; ``st`` is the lstat its entry was recorded from (None for the root)."""
        try:
            listed = self._prescan.take(path) if self._prescan is not None else None
            if listed is not None and st is not None:
                # listed ahead: one lstat per directory makes sure it is still the directory recorded
                now = os.lstat(path)
                if not stat_mod.S_ISDIR(now.st_mode) or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                    self._warn(
                        f"{os.fsdecode(path)}: changed while it was read (no longer the directory listed)"
                    )
                    dj.same = False
                    self._flush_small()
                    self.dir_q.put(dj, 0)
                    return
            # the prescan's listings are sorted by name already
            entries = listed if listed is not None else sorted(beneath.list_dir(path), key=lambda e: e.name)
        except OSError as err:
            self._warn(f"{os.fsdecode(path)}: cannot list directory ({err.strerror})")
            dj.same = False
            self._flush_small()
            self.dir_q.put(dj, 0)
            return
        if prev_children is None:  # no parent listing (or an unreadable one): nothing to reuse
            dj.same = False
        else:  # one index lookup for all (a file's own lookup, then, only when one is missing)
            dj.indexed = self.repo.index.has_all(
                bytes.fromhex(c)
                for n in prev_children.values()
                if n["type"] == "file"
                for c in n.get("content", ())
            )
        excludes = self.opts.excludes
        abort = self.abort
        seen: dict[str, str] = {}  # what this copy keeps here, for the change telemetry
        for entry in entries:
            if abort.is_set():
                raise Aborted()
            name = entry.name.decode(_FS_ENCODING, _FS_ERRORS)  # os.fsdecode, without its checks
            child_rel = (f"{rel}/{name}" if rel else name) if excludes else ""
            if excludes and excluded(child_rel, name, excludes):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # vanished since listing
            except OSError as err:
                self._warn(f"{os.fsdecode(entry.path)}: {err.strerror}")
                continue
            node = node_from_stat(name, st)
            prev = prev_children.get(name) if prev_children else None
            kind = seen[name] = node["type"]
            if kind == "file":
                self._add_file(dj, entry.path, node, st, prev)
                if dj.same and node != prev:  # a file to read has no content yet: never equal
                    dj.same = False
            elif kind == "dir":
                self.stats.dirs += 1
                prev_tree = prev.get("subtree") if prev and prev.get("type") == "dir" else None
                if dj.same:
                    if prev_tree and {k: v for k, v in prev.items() if k != "subtree"} == node:
                        dj.subdirs.append((node, prev_tree))
                    else:
                        dj.same = False
                sub = _DirJob(node, prev_tree)
                dj.nodes.append(node)
                self._walk(entry.path, child_rel, sub, self._parent_children(prev), st)
            else:
                if kind == "symlink":
                    try:
                        node["target"] = os.fsdecode(beneath.read_link(entry.path))
                    except OSError as err:
                        self._warn(f"{os.fsdecode(entry.path)}: {err.strerror}")
                        continue
                self.stats.others += 1
                dj.nodes.append(node)
                if dj.same and node != prev:
                    dj.same = False
        if dj.same and len(dj.nodes) != len(prev_children or ()):
            dj.same = False
        self.changes.walked(prev_children, seen)
        self._flush_small()
        self.dir_q.put(dj, 0)

    # -- main ---------------------------------------------------------------------------------
    def _select_parent(self, source: str, source_type: str) -> None:
        ref = self.opts.parent
        if not ref or source_type == "block":
            return
        if ref == "auto":
            self.parent = self.repo.find_parent(
                source, self.opts.tags, self.opts.identity, warn=lambda m: self._warn(m, lost=False)
            )
        else:
            self.parent = self.repo.find_snapshot(ref)
        if self.parent is not None:
            self._parent_scan_ns = int(self.parent.data.get("scan_start_ns", 0))

    def run(self) -> CopyResult:
        try:
            return self._run()
        finally:  # on every path, also a failure before the walk (a bad parent, the repository's lock)
            for prescan in (self._prescan, self.prescan):
                if prescan is not None:
                    prescan.stop()

    def _run(self) -> CopyResult:
        t0 = time.monotonic()
        started = datetime.now(UTC)
        scan_start_ns = time.time_ns()
        opts = self.opts
        source = os.path.abspath(opts.source)
        try:
            st = beneath.source_stat(source)
        except OSError as err:
            raise UsageError(f"--source: cannot read {source!r} ({err.strerror})") from None
        if stat_mod.S_ISDIR(st.st_mode):
            source_type = "dir"
        elif stat_mod.S_ISREG(st.st_mode):
            source_type = "file"
        elif stat_mod.S_ISBLK(st.st_mode):
            source_type = "block"
        else:
            raise UsageError(
                f"--source: expected a directory, a regular file or a block device, got {source!r}"
            )
        prescan = self.prescan
        if prescan is None and source_type == "dir":  # list the source while the index loads
            prescan = Prescan(source, opts.excludes, self.progress)
        if prescan is not None and os.fsencode(source) != prescan.root:
            prescan.stop()
            prescan = None
        if prescan is not None:
            # the scan may have stat'ed files before this copy started: the racy-timestamp rule of the
            # next copy must count from the earliest stat
            scan_start_ns = min(scan_start_ns, prescan.started_ns)
        self._prescan = prescan
        self._devices_seen = set()  # the mount table is read at each new device (FileReading._open_waits)
        # load before the threads start, without prune's deletion candidates (see docs/design.md, Prune)
        self.repo.begin_write()
        self._select_parent(source, source_type)
        if prescan is not None and self.parent is not None:
            # until the scan reaches the end of the source (a window ahead of the walk), the parent's
            # size is the better guess of the total
            summary = self.parent.data.get("summary")
            size = summary.get("bytes_total") if isinstance(summary, dict) else None
            if isinstance(size, int) and size > 0:
                prescan.provisional_total(size)
        self.changes = ChangeCounter(self.repo.load_tree, self.parent is not None)
        sink = BlobSink(self.repo, opts.backup_id, abort=self.abort)
        self.file_q = ByteQueue(_env_int(runtime.FILE_QUEUE, 512), self.abort)
        self.dir_q = ByteQueue(1 << 62, self.abort)
        self.root_tree: str | None = None
        fixed = opts.file_workers or (
            _env_int(runtime.FILE_WORKERS, 2) if os.environ.get(runtime.FILE_WORKERS) else 0
        )
        self._max_workers = fixed or default_threads("file_workers")  # one per usable CPU
        # An incremental copy mostly reads and hashes (little is new): one worker keeps up with the disk
        # and holds half the buffers; more join once much new data needs compressing.
        initial = fixed or (1 if self.parent is not None else self._max_workers)
        self._workers: list[threading.Thread] = []
        self._workers_closed = False
        self._new_bytes = 0
        for _ in range(initial):
            self._start_worker(sink)

        def finisher():
            try:
                self._finisher(sink)
            except Aborted:
                pass
            except BaseException as err:
                sink.fail(err)

        fin = threading.Thread(target=finisher, name="trees", daemon=True)
        fin.start()
        src_b = os.fsencode(source)
        try:
            if source_type == "dir":
                prev_root = None
                if self.parent is not None:
                    prev_root = {"type": "dir", "subtree": self.parent.data.get("tree")}
                root_job = _DirJob(None, prev_root["subtree"] if prev_root else None)
                self._walk(src_b, "", root_job, self._parent_children(prev_root))
            else:
                root = _DirJob(None)
                name = os.path.basename(source) or "data"
                node = node_from_stat(name, st, kind="file")
                if source_type == "block":
                    size = beneath.device_size(src_b)
                    st_for = os.stat_result(
                        (
                            st.st_mode,
                            st.st_ino,
                            st.st_dev,
                            st.st_nlink,
                            st.st_uid,
                            st.st_gid,
                            size,
                            int(st.st_atime),
                            int(st.st_mtime),
                            int(st.st_ctime),
                        )
                    )
                    node["size"] = size
                    if self.progress is not None:
                        self.progress.total_bytes, self.progress.total_final = size, True
                    self._add_file(root, src_b, node, st_for, None)
                else:
                    if self.progress is not None:
                        self.progress.total_bytes, self.progress.total_final = st.st_size, True
                    prev = None
                    if self.parent is not None:
                        pn = (
                            self._parent_children({"type": "dir", "subtree": self.parent.data.get("tree")})
                            or {}
                        )
                        prev = pn.get(name)
                    self._add_file(root, src_b, node, st, prev)
                self._flush_small()
                self.dir_q.put(root, 0)
            self.file_q.close()
            self._join_workers()
            self.dir_q.close()
            fin.join()
            if prescan is not None:
                prescan.stop()
            sink.finish()
        except BaseException as err:
            if prescan is not None:
                prescan.stop()
            if not isinstance(err, Aborted):
                sink.fail(err)
            self.file_q.wake()
            self.dir_q.wake()
            sink.close_on_error()
            for t in [*self._stop_starting_workers(), fin]:
                t.join(timeout=30)
            if sink.error is not None and sink.error is not err:
                raise sink.error from None
            raise
        if self.root_tree is None:
            raise RuntimeError("copy finished without a root tree")
        s = self.stats
        ss = sink.stats
        s.blobs_new, s.blob_bytes_new, s.bytes_added = ss.blobs_new, ss.blob_bytes_new, ss.bytes_added
        s.packs_added, s.index_files = ss.packs_added, ss.index_files
        s.duration_s = time.monotonic() - t0
        root_meta = node_from_stat("", st)
        root_meta.pop("name")
        if source_type == "block":
            root_meta["size"] = self.stats.bytes_total
        snap = {
            "version": SNAPSHOT_VERSION,
            "time": started.isoformat().replace("+00:00", "Z"),
            "end_time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "scan_start_ns": scan_start_ns,
            "host": socket.gethostname(),
            "source": source,
            "source_type": source_type,
            "tags": dict(opts.tags),
            "backup_id": opts.backup_id,
            **{k: opts.identity.get(k) for k in IDENTITY_FIELDS},
            "parent": self.parent.id if self.parent else None,
            "tree": self.root_tree,
            "root": root_meta,
            "excludes": list(opts.excludes),
            "consistency": opts.consistency,
            "summary": asdict(s),
            "program": f"snapflow-steps {_version()}",
            # optional: readers that predate it ignore it (docs/design.md, "snapshots/ID")
            "changes": snapshot_changes(
                s, ss, None if source_type == "block" else self.changes.finish(), self.parent is not None
            ),
        }
        if s.errors and not opts.allow_errors:
            # Never record a snapshot that silently lacks data: what was read stays in the packs (the
            # next copy reuses it), but no snapshot claims the source.
            shown = "; ".join(self.warnings[:3])
            raise PermanentError(
                f"{s.errors} item(s) of {source} could not be read, so no snapshot was recorded ({shown}"
                f"{'; ...' if s.errors > 3 else ''}); fix access or use --allow-errors to record an incomplete snapshot"
            )
        if s.errors:
            snap["incomplete"] = True
        if self.before_commit is not None:
            self.before_commit(self.repo, self.parent)
        self.repo.check_commit()
        sid = self.repo.save_snapshot(snap)
        self.repo.confirm_commit(f"snapshots/{sid}")
        return CopyResult(sid, snap["parent"], s, self.warnings)


def _version() -> str:
    try:
        from steps import __version__

        return __version__
    except Exception:
        return "unknown"


def copy_source(
    repo: Repository, opts: CopyOptions, progress=None, before_commit=None, prescan: Prescan | None = None
) -> CopyResult:
    """Back up ``opts.source`` into ``repo``; returns the new snapshot's ID and statistics. ``prescan``
    (a :class:`Prescan` of the same source, started before the repository was opened) saves the wait
    for cold directory and inode reads."""
    if opts.block_tracking is not None:  # a block volume read where the storage says it changed
        from .block_copy import copy_block

        if prescan is not None:
            prescan.stop()
        return copy_block(repo, opts, opts.block_tracking, progress, before_commit)
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20000))
    return Archiver(repo, opts, progress, before_commit, prescan).run()
