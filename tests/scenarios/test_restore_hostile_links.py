"""Restoring valid but hostile snapshots: symlinks that point outside the target (absolute, ``../..``)
and later entries that would be written through them, hard links, and targets that already hold
entries (symlinks, hard links to files outside, a lost+found). A symlink's target may point anywhere —
it is restored as a symlink — but nothing is ever written, truncated, chmod-ed or removed through it,
and a hard link is made only to a file the restore wrote inside the target.

The "later snapshot" attacks restore snapshot A, then snapshot B into the same target with each of
--overwrite always, if-changed, never and --delete. Restores run as root in the sandbox of
tests/fixtures/hostile.py, which describes everything around the target before and after."""

from __future__ import annotations

import hashlib

import pytest

from tests.fixtures.hostile import assert_one_line_error, assert_untouched

PAYLOAD = b"written by a crafted snapshot\n"
SHA = hashlib.sha256(PAYLOAD).hexdigest()
SAME_SIZE = b"13 bytes now\n"  # as long as the canary outside/victim-dir/file


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# (snapshot A, snapshot B, {path: type or (type, symlink target / content sha) after B replaced A})
def _pairs(c, outside: str) -> dict[str, tuple[list, list, dict]]:
    return {
        "dir-through-symlink": (
            [c.symlink("link", outside)],
            [c.dir("link", [c.file("file", PAYLOAD)])],
            {"link": "dir", "link/file": ("file", SHA)},
        ),
        "file-over-symlink-to-victim": (
            [c.symlink("x", f"{outside}/victim")],
            [c.file("x", PAYLOAD)],
            {"x": ("file", SHA)},
        ),
        "deeper-symlink": (
            [c.dir("d", [c.symlink("e", outside)])],
            [c.dir("d", [c.dir("e", [c.file("f", PAYLOAD)])])],
            {"d": "dir", "d/e": "dir", "d/e/f": ("file", SHA)},
        ),
        "same-names-as-outside": (
            [c.symlink("sub", outside)],
            [c.dir("sub", [c.file("victim", PAYLOAD), c.dir("victim-dir", [c.file("file", PAYLOAD)])])],
            {
                "sub": "dir",
                "sub/victim": ("file", SHA),
                "sub/victim-dir": "dir",
                "sub/victim-dir/file": ("file", SHA),
            },
        ),
        "relative-symlink-up": (
            [c.symlink("up", "../../outside")],
            [c.dir("up", [c.file("victim", PAYLOAD)])],
            {"up": "dir", "up/victim": ("file", SHA)},
        ),
        "dir-metadata-through-symlink": (
            [c.symlink("d", outside)],
            [c.dir("d", mode=0o777, uid=0, gid=0, mtime_ns=5 * 10**18)],
            {"d": "dir"},
        ),
        "symlink-over-symlink": (
            [c.symlink("x", f"{outside}/victim-dir")],
            [c.symlink("x", "somewhere-else")],
            {"x": ("symlink", "somewhere-else")},
        ),
        "fifo-over-symlink": (
            [c.symlink("x", f"{outside}/victim")],
            [c.fifo("x")],
            {"x": "fifo"},
        ),
        "hard-links-over-symlinks": (
            [c.symlink("a", f"{outside}/victim"), c.symlink("b", f"{outside}/victim")],
            [c.file("a", PAYLOAD, nlink=2, inode=4242), c.file("b", PAYLOAD, nlink=2, inode=4242)],
            {"a": ("file", SHA), "b": ("file", SHA)},
        ),
    }


def _pair_names() -> list[str]:
    class Names:
        def __getattr__(self, _name):
            return lambda *a, **k: {}

    return list(_pairs(Names(), "/o"))


