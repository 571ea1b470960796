"""The restore survey's check of each file's size against its blobs and holes: the whole-list shortcut
for the common case (one data blob per file, no holes) must decide every directory as the rule does, file
by file."""

from __future__ import annotations

import os
import random

from steps.repository.index import MemIndex
from steps.repository.pack import BLOB_DATA, BLOB_TREE, PackEntry
from steps.repository.restore_survey import Survey


def rule(index: MemIndex, node: dict) -> str | None:
    """The rule, written plainly: every blob a data blob in the index, and the blobs' lengths and the
    holes' lengths adding up to the size (the first offending blob named)."""
    total = sum(length for _off, length in node.get("holes") or ())
    for hexid in node.get("content") or ():
        loc = index.get(bytes.fromhex(hexid))
        if loc is None:
            return f"blob {hexid} is not in the index"
        if loc.type != BLOB_DATA:
            return f"blob {hexid} is not a data blob"
        total += loc.raw_length
    size = node.get("size", 0)
    return None if total == size else f"size {size} but its blobs and holes hold {total} bytes"


def test_each_directory_is_decided_as_the_rule_decides_each_file():
    rnd = random.Random(5)
    ids = [os.urandom(32) for _ in range(40)]
    index = MemIndex()
    entries = [
        PackEntry(BLOB_TREE if i == 7 else BLOB_DATA, bid, 100 * i, 50, i + 1) for i, bid in enumerate(ids)
    ]
    index.add_pack("a" * 64, b"s" * 32, 10_000, entries)
    missing = os.urandom(32).hex()
    survey = Survey.__new__(Survey)
    survey.index = index

    def one_blob(i: int, **extra) -> dict:
        return {"name": f"f{i}", "type": "file", "size": i + 1, "content": [ids[i].hex()], **extra}

    variants = [
        lambda i: one_blob(i),
        lambda i: one_blob(i, size=i + 2),  # one byte more than its blob
        lambda i: one_blob(i, size=0, content=[]),  # empty
        lambda i: one_blob(i, size=3, content=[]),  # no blob, yet a size
        lambda i: one_blob(i, size=i + 1 + 4, holes=[[0, 4]]),  # a hole before its blob
        lambda i: one_blob(i, holes=[]),
        lambda i: one_blob(i, holes=[[0, 4]]),  # a hole, and a size that counts only its blob
        lambda i: one_blob(i, content=[missing]),
        lambda i: one_blob(7),  # a tree blob as content
        lambda i: one_blob(i, size=i + 1 + i + 2, content=[ids[i].hex(), ids[i + 1].hex()]),
        lambda i: one_blob(i, size=i + 1 + i + 2 + 1, content=[ids[i].hex(), ids[i + 1].hex()]),
    ]
    directories = [[one_blob(i) for i in range(30)], []]  # the common case, and an empty directory
    for _ in range(300):  # the common case with one file of another kind somewhere (or none)
        files = [one_blob(rnd.randrange(30)) for _ in range(rnd.randrange(1, 8))]
        if rnd.random() < 0.8:
            files[rnd.randrange(len(files))] = rnd.choice(variants)(rnd.randrange(30))
        directories.append(files)
    decided = 0
    for files in directories:
        # THEN the survey's answer for the directory is the rule's for each of its files
        assert survey._file_problems(files) == [rule(index, node) for node in files], files
        decided += any(rule(index, node) for node in files)
    assert decided > 100  # (damage was met often enough to count)
