"""A tree a hostile (or buggy) writer crafted is repository damage: verify and check fail, in every mode,
naming the snapshot, the tree and the entry; a file whose size is not what its blobs and holes add up to
is damage naming the file; repair index neither crashes on such trees nor changes them.

Trees are crafted with the project's own write path (``tests.fixtures.crafted_trees``), in a local
directory repository, and the commands run as the step image runs them (``python -m steps``).
"""

from __future__ import annotations

import pytest

from steps.drivers.objectstore import LocalStore, MemoryStore
from steps.repository.checker import check_repository, verify
from steps.repository.repo import Repository
from tests.fixtures.crafted_trees import Crafter
from tests.fixtures.prune import TEST_KDF, TEST_PASSWORD, run_steps

ENV = {"SNAPFLOW_PASSWORD": TEST_PASSWORD, "SNAPFLOW_KDF_TEST_N": "1024"}


def _local_repo(tmp_path) -> tuple[Repository, str]:
    path = tmp_path / "repo"
    return Repository.init(LocalStore(path), TEST_PASSWORD, kdf_params=TEST_KDF), f"file://{path}"


def _escape_snapshot(repo: Repository) -> tuple[str, str]:
    """A snapshot whose /etc holds a file named ``../escape``: (snapshot ID, ID of the /etc tree)."""
    c = Crafter(repo)
    etc = c.dir("etc", [c.file("hosts"), c.file("../escape", b"written outside the target\n")])
    sid = c.snapshot([etc, c.file("README")])
    return sid, c.trees["/etc"]


@pytest.mark.parametrize(
    "args",
    [
        ["verify"],
        ["verify", "--read-data", "100"],
        ["verify", "--snapshot", "{sid}"],
        ["verify", "--snapshot", "{sid}", "--read-data", "100"],
        ["check"],
        ["check", "--read-data", "100"],
    ],
    ids=" ".join,
)
def test_a_tree_with_an_entry_named_dot_dot_slash_fails_verify_and_check_naming_snapshot_tree_and_entry(
    tmp_path, args
):
    # GIVEN an intact snapshot and one whose /etc tree has an entry named ../escape
    repo, url = _local_repo(tmp_path)
    good = Crafter(repo).snapshot([Crafter.node("d", "fifo")])
    sid, tree = _escape_snapshot(repo)
    # WHEN verify or check runs, in any mode
    proc = run_steps(*[a.format(sid=sid[:8]) for a in args], "--repo", url, env=ENV, check=False)
    # THEN it fails with the exit code of damage, naming the snapshot, the tree and the entry
    assert proc.returncode == 3, proc.stdout + proc.stderr
    damage = [line for line in proc.stdout.splitlines() if line.startswith("problem:")]
    assert len(damage) == 1, proc.stdout
    assert f"snapshot {sid[:8]}" in damage[0] and tree in damage[0] and "'../escape'" in damage[0]
    assert "/etc" in damage[0]
    assert good[:8] not in damage[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "craft, entry, why",
    [
        (lambda c: [c.file("..")], "..", "not allowed"),
        (lambda c: [c.node(".", "dir", subtree=c.tree([]))], ".", "not allowed"),
        (lambda c: [c.file("a/b")], "a/b", "contains '/'"),
        (lambda c: [c.file("nul\0name")], "nul\0name", "contains NUL"),
        (lambda c: [c.file("")], "", "empty name"),
        (lambda c: [c.file("\ud800x")], "\ud800x", "not encodable"),
        (lambda c: [c.file("x" * 256)], "x" * 256, "at most 255"),
        (lambda c: [c.file("twice"), c.file("twice", b"other")], "twice", "appears twice"),
        (lambda c: [c.node("door", "door")], "door", "unknown type"),
        (lambda c: [c.file("f", b"abc", holes=[[10, 5], [5, 2]], size=20)], "f", "holes"),
        (lambda c: [c.file("f", b"abc", holes=[[0, 50]], size=20)], "f", "holes"),
        (lambda c: [c.file("f", b"abc", size=-3)], "f", "size"),
        (lambda c: [c.file("f", content=["not-a-blob-id"])], "f", "content"),
        (lambda c: [c.node("l", "symlink", target="a\0b")], "l", "NUL"),
        (lambda c: [c.node("d", "dir", subtree="../../etc")], "d", "subtree"),
        (lambda c: [c.file("f", uid="0")], "f", "uid"),
    ],
    ids=[
        "dot-dot",
        "dot",
        "slash",
        "nul",
        "empty",
        "unencodable",
        "too-long",
        "duplicate",
        "unknown-type",
        "holes-unsorted",
        "hole-outside-size",
        "negative-size",
        "content-not-ids",
        "symlink-target-nul",
        "subtree-not-an-id",
        "uid-not-int",
    ],
)
def test_every_kind_of_damaged_tree_is_a_problem_of_verify_and_check_naming_tree_and_entry(craft, entry, why):
    # GIVEN a snapshot whose /deep/er tree breaks one rule of the tree format
    repo = Repository.init(MemoryStore(), TEST_PASSWORD, kdf_params=TEST_KDF)
    c = Crafter(repo)
    inner = c.dir("er", craft(c), parent="/deep")
    sid = c.snapshot([c.dir("deep", [inner, c.file("fine")]), c.file("top")])
    tree = c.trees["/deep/er"]
    for read in (0, 100):
        # WHEN verify (with and without reading data back) and check run
        vreport = verify(repo, repo.list_snapshots(), read)
        creport = check_repository(repo, read, save_state=False)
        # THEN both report the damage once, naming snapshot, tree, path and entry
        for problems in (vreport.problems, creport.problems):
            assert len(problems) == 1, problems
            assert f"snapshot {sid[:8]}" in problems[0] and tree in problems[0], problems
            assert "/deep/er" in problems[0] and repr(entry) in problems[0] and why in problems[0], problems