@pytest.fixture(scope="module")
def crafted(hostile_repo):
    outside = str(hostile_repo.sandbox.outside)
    out = {}
    with hostile_repo.crafter() as c:
        for name, (a, b, expected) in _pairs(c, outside).items():
            out[name] = (c.snapshot(a, f"{name}-a"), c.snapshot(b, f"{name}-b"), expected)
        out["symlinks"] = c.snapshot(
            [
                c.symlink("absolute", outside),
                c.symlink("up", "../.."),
                c.symlink("victim", f"{outside}/victim"),
                c.symlink("loop", "loop"),
                c.symlink("etc", "/etc/cron.d"),
                c.file("good.txt", PAYLOAD),
                c.dir("d", [c.symlink("far-up", "../../../.."), c.file("file", PAYLOAD)]),
            ],
            "symlinks",
        )
        shared = b"shared by a hard-link group\n"
        out["hardlink-excluded-first"] = c.snapshot(
            [
                c.dir("a-excluded", [c.file("first", shared, nlink=2, inode=500)]),
                c.file("z-link", shared, nlink=2, inode=500),
            ],
            "hardlink-excluded-first",
        )
        out["hardlink-damaged-first"] = c.snapshot(
            [
                c.dir(
                    "a-damaged", [c.file("first", shared, nlink=2, inode=600), c.file("../escape", PAYLOAD)]
                ),
                c.file("z-link", shared, nlink=2, inode=600),
            ],
            "hardlink-damaged-first",
        )
        out["hardlink-kept"] = c.snapshot(
            [c.file("a", SAME_SIZE, nlink=2, inode=710), c.file("b", SAME_SIZE, nlink=2, inode=710)],
            "hardlink-kept",
        )
        out["plain"] = c.snapshot([c.file("x", PAYLOAD), c.dir("sub", [c.file("inner", PAYLOAD)])], "plain")
        out["small"] = c.snapshot([c.file("good.txt", PAYLOAD)], "small")
    return out


def _shape(entries: dict[str, dict]) -> dict[str, str | tuple]:
    """{path: type, or (type, content hash / symlink target)} comparable with the expectations."""
    out = {}
    for rel, e in entries.items():
        if e["type"] == "file":
            out[rel] = ("file", e["sha256"])
        elif e["type"] == "symlink":
            out[rel] = ("symlink", e["target"])
        else:
            out[rel] = e["type"]
    return out


def test_symlinks_pointing_outside_are_restored_as_symlinks_and_never_followed(hostile_repo, crafted):
    outside = str(hostile_repo.sandbox.outside)

    # GIVEN a snapshot of symlinks to absolute paths outside, up the tree, to themselves, to the machine
    # WHEN it is restored into an empty target
    report = hostile_repo.sandbox.run(["--snapshot", crafted["symlinks"]])

    # THEN each is a symlink with exactly its recorded target, and nothing around the target changed
    run = report.last
    assert run.rc == 0, run.show()
    assert _shape(report.target_entries()) == {
        "absolute": ("symlink", outside),
        "up": ("symlink", "../.."),
        "victim": ("symlink", f"{outside}/victim"),
        "loop": ("symlink", "loop"),
        "etc": ("symlink", "/etc/cron.d"),
        "good.txt": ("file", SHA),
        "d": "dir",
        "d/far-up": ("symlink", "../../../.."),
        "d/file": ("file", SHA),
    }
    assert not report.outside_changes(), report.outside_changes()


@pytest.mark.parametrize("mode", [["--overwrite", "always"], ["--overwrite", "if-changed"], ["--delete"]])
@pytest.mark.parametrize("pair", _pair_names())
def test_a_later_snapshot_replaces_the_symlinks_of_an_earlier_one_instead_of_following_them(
    hostile_repo, crafted, pair, mode
):
    snap_a, snap_b, expected = crafted[pair]

    # GIVEN snapshot A (symlinks to the outside) restored into the target
    # WHEN snapshot B, whose entries have the same names, is restored into the same target
    report = hostile_repo.sandbox.run(["--snapshot", snap_a], ["--snapshot", snap_b, *mode])

    # THEN B's entries replaced A's symlinks in the target, and nothing outside it changed
    first, second = report.runs
    assert first.rc == 0, first.show()
    assert not report.outside_changes(first), report.outside_changes(first)
    assert second.rc == 0, second.show()
    assert "Traceback" not in second.output
    assert not report.outside_changes(second), report.outside_changes(second)
    assert _shape(report.target_entries(second)) == expected, second.show()
    if pair == "hard-links-over-symlinks":
        entries = report.target_entries(second)
        assert entries["a"]["ino"] == entries["b"]["ino"] and entries["a"]["nlink"] == 2


