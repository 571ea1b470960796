"""Buckets as snapshots: the mapping of object keys to a snapshot's tree, the incremental backup and the
restore plans behind ``bucket-backup`` and ``bucket-restore``.

Repository-format logic only: the bucket itself is reached through the
:class:`~steps.drivers.bucket_source.BucketClient` a caller hands in, the repository through its own
interface; the commands parse options and print.

The copy engine (:func:`steps.repository.archiver.copy_source`) walks a file tree, which a bucket is
not, and would need every object staged on a disk first; so objects are streamed straight from their
GET responses through the repository's chunker into its blob sink, and the trees are written as a copy
writes them (the same node format, so ``ls``, ``check``, ``verify``, retention and prune treat a bucket
snapshot like any other).

Key mapping (docs/user/buckets.md): a key is cut at each ``/``; every part but the last is a directory
named ``ENC(part) + "%2F"``, the last part a file named ``ENC(part)`` (``%`` when the key ends in ``/``).
ENC percent-encodes ``%``, control bytes and a name that is exactly ``.`` or ``..``, and shortens a name
above 255 bytes to its start plus ``%~`` and a digest of the key. Directory names always end in the
token ``%2F`` and file names never do, so an object ``a`` and the objects under ``a/`` never collide.
With versions, an older version or delete marker of a key is ``NAME%~vN`` (N = 1 for the newest but
one). The name is for people; the truth is the file node's ``s3`` field: the exact key, version ID,
ETag, last-modified time, content type and user metadata.
"""

from __future__ import annotations

import bisect
import hashlib
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from steps.errors import PermanentError, TemporaryError, UsageError

SOURCE_TYPE = "bucket"
MAX_NAME = 255


