"""RFC 6902 JSON Patch: the examples of RFC 6902 appendix A as a table, plus the error cases."""

from __future__ import annotations

import pytest

from steps.manifests.jsonpatch import PatchError, apply_patch, parse_pointer, resolve

CASES = [
    # (doc, patch, expected)
    ({"foo": "bar"}, [{"op": "add", "path": "/baz", "value": "qux"}], {"baz": "qux", "foo": "bar"}),
    (
        {"foo": ["bar", "baz"]},
        [{"op": "add", "path": "/foo/1", "value": "qux"}],
        {"foo": ["bar", "qux", "baz"]},
    ),
    ({"baz": "qux", "foo": "bar"}, [{"op": "remove", "path": "/baz"}], {"foo": "bar"}),
    ({"foo": ["bar", "qux", "baz"]}, [{"op": "remove", "path": "/foo/1"}], {"foo": ["bar", "baz"]}),
    (
        {"baz": "qux", "foo": "bar"},
        [{"op": "replace", "path": "/baz", "value": "boo"}],
        {"baz": "boo", "foo": "bar"},
    ),
    (
        {"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}},
        [{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}],
        {"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}},
    ),
    (
        {"foo": ["all", "grass", "cows", "eat"]},
        [{"op": "move", "from": "/foo/1", "path": "/foo/3"}],
        {"foo": ["all", "cows", "eat", "grass"]},
    ),
    (
        {"foo": "bar"},
        [{"op": "add", "path": "/child", "value": {"grandchild": {}}}],
        {"foo": "bar", "child": {"grandchild": {}}},
    ),
    (
        {"foo": ["bar"]},
        [{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}],
        {"foo": ["bar", ["abc", "def"]]},
    ),
    ({"foo": "bar"}, [{"op": "copy", "from": "/foo", "path": "/baz"}], {"foo": "bar", "baz": "bar"}),
    (
        {"a/b": 1, "m~n": 2},
        [{"op": "replace", "path": "/a~1b", "value": 3}, {"op": "remove", "path": "/m~0n"}],
        {"a/b": 3},
    ),
    (
        {"baz": "qux", "foo": ["a", 2, "c"]},
        [{"op": "test", "path": "/baz", "value": "qux"}, {"op": "test", "path": "/foo/1", "value": 2}],
        {"baz": "qux", "foo": ["a", 2, "c"]},
    ),
    ({"x": 1}, [{"op": "replace", "path": "", "value": [1]}], [1]),
]


@pytest.mark.parametrize(("doc", "patch", "expected"), CASES)
def test_patch_gives_the_rfc_result(doc, patch, expected):
    original = repr(doc)
    assert apply_patch(doc, patch) == expected
    assert repr(doc) == original  # the input is never changed


ERRORS = [
    ({"baz": "qux"}, [{"op": "test", "path": "/baz", "value": "bar"}], "test failed"),
    ({"foo": "bar"}, [{"op": "add", "path": "/baz/bat", "value": "qux"}], "does not exist"),
    ({"foo": "bar"}, [{"op": "remove", "path": "/nope"}], "does not exist"),
    ({"foo": [1]}, [{"op": "add", "path": "/foo/5", "value": 2}], "out of range"),
    ({"foo": [1]}, [{"op": "replace", "path": "/foo/01", "value": 2}], "not an array index"),
    ({"foo": 1}, [{"op": "jump", "path": "/foo"}], "unknown op"),
    ({"foo": 1}, [{"op": "add", "path": "/bar"}], "needs a 'value'"),
    ({"foo": {"a": 1}}, [{"op": "move", "from": "/foo", "path": "/foo/a/b"}], "its own child"),
    ({"foo": 1}, [{"path": "/foo"}], "expected an object"),
    ({"foo": True}, [{"op": "test", "path": "/foo", "value": 1}], "test failed"),
    ({"foo": 1}, "not a list", "expected a list"),
]


@pytest.mark.parametrize(("doc", "patch", "message"), ERRORS)
def test_bad_patch_names_the_operation(doc, patch, message):
    with pytest.raises(PatchError) as err:
        apply_patch(doc, patch, where="rule")
    assert message in str(err.value)
    assert str(err.value).startswith("rule")


def test_failed_patch_changes_nothing():
    doc = {"a": 1}
    with pytest.raises(PatchError):
        apply_patch(doc, [{"op": "add", "path": "/b", "value": 2}, {"op": "remove", "path": "/zzz"}])
    assert doc == {"a": 1}


@pytest.mark.parametrize(
    ("pointer", "tokens"), [("", []), ("/a/b", ["a", "b"]), ("/~01", ["~1"]), ("/", [""])]
)
def test_json_pointer_tokens(pointer, tokens):
    assert parse_pointer(pointer) == tokens


def test_resolve_reads_nested_values():
    assert resolve({"a": [{"b": 5}]}, "/a/0/b") == 5
    with pytest.raises(PatchError):
        parse_pointer("a/b")
