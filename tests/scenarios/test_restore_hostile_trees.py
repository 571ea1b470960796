"""Restoring crafted snapshots whose trees break the tree rules: names that are paths (``../escape``,
``/etc/cron.d/job``, ``.``, ``..``, empty, with ``/`` or NUL), duplicated names, one name with two types,
files whose size disagrees with their blobs, holes out of order, overlapping or past the size, unknown
types and trees that are no trees. Each is restored as root in the sandbox of tests/fixtures/hostile.py:

- without options: exit 1, one error line, nothing written (the target is as it was, even a non-empty
  one with --overwrite always), nothing outside the target changed;
- with --skip-damaged: exit 3, the damaged directory (or file) listed and left out, the rest restored,
  still nothing outside the target changed.

Each case is crafted twice: among the root entries of the snapshot and inside a subdirectory ``sub``.
One repository for the module, one snapshot per case and placement."""

from __future__ import annotations

import pytest

from tests.fixtures.hostile import assert_one_line_error, assert_untouched

EXIT_DAMAGED = 1  # an invalid tree fails the restore: nothing written
EXIT_SKIPPED = 3  # --skip-damaged: the rest restored, the damage listed

GOOD = b"good data\n"
OK = b"a valid sibling\n"


def _tree_cases(c, sandbox) -> dict[str, list[dict] | bytes]:
    """Hostile entries that make their whole tree invalid (or raw bytes for the tree itself)."""
    outside = str(sandbox.outside)
    payload = b"written by a crafted snapshot\n"
    return {
        "escape": [c.file("../escape", payload)],
        "escape-deeper": [c.file("../../outside/victim", payload)],
        "absolute-etc": [c.file("/etc/cron.d/job", b"* * * * * root touch /pwned\n")],
        "absolute-sandbox": [c.file(f"{outside}/created", payload)],
        "dot": [c.file(".", payload)],
        "dotdot": [c.file("..", payload)],
        "dotdot-dir": [c.dir("..", [c.file("escape", payload)])],
        "empty-name": [c.file("", payload)],
        "slash": [c.file("a/b", payload)],
        "trailing-slash": [c.dir("d/", [c.file("x", payload)])],
        "nul": [c.file("a\0b", payload)],
        "too-long": [c.file("n" * 256, payload)],
        "unencodable": [c.file("\ud800", payload)],
        "duplicate": [c.file("dup", b"first\n"), c.file("dup", b"second\n")],
        # "\udcc3\udcbf" spells the bytes of "ÿ" (c3 bf) another way: the same name on disk
        "duplicate-on-disk": [c.file("\u00ff", b"first\n"), c.dir("\udcc3\udcbf", [c.file("f", payload)])],
        "two-types": [c.symlink("link", outside), c.dir("link", [c.file("file", payload)])],
        "two-types-file-after-link": [c.symlink("x", f"{outside}/victim"), c.file("x", payload)],
        "two-types-hard-link-after-link": [
            c.symlink("x", f"{outside}/victim"),
            c.file("x", payload, nlink=2, inode=9002),
        ],
        "symlink-then-slash": [c.symlink("link", outside), c.file("link/file", payload)],
        "hardlink-absolute-first": [
            c.file(f"{outside}/victim", payload, nlink=2, inode=9001),
            c.file("b", payload, nlink=2, inode=9001),
        ],
        "holes-out-of-order": [c.file("h", b"x" * 10, size=30, holes=[[20, 10], [0, 10]])],
        "holes-overlapping": [c.file("h", b"x" * 5, size=20, holes=[[0, 10], [5, 10]])],
        "hole-past-size": [c.file("h", b"x" * 10, size=20, holes=[[10, 20]])],
        "hole-negative": [c.file("h", b"x" * 10, size=20, holes=[[-10, 20]])],
        "size-negative": [c.file("f", payload, size=-1)],
        "size-not-int": [c.file("f", payload, size="12")],
        "content-not-ids": [c.file("f", payload, content=["../../etc/passwd"])],
        "subtree-not-id": [c.dir("d", "../" * 3)],
        "unknown-type": [c.file("door", payload, type="door")],
        "symlink-target-nul": [c.symlink("s", "a\0b")],
        "name-not-string": b'{"nodes":[{"name":7,"type":"file","size":0}]}',
        "not-json": b"\x00\xffnot a tree",
        "nodes-not-list": b'{"nodes":{"name":"x"}}',
        "json-nested-deep": b'{"nodes":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    }


def _file_cases(c) -> dict[str, list[dict]]:
    """Hostile files in an otherwise valid tree: only the file is damage."""
    return {
        "size-larger-than-blobs": [c.file("f", b"x" * 10, size=100)],
        "size-smaller-than-blobs": [c.file("f", b"x" * 10, size=3)],
        "size-without-content": [c.file("f", size=50)],
        "size-with-holes-short": [c.file("f", b"x" * 10, size=40, holes=[[10, 20]])],
        "content-blob-missing": [c.file("f", size=10, content=["ab" * 32])],
    }


@pytest.fixture(scope="module")
def crafted(hostile_repo):
    """{(case, placement): (snapshot, damaged path with --skip-damaged, paths restored with it)}."""
    out = {}
    with hostile_repo.crafter() as c:
        good = c.file("good.txt", GOOD)
        ok = c.file("ok.txt", OK)
        tree_cases = _tree_cases(c, hostile_repo.sandbox)
        for name, entries in {**tree_cases, **_file_cases(c)}.items():
            raw = isinstance(entries, bytes)
            file_level = name not in tree_cases
            root = entries if raw else [good, *entries]
            out[(name, "root")] = (
                c.snapshot(root, f"{name}-root"),
                entries[0]["name"] if file_level else "",
                {"good.txt"} if file_level else set(),
            )
            sub = entries if raw else [ok, *entries]
            out[(name, "sub")] = (
                c.snapshot([good, c.dir("sub", sub)], f"{name}-sub"),
                f"sub/{entries[0]['name']}" if file_level else "sub",
                {"good.txt", "sub", "sub/ok.txt"} if file_level else {"good.txt", "sub"},
            )
    return out


def _case_names() -> list[str]:
    class Names:
        def file(self, name, *a, **k):
            return {"name": name}

        dir = symlink = file

    return [*_tree_cases(Names(), type("S", (), {"outside": "/o"})), *_file_cases(Names())]


# The rows of the table of past escapes, and the trees that are no trees, are also crafted as the root.
ROOT_CASES = [
    "escape",
    "symlink-then-slash",
    "two-types-hard-link-after-link",
    "escape-deeper",
    "absolute-etc",
    "absolute-sandbox",
    "dot",
    "dotdot",
    "two-types",
    "hardlink-absolute-first",
    "not-json",
    "size-larger-than-blobs",
]
PLACED = [(case, "sub") for case in _case_names()] + [(case, "root") for case in ROOT_CASES]

EXTREME_GAPS: dict = {}


@pytest.mark.parametrize(("case", "placement"), PLACED)
def test_a_damaged_snapshot_is_refused_whole_or_restored_without_its_damage(
    hostile_repo, crafted, case, placement
):
    snap, damaged, kept = crafted[(case, placement)]

    # GIVEN an empty target, WHEN the crafted snapshot is restored without options, then with --skip-damaged
    report = hostile_repo.sandbox.run(["--snapshot", snap], ["--snapshot", snap, "--skip-damaged"])

    # THEN the first fails on one line naming the damage, with nothing written anywhere
    refused, skipped = report.runs
    assert_one_line_error(refused, EXIT_DAMAGED, "damaged", "nothing was written")
    assert_untouched(report, refused)

    # AND the second exits 3 listing the damaged directory or file, which is left out; the rest is there
    assert_one_line_error(skipped, EXIT_SKIPPED, "damaged")
    assert f"skipped damaged /{damaged}" in skipped.stderr, skipped.show()
    assert not report.outside_changes(skipped), report.outside_changes(skipped)
    entries = report.target_entries(skipped)
    assert set(entries) - {"sub"} == kept - {"sub"}, skipped.show()  # (an empty "sub" may stay)
    if "good.txt" in kept:
        assert (entries["good.txt"]["type"], entries["good.txt"]["size"]) == ("file", len(GOOD))


@pytest.mark.parametrize("case", ["dot", "dotdot", "dotdot-dir", "two-types"])
def test_a_damaged_snapshot_leaves_a_non_empty_target_as_it_was(hostile_repo, crafted, case):
    snap, _damaged, _kept = crafted[(case, "root")]
    setup = [
        ["file", "existing.txt", "kept\n"],
        ["dir", "existing-dir"],
        ["file", "existing-dir/inner", "in\n"],
    ]

    # GIVEN a target holding data, WHEN the crafted snapshot is restored over it with --overwrite always
    report = hostile_repo.sandbox.run(["--snapshot", snap, "--overwrite", "always"], setup=setup)

    # THEN nothing in it (nor around it) was removed or replaced
    assert_one_line_error(report.last, EXIT_DAMAGED, "damaged")
    assert_untouched(report, report.last)


def _extreme_fields(c, outside: str) -> dict[str, list[dict]]:
    """Entries whose every field has the right type but a value no file system takes."""
    return {
        "mode-negative": [c.file("f", OK, mode=-1)],
        "mode-huge": [c.file("f", OK, mode=2**40)],
        "dir-mode-huge": [c.dir("d", [c.file("f", OK)], mode=2**40)],
        "uid-huge": [c.file("f", OK, uid=2**40, gid=2**40)],
        "uid-negative": [c.file("f", OK, uid=-5, gid=-5)],
        "symlink-owner-huge": [c.symlink("s", outside, uid=2**40)],
        "mtime-huge": [c.file("f", OK, mtime_ns=10**30, atime_ns=10**30)],
        "mtime-negative-huge": [c.file("f", OK, mtime_ns=-(10**30))],
        "dir-mtime-huge": [c.dir("d", [], mtime_ns=10**30)],
        "symlink-mtime-huge": [c.symlink("s", outside, mtime_ns=10**30)],
        "size-past-any-file-system": [c.file("f", size=2**63, holes=[[0, 2**63]])],
        "size-past-off-t": [c.file("f", size=2**64, holes=[[0, 2**64]])],
        "symlink-target-empty": [c.symlink("s", "")],
        "symlink-target-missing": [c._node("symlink", "s", {})],
        "symlink-target-too-long": [c.symlink("s", "t" * 5000)],
        "fifo-mode-huge": [c.fifo("p", mode=2**40)],
        "chardev-rdev-huge": [c._node("chardev", "dev", {"rdev": 2**70})],
        "socket": [c._node("socket", "sock", {})],
        "inode-huge-hard-links": [
            c.file("a", OK, nlink=2**70, inode=2**70, dev=-1),
            c.file("b", OK, nlink=2**70, inode=2**70, dev=-1),
        ],
    }


def _extreme_names() -> list[str]:
    class Names:
        def __getattr__(self, _name):
            return lambda *a, **k: {}

    return list(_extreme_fields(Names(), "/o"))


@pytest.fixture(scope="module")
def extreme(hostile_repo):
    with hostile_repo.crafter() as c:
        good = c.file("good.txt", GOOD)
        cases = _extreme_fields(c, str(hostile_repo.sandbox.outside))
        return {name: c.snapshot([good, c.dir("sub", entries)], name) for name, entries in cases.items()}


@pytest.mark.parametrize("case", _extreme_names())
def test_values_no_file_system_takes_fail_on_one_line_or_restore_nothing_outside(hostile_repo, extreme, case):
    # GIVEN an entry whose mode, owner, time, size, link target or device number no file system takes
    # WHEN the snapshot is restored
    report = hostile_repo.sandbox.run(["--snapshot", extreme[case]])

    # THEN either it is restored (the value clamped or left out, with a warning) or the restore fails on
    # one line, never with a traceback; a refusal writes nothing; nothing outside changes either way
    run = report.last
    assert "Traceback" not in run.output, run.show()
    assert run.rc in (0, EXIT_DAMAGED), run.show()
    assert not report.outside_changes(run), report.outside_changes(run)
    if run.rc:
        assert len(run.error_lines) == 1, run.show()
        assert_untouched(report, run)
    else:
        assert report.target_entries(run)["good.txt"]["size"] == len(GOOD)


@pytest.fixture(scope="module")
def newline_names(hostile_repo):
    evil = "evil\nerror: everything is fine"
    with hostile_repo.crafter() as c:
        good = c.file("good.txt", GOOD)
        return {
            "tree": c.snapshot([good, c.dir(evil, [c.dir("d\nx", [c.file("..", b"x")])])], "newline-tree"),
            "file": c.snapshot(
                [good, c.dir(evil, [c.file("f\nwarning: fake", b"x", size=99)])], "newline-file"
            ),
        }


@pytest.mark.parametrize(
    ("kind", "skip"),
    [("tree", False), ("file", False), ("tree", True), ("file", True)],
    ids=["tree-refused", "file-refused", "tree-skip-damaged", "file-skip-damaged"],
)
def test_names_from_the_snapshot_never_split_a_message_line(hostile_repo, newline_names, kind, skip):
    # GIVEN damage below directories (or in a file) whose names hold newlines and text that looks
    # like a message of its own
    # WHEN the snapshot is restored, refused or with --skip-damaged
    report = hostile_repo.sandbox.run(
        ["--snapshot", newline_names[kind], *(["--skip-damaged"] if skip else [])]
    )

    # THEN every message is one line: the names are shown escaped, never with a raw newline
    run = report.last
    assert_one_line_error(run, EXIT_SKIPPED if skip else EXIT_DAMAGED, "damaged")
    assert "everything is fine" in run.stderr, run.show()  # named, but escaped:
    for line in run.stderr.splitlines():
        assert line.startswith(("error:", "warning:", "restore:", "restored ")), (
            f"a line of its own: {line!r}"
        )
    assert not report.outside_changes(run)
