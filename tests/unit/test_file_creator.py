"""The second file creator of the restore (steps/repository/file_creator.py): files it creates are the
same, byte for byte and in every piece of metadata, as those the restore's own thread creates; its end
before it confirmed its last file fails the restore; nothing of it is left behind."""

from __future__ import annotations

import os
import random
import signal

import pytest

from steps.errors import SnapflowError
from steps.idmap import IdRange
from steps.repository import restore_content
from steps.repository.archiver import CopyOptions, copy_source
from steps.repository.restorer import Restorer
from tests.fixtures.repository import describe_tree

ROOT = os.geteuid() == 0


def _source(root) -> str:
    """Small files of every kind the second creator makes: set-id and sticky modes, modes the umask
    would cut, all-zero and empty files, odd-byte names, other owners (as root) and old times."""
    rng = random.Random(11)
    root = os.fsencode(os.fspath(root))
    modes = [0o644, 0o600, 0o666, 0o4755, 0o2750, 0o1777, 0o6711, 0o400, 0o777]
    names = [
        b"plain",
        b"\xff\xfe-latin",
        b"new\nline",
        b"sp ace",
        b"-dash",
        b"\xe2\x9c\x93-utf8",
        b"tab\tname",
    ]
    for d in range(4):
        folder = os.path.join(root, b"dir-%d" % d)
        os.makedirs(folder)
        for i in range(180):
            name = b"%s-%03d" % (names[i % len(names)], i)
            path = os.path.join(folder, name)
            kind = i % 9
            if kind == 0:
                data = bytes(rng.randrange(1, 3000))  # all zeros: left sparse
            elif kind == 1:
                data = b""
            else:
                data = rng.randbytes(rng.randrange(1, 4096))
            with open(path, "wb") as f:
                f.write(data)
            if ROOT and i % 5 == 0:
                os.chown(path, 1000 + i, 2000 + d)
            os.chmod(path, modes[i % len(modes)])
            os.utime(path, ns=(1_500_000_000_000_000_000 + i, 1_600_000_000_123_456_789 + i * 1000))
    return os.fsdecode(root)


def _expected(src) -> dict:
    """The source as the restore writes it: all-zero content is left as a hole."""
    want = describe_tree(src)
    for entry in want.values():
        if entry.get("data") and not entry["data"].strip(b"\0"):
            entry["allocated_less_than_size"] = True
    return want


def _restore(repo, sid, out, monkeypatch, creators: str, **kwargs) -> Restorer:
    monkeypatch.setenv(restore_content.CREATORS_ENV, creators)
    restorer = Restorer(repo, repo.find_snapshot(sid), str(out), **kwargs)
    restorer.run()
    return restorer


@pytest.fixture
def small_snapshot(mem_repo, tmp_path):
    src = _source(tmp_path / "src")
    sid = copy_source(mem_repo, CopyOptions(src)).snapshot_id
    return mem_repo, sid, src


def test_two_creators_restore_the_same_tree_as_one(small_snapshot, tmp_path, monkeypatch):
    # GIVEN a snapshot of 720 small files with every mode, owner, time and name kind
    repo, sid, src = small_snapshot
    # WHEN it is restored by one creator and by two
    one = _restore(repo, sid, tmp_path / "one", monkeypatch, "1")
    two = _restore(repo, sid, tmp_path / "two", monkeypatch, "2")
    # THEN the second process created part of the files (and the first none)
    assert one._child_files == 0
    assert 0 < two._child_files < 720, two._child_files
    # and both trees are the source's, byte for byte, with its modes, owners, times and sparse files
    want = _expected(src)
    assert describe_tree(tmp_path / "one") == want
    assert describe_tree(tmp_path / "two") == want
    # and the counts and warnings agree
    assert (one.stats.files, one.stats.bytes_written, one.stats.bytes_sparse) == (
        two.stats.files,
        two.stats.bytes_written,
        two.stats.bytes_sparse,
    )
    assert one.stats.bytes_sparse > 0 and one.stats.warnings == two.stats.warnings == []


