"""``repair index``: a new index from the packs' own headers, superseding every old index file.

Provides :func:`rebuild_index` (trees are not read; a pack is left out only when its bytes are
confirmed not to match its name) and :func:`read_pack_index` (one pack's entries from its header, two
ranged reads at most; prune reads unindexed packs with it). Called by ``steps.commands.repair``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from steps.errors import IntegrityError, PermanentError, TemporaryError

from .index import IndexPack
from .pack import PREFIX_LEN, TAIL, header_length, pack_key, parse_pack_header, read_pack_entries
from .repo import Repository


@dataclass
class RepairReport:
    packs: int = 0
    blobs: int = 0
    damaged: list[str] = field(default_factory=list)
    new_index: list[str] = field(default_factory=list)
    removed_index: list[str] = field(default_factory=list)


def read_pack_index(repo: Repository, pack_id: str, size: int) -> IndexPack:
    """A pack's entries from its own header (two ranged reads at most)."""
    name = f"pack {pack_id}"
    store = repo.store
    key = pack_key(pack_id)
    tail_len = min(size, 256 * 1024)
    tail = store.get_range(key, size - tail_len, tail_len)
    hlen = header_length(tail, size, name)
    if hlen + TAIL.size <= len(tail):
        header = tail[len(tail) - TAIL.size - hlen : len(tail) - TAIL.size]
    else:
        header = store.get_range(key, size - TAIL.size - hlen, hlen)
    prefix = tail[:PREFIX_LEN] if tail_len == size else store.get_range(key, 0, PREFIX_LEN)
    salt, entries = parse_pack_header(repo.keys, prefix, header, size, name)
    return IndexPack(pack_id, salt, size, entries)


def rebuild_index(repo: Repository, packs_per_file: int = 2000) -> RepairReport:
    """Write a new index from the packs alone, superseding (then deleting) every old index file.

    A pack is left out (``damaged``) only when its bytes are confirmed not to match its name (and no
    intact older version exists). Any other failure to read a pack — permissions, the store not
    answering, a header that does not decrypt — changes nothing and raises: an index rebuilt without
    that pack would drop its blobs, and prune would then delete it as unindexed."""
    report = RepairReport()
    old = repo.index_ids()
    infos = list(repo.store.list("data/"))
    failed: list[tuple[str, BaseException]] = []
    written_by = _pack_writers(repo, old)

    def one(info):
        pid = info.key.rsplit("/", 1)[-1]
        try:
            pack = read_pack_index(repo, pid, info.size)
            pack.backup_id = written_by.get(pid)
            return pack
        except Exception:
            pass
        # the header did not read: tell a pack whose bytes do not match its name from a read failure
        try:
            data = repo.get_named(pack_key(pid))
        except IntegrityError as err:
            report.damaged.append(f"pack {pid}: {err}")
            return None
        except Exception as err:
            failed.append((pid, err))
            return None
        try:
            salt, entries = read_pack_entries(repo.keys, data, f"pack {pid}")
        except Exception as err:
            failed.append((pid, err))
            return None
        return IndexPack(pid, salt, len(data), entries, written_by.get(pid))

    with ThreadPoolExecutor(max_workers=16) as pool:
        packs = [p for p in pool.map(one, infos) if p is not None]
    if failed:
        failed.sort(key=lambda f: f[0])
        pid, err = failed[0]
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        cls = TemporaryError if all(isinstance(e, TemporaryError) for _, e in failed) else PermanentError
        raise cls(
            f"repair index: pack {pid} cannot be read ({type(err).__name__}: {err}){more}; nothing was"
            " changed (an index rebuilt without it would drop its blobs); make it readable and run repair"
            " again"
        )
    report.packs = len(packs)
    report.blobs = sum(len(p.entries) for p in packs)
    for i in range(0, max(len(packs), 1), packs_per_file):
        report.new_index.append(repo.save_index_file(packs[i : i + packs_per_file], supersedes=old))
    repo.note_deletions([f"index/{iid}" for iid in old], "repair index")
    for iid in old:
        repo.store.delete(f"index/{iid}")
        report.removed_index.append(iid)
    repo.load_index()
    return report


def _pack_writers(repo: Repository, index_ids: list[str]) -> dict[str, str]:
    """Pack ID -> the backup that wrote it, from whichever old index files still read (best effort: the
    pack headers do not say it, and per-backup verify uses it)."""

    def read(iid: str) -> list[IndexPack]:
        try:
            return repo._read_index_file(iid)[2]
        except Exception:
            return []

    out: dict[str, str] = {}
    if index_ids:
        with ThreadPoolExecutor(max_workers=min(16, len(index_ids))) as pool:
            for packs in pool.map(read, index_ids):
                for p in packs:
                    if p.backup_id:
                        out.setdefault(p.id, p.backup_id)
    return out
