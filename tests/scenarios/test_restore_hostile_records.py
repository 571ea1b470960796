"""Restoring crafted snapshot records (the record itself, not its trees): a root tree that is missing, no
blob ID, unknown or a data blob; root metadata no file system takes; fields of the wrong type. Each
restore, as root in the sandbox of tests/fixtures/hostile.py, either succeeds or fails on one line with
nothing written, never with a traceback, and never changes anything outside the target."""

from __future__ import annotations

import pytest

from tests.fixtures.hostile import assert_untouched

GOOD = b"good data\n"


def _records(c) -> dict[str, tuple[list | str, dict, bool]]:
    """{case: (root entries or tree ID, record fields, whether the root tree is unusable)}."""
    good = [c.file("good.txt", GOOD), c.dir("d", [c.file("f", GOOD)])]
    root = {"type": "dir", "mode": 0o755, "uid": 0, "gid": 0, "mtime_ns": 10**18, "atime_ns": 10**18}
    return {
        "tree-missing": (good, {"tree": None}, True),
        "tree-not-an-id": (good, {"tree": "../../etc"}, True),
        "tree-not-a-string": (good, {"tree": 7}, True),
        "tree-unknown": (good, {"tree": "ab" * 32}, True),
        "tree-is-a-data-blob": (c.blob(b"data, not a tree"), {}, True),
        "tree-is-a-file-of-json": (c.blob(b'{"nodes": [{"name": "../x", "type": "file"}]}'), {}, True),
        "root-missing": (good, {"root": None}, False),
        "root-not-an-object": (good, {"root": "x"}, False),
        "root-mode-huge": (good, {"root": {**root, "mode": 2**40}}, False),
        "root-owner-huge": (good, {"root": {**root, "uid": 2**40, "gid": -7}}, False),
        "root-mtime-huge": (good, {"root": {**root, "mtime_ns": 10**30}}, False),
        "summary-not-an-object": (good, {"summary": [1, 2]}, False),
        "source-type-file": (good, {"source_type": "file"}, False),
        "source-type-unknown": (good, {"source_type": "door"}, False),
    }


def _case_names() -> list[str]:
    class Names:
        def __getattr__(self, _name):
            return lambda *a, **k: {}

    return list(_records(Names()))


@pytest.fixture(scope="module")
def crafted(hostile_repo):
    with hostile_repo.crafter() as c:
        return {
            name: (c.snapshot(entries, name, **fields), unusable)
            for name, (entries, fields, unusable) in _records(c).items()
        }


@pytest.mark.parametrize("case", _case_names())
def test_a_crafted_snapshot_record_fails_on_one_line_or_restores_nothing_outside(hostile_repo, crafted, case):
    snap, unusable = crafted[case]

    # GIVEN a snapshot record with a crafted field, WHEN it is restored into an empty target
    report = hostile_repo.sandbox.run(["--snapshot", snap])

    # THEN it fails on one line with nothing written (always when its root tree is unusable), or it is
    # restored; never a traceback, nothing outside the target changed
    run = report.last
    assert "Traceback" not in run.output, run.show()
    assert not report.outside_changes(run), report.outside_changes(run)
    if unusable or run.rc != 0:
        assert run.rc not in (0, None) and len(run.error_lines) == 1, run.show()
        assert_untouched(report, run)
    else:
        assert report.target_entries(run)["good.txt"]["size"] == len(GOOD)
