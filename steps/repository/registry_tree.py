"""Registry snapshots as trees: the parent an incremental ``registry-backup`` reuses, and the snapshot it
writes.

A registry snapshot is a directory snapshot (source type ``dir``) laid out as ``registry.json``,
``manifests/sha256/HEX`` and ``blobs/sha256/HEX`` (docs/user/registry.md). Digests are content
addresses: a blob the parent snapshot holds under the same digest holds the same bytes, and it was
checked against that digest when it was downloaded, before it was stored. So a blob the parent holds is
not downloaded again: its file node (the parent's content list) goes into the new tree as it is. A
manifest the parent holds is read back from the repository and checked against its digest before it is
used.

The parent (:func:`registry_parent`) is the newest committed registry snapshot of the same registry
host written by ``registry-backup`` (:func:`written_by_registry_backup`: a directory snapshot whose
``program`` names it, tagged kind=registry and registry=HOST), not any snapshot carrying those tags. A
reused manifest's bytes are checked against its digest, and its own ``mediaType`` and shape against
the media type the parent lists (which the digest does not cover). A parent entry is trusted only when it is whole: the node is a file of the size the image
declares, every blob of its content is in the index and their lengths add up to that size, and the
parent's ``registry.json`` lists the digest with that size. Anything else (a missing or damaged entry,
a tree that does not load) downloads the blob again; damage in the parent costs time, never content.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from steps.errors import IntegrityError

DESCRIPTION_FILE = "registry.json"
MAX_DESCRIPTION_BYTES = 256 * 1024 * 1024
WRITER = "registry-backup"  # the last word of the ``program`` of the snapshots it writes


def written_by_registry_backup(data: dict, host: str | None = None) -> bool:
    """Whether snapshot record ``data`` is as ``registry-backup`` writes it (of registry ``host``, when
    given): source type ``dir``, ``program`` "snapflow-steps VERSION registry-backup", tags kind=registry
    and registry=HOST. A ``backup`` of a directory given those tags is not."""
    tags = data.get("tags")
    program = data.get("program")
    return (
        data.get("source_type") == "dir"
        and isinstance(program, str)
        and program.startswith("snapflow-steps ")
        and program.split(" ")[-1] == WRITER
        and isinstance(tags, dict)
        and tags.get("kind") == "registry"
        and isinstance(tags.get("registry"), str)
        and (host is None or tags.get("registry") == host)
    )


def _newer_damage(repo, host: str, newest_time: str) -> list:
    """Damaged snapshot or backup records that may hide a registry snapshot of ``host`` newer than
    ``newest_time``."""

    def same(d: dict | None) -> bool:
        tags = (d or {}).get("tags")
        return isinstance(tags, dict) and tags.get("kind") == "registry" and tags.get("registry") == host

    hiding = [
        d
        for d in repo.damaged_records("snapshots")
        if d.data is None or (same(d.data) and str(d.data.get("time", "")) > newest_time)
    ]
    commits = repo.commits()
    for s in repo.list_snapshots():
        if same(s.data) and s.time > newest_time and commits.state(s) == "damaged":
            hiding += commits.damaged_for(s.backup_id or "")
    return hiding


def registry_parent(repo, host: str, warn: Callable[[str], None]):
    """The newest committed snapshot of kind registry taken from ``host``, or None (everything is
    downloaded) when there is none or a damaged record may hide a newer one (said through ``warn``)."""
    from .damage import describe_damage, repair_hint

    commits = repo.commits()
    snapshots = repo.list_snapshots()
    best = None
    for s in snapshots:
        # a snapshot of a backup that failed verify is not committed, so it is never a parent
        if not written_by_registry_backup(s.data, host) or not commits.committed(s):
            continue
        if best is None or s.time > best.time:
            best = s
    hiding = _newer_damage(repo, host, "" if best is None else best.time)
    if hiding:
        warn(
            f"parent: {describe_damage(hiding, 'record')}, and may hide the newest registry snapshot of"
            f" {host}; this backup downloads every blob instead of reusing a parent's (slower, equally"
            f" complete); {repair_hint(repo.url)}"
        )
        return None
    failed = _failed_reuse(repo, host, best, snapshots, commits) if best is not None else None
    if failed is not None:
        warn(
            f"parent: registry snapshot {failed[0].short_id} of backup {failed[1]} took blobs from"
            f" {best.short_id} and failed verify; this backup downloads every blob instead of reusing"
            " that parent's (slower, equally complete)"
        )
        return None
    return best


def _failed_reuse(repo, host: str, parent, snapshots, commits) -> tuple | None:
    """``(snapshot, backup ID)`` of a newer, uncommitted registry snapshot of ``host`` that took blobs
    from ``parent`` and whose latest verify failed, or None. What it reused may not be what its digests name
    (reuse does not hash a blob again; verify does), so that parent is not trusted again."""
    for s in snapshots:
        if (
            s.time <= parent.time
            or s.data.get("parent") != parent.id
            or not s.backup_id
            or commits.committed(s)
            or not written_by_registry_backup(s.data, host)
        ):
            continue
        verdicts = [
            r.data
            for r in repo.scan_records("runs", key=s.backup_id)[0]  # oldest first
            if r.data.get("name") == "verify"
            and isinstance(r.data.get("snapshots"), list)
            and s.id in r.data["snapshots"]
        ]
        if verdicts and verdicts[-1].get("ok") is False:
            return s, s.backup_id
    return None


def _read_node(repo, node: dict, limit: int) -> bytes:
    from .snapshot_read import blob_offsets

    size = node.get("size")
    if not isinstance(size, int) or not 0 <= size <= limit:
        raise IntegrityError(f"{node.get('name')!r}: size {size!r} out of range")
    buf = bytearray(size)
    for bid, off, raw, _loc in blob_offsets(repo, node):
        data = repo.read_blob(bid)
        if len(data) != raw or off + raw > size:
            raise IntegrityError(f"{node.get('name')!r}: a content blob does not fit")
        buf[off : off + raw] = data
    return bytes(buf)


@dataclass
class RegistryParent:
    """What a parent registry snapshot holds, for :func:`steps.drivers.registry_stage.stage_images`."""

    repo: object
    snapshot_id: str
    blobs: dict[str, dict] = field(default_factory=dict)  # digest → file node
    manifests: dict[str, dict] = field(default_factory=dict)  # digest → file node
    described: dict = field(default_factory=dict)  # the parent's registry.json
    rejected: int = 0  # parent entries found unusable (downloaded again)

    @classmethod
    def load(cls, repo, snapshot, warn: Callable[[str], None]) -> RegistryParent | None:
        """The parent's entries, or None (with a warning) when its tree or description does not load."""
        try:
            top = {n["name"]: n for n in repo.load_tree(snapshot.data["tree"])}

            def files_in(kind: str) -> dict[str, dict]:
                node = top.get(kind)
                if not node or node.get("type") != "dir":
                    return {}
                sub = {n["name"]: n for n in repo.load_tree(node["subtree"])}.get("sha256")
                if not sub or sub.get("type") != "dir":
                    return {}
                return {
                    f"sha256:{n['name']}": n
                    for n in repo.load_tree(sub["subtree"])
                    if n.get("type") == "file"
                }

            desc_node = top.get(DESCRIPTION_FILE)
            if not desc_node or desc_node.get("type") != "file":
                raise IntegrityError(f"no {DESCRIPTION_FILE}")
            described = json.loads(_read_node(repo, desc_node, MAX_DESCRIPTION_BYTES))
            if not isinstance(described, dict):
                raise IntegrityError(f"{DESCRIPTION_FILE} is not a JSON object")
            return cls(repo, snapshot.id, files_in("blobs"), files_in("manifests"), described)
        except Exception as err:  # a damaged parent only costs downloads
            warn(
                f"parent registry snapshot {snapshot.short_id} does not load ({err}); every blob is"
                " downloaded again"
            )
            return None

    def blob_node(self, digest: str, size: int) -> dict | None:
        """The parent's node of blob ``digest`` when it is whole and of ``size`` bytes, else None."""
        node = self.blobs.get(digest)
        listed = (self.described.get("blobs") or {}).get(digest)
        if node is None or not isinstance(listed, dict) or listed.get("size") != size:
            return None
        if node.get("size") != size or node.get("holes") or not self._whole(node, size):
            self.rejected += 1
            return None
        return node

    def _whole(self, node: dict, size: int) -> bool:
        from .pack import BLOB_DATA

        content = node.get("content")
        if not isinstance(content, list) or (size and not content):
            return False
        total = 0
        try:
            for hexid in content:
                loc = self.repo.index.get(bytes.fromhex(hexid))
                if loc is None or loc.type != BLOB_DATA:
                    return False
                total += loc.raw_length
        except (TypeError, ValueError):
            return False
        return total == size

    def manifest(self, digest: str) -> tuple[bytes, str] | None:
        """``(bytes, media type)`` of manifest ``digest`` read back from the parent and checked against
        its digest, or None when the parent does not hold it whole, or when the document contradicts
        the media type the parent lists for it (the digest does not cover that type)."""
        from steps.drivers.registry_reference import MANIFEST_TYPES, MAX_MANIFEST_BYTES
        from steps.drivers.registry_stage import type_contradiction

        node = self.manifests.get(digest)
        listed = (self.described.get("manifests") or {}).get(digest)
        if node is None or not isinstance(listed, dict):
            return None
        media_type = listed.get("media_type")
        try:
            data = _read_node(self.repo, node, MAX_MANIFEST_BYTES)
        except Exception:
            self.rejected += 1
            return None
        if media_type not in MANIFEST_TYPES or "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            self.rejected += 1
            return None
        try:
            why = type_contradiction(json.loads(data), media_type)
        except ValueError:
            why = "it is not JSON"
        if why is not None:
            self.rejected += 1
            return None
        return data, media_type


