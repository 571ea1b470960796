"""What a crafted snapshot may expand to: a tree referenced many times (a directory bomb), deep chains and
wide directories are bounded by --max-entries, --max-depth and --max-tree-entries, checked before the
first write; and a snapshot that fills the disk fails on one line. Restores run as root in the sandbox
of tests/fixtures/hostile.py."""

from __future__ import annotations

import os

import pytest

from tests.fixtures.hostile import assert_one_line_error, assert_untouched

EXIT_DAMAGED = 1


def _bomb(c, depth: int) -> str:
    """The tree of a directory bomb: ``depth + 1`` tree blobs, each naming the one below twice; it
    expands to 2**depth files and 2**(depth+1) - 2 directories."""
    tree = c.tree([c.file("f", b"bomb\n")])
    for _ in range(depth):
        tree = c.tree([c.dir("a", tree), c.dir("b", tree)])
    return tree


def _chain(c, depth: int, deepest_has_tree: bool = True) -> list[dict]:
    """``depth`` directories nested in one another (``d/d/d...``)."""
    node = c.dir("d", [] if deepest_has_tree else None)
    for _ in range(depth - 1):
        node = c.dir("d", [node])
    return [node]


@pytest.fixture(scope="module")
def crafted(hostile_repo):
    with hostile_repo.crafter() as c:
        return {
            "bomb-12": c.snapshot(_bomb(c, 12), "bomb-12"),
            "bomb-30": c.snapshot(_bomb(c, 30), "bomb-30"),
            "bomb-24": c.snapshot(_bomb(c, 24), "bomb-24"),
            "chain-10": c.snapshot(_chain(c, 10), "chain-10"),
            "chain-11": c.snapshot(_chain(c, 11), "chain-11"),
            "chain-11-leaf": c.snapshot(_chain(c, 11, deepest_has_tree=False), "chain-11-leaf"),
            "chain-1000": c.snapshot(_chain(c, 1000), "chain-1000"),
            "chain-1001": c.snapshot(_chain(c, 1001), "chain-1001"),
            "wide-300": c.snapshot([c.file(f"f{i:03d}", b"w") for i in range(300)], "wide-300"),
            "big-file": c.snapshot([c.file("big", chunks=[os.urandom(64 * 1024)] * 256)], "big-file"),
        }


def test_a_directory_bomb_is_refused_by_a_small_max_entries_before_anything_is_written(hostile_repo, crafted):
    # GIVEN 13 tree blobs that expand to 4096 files and 8190 directories
    # WHEN the snapshot is restored with --max-entries 1000
    report = hostile_repo.sandbox.run(["--snapshot", crafted["bomb-12"], "--max-entries", "1000"])

    # THEN it is refused on one line naming the limit, with nothing written
    assert_one_line_error(report.last, EXIT_DAMAGED, "--max-entries", "nothing was written")
    assert_untouched(report, report.last)


def test_a_directory_bomb_within_the_default_limits_is_restored_whole(hostile_repo, crafted):
    # GIVEN the same bomb, WHEN it is restored with the default limits (1 billion entries)
    report = hostile_repo.sandbox.run(["--snapshot", crafted["bomb-12"]], timeout=120)

    # THEN every one of its 12286 entries is there, and nothing else
    run = report.last
    assert run.rc == 0, run.show()
    entries = report.target_entries(run)
    kinds = [e["type"] for e in entries.values()]
    assert (kinds.count("file"), kinds.count("dir"), len(entries)) == (4096, 8190, 12286)
    assert not report.outside_changes(run)


def test_a_directory_bomb_past_the_default_limit_is_refused_at_once(hostile_repo, crafted):
    # GIVEN 31 tree blobs that expand to 2**30 files and 2**31 - 2 directories (past 1 billion entries)
    # WHEN the snapshot is restored with the default limits
    report = hostile_repo.sandbox.run(["--snapshot", crafted["bomb-30"]], timeout=30)

    # THEN it is refused on one line naming --max-entries within seconds, with nothing written
    run = report.last
    assert_one_line_error(run, EXIT_DAMAGED, "--max-entries", "nothing was written")
    assert run.seconds < 10, run.show()
    assert_untouched(report, run)


