"""Trees are read by the pack: one GET per tree pack, each tree still authenticated, damage and a lying index
cost only speed, never a wrong tree."""

from __future__ import annotations

import os

import pytest

from steps.drivers.objectstore import MemoryStore
from steps.errors import IntegrityError
from steps.repository.archiver import CopyOptions, copy_source
from steps.repository.pack import BLOB_TREE, pack_key
from steps.repository.repo import Repository
from steps.repository.restore_survey import Survey
from steps.repository.tree import RestoreLimits

PASSWORD = "test password"


def _source(root, dirs: int = 40, files: int = 25) -> None:
    for d in range(dirs):
        sub = root / f"d{d:03d}"
        sub.mkdir(parents=True)
        for f in range(files):
            (sub / f"f{f:03d}").write_bytes(f"{d}/{f}".encode() * (f + 1))


def _reopen(store: MemoryStore) -> Repository:
    repo = Repository.open(store, PASSWORD)
    repo.load_index()
    return repo


def _tree_ids(repo: Repository) -> dict[bytes, str]:
    """Every tree blob of the repository -> its pack ID."""
    return {bid: loc.pack_id for bid, loc in repo.index.iter_blobs() if loc.type == BLOB_TREE}


@pytest.fixture
def snapshot(mem_repo, tmp_path):
    _source(tmp_path / "src")
    sid = copy_source(mem_repo, CopyOptions(str(tmp_path / "src"))).snapshot_id
    return mem_repo.store, sid


def _survey(repo: Repository, sid: str) -> Survey:
    snap = repo.find_snapshot(sid)
    survey = Survey(repo, RestoreLimits(), snap.short_id)
    survey.run(snap.data["tree"])
    return survey


def test_a_walk_over_every_tree_fetches_each_tree_pack_once(snapshot, monkeypatch):
    store, sid = snapshot
    repo = _reopen(store)
    trees = _tree_ids(repo)
    packs = set(trees.values())
    assert len(trees) == 41 and len(packs) < len(trees)
    fetched: list[str] = []
    store.hook = lambda op, key: fetched.append(key) if op == "get" and key.startswith("data/") else None
    survey = _survey(repo, sid)
    assert survey.first_damage is None
    assert sorted(fetched) == sorted(pack_key(p) for p in packs)  # one GET per tree pack, none per tree
    fetched.clear()
    for bid in trees:  # read again: served from the cached packs
        repo.load_tree(bid)
    assert fetched == []


def test_a_damaged_tree_pack_costs_only_the_trees_it_touches(snapshot):
    store, _sid = snapshot
    repo = _reopen(store)
    trees = _tree_ids(repo)
    victim, pack_id = next(iter(trees.items()))
    loc = repo.index.get(victim)
    key = pack_key(pack_id)
    data = bytearray(store.objects[key])
    data[loc.offset + loc.length // 2] ^= 0x01  # one flipped byte inside one tree
    store.objects[key] = bytes(data)
    repo = _reopen(store)
    with pytest.raises(IntegrityError):
        repo.load_tree(victim)
    others = [bid for bid, p in trees.items() if p == pack_id and bid != victim]
    assert others
    for bid in others:  # the pack no longer matches its name, but each other tree reads on its own
        assert isinstance(repo.load_tree(bid), list)


def test_a_lying_pack_size_in_the_index_bounds_the_fetch_and_gives_no_wrong_tree(snapshot):
    store, _sid = snapshot
    repo = _reopen(store)
    trees = _tree_ids(repo)
    bid, pack_id = next(iter(trees.items()))
    no = repo.index.pack_ids.index(pack_id)
    repo.index.pack_sizes[no] = 100  # a crafted index: the whole-pack read is cut to what it claims
    sizes: list[int] = []
    original = store.get_range

    def recording(key, offset, length, version_id=None):
        sizes.append(length)
        return original(key, offset, length, version_id)

    store.get_range = recording
    nodes = repo.load_tree(bid)  # the whole-pack read fails its name check; the tree is read alone
    assert isinstance(nodes, list)
    assert sizes[0] == 100 and max(sizes) < len(store.objects[pack_key(pack_id)])


def test_the_pack_cache_follows_pack_ids_when_the_index_is_renumbered(snapshot, tmp_path):
    from steps.repository.index import MemIndex

    store, _sid = snapshot
    repo = _reopen(store)
    (tmp_path / "src" / "d000" / "new").write_bytes(b"a second snapshot, a second tree pack")
    copy_source(repo, CopyOptions(str(tmp_path / "src")))
    repo = _reopen(store)
    index = repo.index
    groups = index.pack_entries()
    tree_packs = [no for no in groups if index.is_tree_pack(no)]
    assert len(tree_packs) == 2
    a, b = tree_packs
    repo.load_tree(groups[a][0].id)  # pack a is now cached
    # the index is loaded again with the same packs numbered otherwise: b takes a's number
    order = sorted(groups)
    order[a], order[b] = order[b], order[a]
    renumbered = MemIndex()
    for no in order:
        renumbered.add_pack(index.pack_ids[no], index.pack_salts[no], index.pack_sizes[no], groups[no])
    repo._index = renumbered
    for entry in groups[b]:  # pack b's trees are not read from pack a's cached bytes
        assert isinstance(repo.load_tree(entry.id), list)
    assert not repo._tree_packs_damaged


def test_a_restore_from_tree_packs_is_byte_for_byte(snapshot, tmp_path):
    from steps.repository.restorer import restore_snapshot

    store, sid = snapshot
    repo = _reopen(store)
    target = tmp_path / "out"
    restore_snapshot(repo, repo.find_snapshot(sid), str(target))
    for dirpath, _dirs, files in os.walk(tmp_path / "src"):
        rel = os.path.relpath(dirpath, tmp_path / "src")
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                assert (target / rel / name).read_bytes() == f.read()