@dataclass
class StoreResult:
    snapshot_id: str
    bytes_added: int
    bytes_read: int
    files: int


def store_registry_tree(
    repo,
    workdir: str,
    reused: dict[str, dict],
    *,
    tags: dict,
    backup_id: str | None,
    identity: dict,
    parent: str | None,
    readers: int | None = None,
) -> StoreResult:
    """Store the staged ``workdir`` (``registry.json``, ``manifests/``, ``blobs/``) plus the parent's
    blob nodes ``reused`` (digest → node, put at ``blobs/sha256/HEX``) as a snapshot; returns its ID.
    ``repo.begin_write()`` must have been called."""
    from steps.drivers.cpus import default_threads

    from .archiver import IDENTITY_FIELDS, SNAPSHOT_VERSION, _version
    from .blob_sink import BlobSink
    from .chunker import Chunker
    from .pack import BLOB_DATA, BLOB_TREE
    from .tree import encode_tree

    started = datetime.now(UTC)
    scan_ns = time.time_ns()
    chunker = Chunker(repo.keys.chunker, repo.config.chunk_min, repo.config.chunk_avg, repo.config.chunk_max)
    sink = BlobSink(repo, backup_id)
    readers = readers or default_threads("file_workers")  # one per usable CPU, as a copy's
    base = {"uid": os.getuid(), "gid": os.getgid(), "mtime_ns": scan_ns, "atime_ns": scan_ns}
    base.update(ctime_ns=scan_ns, inode=0, dev=0, nlink=1)
    dir_meta = {"type": "dir", "mode": 0o755, **base}

    files: list[tuple[tuple[str, ...], str]] = []  # (directory parts, name) of each staged file
    for dirpath, dirnames, filenames in os.walk(workdir):
        dirnames.sort()
        rel = os.path.relpath(dirpath, workdir)
        parts = () if rel == "." else tuple(rel.split(os.sep))
        files.extend((parts, name) for name in sorted(filenames))

    def store(item: tuple[tuple[str, ...], str]) -> dict:
        parts, name = item
        path = os.path.join(workdir, *parts, name)
        ids = []
        size = 0
        with open(path, "rb") as f:
            for chunk in chunker.chunks(f.readinto, size_hint=os.fstat(f.fileno()).st_size):
                sink.check()
                ids.append(sink.save_blob(BLOB_DATA, chunk).hex())
                size += len(chunk)
        return {"name": name, "type": "file", "mode": 0o644, **base, "size": size, "content": ids}

    root: dict = {}
    try:
        with ThreadPoolExecutor(max_workers=max(1, readers), thread_name_prefix="registry-store") as pool:
            nodes = list(pool.map(store, files))
        bytes_read = 0
        for (parts, name), node in zip(files, nodes, strict=True):
            d = root
            for p in parts:
                d = d.setdefault(p, {})
            d[name] = ("file", node)
            bytes_read += node["size"]
        blob_dir = root.setdefault("blobs", {}).setdefault("sha256", {})
        for digest, node in reused.items():
            name = digest.partition(":")[2]
            if name not in blob_dir:
                blob_dir[name] = ("file", {**node, "name": name})

        def save(d: dict) -> str:
            entries = []
            for name in sorted(d):
                v = d[name]
                if isinstance(v, tuple):
                    entries.append(v[1])
                else:
                    entries.append({"name": name, **dir_meta, "subtree": save(v)})
            return sink.save_blob(BLOB_TREE, encode_tree(entries)).hex()

        tree = save(root)
        sink.finish()
    except BaseException:
        sink.close_on_error()
        raise
    end = datetime.now(UTC)
    total = sum(n["size"] for n in nodes) + sum(n.get("size", 0) for n in reused.values())
    changes = _changes(repo, parent, files, nodes, blob_dir, total, bytes_read, sink.stats)
    snap = {
        "version": SNAPSHOT_VERSION,
        "time": started.isoformat().replace("+00:00", "Z"),
        "end_time": end.isoformat().replace("+00:00", "Z"),
        "scan_start_ns": scan_ns,
        "host": platform.node(),
        "source": os.path.abspath(workdir),
        "source_type": "dir",
        "tags": dict(tags),
        "backup_id": backup_id,
        **{k: identity.get(k) for k in IDENTITY_FIELDS},
        "parent": parent,
        "tree": tree,
        "root": dict(dir_meta),
        "excludes": [],
        "consistency": None,
        "summary": {
            "files": len(nodes) + len(reused),
            "files_unchanged": len(reused),
            "files_read": len(nodes),
            "bytes_total": total,
            "bytes_read": bytes_read,
            "bytes_added": sink.stats.bytes_added,
            "blobs_new": sink.stats.blobs_new,
            "blob_bytes_new": sink.stats.blob_bytes_new,
        },
        "program": f"snapflow-steps {_version()} {WRITER}",  # what registry_parent trusts
        "changes": changes,  # optional, as a copy's (docs/design.md, "snapshots/ID")
    }
    repo.check_commit()
    sid = repo.save_snapshot(snap)
    repo.confirm_commit(f"snapshots/{sid}")
    return StoreResult(sid, sink.stats.bytes_added, bytes_read, len(nodes))


