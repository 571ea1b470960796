"""decode_tree parses with orjson, keeping its nodes only when they write back as the stored bytes, and
with json otherwise: for any bytes it must give the nodes (or the refusal) that json alone gives, so
that a crafted tree cannot pass, or read differently, by choosing its parser."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steps.repository.tree import DamagedTreeError, decode_tree, encode_tree, validate_nodes

from .test_tree_encoding import nodes

BLOB = "ab" * 32


def reference(data: bytes):
    """What json alone decides: the validated nodes, or None for a refusal."""
    try:
        return validate_nodes(json.loads(data)["nodes"])
    except (ValueError, TypeError, KeyError, RecursionError, DamagedTreeError):
        return None


def decoded(data: bytes):
    try:
        return decode_tree(data)
    except DamagedTreeError:
        return None


@settings(max_examples=300, derandomize=True, deadline=None)
@given(nodes())
def test_written_trees_decode_as_json_decodes_them(tree):
    data = encode_tree(tree)
    assert decoded(data) == reference(data)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
        max_leaves=20,
    )
)
def test_any_json_value_in_a_node_field_is_decided_as_json_decides_it(value):
    node = {"name": "f", "type": "file", "mode": 0o644, "size": 0, "content": [], "mtime_ns": 1}
    for field in ("mode", "size", "content", "name", "extra"):
        data = json.dumps({"nodes": [{**node, field: value}]}).encode()
        assert decoded(data) == reference(data), field


def file_node(**fields) -> dict:
    return {"name": "f", "type": "file", "mode": 0o644, "size": 1, "content": [BLOB], "mtime_ns": 1, **fields}


@pytest.mark.parametrize(
    "data",
    [
        # json reads these and orjson does not: each must still decode
        json.dumps({"nodes": [file_node(name=os.fsdecode(b"caf\xe9"))]}).encode(),  # a lone surrogate
        b"\xef\xbb\xbf" + json.dumps({"nodes": [file_node()]}).encode(),  # a byte-order mark
        json.dumps({"nodes": [file_node(extra=float("nan"))]}).encode(),  # NaN in a field nobody reads
    ],
)
def test_what_only_json_reads_still_decodes(data):
    assert decoded(data) is not None
    assert decoded(data) == reference(data)


def test_a_tree_as_a_copy_writes_it_is_read_by_orjson_alone(monkeypatch):
    from steps.repository import tree as tree_mod

    nodes = [file_node(name=f"f{i}", mtime_ns=1_733_000_000_000_000_000 + i) for i in range(50)]
    data = tree_mod.encode_fs_tree(nodes)
    monkeypatch.setattr(tree_mod.json, "loads", lambda *_a, **_k: pytest.fail("json was used"))
    assert decode_tree(data) == sorted(nodes, key=lambda n: n["name"])


def test_an_integer_past_64_bits_where_no_rule_looks_is_kept_exact():
    for big in (2**64, 2**64 + 5, -(2**63) - 1, 10**30):
        data = json.dumps({"nodes": [file_node(extra=big)]}, sort_keys=True, separators=(",", ":")).encode()
        assert decoded(data)[0]["extra"] == big and type(decoded(data)[0]["extra"]) is int


@pytest.mark.parametrize("field", ["mode", "uid", "mtime_ns", "inode", "size"])
def test_an_integer_past_64_bits_is_refused_by_either_parser(field):
    data = b'{"nodes":[{"name":"f","type":"file","content":[],"%s":%d}]}' % (field.encode(), 2**64 + 5)
    assert reference(data) is None
    with pytest.raises(DamagedTreeError, match=field):
        decode_tree(data)


def test_not_json_at_all_is_one_error_naming_the_tree():
    with pytest.raises(DamagedTreeError, match=r"tree t1: not a tree \(JSONDecodeError\)"):
        decode_tree(b'{"nodes": [', "t1")
    with pytest.raises(DamagedTreeError, match=r"tree t2: not a tree \(RecursionError\)"):
        decode_tree(b"[" * 100_000 + b"]" * 100_000, "t2")


def test_a_tree_read_again_is_not_written_back_again(mem_repo, tmp_path, monkeypatch):
    from steps.repository import tree as tree_mod
    from steps.repository.archiver import CopyOptions, copy_source
    from steps.repository.repo import Repository

    # GIVEN a snapshot with a tree orjson reads exactly and one only json reads (a non-UTF-8 name)
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_bytes(b"x")
    (src / os.fsdecode(b"caf\xe9")).write_bytes(b"y")
    snap = copy_source(mem_repo, CopyOptions(str(src)))
    repo = Repository.open(mem_repo.store, "test password")  # nothing parsed yet
    root = repo.find_snapshot(snap.snapshot_id).data["tree"]
    real, written_back = tree_mod.orjson, []

    class Counting:
        loads, OPT_SORT_KEYS = staticmethod(real.loads), real.OPT_SORT_KEYS
        JSONDecodeError, JSONEncodeError = real.JSONDecodeError, real.JSONEncodeError

        @staticmethod
        def dumps(*args, **kwargs):
            written_back.append(1)
            return real.dumps(*args, **kwargs)

    monkeypatch.setattr(tree_mod, "orjson", Counting)
    # WHEN each tree is read twice by the same repository
    top = [repo.load_tree(root), repo.load_tree(root)]
    sub_id = next(n["subtree"] for n in top[0] if n["name"] == "d")
    sub = [repo.load_tree(sub_id)]
    checks = len(written_back)
    sub.append(repo.load_tree(sub_id))
    # THEN the tree orjson read was written back once, not at its second reading, and both readings of
    # each tree are the same nodes (the other one parsed by json both times)
    assert checks == 1 and len(written_back) == 1
    assert top[0] == top[1] and sub[0] == sub[1] and [n["name"] for n in sub[0]] == ["f"]
    assert os.fsdecode(b"caf\xe9") in [n["name"] for n in top[0]]
