"""A copy's trees are written by orjson (encode_fs_tree) and must be the very bytes json writes
(encode_tree): equal directories share one tree ID across snapshots and versions only if they do."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from steps.repository.tree import decode_tree, encode_fs_tree, encode_tree, node_from_stat

U64, I64 = 2**64 - 1, 2**63 - 1
HEX = "0123456789abcdef"

names = st.one_of(
    st.text(min_size=1, max_size=40),  # any code point, control characters and 0x7f included
    st.binary(min_size=1, max_size=40).map(os.fsdecode),  # file-system bytes: lone surrogates
    st.text(alphabet="abcdefghij.-_0123456789", min_size=1, max_size=40),  # the common case
)
ints = st.integers(min_value=-(2**63), max_value=U64)
blob_ids = st.text(alphabet=HEX, min_size=64, max_size=64)


@st.composite
def nodes(draw):
    out = []
    for i, name in enumerate(draw(st.lists(names, max_size=12, unique=True))):
        node = {
            "name": name,
            "type": draw(st.sampled_from(["file", "dir", "symlink", "chardev"])),
            **{k: draw(ints) for k in ("mode", "uid", "gid", "mtime_ns", "atime_ns", "ctime_ns", "inode")},
            "dev": i,
            "nlink": 1,
        }
        if node["type"] == "file":
            node["size"] = draw(st.integers(min_value=0, max_value=I64))
            node["content"] = draw(st.lists(blob_ids, max_size=3))
            if draw(st.booleans()):
                node["holes"] = [[0, 4096], [8192, draw(st.integers(min_value=1, max_value=U64))]]
        elif node["type"] == "dir":
            node["subtree"] = draw(blob_ids)
        elif node["type"] == "symlink":
            node["target"] = draw(names)
        else:
            node["rdev"] = draw(ints)
        out.append(node)
    return out


@settings(max_examples=400, derandomize=True, deadline=None)
@given(nodes())
def test_fast_encoding_is_byte_for_byte_the_reference(tree):
    assert encode_fs_tree(tree) == encode_tree(tree)


def test_every_escaped_character_and_out_of_range_integers_take_the_reference_path():
    base = node_from_stat("x", os.lstat("/"))
    for name in ["\x7f", "a\x00b", "tab\tnew\nline", "é", "名前", "\udcff", '"\\', "\u2028"]:
        tree = [{**base, "name": name}, {**base, "name": "plain"}]
        assert encode_fs_tree(tree) == encode_tree(tree), repr(name)
    huge = [{**base, "inode": 2**64}]  # orjson refuses integers past 64 bits
    assert encode_fs_tree(huge) == encode_tree(huge)


def test_a_tree_of_a_real_directory_decodes_to_its_nodes():
    tree = []
    for name in sorted(os.listdir("/"))[:20]:
        node = node_from_stat(name, os.lstat(os.path.join("/", name)))
        if node["type"] == "symlink":
            node["target"] = os.readlink(os.path.join("/", name))
        tree.append(node)
    assert decode_tree(encode_fs_tree(tree)) == sorted(tree, key=lambda n: n["name"])