def _changes(repo, parent, files, nodes, blob_dir, total, bytes_read, sink_stats) -> dict:
    """The snapshot's change telemetry against its parent: each file of the tree (manifests, blobs,
    registry.json) counted by its path (steps.repository.change_telemetry)."""
    from .change_telemetry import counted_changes, entry_changes, snapshot_files

    current = {
        "/".join((*parts, name)): node.get("content")
        for (parts, name), node in zip(files, nodes, strict=True)
    }
    for name, (_, node) in blob_dir.items():
        current.setdefault(f"blobs/sha256/{name}", node.get("content"))
    before = snapshot_files(repo, parent)
    return counted_changes(
        bytes_total=total,
        bytes_read=bytes_read,
        files_total=len(current),
        files=entry_changes(before, current.items()),
        sink_stats=sink_stats,
        has_parent=before is not None,
    )


def check_registry_digests(repo, snapshots, packs_read: set[str]) -> list[str]:
    """Problems of the registry snapshots among ``snapshots`` (tagged kind=registry): each file of
    ``manifests/sha256/`` and ``blobs/sha256/`` whose content lies in a pack of ``packs_read`` (the
    packs verify read back: its sample, every pack with --read-data 100) is read and hashed, and must
    match the digest it is named by. A reused blob is never hashed again when a backup takes it from
    its parent, so this is what finds a parent whose file holds other bytes of the right size.

    A file whose content cannot be read is left to the pack read-back, which names it."""
    from .snapshot_read import blob_offsets

    problems: list[str] = []
    seen: dict[tuple, str | None] = {}  # (digest, content) → what was read (None: unreadable)
    for snap in snapshots:
        tags = snap.data.get("tags")
        if not isinstance(tags, dict) or tags.get("kind") != "registry" or not snap.data.get("tree"):
            continue
        try:
            top = {n.get("name"): n for n in repo.load_tree(snap.data["tree"])}
        except Exception:  # a damaged tree is the walk's problem, named there
            continue
        for kind in ("manifests", "blobs"):
            for name, node in _digest_files(repo, top.get(kind)):
                digest = f"sha256:{name}"
                content = node.get("content")
                if not isinstance(content, list) or not _in_packs(repo, content, packs_read):
                    continue
                key = (digest, tuple(content), node.get("size"))
                if key not in seen:
                    seen[key] = _hash_node(repo, node, blob_offsets)
                got = seen[key]
                if got is not None and got != digest:
                    problems.append(
                        f"snapshot {snap.short_id}: registry {kind[:-1]} {digest} read back does not match"
                        f" its digest (its bytes hash to {got}); a registry restore of it fails"
                    )
    return problems


