"""The column-wise check of a tree (``tree._all_valid``) never accepts what the node-by-node rules refuse.

``validate_nodes`` first tries the fast check and falls back to the rules node by node, which name the
first offending entry. A crafted tree must be refused whichever path decides, so every mutation below is
checked both ways: when the fast check says valid, the node-by-node rules must agree.
"""

from __future__ import annotations

import copy
import random

import pytest

from steps.repository import tree as T

HEX = "0123456789abcdef"


def _node(rng: random.Random, i: int, kind: str) -> dict:
    node = {
        "name": f"f{i:05d}.dat",
        "type": kind,
        "mode": 0o644,
        "uid": 1000,
        "gid": 1000,
        "mtime_ns": 1_700_000_000_000_000_000 + i,
        "atime_ns": 1_700_000_000_000_000_000,
        "ctime_ns": 1_700_000_000_000_000_000 + 2 * i,
        "inode": 1000 + i,
        "dev": 2049,
        "nlink": 1,
    }
    if kind == "file":
        node["size"] = rng.randint(0, 1 << 20)
        node["content"] = ["".join(rng.choice(HEX) for _ in range(64)) for _ in range(rng.randint(0, 3))]
        if rng.random() < 0.2 and node["size"] > 10:
            node["holes"] = [[0, 5]]
    elif kind == "dir":
        node["subtree"] = "".join(rng.choice(HEX) for _ in range(64))
    elif kind == "symlink":
        node["target"] = f"../t{i}"
    elif kind in ("chardev", "blockdev"):
        node["rdev"] = 259
    return node


def _tree(rng: random.Random, n: int) -> list[dict]:
    kinds = ["file"] * 8 + ["dir", "symlink", "fifo", "chardev", "blockdev", "socket"]
    return [_node(rng, i, rng.choice(kinds)) for i in range(n)]


BAD_INTS = [True, False, "1", 1.0, None, -2, 2**64, -(2**63) - 1, [1], {"a": 1}]
INT_KEYS = ["mode", "uid", "gid", "mtime_ns", "atime_ns", "ctime_ns", "inode", "dev", "nlink", "rdev"]
BAD_NAMES = ["", ".", "..", "a/b", "a\0b", "x" * 256, "é" * 128, 5, None, ["a"], "\ud800", "dup"]
BAD_IDS = ["A" * 64, "a" * 63, "a" * 65, "g" * 64, "\u0660" * 64, 7, None, "a" * 63 + " ", "\uff41" * 64]


def _mutations(rng: random.Random, nodes: list[dict]):
    """(description, mutated copy) pairs, most of them invalid."""
    for key in INT_KEYS:
        for bad in BAD_INTS:
            m = copy.deepcopy(nodes)
            m[rng.randrange(len(m))][key] = bad
            yield f"{key}={bad!r}", m
    for bad in BAD_NAMES:
        m = copy.deepcopy(nodes)
        i = rng.randrange(len(m))
        m[i]["name"] = m[(i + 1) % len(m)]["name"] if bad == "dup" else bad
        yield f"name={bad!r}", m
    files = [i for i, n in enumerate(nodes) if n["type"] == "file"]
    dirs = [i for i, n in enumerate(nodes) if n["type"] == "dir"]
    links = [i for i, n in enumerate(nodes) if n["type"] == "symlink"]
    for bad in BAD_IDS:
        if files:
            m = copy.deepcopy(nodes)
            m[rng.choice(files)]["content"] = ["0" * 64, bad]
            yield f"content id {bad!r}", m
        if dirs:
            m = copy.deepcopy(nodes)
            m[rng.choice(dirs)]["subtree"] = bad
            yield f"subtree {bad!r}", m
    for bad in ["abc", {"a": 1}, 3, ("0" * 64,), [["0" * 64]], {}, 0, None, "", False]:
        if files:
            m = copy.deepcopy(nodes)
            m[rng.choice(files)]["content"] = bad
            yield f"content={bad!r}", m
    for bad in [-1, 2**63, True, "10", 1.5]:
        if files:
            m = copy.deepcopy(nodes)
            m[rng.choice(files)]["size"] = bad
            yield f"size={bad!r}", m
    for bad in [[[0, 0]], [[5, 1], [0, 1]], [[0, 2**62]], "x", [[0]], [[True, 1]], 0, "", False, None, {}]:
        if files:
            m = copy.deepcopy(nodes)
            m[rng.choice(files)]["holes"] = bad
            yield f"holes={bad!r}", m
    for bad in ["", "a\0b", "x" * 4096, 5, "\ud800"]:
        if links:
            m = copy.deepcopy(nodes)
            m[rng.choice(links)]["target"] = bad
            yield f"target={bad!r}", m
    for bad in ["nope", None, ["file"], 1]:
        m = copy.deepcopy(nodes)
        m[rng.randrange(len(m))]["type"] = bad
        yield f"type={bad!r}", m
    for bad in [None, "node", 3, ["a"]]:
        m = copy.deepcopy(nodes)
        m[rng.randrange(len(m))] = bad
        yield f"node={bad!r}", m
    m = copy.deepcopy(nodes)
    del m[rng.randrange(len(m))]["inode"]  # a field left out is allowed: the slower column path
    yield "inode missing", m
    m = copy.deepcopy(nodes)
    m[rng.randrange(len(m))]["rdev"] = 1  # rdev on any node is checked like on a device
    yield "rdev on another type", m


def _slow_accepts(nodes) -> bool:
    fast = T._all_valid
    T._all_valid = lambda _nodes: False
    try:
        T.validate_nodes(nodes, "t")
        return True
    except T.DamagedTreeError:
        return False
    finally:
        T._all_valid = fast


@pytest.mark.parametrize("seed", range(6))
def test_fast_check_never_accepts_what_the_rules_refuse(seed):
    rng = random.Random(seed)
    nodes = _tree(rng, rng.choice([1, 2, 7, 40]))
    assert T._all_valid(nodes), "a well-formed tree must take the fast path"
    assert _slow_accepts(nodes)
    refused = 0
    for what, mutated in _mutations(rng, nodes):
        slow = _slow_accepts(mutated)
        if T._all_valid(mutated):
            assert slow, f"fast check accepted a tree the rules refuse: {what}"
        refused += not slow
        # and whichever path decides, validate_nodes gives the rules' answer
        try:
            T.validate_nodes(mutated, "t")
            assert slow, what
        except T.DamagedTreeError:
            assert not slow, what
    assert refused > 100


def test_fast_check_handles_empty_and_odd_but_valid_names():
    assert T._all_valid([])
    rng = random.Random(1)
    nodes = _tree(rng, 5)
    nodes[0]["name"] = "-rf \n\udcff"  # a real directory may hold this: newline, dash, an undecodable byte
    nodes[1]["name"] = "x" * 255
    assert T._all_valid(nodes) and _slow_accepts(nodes)


@pytest.mark.parametrize("field", ["content", "holes"])
@pytest.mark.parametrize("bad", [0, "", False, None, {}])
def test_a_file_field_that_is_present_must_be_a_list(field, bad):
    """Readers iterate both (a restore's file regions, its blobs): a falsy non-list must not pass."""
    rng = random.Random(3)
    nodes = [_node(rng, 0, "file")]
    nodes[0][field] = bad
    assert not T._all_valid(nodes)
    with pytest.raises(T.DamagedTreeError, match=f"{field} is not a list|content is not a list"):
        T.validate_nodes(nodes, "t")
