"""The mapping of object keys to a bucket snapshot's tree: every key, including those that are not file
names, gets valid entry names, and no two keys (or versions of a key) share an entry."""

from __future__ import annotations

import pytest

from steps.drivers.bucket_source import BucketAccess, BucketObject
from steps.errors import UsageError
from steps.repository.bucket_tree import _history_shape, encode_part, newest_first, state_as_of, tree_path
from steps.repository.tree import name_problem

TRICKY = [
    "a",
    "a/",
    "a/b",
    "a//b",
    "/a",
    "//",
    "/",
    ".",
    "..",
    "./x",
    "../x",
    "a/./b",
    "%",
    "%2F",
    "a%2F/b",
    "a%2F",
    "tab\there",
    "nl\nhere",
    "del\x7f",
    "ünïcödé/名前",
    "x" * 1000,
    "y/" + "%" * 300,
    "y/" + "%" * 301,
    "z" * 300 + "/" + "z" * 300,
    "z" * 300 + "/" + "other",  # the same long directory as the key before
]


def entries(keys: list[str], versions: int = 1) -> dict[tuple[str, ...], set[str]]:
    """directory path -> the entries each key (and version) puts in it, checking every name on the way."""
    seen: dict[tuple[str, ...], set[str]] = {}
    files: dict[tuple[str, ...], set[str]] = {}
    for key in keys:
        for older in range(versions):
            dirs, name = tree_path(key, older)
            for depth, d in enumerate(dirs):
                assert name_problem(d) is None, (key, d)
                assert d.endswith("%2F")
                seen.setdefault(tuple(dirs[:depth]), set()).add(d)
            assert name_problem(name) is None, (key, name)
            at = tuple(dirs)
            assert name not in files.setdefault(at, set()), f"{key!r} version {older}: {name!r} taken"
            files[at].add(name)
            assert name not in seen.get(at, set()), f"{key!r}: {name!r} is also a directory"
    for at, names in files.items():
        assert not names & seen.get(at, set())
    return files


def test_tricky_keys_get_valid_unique_names():
    entries(TRICKY)


def test_versions_of_tricky_keys_get_valid_unique_names():
    entries(TRICKY, versions=3)


def test_the_name_shows_the_key_where_it_can():
    assert tree_path("photos/2024/cat.jpg") == (["photos%2F", "2024%2F"], "cat.jpg")
    assert tree_path("dir/") == (["dir%2F"], "%")
    assert tree_path("a//b") == (["a%2F", "%2F"], "b")
    assert tree_path("doc", 2) == ([], "doc%~v2")
    assert encode_part("..") == "%2E%2E" and encode_part("100%") == "100%25"
    assert encode_part("a\tb") == "a%09b"


def test_a_long_directory_is_one_entry_for_every_key_below_it():
    assert tree_path("z" * 300 + "/a")[0] == tree_path("z" * 300 + "/b")[0]
    assert tree_path("z" * 300 + "/a")[0] != tree_path("z" * 301 + "/a")[0]


def test_file_names_never_end_in_the_directory_token():
    for key in TRICKY:
        _dirs, name = tree_path(key)
        assert not name.endswith("%2F") or name.endswith("%252F")


def test_versions_are_ordered_newest_first_whatever_the_listing_order():
    from datetime import UTC, datetime

    t = [datetime(2026, 1, 1, 0, 0, s, tzinfo=UTC) for s in range(3)]
    listing = [
        BucketObject("k", 1, "e1", t[0], "v1", is_latest=False),
        BucketObject("j", 1, "e", t[0], "v9", is_latest=True),
        BucketObject("k", 1, "e2", t[1], "v2", is_latest=False),
        BucketObject("k", 0, "", t[2], "v3", is_latest=True, delete_marker=True),
    ]
    grouped = newest_first(listing)
    assert [[o.version_id for o in g] for g in grouped] == [["v3", "v2", "v1"], ["v9"]]


def test_keys_come_from_named_variables_or_files_never_values(tmp_path, monkeypatch):
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t\n")
    monkeypatch.setenv("MY_KEY_ID", "AKIA1")
    access = BucketAccess("http://h:1", "b", access_key_env="MY_KEY_ID", secret_key_file=str(secret))
    assert access.credentials("source") == ("AKIA1", "s3cr3t")
    assert BucketAccess("http://h:1", "b").credentials("source") is None
    with pytest.raises(UsageError, match=r"^--source-access-key-\*/--source-secret-key-\*: give both"):
        BucketAccess("http://h:1", "b", access_key_env="MY_KEY_ID").credentials("source")
    with pytest.raises(UsageError, match=r"^--target-secret-key-file: cannot read"):
        BucketAccess(
            "http://h:1", "b", access_key_env="MY_KEY_ID", secret_key_file=str(tmp_path / "none")
        ).credentials("target")


def _entry(key: str, when: str, *, marker: bool = False, latest: bool = False, data: str = "") -> dict:
    s3 = {"key": key, "last_modified": when, "latest": latest, "etag": data}
    if marker:
        s3["delete_marker"] = True
    return {"type": "file", "size": len(data), "s3": s3}


def test_the_state_as_of_a_time_is_each_keys_newest_entry_then():
    from datetime import UTC, datetime

    histories = {
        "doc": [
            _entry("doc", "2026-01-01T00:00:01Z", data="v0"),
            _entry("doc", "2026-01-01T00:00:02.500000Z", marker=True),
            _entry("doc", "2026-01-01T00:00:03Z", latest=True, data="v1"),
        ],
        "late": [_entry("late", "2026-01-01T00:00:09Z", latest=True, data="x")],
    }

    def at(second: float) -> tuple[dict, int]:
        nodes, absent = state_as_of(
            histories, datetime(2026, 1, 1, tzinfo=UTC).replace(second=0) + _s(second)
        )
        return {n["s3"]["key"]: n["s3"]["etag"] for n in nodes}, absent

    assert at(0.5) == ({}, 2)  # nothing written yet
    assert at(1) == ({"doc": "v0"}, 1)  # the time is inclusive
    assert at(2.4) == ({"doc": "v0"}, 1)
    assert at(2.5) == ({}, 2)  # deleted then
    assert at(60) == ({"doc": "v1", "late": "x"}, 0)


def _s(seconds: float):
    from datetime import timedelta

    return timedelta(seconds=seconds)


def test_a_history_shape_leaves_out_where_markers_fall_but_not_the_latest():
    a = _history_shape([(False, 1, "e1"), (True, 0, ""), (False, 2, "e2")])
    b = _history_shape([(True, 0, ""), (False, 1, "e1"), (False, 2, "e2")])
    assert a == b == (((1, "e1"), (2, "e2")), 1, False)
    assert _history_shape([(False, 1, "e1"), (True, 0, "")]) == (((1, "e1"),), 1, True)
