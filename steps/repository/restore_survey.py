"""The restore's survey: every tree a restore may apply, validated and counted before the first write.

Provides :class:`Survey` and :class:`DamagedSnapshotError`. Called by :mod:`.restorer`.
"""

from __future__ import annotations

from steps.errors import IntegrityError, SnapflowError, printable

from .index import NOT_DATA, NOT_INDEXED
from .repo import Repository
from .tree import RestoreLimits, node_problem


class DamagedSnapshotError(SnapflowError):
    """The snapshot's trees break the tree rules or its limits: nothing was written (exit 1)."""


class Survey:
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
            f" snapshot is genuine): {shorten(where)}"
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
        base = path.rstrip("/")
        problems = iter(self._file_problems([node for node in nodes if node["type"] == "file"]))
        for node in nodes:
            kind = node["type"]
            if kind == "file":
                why = next(problems)
                if why is not None:
                    self.damaged_files[(tree_hex, node["name"])] = why
                    self._damage(f"{base}/{node['name']}", why)
            elif kind == "dir":  # a level of its own, with or without a subtree
                child = f"{base}/{node['name']}"
                n, d = self._tree(node["subtree"], child, depth + 1) if node.get("subtree") else (0, 0)
                entries += n
                below = max(below, d + 1)
                if depth + below > self.limits.max_depth:
                    raise self._limit("--max-depth", self.limits.max_depth, f"the depth of {child}")
        return entries, below

    def _file_problems(self, files: list[dict]) -> list[str | None]:
        """Why each file's size disagrees with its blobs and holes (None where it agrees): the blobs of a
        directory's files are looked up together (:meth:`.MemIndex.data_lengths`)."""
        contents = [node.get("content") or () for node in files]
        found = self.index.data_lengths([bytes.fromhex(h) for blobs in contents for h in blobs])
        # The common case decided in whole lists: one data blob per file, no holes, sizes as the blobs'
        # (what the loop below would find for every file; anything else goes through it).
        if (
            len(found) == len(files)
            and (not found or min(found) >= 0)
            and [node.get("size", 0) for node in files] == found
            and set(map(len, contents)) <= {1}
            and not [node for node in files if "holes" in node]
        ):
            return [None] * len(files)
        lengths = iter(found)
        out: list[str | None] = []
        for node, blobs in zip(files, contents, strict=True):
            holes = node.get("holes")
            total = sum(length for _off, length in holes) if holes else 0
            why = None
            for hexid in blobs:
                raw = next(lengths)
                if why is not None:
                    continue
                if raw == NOT_INDEXED:
                    why = f"blob {hexid} is not in the index"
                elif raw == NOT_DATA:
                    why = f"blob {hexid} is not a data blob"
                else:
                    total += raw
            size = node.get("size", 0)
            if why is None and total != size:
                why = f"size {size} but its blobs and holes hold {total} bytes"
            out.append(why)
        return out


def shorten(text: str, keep: int = 160) -> str:
    """``text`` cut in the middle when longer than ``keep`` characters (crafted paths can be huge)."""
    return text if len(text) <= keep else f"{text[: keep // 3]}...{text[-(keep - keep // 3) :]}"