@pytest.mark.skipif(not ROOT, reason="owners other than one's own need root")
def test_owner_maps_apply_to_the_files_the_second_creator_makes(small_snapshot, tmp_path, monkeypatch):
    # GIVEN the snapshot, restored with a UID map and a GID map
    repo, sid, _src = small_snapshot
    maps = {"uid_map": [IdRange(1000, 50000, 1000)], "gid_map": [IdRange(2000, 60000, 10)]}
    one = _restore(repo, sid, tmp_path / "one", monkeypatch, "1", **maps)
    two = _restore(repo, sid, tmp_path / "two", monkeypatch, "2", **maps)
    # THEN both creators mapped the same owners
    assert two._child_files > 0
    a, b = describe_tree(tmp_path / "one"), describe_tree(tmp_path / "two")
    assert a == b
    assert {e["uid"] for e in a.values()} >= {50000, 50005}, "the maps were not applied"
    assert one.stats.warnings == two.stats.warnings == []


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_the_second_creator_killed_mid_restore_fails_the_restore(small_snapshot, tmp_path, monkeypatch):
    # GIVEN a restore whose second creator is killed (SIGKILL) once it confirmed its first range
    repo, sid, _src = small_snapshot
    pids: list[int] = []
    from_child = restore_content.ContentWriter._from_child

    def kill_after_first(self, child, kind, payload):
        from_child(self, child, kind, payload)
        if kind == b"D" and not pids:
            pids.append(child.proc.proc.pid)
            os.kill(child.proc.proc.pid, signal.SIGKILL)

    monkeypatch.setattr(restore_content.ContentWriter, "_from_child", kill_after_first)
    before = _open_fds()
    # WHEN the restore runs
    with pytest.raises(SnapflowError) as err:
        _restore(repo, sid, tmp_path / "out", monkeypatch, "2")
    # THEN it fails on one line that says what happened, and leaves no process and no descriptor behind
    assert pids, "the second creator was never used"
    text = str(err.value)
    assert "ended unexpectedly (killed by signal 9)" in text and "\n" not in text, text
    with pytest.raises(ChildProcessError):
        os.waitpid(pids[0], os.WNOHANG)  # reaped already
    assert _open_fds() <= before


def test_a_second_creator_that_cannot_start_leaves_the_work_to_one(small_snapshot, tmp_path, monkeypatch):
    # GIVEN an interpreter that cannot run the second creator (its program is missing)
    repo, sid, src = small_snapshot
    import steps.repository.file_creator as fc

    monkeypatch.setattr(fc.sys, "executable", str(tmp_path / "no-such-python"))
    before = _open_fds()
    # WHEN the restore runs with two creators asked for
    restorer = _restore(repo, sid, tmp_path / "out", monkeypatch, "2")
    # THEN it restored everything by itself, with one warning that says so
    assert restorer._child_files == 0
    assert describe_tree(tmp_path / "out") == _expected(src)
    assert len(restorer.stats.warnings) == 1, restorer.stats.warnings
    assert "cannot start a second file creator" in restorer.stats.warnings[0]
    assert _open_fds() <= before


def test_a_child_that_exits_before_starting_leaves_the_work_to_one(small_snapshot, tmp_path, monkeypatch):
    # GIVEN a second creator that ends at once without a word (an interpreter that is no Python)
    repo, sid, src = small_snapshot
    fake = tmp_path / "false-python"
    fake.write_text("#!/bin/sh\nexit 3\n")
    fake.chmod(0o755)
    import steps.repository.file_creator as fc

    monkeypatch.setattr(fc.sys, "executable", str(fake))
    # WHEN the restore runs with two creators asked for
    restorer = _restore(repo, sid, tmp_path / "out", monkeypatch, "2")
    # THEN the ranges it was handed were created by the restore itself, with one warning
    assert restorer._child_files == 0
    assert describe_tree(tmp_path / "out") == _expected(src)
    assert restorer.stats.warnings == [
        "the second file creator did not start (exited with status 3); files are created by one"
    ]


def test_by_default_the_restore_creates_its_files_alone(small_snapshot, tmp_path, monkeypatch):
    # GIVEN no setting, or one that is not a number
    repo, sid, src = small_snapshot
    for value in (None, "many"):
        if value is None:
            monkeypatch.delenv(restore_content.CREATORS_ENV, raising=False)
        else:
            monkeypatch.setenv(restore_content.CREATORS_ENV, value)
        # WHEN the 720 small files are restored
        out = tmp_path / f"out-{value}"
        restorer = Restorer(repo, repo.find_snapshot(sid), str(out))
        restorer.run()
        # THEN no second creator made any of them, and the source came back
        assert restorer._child_files == 0
        assert describe_tree(out) == _expected(src)


def test_the_second_creators_first_error_stops_the_restore_naming_the_file(mem_repo, tmp_path, monkeypatch):
    # GIVEN small files of at most 500 bytes in the directories the restore's thread takes (the 1st and
    # 3rd) and of 2 000 bytes in those of the second creator, restored under a 1 000-byte file-size limit
    import errno
    import resource

    src = tmp_path / "src"
    for d in range(4):
        (src / f"dir-{d}").mkdir(parents=True)
        for i in range(100):
            (src / f"dir-{d}" / f"f{i:03d}").write_bytes(os.urandom(2000 if d % 2 else 500))
    sid = copy_source(mem_repo, CopyOptions(str(src))).snapshot_id
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    # WHEN the restore runs with two creators (the limit holds for both processes)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1000, hard))
    try:
        with pytest.raises(OSError) as err:
            _restore(mem_repo, sid, tmp_path / "out", monkeypatch, "2")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    # THEN the second creator's first error is raised, naming a file of its directories
    assert err.value.errno == errno.EFBIG, err.value
    assert str(err.value.filename).startswith(("/dir-1/f", "/dir-3/f")), err.value
