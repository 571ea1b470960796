"""In-memory files stored as a snapshot (Kubernetes manifests): :func:`store_files`.

Called by capture (``steps.commands.capture``) with ``tags={"kind": "manifests"}``; read back with
:func:`steps.repository.restorer.load_files`. The record has the shape of a copy's
(:mod:`.archiver`), with ``source_type`` ``memory``.
"""

from __future__ import annotations

import os
import socket
import time
from datetime import UTC, datetime

from steps.errors import UsageError

from .blob_sink import BlobSink
from .chunker import Chunker
from .pack import BLOB_DATA, BLOB_TREE
from .repo import Repository
from .tree import encode_tree


def store_files(
    repo: Repository,
    files: dict[str, bytes],
    tags: dict[str, str] | None = None,
    backup_id: str | None = None,
    identity: dict[str, str] | None = None,
    source: str = "manifests",
) -> str:
    """Store in-memory files (``{"relative/path.yaml": b"..."}``) as a snapshot; returns its ID.

    Capture stores Kubernetes manifests this way, with ``tags={"kind": "manifests"}``; read them back
    with :func:`steps.repository.restorer.load_files`.
    """
    from .archiver import IDENTITY_FIELDS, SNAPSHOT_VERSION, _version  # the record of a copy

    repo.begin_write()
    chunker = Chunker(repo.keys.chunker, repo.config.chunk_min, repo.config.chunk_avg, repo.config.chunk_max)
    sink = BlobSink(repo, backup_id, workers=1, uploaders=2)
    now = time.time_ns()
    tree: dict = {}
    for rel, data in files.items():
        parts = [p for p in rel.split("/") if p not in ("", ".")]
        if not parts or ".." in parts:
            raise UsageError(f"file name: expected a relative path, got {rel!r}")
        d = tree
        for p in parts[:-1]:
            d = d.setdefault(p, {})
            if not isinstance(d, dict):
                raise UsageError(f"file name: {rel!r} is below a file")
        d[parts[-1]] = bytes(data)
    meta = {
        "uid": os.getuid(),
        "gid": os.getgid(),
        "mtime_ns": now,
        "atime_ns": now,
        "ctime_ns": now,
        "inode": 0,
        "dev": 0,
        "nlink": 1,
    }
    count = {"files": 0, "bytes": 0}

    def save(d: dict) -> str:
        nodes = []
        for name, v in d.items():
            if isinstance(v, dict):
                nodes.append({"name": name, "type": "dir", "mode": 0o755, **meta, "subtree": save(v)})
            else:
                ids = [sink.save_blob(BLOB_DATA, c).hex() for c in chunker.chunk_bytes(v)]
                nodes.append(
                    {"name": name, "type": "file", "mode": 0o644, **meta, "size": len(v), "content": ids}
                )
                count["files"] += 1
                count["bytes"] += len(v)
        return sink.save_blob(BLOB_TREE, encode_tree(nodes)).hex()

    try:
        root = save(tree)
        sink.finish()
    except BaseException:
        sink.close_on_error()
        raise
    identity = identity or {}
    iso = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    snap = {
        "version": SNAPSHOT_VERSION,
        "time": iso,
        "end_time": iso,
        "scan_start_ns": now,
        "host": socket.gethostname(),
        "source": source,
        "source_type": "memory",
        "tags": dict(tags or {}),
        "backup_id": backup_id,
        **{k: identity.get(k) for k in IDENTITY_FIELDS},
        "parent": None,
        "tree": root,
        "root": {"type": "dir", "mode": 0o755, **meta},
        "excludes": [],
        "consistency": None,
        "summary": {
            "files": count["files"],
            "bytes_total": count["bytes"],
            "bytes_read": count["bytes"],
            "bytes_added": sink.stats.bytes_added,
            "blobs_new": sink.stats.blobs_new,
        },
        "program": f"snapflow-steps {_version()}",
    }
    repo.check_commit()
    sid = repo.save_snapshot(snap)
    repo.confirm_commit(f"snapshots/{sid}")
    return sid