def test_a_directory_bomb_that_fills_the_disk_fails_on_one_line(hostile_repo, crafted):
    # GIVEN 25 tree blobs that expand to 50 million entries (within the default limits) and a file
    # system with room for 3000 inodes
    # WHEN the snapshot is restored with the default limits
    report = hostile_repo.sandbox.drive(
        [{"args": ["--snapshot", str(crafted["bomb-24"])], "timeout": 60}],
        tmpfs="mode=0755,size=64m,nr_inodes=3000",
    )

    # THEN it stops when the disk is full, on one line and without a traceback; nothing outside changed
    run = report.last
    assert run.rc not in (0, None), run.show()
    assert "Traceback" not in run.output, run.show()
    assert len(run.error_lines) == 1, run.show()
    assert not report.outside_changes(run), report.outside_changes(run)


def test_a_file_larger_than_the_disk_fails_on_one_line(hostile_repo, crafted):
    # GIVEN a 16 MiB file made of one 64 KiB blob repeated, and a file system of 4 MiB
    # WHEN the snapshot is restored
    report = hostile_repo.sandbox.drive(
        [{"args": ["--snapshot", str(crafted["big-file"])], "timeout": 60}], tmpfs="mode=0755,size=4m"
    )

    # THEN it fails when the disk is full, on one line and without a traceback
    run = report.last
    assert run.rc not in (0, None), run.show()
    assert "Traceback" not in run.output, run.show()
    assert len(run.error_lines) == 1, run.show()
    assert not report.outside_changes(run), report.outside_changes(run)


@pytest.mark.parametrize(
    ("snap", "limit", "allowed"),
    [("chain-10", 10, True), ("chain-11", 10, False), ("chain-11-leaf", 10, False)],
)
def test_max_depth_bounds_the_nesting_of_directories(hostile_repo, crafted, snap, limit, allowed):
    # GIVEN directories nested 10 or 11 deep, WHEN restored with --max-depth 10
    report = hostile_repo.sandbox.run(["--snapshot", crafted[snap], "--max-depth", str(limit)])

    # THEN 10 levels are restored, 11 refused on one line naming the limit with nothing written
    run = report.last
    if allowed:
        assert run.rc == 0, run.show()
        assert max(rel.count("/") + 1 for rel in report.target_entries(run)) == 10
    else:
        assert_one_line_error(run, EXIT_DAMAGED, "--max-depth", "nothing was written")
        assert_untouched(report, run)


def test_the_default_max_depth_allows_1000_levels_and_refuses_1001(hostile_repo, crafted):
    # GIVEN directories nested 1000 and 1001 deep, WHEN each is restored with the default limits
    report = hostile_repo.sandbox.run(
        ["--snapshot", crafted["chain-1001"]], ["--snapshot", crafted["chain-1000"]]
    )

    # THEN 1001 levels are refused with nothing written, 1000 are restored
    refused, restored = report.runs
    assert_one_line_error(refused, EXIT_DAMAGED, "--max-depth")
    assert_untouched(report, refused)
    assert restored.rc == 0, restored.show()
    assert max(rel.count("/") + 1 for rel in report.target_entries(restored)) == 1000
    assert not report.outside_changes(restored)


@pytest.mark.parametrize(("limit", "allowed"), [(300, True), (299, False)])
def test_max_tree_entries_bounds_one_directory(hostile_repo, crafted, limit, allowed):
    # GIVEN a directory of 300 entries, WHEN restored with --max-tree-entries 300 or 299
    report = hostile_repo.sandbox.run(["--snapshot", crafted["wide-300"], "--max-tree-entries", str(limit)])

    # THEN 300 are allowed, 299 refused on one line naming the limit with nothing written
    run = report.last
    if allowed:
        assert run.rc == 0, run.show()
        assert len(report.target_entries(run)) == 300
    else:
        assert_one_line_error(run, EXIT_DAMAGED, "--max-tree-entries", "nothing was written")
        assert_untouched(report, run)


@pytest.mark.parametrize("flag", ["--max-entries", "--max-depth", "--max-tree-entries"])
@pytest.mark.parametrize("value", ["0", "-1", "many"])
def test_a_limit_that_is_no_positive_number_is_a_usage_error(hostile_repo, crafted, flag, value):
    # WHEN a limit is given as zero, negative or no number
    report = hostile_repo.sandbox.run(["--snapshot", crafted["wide-300"], flag, value])

    # THEN the restore stops with exit 2 naming the flag, before anything is written
    run = report.last
    assert run.rc == 2, run.show()
    assert flag in run.stderr and "Traceback" not in run.output, run.show()
    assert_untouched(report, run)
