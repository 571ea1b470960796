"""``restore`` from the command line where the owner cannot be given or the disk fills up: a set-id entry
whose recorded owner cannot be set (a user namespace that maps only root, ``unshare -r``) comes back
without its set-user-ID/set-group-ID bits and with one warning naming it, on every path (small files,
files of several blobs, empty files, directories, fifos); where the owner can be set the bits come back
exactly; a full file system (no space, no inodes) fails the restore on one line naming the entry it could
not create (a file, directory, symlink or fifo)."""

from __future__ import annotations

import errno
import os
import random
import stat
import subprocess
import sys
import tempfile

import pytest

from tests.fixtures.hostile import PASSWORD, TEST_KDF, run_cli

ROOT = os.geteuid() == 0
OWNER = (1000, 1000) if ROOT else (os.geteuid(), os.getegid())  # unmapped in a namespace mapping only root
SET_ID = "cannot set owner; set-user-ID/set-group-ID bits not restored"


def _env() -> dict:
    env = {**os.environ, "SNAPFLOW_PASSWORD": PASSWORD, "SNAPFLOW_KDF_TEST_N": str(TEST_KDF["n"])}
    env.pop("SNAPFLOW_PASSWORD_FILE", None)
    return env


def _restore_argv(url: str, target) -> list[str]:
    return [
        sys.executable,
        "-m",
        "steps",
        "restore",
        "--repo",
        url,
        "--snapshot",
        "latest",
        "--target",
        str(target),
    ]


def _entry(path, mode: int) -> None:
    if ROOT:
        os.chown(path, *OWNER)  # before the mode: a chown clears set-id bits
    os.chmod(path, mode)


@pytest.fixture(scope="module")
def set_id_repo(tmp_path_factory):
    """A repository holding set-id entries of every kind the restore writes by a path of its own."""
    base = tmp_path_factory.mktemp("set-id")
    src = base / "src"
    rng = random.Random(3)
    (src / "bin").mkdir(parents=True)
    for name, mode in (
        ("suid", 0o4755),
        ("sgid", 0o2755),
        ("both", 0o6755),
        ("plain", 0o755),
        ("sticky", 0o1755),
    ):
        (src / "bin" / name).write_bytes(rng.randbytes(300))  # one blob: the restore's thread
        _entry(src / "bin" / name, mode)
    (src / "bin" / "large-suid").write_bytes(rng.randbytes(3 * 1024 * 1024))  # several blobs
    _entry(src / "bin" / "large-suid", 0o4711)
    (src / "bin" / "empty-sgid").write_bytes(b"")  # no content at all
    _entry(src / "bin" / "empty-sgid", 0o2750)
    os.mkfifo(src / "bin" / "fifo-sgid")
    _entry(src / "bin" / "fifo-sgid", 0o2640)
    (src / "shared").mkdir()
    (src / "shared" / "f").write_bytes(b"x")
    _entry(src / "shared" / "f", 0o644)
    _entry(src / "shared", 0o2775)  # a set-gid directory
    _entry(src / "bin", 0o755)
    _entry(src, 0o755)
    url = f"file://{base / 'repo'}"
    assert run_cli("init", "--repo", url).returncode == 0
    done = run_cli("copy", "--repo", url, "--source", src)
    assert done.returncode == 0, done.stderr
    recorded = {}
    for dirpath, dirs, files in os.walk(src):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            recorded["/" + os.path.relpath(p, src)] = os.lstat(p)
    return url, recorded