def _digest_files(repo, node) -> list[tuple[str, dict]]:
    if not node or node.get("type") != "dir":
        return []
    try:
        sub = {n.get("name"): n for n in repo.load_tree(node["subtree"])}.get("sha256")
        if not sub or sub.get("type") != "dir":
            return []
        return [(n["name"], n) for n in repo.load_tree(sub["subtree"]) if n.get("type") == "file"]
    except Exception:  # the walk names a damaged tree
        return []


def _in_packs(repo, content: list, packs: set[str]) -> bool:
    if not packs:
        return False
    try:
        locs = [repo.index.get(bytes.fromhex(h)) for h in content]
    except (TypeError, ValueError):
        return False
    return any(loc is not None and loc.pack_id in packs for loc in locs)


def _hash_node(repo, node: dict, blob_offsets) -> str | None:
    """``sha256:HEX`` of the file ``node`` as restore would write it, or None when it does not read."""
    h = hashlib.sha256()
    pos = 0
    size = node.get("size")
    try:
        for bid, off, raw, _loc in blob_offsets(repo, node):
            if off > pos:  # a recorded hole reads as zeros
                _zeros(h, off - pos)
                pos = off
            data = repo.read_blob(bid)
            if len(data) != raw:
                return None
            h.update(data)
            pos += raw
        if isinstance(size, int) and size > pos:
            _zeros(h, size - pos)
    except Exception:  # unreadable or damaged: the pack read-back names it
        return None
    return "sha256:" + h.hexdigest()


def _zeros(h, n: int) -> None:
    block = bytes(min(n, 1 << 20))
    while n > 0:
        h.update(block[: min(n, len(block))])
        n -= len(block)