def test_a_file_whose_size_does_not_add_up_is_damage_naming_the_file(tmp_path):
    # GIVEN files whose size disagrees with their content blobs (and holes), and a sparse one that agrees
    repo, url = _local_repo(tmp_path)
    c = Crafter(repo)
    sid = c.snapshot(
        [
            c.dir(
                "var",
                [
                    c.file("longer", b"12345678", size=100),
                    c.file("sparse-ok", b"12345678", holes=[[8, 92]], size=100),
                    c.file("sparse-short", b"1234", holes=[[8, 92]], size=100),
                ],
            ),
            c.file("empty-but-big", b"", size=4096),
        ]
    )
    # WHEN verify and check run
    for args in (["verify"], ["check", "--read-data", "100"]):
        proc = run_steps(*args, "--repo", url, env=ENV, check=False)
        # THEN each mismatch is a problem naming the snapshot and the file's path; the agreeing file is not
        assert proc.returncode == 3, proc.stdout + proc.stderr
        damage = sorted(line for line in proc.stdout.splitlines() if line.startswith("problem:"))
        assert len(damage) == 3, proc.stdout
        assert all(f"snapshot {sid[:8]}" in line for line in damage)
        assert "file /empty-but-big" in damage[0] and "size 4096" in damage[0]
        assert "file /var/longer" in damage[1] and "hold 8 bytes" in damage[1]
        assert "file /var/sparse-short" in damage[2] and "holes 92" in damage[2]
        assert "sparse-ok" not in proc.stdout


def test_a_damaged_tree_shared_by_several_snapshots_names_each_of_them():
    # GIVEN two snapshots (as an incremental copy would write) that reuse one damaged subtree
    repo = Repository.init(MemoryStore(), TEST_PASSWORD, kdf_params=TEST_KDF)
    c = Crafter(repo)
    shared = c.dir("shared", [c.file("../../etc/passwd")])
    first = c.snapshot([shared, c.file("one")])
    c = Crafter(repo)
    second = c.snapshot([shared, c.file("two")])
    # WHEN verify runs THEN the damage is reported once, naming both snapshots that reach the tree
    report = verify(repo, repo.list_snapshots(), 0)
    assert len(report.problems) == 1, report.problems
    assert first[:8] in report.problems[0] and second[:8] in report.problems[0]


def test_repair_index_neither_crashes_on_a_damaged_tree_nor_changes_it(tmp_path):
    # GIVEN a repository with a damaged tree
    repo, url = _local_repo(tmp_path)
    _sid, tree = _escape_snapshot(repo)
    # WHEN the index is rebuilt
    proc = run_steps("repair", "index", "--repo", url, env=ENV, check=False)
    # THEN it succeeds (trees are blobs to it), and the damage is still found and named afterwards
    assert proc.returncode == 0, proc.stderr
    after = run_steps("verify", "--repo", url, env=ENV, check=False)
    assert after.returncode == 3 and tree in after.stdout and "'../escape'" in after.stdout
    # AND its help says what it does with such trees
    help_text = run_steps("repair", "--help", env=ENV).stdout
    assert "Neither repair reads trees" in help_text and "forget --snapshot" in help_text
