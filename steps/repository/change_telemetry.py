"""Change telemetry of a copy: what changed since the parent snapshot, from what the copy sees anyway.

Provides :class:`ChangeCounter`, which the archiver feeds while it walks the source and finishes its
trees, and :func:`snapshot_changes`, the optional ``changes`` field of a snapshot record
(docs/design.md, "snapshots/ID"). Called by :mod:`.archiver` and :mod:`.block_copy`; read back by
:mod:`.change_summary` when a backup is committed.

Nothing here reads the source: a file counts as *changed* when the copy read it again (its size, times
or inode differ from the parent's entry) and the content it stored differs from the parent's; *added*
when its path is not a file in the parent; *deleted* when a file of the parent is gone (the parent's
tree of a deleted directory is loaded from the repository to count the files below it); *renamed* when
an added file's content (the same chunk IDs) is the content of a deleted one. Contents are compared by
a hash of their chunk ID lists, so nothing larger than an integer per added or deleted file is kept: 8
bytes in an array (a ``Counter`` entry per file cost about 88), matched once at the end.
"""

from __future__ import annotations

import threading
from array import array
from collections import Counter
from collections.abc import Callable

# beyond this many added files the copy is a first copy in all but name: renames are no longer
# matched (the count is then a lower bound) so that memory stays flat
MAX_TRACKED_CONTENTS = 1_000_000


def content_key(content) -> int | None:
    """A hash of a file's chunk ID list (None for an empty file: an empty file renames nothing)."""
    return hash(tuple(content)) if content else None


class ChangeCounter:
    """Counts added, changed, deleted and renamed files of one copy. The walker calls :meth:`walked`
    once per directory; the finisher calls :meth:`file_done` once per file the workers read."""

    def __init__(self, load_tree: Callable[[str], list[dict]], has_parent: bool):
        self.has_parent = has_parent
        self._load_tree = load_tree
        self._lock = threading.Lock()
        self.added = 0
        self.changed = 0
        self.deleted = 0
        self._added_contents = array("q")  # content keys, one per added file (repeats kept)
        self._deleted_contents = array("q")  # the same per deleted file
        self._deleted_dirs: list[str] = []
        self.unreadable_trees = 0

    # -- the walker's side: entries of the parent that are gone --------------------------------
    def walked(self, prev_children: dict[str, dict] | None, seen: dict[str, str]) -> None:
        """``seen``: name → node type of every entry this copy kept in a directory whose parent entries
        were ``prev_children``. A parent file whose name is gone, or is no longer a file, is deleted;
        so is every file below a parent directory that is gone."""
        if not prev_children:
            return
        for name, prev in prev_children.items():
            kind = prev.get("type")
            if seen.get(name) == kind:
                continue
            if kind == "file":
                self._deleted_file(prev.get("content"))
            elif kind == "dir" and isinstance(prev.get("subtree"), str):
                self._deleted_dirs.append(prev["subtree"])

    def _deleted_file(self, content) -> None:
        with self._lock:
            self.deleted += 1
            key = content_key(content)
            if key is not None and len(self._deleted_contents) < MAX_TRACKED_CONTENTS:
                self._deleted_contents.append(key)

    # -- the finisher's side: files the workers read ---------------------------------------------
    def file_done(self, node: dict, prev: tuple | None) -> None:
        """A file the copy read: ``prev`` is ``(content_key,)`` of the parent's file of that path, None
        when its path was no file in the parent."""
        if prev is not None:
            if content_key(node.get("content")) != prev[0]:
                with self._lock:
                    self.changed += 1
            return
        with self._lock:
            self.added += 1
            if self.has_parent and len(self._added_contents) < MAX_TRACKED_CONTENTS:
                key = content_key(node.get("content"))
                if key is not None:
                    self._added_contents.append(key)

    def linked(self, had_prev: bool) -> None:
        """A further name of a hard-linked file (its content is the first name's)."""
        if not had_prev:
            with self._lock:
                self.added += 1

    # -- the result --------------------------------------------------------------------------------
    def finish(self) -> dict[str, int]:
        """Counts once the copy is done: deleted directories are expanded here (their trees come from
        the repository, never from the source); renames are taken out of added and deleted."""
        stack = list(self._deleted_dirs)
        while stack:
            tree = stack.pop()
            try:
                nodes = self._load_tree(tree)
            except Exception:  # a damaged parent tree: its files are not counted
                self.unreadable_trees += 1
                continue
            for node in nodes:
                if node.get("type") == "file":
                    self._deleted_file(node.get("content"))
                elif node.get("type") == "dir" and isinstance(node.get("subtree"), str):
                    stack.append(node["subtree"])
        renamed = shared_count(self._added_contents, self._deleted_contents)
        return {
            "files_added": self.added - renamed,
            "files_changed": self.changed,
            "files_deleted": self.deleted - renamed,
            "files_renamed": renamed,
        }


