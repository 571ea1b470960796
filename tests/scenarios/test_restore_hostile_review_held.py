"""Crafted snapshots the restore handles as the threat model says (kept as regressions): hard-link
groups split by --include / --exclude or landing on a hard link to a file outside, a non-empty lost+found
under --delete, a file snapshot whose tree holds more than its file, socket entries, --include patterns
with special characters. Restores run as root in the sandbox of tests/fixtures/hostile.py."""

from __future__ import annotations

import sys

import pytest

from tests.fixtures.hostile import TARGET

GOOD = b"good data\n"
LINKED = b"linked content\n"


@pytest.fixture(scope="module")
def crafted(hostile_repo):
    out = {}
    with hostile_repo.crafter() as c:
        first = c.file("first", LINKED, nlink=2, inode=777, dev=1)
        second = c.file("second", LINKED, nlink=2, inode=777, dev=1)
        out["hardlink-split"] = c.snapshot([c.dir("a", [first]), c.dir("b", [second])], "hardlink-split")
        out["file-with-more"] = c.snapshot(
            [c.dir("d", [c.file("x", GOOD)]), c.symlink("l", "/outside/victim"), c.file("disk.img", GOOD)],
            "file-with-more",
            source_type="file",
        )
        out["socket"] = c.snapshot([c._node("socket", "sock", {}), c.file("good.txt", GOOD)], "socket")
        out["plain"] = c.snapshot([c.file("good.txt", GOOD), c.dir("[x]", [c.file("*", GOOD)])], "plain")
    return out


@pytest.mark.parametrize(
    "args",
    [[], ["--include", "b"], ["--include", "a"], ["--exclude", "a"], ["--exclude", "first"]],
    ids=["all", "include-b", "include-a", "exclude-a", "exclude-first"],
)
def test_a_hard_link_group_split_by_the_selection_restores_each_chosen_name(hostile_repo, crafted, args):
    report = hostile_repo.sandbox.run(["--snapshot", crafted["hardlink-split"], *args])
    run = report.last
    assert run.rc == 0 and not report.outside_changes(run), run.show()
    entries = report.target_entries(run)
    for path in ("a/first", "b/second"):
        chosen = not (
            (args == ["--include", "b"] and path.startswith("a"))
            or (args == ["--include", "a"] and path.startswith("b"))
            or (args == ["--exclude", "a"] and path.startswith("a"))
            or (args == ["--exclude", "first"] and path == "a/first")
        )
        assert (path in entries) == chosen, (path, sorted(entries))
        if chosen:
            assert entries[path]["size"] == len(LINKED)
    if not args:
        assert entries["a/first"]["ino"] == entries["b/second"]["ino"]


@pytest.mark.parametrize("mode", ["always", "if-changed"])
def test_a_hard_link_group_replaces_a_hard_link_to_a_file_outside(hostile_repo, crafted, mode):
    # GIVEN the target holds both names of the group as hard links to the victim outside
    setup = [["dir", "a"], ["dir", "b"], ["hardlink", "a/first", "outside/victim"]]
    setup += [["hardlink", "b/second", "outside/victim"]]
    report = hostile_repo.sandbox.run(
        ["--snapshot", crafted["hardlink-split"], "--overwrite", mode], setup=setup
    )
    run = report.last
    # THEN the victim is untouched (its link count drops, nothing else) and the names hold the snapshot
    changed = [c for c in report.outside_changes(run) if "nlink" not in c]
    assert run.rc == 0 and not changed, (changed, run.show())
    entries = report.target_entries(run)
    assert entries["a/first"]["size"] == entries["b/second"]["size"] == len(LINKED), run.show()


def test_delete_keeps_a_non_empty_lost_and_found(hostile_repo, crafted):
    setup = [["dir", "lost+found"], ["file", "lost+found/#12", "orphan"], ["file", "extra", "x"]]
    report = hostile_repo.sandbox.run(["--snapshot", crafted["plain"], "--delete"], setup=setup)
    run = report.last
    entries = report.target_entries(run)
    assert run.rc == 0 and not report.outside_changes(run), run.show()
    assert "lost+found/#12" in entries and "extra" not in entries, sorted(entries)


def test_a_file_snapshot_whose_tree_holds_more_writes_only_its_file(hostile_repo, crafted):
    sb = hostile_repo.sandbox
    argv = [
        sys.executable,
        "-m",
        "steps",
        "restore",
        "--repo",
        sb.repo_url,
        "--snapshot",
        str(crafted["file-with-more"]),
    ]
    argv += ["--target", f"{sb.root}/{TARGET}/disk.img", "--overwrite", "always"]
    report = sb.drive([{"argv": argv}], setup=[["file", "disk.img", "old content"]])
    run = report.last
    assert run.rc == 0 and not report.outside_changes(run), run.show()
    assert sorted(report.target_entries(run)) == ["disk.img"]
    assert report.target_entries(run)["disk.img"]["size"] == len(GOOD)


@pytest.mark.parametrize("setup", [[], [["file", "sock", "existing"]]], ids=["empty", "in-the-way"])
def test_a_socket_entry_is_listed_not_restored(hostile_repo, crafted, setup):
    args = ["--snapshot", crafted["socket"]] + (["--overwrite", "always"] if setup else [])
    report = hostile_repo.sandbox.run(args, setup=setup)
    run = report.last
    assert run.rc == 0 and not report.outside_changes(run), run.show()
    assert "sock" in run.stderr and "Traceback" not in run.output
    assert report.target_entries(run)["good.txt"]["size"] == len(GOOD)


@pytest.mark.parametrize("pattern", ["[", "[x]", "\\", "**", "/", "", "*/*", "[[]x]/[*]", "../outside"])
def test_include_patterns_with_special_characters_restore_inside_only(hostile_repo, crafted, pattern):
    report = hostile_repo.sandbox.run(["--snapshot", crafted["plain"], "--include", pattern])
    run = report.last
    assert "Traceback" not in run.output and "unexpected" not in run.output, run.show()
    assert not report.outside_changes(run), run.show()
    assert run.rc == 0 or len(run.error_lines) == 1, run.show()