def encode_part(part: str) -> str:
    if part in (".", ".."):
        return "%2E" * len(part)
    out = []
    for ch in part:
        if ch == "%" or ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append("".join(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass")))
        else:
            out.append(ch)
    return "".join(out)


def _fit(name: str, ident: str, suffix: str = "") -> str:
    """``name + suffix``, or when longer than an entry may be, the start of ``name``, ``%~`` and a digest
    of ``ident`` (what the entry stands for: the key, or a directory's whole prefix), then ``suffix``."""
    if len((name + suffix).encode("utf-8", "surrogatepass")) <= MAX_NAME:
        return name + suffix
    digest = "%~" + hashlib.sha256(ident.encode("utf-8", "surrogatepass")).hexdigest()[:24] + suffix
    head = name
    while len((head + digest).encode("utf-8", "surrogatepass")) > MAX_NAME:
        head = head[: max(1, len(head) - 16)]
    while "%" in head[-2:]:  # never cut an escape in two
        head = head[:-1]
    return head + digest


def tree_path(key: str, older: int = 0) -> tuple[list[str], str]:
    """(directory names, file name) of ``key`` in a bucket snapshot; ``older`` > 0 for an older version."""
    parts = key.split("/")
    dirs = []
    prefix = ""
    for part in parts[:-1]:
        prefix += part + "/"
        dirs.append(_fit(encode_part(part), prefix, "%2F"))
    last = encode_part(parts[-1]) if parts[-1] else "%"
    if older:
        return dirs, _fit(last, f"{key}\0{older}", f"%~v{older}")
    return dirs, _fit(last, key)


def source_name(endpoint: str, bucket: str, prefix: str) -> str:
    return f"{endpoint.rstrip('/')}/{bucket}/{prefix}"


@dataclass
class BucketBackupResult:
    snapshot_id: str
    parent: str | None
    objects: int = 0
    versions: int = 0
    objects_read: int = 0
    objects_unchanged: int = 0
    bytes_total: int = 0
    bytes_read: int = 0
    bytes_added: int = 0
    blob_bytes_new: int = 0  # plaintext bytes of the new blobs (data and trees): the dedup ratio's divisor
    time: str = ""  # when the listing began: the snapshot's point in time
    warnings: list[str] = field(default_factory=list)


def _same(prev: dict | None, obj) -> bool:
    if prev is None:
        return False
    s3 = prev.get("s3") or {}
    return (
        prev.get("size") == obj.size
        and s3.get("etag") == obj.etag
        and s3.get("last_modified") == obj.last_modified_iso
        and s3.get("delete_marker", False) == obj.delete_marker
    )


def newest_first(listing) -> list[list]:
    """The listing grouped by key, each key's versions newest first: the latest, then by last-modified
    time, then in listing order (servers differ: some list delete markers apart from the versions)."""
    groups: dict[str, list] = {}
    for obj in listing:
        groups.setdefault(obj.key, []).append(obj)
    far = 0.0
    return [
        sorted(
            group,
            key=lambda o: (not o.is_latest, -(o.last_modified.timestamp() if o.last_modified else far)),
        )
        for group in groups.values()
    ]


def bucket_nodes(repo, snapshot) -> list[dict]:
    """Every object node (file with an ``s3`` field) of a bucket snapshot."""
    from steps.repository.snapshot_read import iter_nodes

    out = []
    for _rel, node in iter_nodes(repo, snapshot.data["tree"]):
        if node.get("type") == "file" and isinstance(node.get("s3"), dict):
            s3 = node["s3"]
            if not isinstance(s3.get("key"), str):
                raise PermanentError(f"snapshot {snapshot.short_id}: an object node has no key")
            out.append(node)
    return out


def bucket_snapshots(repo, source: str | None = None) -> list:
    snaps = [s for s in repo.list_snapshots() if s.data.get("source_type") == SOURCE_TYPE]
    if source is not None:
        snaps = [s for s in snaps if s.data.get("source") == source]
    return sorted(snaps, key=lambda s: s.time)


def backup_bucket(
    repo,
    client,
    *,
    versions: bool,
    tags: dict,
    backup_id: str | None,
    identity: dict,
    parent: str | None = "auto",
    readers: int = 8,
) -> BucketBackupResult:
    """Back up the client's bucket (and prefix) into ``repo``; objects unchanged since the parent (same
    key, version, size, ETag and last-modified time) take the parent's content without being read."""
    import platform
    import time
    from datetime import UTC, datetime

    from steps.repository.archiver import IDENTITY_FIELDS, SNAPSHOT_VERSION, _version
    from steps.repository.blob_sink import BlobSink
    from steps.repository.change_telemetry import counted_changes, entry_changes
    from steps.repository.chunker import Chunker
    from steps.repository.pack import BLOB_DATA, BLOB_TREE
    from steps.repository.tree import encode_tree

    access = client.access
    source = source_name(access.endpoint, access.bucket, access.prefix)
    client.check_bucket()
    if versions and not client.versioning_enabled():
        raise PermanentError(
            f"{client.where}: --versions asks for every object version, but the bucket does not keep"
            " versions (versioning was never enabled)"
        )
    started = datetime.now(UTC)
    scan_ns = time.time_ns()
    listing = client.list(versions)
    repo.begin_write()
    prev_snap = None
    if parent == "auto":
        candidates = bucket_snapshots(repo, source)
        prev_snap = candidates[-1] if candidates else None
    elif parent:
        prev_snap = repo.find_snapshot(parent)
    previous: dict[tuple[str, str | None], dict] = {}
    if prev_snap is not None:
        for node in bucket_nodes(repo, prev_snap):
            s3 = node["s3"]
            previous[(s3["key"], s3.get("version_id"))] = node
    chunker = Chunker(repo.keys.chunker, repo.config.chunk_min, repo.config.chunk_avg, repo.config.chunk_max)
    sink = BlobSink(repo, backup_id, uploaders=2)
    result = BucketBackupResult(snapshot_id="", parent=prev_snap.id if prev_snap else None)
    counts = threading.Lock()
    now = time.time_ns()

    planned = [
        (obj, older) for versions_of_key in newest_first(listing) for older, obj in enumerate(versions_of_key)
    ]

    def node_of(obj, older: int) -> dict:
        mtime = int(obj.last_modified.timestamp() * 1e9) if obj.last_modified else now
        s3 = {
            "key": obj.key,
            "etag": obj.etag,
            "last_modified": obj.last_modified_iso,
        }
        if obj.version_id is not None:
            s3.update(version_id=obj.version_id, latest=obj.is_latest)
        if obj.delete_marker:
            s3["delete_marker"] = True
        prev = previous.get((obj.key, obj.version_id))
        base = {"type": "file", "mode": 0o644, "uid": -1, "gid": -1, "mtime_ns": mtime, "atime_ns": mtime}
        base.update(ctime_ns=mtime, inode=0, dev=0, nlink=1, size=obj.size)
        if obj.delete_marker:
            return {**base, "size": 0, "content": [], "s3": s3}
        if _same(prev, obj):
            old = prev["s3"]
            s3.update(content_type=old.get("content_type"), metadata=dict(old.get("metadata") or {}))
            with counts:
                result.objects_unchanged += 1
            return {**base, "content": list(prev.get("content") or []), "s3": s3}
        reader = client.open(obj)
        try:
            ids = []
            got = 0
            for chunk in chunker.chunks(reader.readinto, size_hint=obj.size):
                sink.check()
                ids.append(sink.save_blob(BLOB_DATA, chunk).hex())
                got += len(chunk)
        finally:
            reader.close()
        if got != obj.size:
            raise TemporaryError(
                f"{client.where}: {obj.key!r} was {got} bytes when read, {obj.size} when listed (changed"
                " during the backup); run again"
            )
        s3.update(content_type=reader.content_type, metadata=reader.metadata)
        with counts:
            result.objects_read += 1
            result.bytes_read += got
        return {**base, "content": ids, "s3": s3}

    root: dict = {}
    try:
        with ThreadPoolExecutor(max_workers=max(1, readers), thread_name_prefix="bucket-read") as pool:
            nodes = list(pool.map(lambda p: node_of(*p), planned))
        for (obj, older), node in zip(planned, nodes, strict=True):
            dirs, name = tree_path(obj.key, older)
            d = root
            for part in dirs:
                d = d.setdefault(part, {})
            if name in d:  # two keys that shorten to one name: impossible unless digests collide
                raise PermanentError(f"{client.where}: two objects map to the name {name!r}")
            d[name] = {**node, "name": name}
            result.versions += 1
            if not obj.delete_marker and obj.is_latest:
                result.objects += 1
                result.bytes_total += obj.size
        meta = {"mode": 0o755, "uid": -1, "gid": -1, "mtime_ns": now, "atime_ns": now, "ctime_ns": now}
        meta.update(inode=0, dev=0, nlink=1)

        def save(d: dict) -> str:
            entries = []
            for name, v in d.items():
                if "type" in v and v.get("type") == "file" and "s3" in v:
                    entries.append(v)
                else:
                    entries.append({"name": name, "type": "dir", **meta, "subtree": save(v)})
            return sink.save_blob(BLOB_TREE, encode_tree(entries)).hex()

        tree = save(root)
        sink.finish()
    except BaseException:
        sink.close_on_error()
        raise
    result.bytes_added = sink.stats.bytes_added
    result.blob_bytes_new = sink.stats.blob_bytes_new
    result.time = started.isoformat().replace("+00:00", "Z")
    # what changed since the parent, objects as files (each version and delete marker one entry)
    changes = counted_changes(
        bytes_total=result.bytes_total,
        bytes_read=result.bytes_read,
        files_total=result.versions,
        files=entry_changes(
            {name: node.get("content") for name, node in previous.items()} if prev_snap is not None else None,
            [
                ((obj.key, obj.version_id), node.get("content"))
                for (obj, _), node in zip(planned, nodes, strict=True)
            ],
        ),
        sink_stats=sink.stats,
        has_parent=prev_snap is not None,
    )
    end = datetime.now(UTC)
    snap = {
        "version": SNAPSHOT_VERSION,
        "time": result.time,
        "end_time": end.isoformat().replace("+00:00", "Z"),
        "scan_start_ns": scan_ns,
        "host": platform.node(),
        "source": source,
        "source_type": SOURCE_TYPE,
        "tags": dict(tags),
        "backup_id": backup_id,
        **{k: identity.get(k) for k in IDENTITY_FIELDS},
        "parent": result.parent,
        "tree": tree,
        "root": {"type": "dir", **meta},
        "excludes": [],
        "consistency": None,
        "bucket": {
            "endpoint": access.endpoint,
            "bucket": access.bucket,
            "prefix": access.prefix,
            "versions": versions,
            "objects": result.objects,
        },
        "summary": {
            "files": result.versions,
            "files_unchanged": result.objects_unchanged,
            "files_read": result.objects_read,
            "bytes_total": result.bytes_total,
            "bytes_read": result.bytes_read,
            "bytes_added": result.bytes_added,
            "blobs_new": sink.stats.blobs_new,
            "blob_bytes_new": sink.stats.blob_bytes_new,
        },
        "program": f"snapflow-steps {_version()}",
        # optional, as a copy's (docs/design.md, "snapshots/ID"): objects count as files
        "changes": changes,
    }
    repo.check_commit()
    result.snapshot_id = repo.save_snapshot(snap)
    repo.confirm_commit(f"snapshots/{result.snapshot_id}")
    return result


# -- restore --------------------------------------------------------------------------------------------


class BlobReader:
    """A file-like ``read(n)`` over a file node's content blobs, one blob in memory at a time."""

    def __init__(self, repo, node: dict):
        self.repo = repo
        self.ids = [bytes.fromhex(h) for h in node.get("content") or []]
        self.buf = memoryview(b"")
        self.next = 0

    def read(self, n: int = -1) -> bytes:
        out = bytearray()
        while n < 0 or len(out) < n:
            if not self.buf:
                if self.next >= len(self.ids):
                    break
                self.buf = memoryview(self.repo.read_blob(self.ids[self.next]))
                self.next += 1
            take = len(self.buf) if n < 0 else min(n - len(out), len(self.buf))
            out += self.buf[:take]
            self.buf = self.buf[take:]
        return bytes(out)


@dataclass
class PlannedWrite:
    action: str  # "create", "update", "same"
    key: str  # the key written
    node: dict


def rewrite_key(key: str, from_prefix: str, to_prefix: str | None) -> str | None:
    if not key.startswith(from_prefix):
        return None
    return (to_prefix if to_prefix is not None else from_prefix) + key[len(from_prefix) :]


def plan_restore(
    repo, snapshot, target, from_prefix: str = "", to_prefix: str | None = None, nodes: list | None = None
) -> list:
    """What restoring the snapshot's current objects (or the object ``nodes`` given, one per key) into
    ``target`` would do, key by key: ``create`` (absent), ``update`` (size, ETag, content type or
    metadata differ) or ``same``."""
    if nodes is None:
        nodes = [
            n
            for n in bucket_nodes(repo, snapshot)
            if n["s3"].get("latest", True) and not n["s3"].get("delete_marker")
        ]
    there = {o.key: o for o in target.list(False)}
    plan = []
    for node in sorted(nodes, key=lambda n: n["s3"]["key"]):
        key = rewrite_key(node["s3"]["key"], from_prefix, to_prefix)
        if key is None:
            continue
        if not key:
            raise UsageError(f"--to-prefix: the object {node['s3']['key']!r} would get an empty key")
        have = there.get(key)
        action = "create"
        if have is not None:
            action = "update"
            if have.size == node.get("size") and have.etag == node["s3"].get("etag"):
                content_type, metadata = target.head_metadata(key)
                want_type = node["s3"].get("content_type") or "application/octet-stream"
                if content_type == want_type and metadata == (node["s3"].get("metadata") or {}):
                    action = "same"
        plan.append(PlannedWrite(action, key, node))
    return plan


CONFIRM_BY_HEAD = 100  # up to this many objects written, each is confirmed by a HEAD, not a listing


def apply_restore(repo, target, plan: list, writers: int = 4, part_size: int = 16 * 1024 * 1024) -> int:
    """Write the planned objects that differ; returns how many were written."""
    todo = [p for p in plan if p.action != "same"]

    def write(p: PlannedWrite) -> None:
        s3 = p.node["s3"]
        target.write(
            p.key,
            BlobReader(repo, p.node),
            int(p.node.get("size") or 0),
            s3.get("content_type"),
            dict(s3.get("metadata") or {}),
            part_size,
        )

    # A key that is the folder of others ("a" beside "a/b") goes first, alone: a store that keeps keys
    # as paths (SeaweedFS) can lose one of the two when they are written at the same time.
    keys = sorted({p.key for p in plan})
    folders = set()
    for k in keys:
        below = k if k.endswith("/") else k + "/"
        i = bisect.bisect_left(keys, below)
        if i < len(keys) and keys[i] == k:
            i += 1
        if i < len(keys) and keys[i].startswith(below):
            folders.add(k)
    for p in todo:
        if p.key in folders:
            write(p)
    with ThreadPoolExecutor(max_workers=max(1, writers), thread_name_prefix="bucket-write") as pool:
        list(pool.map(write, [p for p in todo if p.key not in folders]))
    _confirm_written(target, todo, write)
    return len(todo)


def _confirm_written(target, todo: list, write) -> None:
    """Check that the target holds every object written, at its size (one HEAD each for a few objects,
    else one listing); write again, one at a time, any it does not, and fail naming them if it still
    does not. A restore reports only objects the target holds."""
    if not todo:
        return

    def held(p, obj) -> bool:
        return obj is not None and obj.size == int(p.node.get("size") or 0)

    if len(todo) <= CONFIRM_BY_HEAD:
        missing = [p for p in todo if not held(p, target.stat(p.key))]
    else:
        listed = {o.key: o for o in target.list(False)}
        missing = [p for p in todo if not held(p, listed.get(p.key)) and not held(p, target.stat(p.key))]
    for p in missing:
        write(p)
    lost = [p.key for p in missing if not held(p, target.stat(p.key))]
    if lost:
        shown = ", ".join(repr(k) for k in lost[:3])
        raise PermanentError(
            f"{target.where}: {len(lost)} object(s) written are not in the bucket after a second write"
            f" ({shown}{', ...' if len(lost) > 3 else ''})"
        )


# -- older versions -------------------------------------------------------------------------------------

_OLDER = re.compile(r"%~v(\d+)$")  # the name of the newest but N entry of a key (ENC never makes "%~v")


def _when(node: dict) -> datetime | None:
    from steps.repository.records import parse_time

    return parse_time(node["s3"].get("last_modified"))


def key_histories(repo, snapshot) -> dict[str, list[dict]]:
    """Every entry kept of each key (versions and delete markers), oldest first: by last-modified time,
    the latest entry last; entries of the same time in the order the backup listed them (its names:
    ``NAME%~vN`` is the newest but N)."""
    floor = datetime.min.replace(tzinfo=UTC)
    groups: dict[str, list[tuple]] = {}
    for node in bucket_nodes(repo, snapshot):
        found = _OLDER.search(str(node.get("name", "")))
        older = int(found.group(1)) if found else 0
        order = (bool(node["s3"].get("latest", True)), _when(node) or floor, -older)
        groups.setdefault(node["s3"]["key"], []).append((order, node))
    histories = {}
    for key, entries in sorted(groups.items()):
        entries.sort(key=lambda p: p[0])
        if sum(1 for _, n in entries if n["s3"].get("latest", True)) > 1:
            raise PermanentError(
                f"snapshot {snapshot.short_id}: the key {key!r} has more than one latest entry"
            )
        histories[key] = [n for _, n in entries]
    return histories


def state_as_of(histories: dict[str, list[dict]], when: datetime) -> tuple[list[dict], int]:
    """(the object node of each key current at ``when``, how many keys of the histories did not exist
    then): per key, the newest entry last modified at or before ``when``; a key whose entry then was a
    delete marker, or that had none yet, did not exist."""
    current = []
    absent = 0
    for entries in histories.values():
        then = None
        for node in entries:
            t = _when(node)
            if t is not None and t <= when:
                then = node
        if then is None or then["s3"].get("delete_marker"):
            absent += 1
        else:
            current.append(then)
    return current, absent


@dataclass
class PlannedHistory:
    action: str  # "create" (the target has no version of the key), "append" (on top of its own), "same"
    key: str  # the key written
    nodes: list  # the entries to recreate, oldest first

    @property
    def delete_markers(self) -> int:
        return sum(1 for n in self.nodes if n["s3"].get("delete_marker"))


def _history_shape(entries) -> tuple:
    """(the fingerprints of the versions oldest first, how many delete markers, whether the latest entry is
    one) of ``(delete_marker, size, etag)`` entries oldest first. Where delete markers fall between
    versions is left out: a server with whole-second times may list a marker apart from versions of the
    same second, so its place cannot be read back."""
    versions = tuple((int(size or 0), etag or "") for marker, size, etag in entries if not marker)
    markers = sum(1 for marker, _, _ in entries if marker)
    return versions, markers, bool(entries and entries[-1][0])


def plan_versions(repo, snapshot, target, from_prefix: str = "", to_prefix: str | None = None) -> list:
    """What recreating every kept entry of each key in the (versioned) ``target`` would do: ``create``
    when the target has no version of the key; ``same`` when its newest versions already are these
    (size and ETag, in this order), it has at least as many delete markers and its latest entry is a
    delete marker exactly when the snapshot's is; else ``append``."""
    there: dict[str, tuple] = {}
    for group in newest_first(target.list(True)):
        there[group[0].key] = _history_shape([(o.delete_marker, o.size, o.etag) for o in reversed(group)])
    plan = []
    for key0, entries in key_histories(repo, snapshot).items():
        key = rewrite_key(key0, from_prefix, to_prefix)
        if key is None:
            continue
        if not key:
            raise UsageError(f"--to-prefix: the object {key0!r} would get an empty key")
        want = _history_shape(
            [(bool(n["s3"].get("delete_marker")), n.get("size"), n["s3"].get("etag")) for n in entries]
        )
        have = there.get(key)
        if have is None:
            action = "create"
        elif (
            len(have[0]) >= len(want[0])
            and have[0][len(have[0]) - len(want[0]) :] == want[0]
            and have[1] >= want[1]
            and have[2] == want[2]
        ):
            action = "same"
        else:
            action = "append"
        plan.append(PlannedHistory(action, key, entries))
    return plan


def apply_versions(repo, target, plan: list, writers: int = 4, part_size: int = 16 * 1024 * 1024) -> int:
    """Recreate the planned entries that differ, each key's oldest first (a delete marker by deleting the
    key); keys side by side. Returns how many entries were written."""

    def write(p: PlannedHistory) -> int:
        for node in p.nodes:
            s3 = node["s3"]
            if s3.get("delete_marker"):
                target.delete(p.key)
                continue
            target.write(
                p.key,
                BlobReader(repo, node),
                int(node.get("size") or 0),
                s3.get("content_type"),
                dict(s3.get("metadata") or {}),
                part_size,
            )
        return len(p.nodes)

    todo = [p for p in plan if p.action != "same"]
    with ThreadPoolExecutor(max_workers=max(1, writers), thread_name_prefix="bucket-write") as pool:
        return sum(pool.map(write, todo))