def test_set_id_entries_whose_owner_cannot_be_set_lose_their_set_id_bits(set_id_repo, tmp_path):
    # GIVEN set-id entries recorded with an owner that a user namespace mapping only root cannot give
    url, recorded = set_id_repo
    target = tmp_path / "out"
    # WHEN they are restored inside such a namespace (as its root)
    done = subprocess.run(
        ["unshare", "-r", *_restore_argv(url, target)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    # THEN the restore succeeds
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    warned = [line for line in done.stderr.splitlines() if SET_ID in line]
    for rel, st in recorded.items():
        got = os.lstat(f"{target}{rel}")
        assert (got.st_uid, got.st_gid) != (st.st_uid, st.st_gid), rel  # the owner was not given
        # and no entry has a set-id bit; every other bit is the recorded one
        assert not got.st_mode & 0o6000, (rel, oct(got.st_mode))
        assert stat.S_IMODE(got.st_mode) == stat.S_IMODE(st.st_mode) & ~0o6000, (rel, oct(got.st_mode))
        # and each entry that had one is named by one warning line
        lines = [line for line in warned if line == f"warning: {rel}: {SET_ID}"]
        assert len(lines) == (1 if st.st_mode & 0o6000 else 0), (rel, done.stderr)
    assert len(warned) == sum(1 for st in recorded.values() if st.st_mode & 0o6000) == 7, done.stderr


@pytest.mark.skipif(not ROOT, reason="giving entries another owner needs root")
def test_set_id_entries_come_back_exactly_where_the_owner_can_be_set(set_id_repo, tmp_path):
    # GIVEN the same set-id entries
    url, recorded = set_id_repo
    target = tmp_path / "out"
    # WHEN they are restored by root, who can give every owner
    done = subprocess.run(_restore_argv(url, target), env=_env(), capture_output=True, text=True, timeout=120)
    # THEN owners and modes are the recorded ones, set-id bits included, and nothing is warned about
    assert done.returncode == 0, done.stderr
    assert "warning:" not in done.stderr, done.stderr
    for rel, st in recorded.items():
        got = os.lstat(f"{target}{rel}")
        assert (got.st_uid, got.st_gid, got.st_mode) == (st.st_uid, st.st_gid, st.st_mode), rel


# -- a full file system ---------------------------------------------------------------------------
@pytest.fixture
def small_tmpfs():
    """A fresh mountpoint with a tmpfs of 1 MiB and 64 inodes, unmounted and removed afterwards."""
    if not ROOT:
        pytest.skip("mounting a tmpfs needs root")
    mountpoint = tempfile.mkdtemp(prefix="snapflow-full-")
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,nr_inodes=64,mode=0755", "tmpfs", mountpoint],
        check=True,
        capture_output=True,
    )
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", mountpoint], check=False, capture_output=True)
        if os.path.ismount(mountpoint):
            subprocess.run(["umount", "-l", mountpoint], check=False, capture_output=True)
        os.rmdir(mountpoint)


def _error_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode not in (0, None), done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.mark.parametrize("shape", ["large-file", "many-files", "many-dirs", "many-symlinks", "many-fifos"])
def test_a_full_file_system_fails_the_restore_on_one_line_naming_the_file(shape, tmp_path, small_tmpfs):
    # GIVEN a repository holding a file larger than the file system (3 MiB, several blobs, written by
    # the connections), or more small files, directories, symlinks or fifos than it has inodes
    rng = random.Random(9)
    src = tmp_path / "src"
    src.mkdir()
    if shape == "large-file":
        (src / "large").write_bytes(rng.randbytes(3 * 1024 * 1024))
        names = ("/large",)
    elif shape == "many-files":
        (src / "d").mkdir()
        for i in range(200):
            (src / "d" / f"f{i:03d}").write_bytes(rng.randbytes(100))
        names = ("/d/f",)
    else:
        (src / "d").mkdir()
        for i in range(200):
            entry = src / "d" / f"e{i:03d}"
            if shape == "many-dirs":
                entry.mkdir()
            elif shape == "many-symlinks":
                entry.symlink_to(f"target-{i}")
            else:
                os.mkfifo(entry)
        names = ("/d/e",)
    url = f"file://{tmp_path / 'repo'}"
    assert run_cli("init", "--repo", url).returncode == 0
    assert run_cli("copy", "--repo", url, "--source", src).returncode == 0
    # WHEN it is restored onto the small file system
    target = os.path.join(small_tmpfs, "out")
    done = subprocess.run(_restore_argv(url, target), env=_env(), capture_output=True, text=True, timeout=120)
    # THEN the restore fails on one line naming the file and what happened, and reports no success
    line = _error_line(done)
    assert line.startswith(tuple(f"error: {n}" for n in names)), done.stderr
    assert line.endswith(f": {os.strerror(errno.ENOSPC)}"), done.stderr
    assert "restored snapshot" not in done.stdout, done.stdout