def shared_count(a: array, b: array) -> int:
    """How many keys ``a`` and ``b`` have in common, a key that repeats counted as often as it is in
    both (the size of their multiset intersection), by a walk over both sorted."""
    if not a or not b:
        return 0
    a, b = array("q", sorted(a)), array("q", sorted(b))  # one sorted list at a time
    i = j = shared = 0
    na, nb = len(a), len(b)
    while i < na and j < nb:
        x, y = a[i], b[j]
        if x == y:
            shared += 1
            i += 1
            j += 1
        elif x < y:
            i += 1
        else:
            j += 1
    return shared


def snapshot_changes(stats, sink_stats, files: dict[str, int] | None, has_parent: bool) -> dict:
    """The ``changes`` field of a snapshot record: bytes of the source and of the data this copy stored
    new (before and after compression), and, for a directory or file source, the file counts of
    :meth:`ChangeCounter.finish` (``files`` None for a block device)."""
    out = {
        "parent": has_parent,
        "bytes_total": stats.bytes_total,
        "bytes_read": stats.bytes_read,
        "new_bytes": sink_stats.data_bytes_new,
        "new_bytes_stored": sink_stats.data_bytes_stored_new,
    }
    if files is not None:
        out["files_total"] = stats.files
        out.update(files)
    return out


def entry_changes(parent: dict | None, entries) -> dict[str, int]:
    """The file counts of a source whose snapshot holds named entries rather than a walked tree (a
    bucket's objects, each version and delete marker one entry): ``parent`` maps each entry name of
    the parent snapshot to its content (chunk ID list), None without a parent; ``entries`` are this
    snapshot's ``(name, content)`` pairs. An entry is *added* when its name is not in the parent,
    *changed* when its content differs, *deleted* when a parent's name is gone, *renamed* when an
    added entry's content is a deleted one's (as :meth:`ChangeCounter.finish` counts files)."""
    parent = parent or {}
    added: Counter[int] = Counter()
    counts = {"added": 0, "changed": 0}
    seen = set()
    for name, content in entries:
        seen.add(name)
        if name in parent:
            if content_key(content) != content_key(parent[name]):
                counts["changed"] += 1
            continue
        counts["added"] += 1
        key = content_key(content)
        if key is not None and parent and len(added) < MAX_TRACKED_CONTENTS:
            added[key] += 1
    deleted: Counter[int] = Counter()
    gone = 0
    for name, content in parent.items():
        if name in seen:
            continue
        gone += 1
        key = content_key(content)
        if key is not None and len(deleted) < MAX_TRACKED_CONTENTS:
            deleted[key] += 1
    renamed = sum((added & deleted).values())
    return {
        "files_added": counts["added"] - renamed,
        "files_changed": counts["changed"],
        "files_deleted": gone - renamed,
        "files_renamed": renamed,
    }


def counted_changes(
    *,
    bytes_total: int,
    bytes_read: int,
    files_total: int,
    files: dict[str, int],
    sink_stats,
    has_parent: bool,
) -> dict:
    """:func:`snapshot_changes` of a source that counts its own entries (:func:`entry_changes`)."""
    from types import SimpleNamespace

    stats = SimpleNamespace(bytes_total=bytes_total, bytes_read=bytes_read, files=files_total)
    return snapshot_changes(stats, sink_stats, files, has_parent)


def snapshot_files(repo, snapshot_id: str | None) -> dict[str, list] | None:
    """``{path: content}`` of every file of a snapshot (its trees only: no file data is read), the
    ``parent`` of :func:`entry_changes` for a source stored as a tree of files; None without a parent
    or when it cannot be read (the counts are then those of a first copy)."""
    if not snapshot_id:
        return None
    from .snapshot_read import iter_nodes

    try:
        tree = repo.find_snapshot(snapshot_id).data["tree"]
        return {
            rel: node.get("content") for rel, node in iter_nodes(repo, tree) if node.get("type") == "file"
        }
    except Exception:  # a damaged parent costs only the counts
        return None