@pytest.mark.parametrize("pair", _pair_names())
def test_overwrite_never_keeps_the_symlinks_and_writes_nothing_through_them(hostile_repo, crafted, pair):
    snap_a, snap_b, _expected_b = crafted[pair]

    # GIVEN snapshot A restored, WHEN snapshot B is restored over it with --overwrite never
    report = hostile_repo.sandbox.run(["--snapshot", snap_a], ["--snapshot", snap_b, "--overwrite", "never"])

    # THEN what A put there stays as it was (nothing below a kept symlink), and nothing outside changed
    first, second = report.runs
    assert first.rc == 0 and second.rc == 0, first.show() + second.show()
    assert "Traceback" not in second.output
    assert not report.outside_changes(second), report.outside_changes(second)
    after_a = {rel: e for rel, e in report.target_entries(first).items() if e["type"] == "symlink"}
    after_b = report.target_entries(second)
    assert {rel: after_b.get(rel) for rel in after_a} == after_a, second.show()


@pytest.mark.parametrize("mode", [["--overwrite", "always"], ["--overwrite", "if-changed"], ["--delete"]])
def test_a_file_hard_linked_to_one_outside_is_replaced_not_written_into(hostile_repo, crafted, mode):
    # GIVEN a target whose x is a hard link to a file outside it (same file system)
    setup = [
        ["hardlink", "x", "outside/victim"],
        ["dir", "sub"],
        ["hardlink", "sub/inner", "outside/victim-dir/file"],
    ]

    # WHEN a snapshot holding x and sub/inner is restored over it
    report = hostile_repo.sandbox.run(["--snapshot", crafted["plain"], *mode], setup=setup)

    # THEN the files outside kept their content, mode, owner and times; the target has the new content
    run = report.last
    assert run.rc == 0, run.show()
    assert not report.outside_changes(run), report.outside_changes(run)
    entries = report.target_entries(run)
    assert _shape(entries) == {"x": ("file", SHA), "sub": "dir", "sub/inner": ("file", SHA)}
    assert entries["x"]["ino"] != report.target_before["x"]["ino"]


@pytest.mark.parametrize("mode", [["--overwrite", "always"], ["--overwrite", "if-changed"], ["--delete"]])
def test_symlinks_already_in_the_target_are_replaced_or_deleted_never_followed(hostile_repo, crafted, mode):
    outside = str(hostile_repo.sandbox.outside)
    # GIVEN a target holding symlinks to the outside where the snapshot has a file, a directory, and
    # one that the snapshot does not have at all
    setup = [
        ["symlink", "x", f"{outside}/victim"],
        ["symlink", "sub", f"{outside}/victim-dir"],
        ["symlink", "extra", outside],
        ["dir", "extra-dir"],
        ["symlink", "extra-dir/link", outside],
    ]

    # WHEN the snapshot is restored over it
    report = hostile_repo.sandbox.run(["--snapshot", crafted["plain"], *mode], setup=setup)

    # THEN the symlinks in the way became the snapshot's entries, --delete removed the others (the
    # symlinks themselves), and nothing outside changed
    run = report.last
    assert run.rc == 0, run.show()
    assert not report.outside_changes(run), report.outside_changes(run)
    shape = _shape(report.target_entries(run))
    assert {k: shape[k] for k in ("x", "sub", "sub/inner")} == {
        "x": ("file", SHA),
        "sub": "dir",
        "sub/inner": ("file", SHA),
    }
    extras = {k for k in shape if k.startswith("extra")}
    assert extras == (set() if "--delete" in mode else {"extra", "extra-dir", "extra-dir/link"})


@pytest.mark.parametrize("mode", [[], ["--overwrite", "refuse"]], ids=["no-mode", "refuse"])
def test_a_non_empty_target_without_a_mode_is_refused_listing_what_is_there(hostile_repo, crafted, mode):
    # GIVEN a target holding a file, a directory and a file whose name holds a newline
    setup = [
        ["file", "existing.txt", "kept\n"],
        ["dir", "dir"],
        ["file", "dir/inner", "in\n"],
        ["file", "new\nline", "x"],
    ]

    # WHEN a snapshot is restored into it without --overwrite or --delete (or with --overwrite refuse)
    report = hostile_repo.sandbox.run(["--snapshot", crafted["plain"], *mode], setup=setup)

    # THEN it exits 2 on one line naming what is there; nothing was written
    line = assert_one_line_error(report.last, 2, "not empty", "existing.txt", "dir")
    assert "--overwrite" in line
    assert "new\nline" not in report.last.stderr, "a name from the disk split the one-line error"
    assert_untouched(report, report.last)


@pytest.mark.parametrize(
    ("setup", "allowed"),
    [
        ([["dir", "lost+found"]], True),
        ([["dir", "lost+found"], ["file", "lost+found/#1234", "orphan"]], False),
        ([["symlink", "lost+found", "/tmp"]], False),
        ([["file", "lost+found", "not a directory"]], False),
    ],
    ids=["empty-dir", "non-empty", "symlink", "file"],
)
def test_only_an_empty_lost_and_found_directory_is_no_conflict(hostile_repo, crafted, setup, allowed):
    # GIVEN a target holding only a lost+found, WHEN a snapshot is restored into it without a mode
    report = hostile_repo.sandbox.run(["--snapshot", crafted["small"]], setup=setup)

    # THEN an empty lost+found directory lets it through (and stays); anything else is a conflict
    run = report.last
    if allowed:
        assert run.rc == 0, run.show()
        assert set(report.target_entries()) == {"lost+found", "good.txt"}
        assert not report.outside_changes()
    else:
        assert_one_line_error(run, 2, "lost+found")
        assert_untouched(report, run)


def test_a_hard_link_group_whose_first_name_is_excluded_is_written_as_a_file(hostile_repo, crafted):
    # GIVEN a hard-link group whose first name lies in a directory the restore excludes
    # WHEN it is restored
    report = hostile_repo.sandbox.run(
        ["--snapshot", crafted["hardlink-excluded-first"], "--exclude", "a-excluded"]
    )

    # THEN the other name is a whole file of its own
    run = report.last
    assert run.rc == 0, run.show()
    entries = report.target_entries(run)
    assert set(entries) == {"z-link"}
    assert entries["z-link"]["sha256"] == _sha(b"shared by a hard-link group\n")
    assert entries["z-link"]["nlink"] == 1
    assert not report.outside_changes()


def test_a_hard_link_group_whose_first_name_is_in_a_damaged_tree_is_written_as_a_file(hostile_repo, crafted):
    # GIVEN a hard-link group whose first name lies in a damaged directory
    # WHEN it is restored with --skip-damaged
    report = hostile_repo.sandbox.run(["--snapshot", crafted["hardlink-damaged-first"], "--skip-damaged"])

    # THEN the damaged directory is skipped and the other name is a whole file of its own
    run = report.last
    assert_one_line_error(run, 3, "damaged")
    assert "skipped damaged /a-damaged" in run.stderr, run.show()
    entries = report.target_entries(run)
    assert set(entries) - {"a-damaged"} == {"z-link"}
    assert entries["z-link"]["sha256"] == _sha(b"shared by a hard-link group\n")
    assert entries["z-link"]["nlink"] == 1
    assert not report.outside_changes()


@pytest.mark.parametrize("mode", ["never", "if-changed"])
def test_no_hard_link_is_made_to_a_file_the_restore_kept(hostile_repo, crafted, mode):
    # GIVEN a target whose "a" is a hard link to a file outside it, with the size and time the
    # snapshot records for its "a" (so if-changed keeps it too)
    setup = [["hardlink", "a", "outside/victim-dir/file"]]
    assert len(SAME_SIZE) == len(b"inner victim\n")

    # WHEN a snapshot whose "a" and "b" are one hard-link group is restored keeping existing files
    report = hostile_repo.sandbox.run(
        ["--snapshot", crafted["hardlink-kept"], "--overwrite", mode], setup=setup
    )

    # THEN "a" stays, and "b" is a file of its own, not a new name of the outside file (only files this
    # restore wrote are linked to)
    run = report.last
    assert run.rc == 0, run.show()
    entries = report.target_entries(run)
    assert entries["a"] == report.target_before["a"]
    assert entries["b"]["ino"] != report.target_before["a"]["ino"], run.show()
    assert entries["b"]["sha256"] == _sha(SAME_SIZE)
    assert not report.outside_changes(run), report.outside_changes(run)
