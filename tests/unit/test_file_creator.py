"""The restore's rules for creating a file and giving it its metadata (steps/repository/file_creator.py):
small files come back byte for byte with every piece of metadata; owner before mode, and set-id bits
left out (with one warning naming the file) whenever the owner cannot be set; an error writing a file
names it."""

from __future__ import annotations

import errno
import os
import random
import resource
import signal
import time

import pytest

from steps import runtime
from steps.errors import SnapflowError
from steps.idmap import IdRange
from steps.repository.archiver import CopyOptions, copy_source
from steps.repository.file_creator import (
    WARN_MODE,
    WARN_OWNER,
    WARN_SET_ID,
    set_owner_and_mode,
    warning_text,
)
from steps.repository.restorer import Restorer
from tests.fixtures.processes import children, runs
from tests.fixtures.repository import describe_tree

ROOT = os.geteuid() == 0


def _source(root) -> str:
    """Small files of every kind: set-id and sticky modes, modes the umask would cut, all-zero and empty
    files, odd-byte names, other owners (as root) and old times."""
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


@pytest.fixture(params=["process", "thread"])
def creator(request, monkeypatch):
    """Who creates the small files: the creating process (the default) or the restore's own thread."""
    monkeypatch.setenv(runtime.HELPER_PROCESSES, "1" if request.param == "process" else "0")
    return request.param


def _restore(repo, sid, out, **kwargs) -> Restorer:
    restorer = Restorer(repo, repo.find_snapshot(sid), str(out), **kwargs)
    restorer.run()
    return restorer


@pytest.fixture
def small_snapshot(mem_repo, tmp_path):
    src = _source(tmp_path / "src")
    sid = copy_source(mem_repo, CopyOptions(src)).snapshot_id
    return mem_repo, sid, src


def test_small_files_come_back_with_every_mode_owner_and_time(small_snapshot, tmp_path, creator):
    # GIVEN a snapshot of 720 small files with every mode, owner, time and name kind
    repo, sid, src = small_snapshot
    # WHEN it is restored
    restorer = _restore(repo, sid, tmp_path / "out")
    # THEN the creating process created all 640 with content (or none, when the restore's thread does)
    assert restorer._child_files == (640 if creator == "process" else 0)
    # and the tree is the source's, byte for byte, with its modes, owners, times and sparse files
    got = describe_tree(tmp_path / "out")
    assert got == _expected(src)
    assert restorer.stats.bytes_sparse > 0 and restorer.stats.warnings == []
    # and the set-id bits are there (as root, on files of other owners too)
    set_id = {rel: e for rel, e in got.items() if e["mode"] & 0o6000}
    assert len(set_id) == 4 * 60, len(set_id)
    if ROOT:
        assert any(e["uid"] != 0 for e in set_id.values())


@pytest.mark.skipif(not ROOT, reason="owners other than one's own need root")
def test_owner_maps_apply_to_small_files_and_keep_set_id_bits(small_snapshot, tmp_path, creator):
    # GIVEN the snapshot, restored with a UID map and a GID map
    repo, sid, src = small_snapshot
    maps = {"uid_map": [IdRange(1000, 50000, 1000)], "gid_map": [IdRange(2000, 60000, 10)]}
    restorer = _restore(repo, sid, tmp_path / "out", **maps)
    # THEN the maps were applied, and every mode is the recorded one, set-id bits included
    got, want = describe_tree(tmp_path / "out"), describe_tree(src)
    assert {e["uid"] for e in got.values()} >= {50000, 50005}, "the maps were not applied"
    assert {rel: e["mode"] for rel, e in got.items()} == {rel: e["mode"] for rel, e in want.items()}
    assert restorer.stats.warnings == []


# -- owner, then mode -------------------------------------------------------------------------------
class _Entry:
    """A file's owner and mode as the calls left them, with a chown that fails as told."""

    def __init__(self, chown_error: int | None):
        self.chown_error = chown_error
        self.owner = (0, 0)
        self.mode = 0o600
        self.calls: list[str] = []
        self.warnings: list[tuple[int, object]] = []

    def chown(self, uid: int, gid: int) -> None:
        self.calls.append("chown")
        if self.chown_error is not None:
            raise OSError(self.chown_error, os.strerror(self.chown_error))
        self.owner = (uid, gid)
        self.mode &= ~0o6000  # as the kernel does

    def chmod(self, mode: int) -> None:
        self.calls.append("chmod")
        self.mode = mode

    def warn(self, code: int, detail: object) -> None:
        self.warnings.append((code, detail))


@pytest.mark.parametrize("failure", [errno.EINVAL, errno.EPERM, errno.EROFS])
@pytest.mark.parametrize("is_root", [True, False])
@pytest.mark.parametrize("mode", [0o4755, 0o2755, 0o6755, 0o6711, 0o3775])
def test_a_failed_chown_leaves_out_the_set_id_bits_with_one_warning(mode, is_root, failure):
    # GIVEN an entry whose chown fails (unmapped owner, no permission, read-only)
    entry = _Entry(failure)
    # WHEN its owner and set-id mode are applied
    set_owner_and_mode(entry.chown, entry.chmod, (1000, 1000), mode, is_root, entry.warn)
    # THEN its mode is the recorded one without set-uid and set-gid (the sticky bit stays)
    assert entry.mode == mode & ~0o6000
    assert entry.calls == ["chown", "chmod"]
    # and one warning says so
    assert entry.warnings == [(WARN_SET_ID, None)]
    assert warning_text("/bin/tool", WARN_SET_ID) == (
        "/bin/tool: cannot set owner; set-user-ID/set-group-ID bits not restored"
    )


@pytest.mark.parametrize("mode", [0o4755, 0o2750, 0o6711, 0o1777, 0o644])
def test_set_id_bits_are_set_after_a_chown_that_works(mode):
    # GIVEN an entry whose chown works (and, as the kernel's, clears set-id bits)
    entry = _Entry(None)
    # WHEN its owner and mode are applied
    set_owner_and_mode(entry.chown, entry.chmod, (1000, 2000), mode, True, entry.warn)
    # THEN owner first, then the mode exactly as recorded, and no warning
    assert entry.calls == ["chown", "chmod"]
    assert (entry.owner, entry.mode, entry.warnings) == ((1000, 2000), mode, [])


def test_a_failed_chown_without_set_id_bits_warns_as_before():
    # GIVEN entries without set-id bits whose chown fails
    cases = [(errno.EPERM, True, [(WARN_OWNER, None)]), (errno.EPERM, False, []), (errno.EINVAL, True, [])]
    for failure, is_root, warnings in cases:
        entry = _Entry(failure)
        # WHEN their owner and mode are applied
        set_owner_and_mode(entry.chown, entry.chmod, (1000, 1000), 0o755, is_root, entry.warn)
        # THEN the mode is set whole; only root's EPERM is a warning
        assert (entry.mode, entry.warnings) == (0o755, warnings), (failure, is_root)


def test_no_chown_when_the_entry_is_ours_and_a_failed_chmod_is_a_warning():
    entry = _Entry(errno.EPERM)

    def chmod(mode):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    set_owner_and_mode(entry.chown, chmod, None, 0o4755, True, entry.warn)
    assert entry.calls == []
    assert entry.warnings == [(WARN_MODE, os.strerror(errno.EROFS))]


# -- errors name the file ---------------------------------------------------------------------------
@pytest.mark.parametrize("large", [False, True], ids=["small-files", "large-file"])
def test_a_write_error_names_the_file_on_one_line(mem_repo, tmp_path, large, creator):
    # GIVEN small files (created by the creating process or the restore's thread) or a large one (created with its size, then
    # written piece by piece by the connections), restored under a file-size limit they exceed
    src = tmp_path / "src"
    if large:
        src.mkdir()
        (src / "large").write_bytes(os.urandom(5 * 1024 * 1024))
        limit, names = 5 * 1024 * 1024 - 1, ("/large",)
    else:
        for d in range(2):
            (src / f"dir-{d}").mkdir(parents=True)
            for i in range(50):
                (src / f"dir-{d}" / f"f{i:03d}").write_bytes(os.urandom(2000 if d else 500))
        limit, names = 1000, ("/dir-1/f",)
    sid = copy_source(mem_repo, CopyOptions(str(src))).snapshot_id
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    # WHEN the restore runs with the limit
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        with pytest.raises(SnapflowError) as err:
            _restore(mem_repo, sid, tmp_path / "out")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    # THEN its first error names the file that could not be written, on one line
    text = str(err.value)
    assert text.startswith(names) and text.endswith(": " + os.strerror(errno.EFBIG)), text
    assert "\n" not in text
    # and carries the system error as its cause (check --restore-test looks there for a full disk)
    assert isinstance(err.value.__cause__, OSError) and err.value.__cause__.errno == errno.EFBIG


def test_an_entry_that_cannot_be_created_is_named_and_a_lost_server_is_temporary():
    import errno as errno_mod

    from steps.errors import EXIT_TEMPORARY, TemporaryError
    from steps.repository.file_creator import named_error

    full = named_error("/a/b", OSError(errno_mod.ENOSPC, "No space left on device"))
    assert str(full) == "/a/b: No space left on device" and not isinstance(full, TemporaryError)
    for err in (OSError(errno_mod.ETIMEDOUT, "t"), ConnectionResetError(errno_mod.ECONNRESET, "r")):
        lost = named_error("/a/l", err)
        assert isinstance(lost, TemporaryError) and lost.exit_code == EXIT_TEMPORARY
        assert str(lost) == f"/a/l: {os.strerror(err.errno)}"


# -- the creating process ---------------------------------------------------------------------------
def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _creators() -> list[int]:
    """Creating processes started by this process and not yet reaped."""
    return [pid for pid in children(os.getpid()) if runs(pid, b"creator_process")]


def test_the_creating_process_killed_mid_restore_leaves_the_rest_to_the_restore(
    small_snapshot, tmp_path, monkeypatch
):
    # GIVEN a restore whose creating process is killed (SIGKILL) once it confirmed its first range
    # (as the out-of-memory killer would), with ranges it has not confirmed
    from steps.repository import restore_content

    repo, sid, src = small_snapshot
    monkeypatch.setenv(runtime.RESTORE_RANGE_MIB, "1")
    monkeypatch.setenv(runtime.HELPER_PROCESSES, "1")
    monkeypatch.setenv(runtime.RESTORE_CREATORS, "1")
    pids: list[int] = []
    from_child = restore_content.ContentWriter._from_child

    def kill_after_first(self, child, kind, payload):
        if kind == b"D" and not pids:
            pids.append(child.proc.proc.pid)
            os.kill(pids[0], signal.SIGKILL)
        from_child(self, child, kind, payload)

    monkeypatch.setattr(restore_content.ContentWriter, "_from_child", kill_after_first)
    before = _open_fds()
    # WHEN the restore runs
    restorer = _restore(repo, sid, tmp_path / "out")
    # THEN the restore's thread created what the process had not confirmed: the tree is the source's,
    # and one warning says what happened
    assert pids, "the creating process was never used"
    assert 0 < restorer._child_files < 640, restorer._child_files
    assert describe_tree(tmp_path / "out") == _expected(src)
    assert restorer.stats.warnings == [
        "a process that creates small files ended (killed by signal 9); the restore creates them itself"
    ]
    # and no process and no descriptor is left behind
    with pytest.raises(ChildProcessError):
        os.waitpid(pids[0], os.WNOHANG)  # reaped already
    assert _creators() == []
    assert _open_fds() <= before


def _stop_the_first_creator(monkeypatch) -> list[int]:
    """Two creating processes allowed, ranges of 64 KiB, one range at a time per process; the first
    process is stopped (SIGSTOP) once it runs and holds a range, so that a second one is wanted. Returns
    the list that receives the first one's PID."""
    from steps.repository import creator_process, restore_content

    monkeypatch.setenv(runtime.HELPER_PROCESSES, "1")
    monkeypatch.setenv(runtime.RESTORE_CREATORS, "2")
    monkeypatch.setattr(restore_content, "range_limit", lambda pack_size: 64 << 10)
    monkeypatch.setattr(creator_process, "PENDING_RANGES", 1)
    to_child = restore_content.ContentWriter._to_child
    stopped: list[int] = []

    def stop_the_first(self, child, batch, files):
        rest = to_child(self, child, batch, files)
        if not stopped:
            deadline = time.monotonic() + 30
            while not child.proc.started and time.monotonic() < deadline:  # it said it runs
                time.sleep(0.001)
            stopped.append(child.proc.proc.pid)
            os.kill(stopped[0], signal.SIGSTOP)
        return rest

    monkeypatch.setattr(restore_content.ContentWriter, "_to_child", stop_the_first)
    return stopped


def test_one_of_two_creating_processes_killed_leaves_its_ranges_to_the_restore_and_the_rest_to_the_other(
    small_snapshot, tmp_path, monkeypatch
):
    # GIVEN a restore with two creating processes and ranges of 64 KiB: the first one is stopped once
    # it has a range (so the second one starts), and killed (SIGKILL) once the second one confirmed one
    from steps.repository import restore_content

    repo, sid, src = small_snapshot
    stopped = _stop_the_first_creator(monkeypatch)
    from_child = restore_content.ContentWriter._from_child
    killed: list[int] = []
    later: list[int] = []  # ranges the second process confirmed after the first one was killed

    def kill_the_first(self, child, kind, payload):
        if kind == b"D" and child.proc.proc.pid != stopped[0]:
            if not killed:
                killed.append(stopped[0])
                os.kill(stopped[0], signal.SIGKILL)
            else:
                later.append(1)
        from_child(self, child, kind, payload)

    monkeypatch.setattr(restore_content.ContentWriter, "_from_child", kill_the_first)
    before = _open_fds()
    # WHEN the restore runs
    restorer = _restore(repo, sid, tmp_path / "out")
    # THEN the tree is the source's, the restore's thread created the killed process's range, the
    # other process went on with the later ones, and one warning says what happened
    assert killed, "the second process never confirmed a range"
    assert len(restorer._children) == 2
    assert later, "the second process created nothing after the first one was killed"
    assert 0 < restorer._child_files < 640, restorer._child_files
    assert describe_tree(tmp_path / "out") == _expected(src)
    assert restorer.stats.warnings == [
        "a process that creates small files ended (killed by signal 9); the restore creates them itself"
    ]
    # and no process and no descriptor is left behind
    assert _creators() == []
    assert _open_fds() <= before


def test_a_second_creating_process_that_cannot_start_leaves_the_work_to_the_first(
    small_snapshot, tmp_path, monkeypatch
):
    # GIVEN a restore allowed two creating processes, whose first one is stopped once it has a range
    # (so that a second one is wanted) and whose second one cannot be started (it is let go on then)
    from steps.repository import helper_process

    repo, sid, src = small_snapshot
    stopped = _stop_the_first_creator(monkeypatch)
    start = helper_process.HelperProcess.start

    def start_once(self):
        if stopped:
            os.kill(stopped[0], signal.SIGCONT)
            raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN))
        start(self)

    monkeypatch.setattr(helper_process.HelperProcess, "start", start_once)
    # WHEN the restore runs
    restorer = _restore(repo, sid, tmp_path / "out")
    # THEN the tree is the source's, the first process went on creating, the restore's thread created
    # the range no process could take, and one warning says so
    assert stopped and len(restorer._children) == 1
    assert 0 < restorer._child_files < 640, restorer._child_files
    assert describe_tree(tmp_path / "out") == _expected(src)
    assert restorer.stats.warnings == [
        "cannot start a process that creates small files (Resource temporarily unavailable); the ones"
        " running go on"
    ]
    assert _creators() == []


def test_creating_processes_follow_the_cpus_and_the_file_system_unless_told(monkeypatch):
    from steps.drivers import cpus
    from steps.repository import restore_content
    from steps.repository.restore_content import creators_wanted

    monkeypatch.delenv(runtime.RESTORE_CREATORS, raising=False)
    # on a file system where several processes create files sooner: one per CPU, at most 4
    monkeypatch.setattr(restore_content, "creates_in_parallel", lambda st_dev: st_dev == 7)
    for count, wanted in ((1, 1), (2, 2), (3, 3), (16, 4)):
        monkeypatch.setattr(cpus, "available_cpus", lambda count=count: count)
        assert creators_wanted(7) == wanted, count
    # elsewhere, or when the target's file system is unknown: one
    assert creators_wanted(8) == 1
    assert creators_wanted(None) == 1
    # and the environment's value wins
    monkeypatch.setenv(runtime.RESTORE_CREATORS, "3")
    assert creators_wanted(8) == 3 and creators_wanted(7) == 3


def test_a_creating_process_that_ends_after_its_last_range_leaves_nothing_to_say(
    small_snapshot, tmp_path, monkeypatch
):
    # GIVEN a restore whose creating process is killed once it was told there is no more work (all its
    # ranges confirmed, its answer to the end not yet read)
    from steps.repository.creator_process import ChildCreator

    repo, sid, src = small_snapshot
    monkeypatch.setenv(runtime.HELPER_PROCESSES, "1")
    finish = ChildCreator.finish

    def finish_and_kill(self):
        finish(self)
        self.proc.kill()

    monkeypatch.setattr(ChildCreator, "finish", finish_and_kill)
    # WHEN it runs
    restorer = _restore(repo, sid, tmp_path / "out")
    # THEN the process created every file, the tree is the source's, and there is nothing to warn about
    assert restorer._child_files == 640
    assert describe_tree(tmp_path / "out") == _expected(src)
    assert restorer.stats.warnings == []
    assert _creators() == []


def _created_by_the_restore(restorer, src, out) -> str:
    """Asserts that the restore's thread created every file of ``out`` as in ``src``, with one warning:
    returns it."""
    assert describe_tree(out) == _expected(src)
    assert restorer._child_files == 0
    assert len(restorer.stats.warnings) == 1, restorer.stats.warnings
    return restorer.stats.warnings[0]


def test_a_range_that_cannot_be_sent_is_created_by_the_restore(small_snapshot, tmp_path, monkeypatch):
    # GIVEN a restore whose descriptors cannot be passed to the creating process (the kernel refuses
    # them: too many in flight for the user, or no memory)
    import errno as errno_mod
    import socket

    repo, sid, src = small_snapshot

    def refused(*_args, **_kwargs):
        raise OSError(errno_mod.ETOOMANYREFS, os.strerror(errno_mod.ETOOMANYREFS))

    monkeypatch.setattr(socket, "send_fds", refused)
    monkeypatch.setenv(runtime.HELPER_PROCESSES, "1")
    # WHEN it runs
    restorer = _restore(repo, sid, tmp_path / "out")
    # THEN it does not wait for the process: the restore's thread created every file, with one warning
    warning = _created_by_the_restore(restorer, src, tmp_path / "out")
    assert "could not be sent its work (Too many references" in warning
    assert _creators() == []


def test_a_content_shared_by_many_files_is_sent_once(mem_repo, tmp_path, monkeypatch):
    # GIVEN 300 files of the same 60 KiB, and 20 of zeros
    from steps.repository.creator_process import ChildCreator

    src = tmp_path / "src"
    src.mkdir()
    same = os.urandom(60 * 1024)
    for i in range(300):
        (src / f"same-{i:03d}").write_bytes(same)
    for i in range(20):
        (src / f"zero-{i:03d}").write_bytes(bytes(5000))
    sid = copy_source(mem_repo, CopyOptions(str(src))).snapshot_id
    sent: list[tuple[int, int, int]] = []
    send_range = ChildCreator.send_range

    def recording(self, batch, umask, contents, records, files):
        sent.append((len(contents), sum(map(len, contents)), len(records)))
        return send_range(self, batch, umask, contents, records, files)

    monkeypatch.setattr(ChildCreator, "send_range", recording)
    monkeypatch.setenv(runtime.HELPER_PROCESSES, "1")
    # WHEN it is restored
    restorer = _restore(mem_repo, sid, tmp_path / "out")
    # THEN the content went to the creating process once, with a record per file (none for the zeros)
    assert describe_tree(tmp_path / "out") == _expected(src)
    assert restorer._child_files == 320
    assert sum(n for _c, _b, n in sent) == 320
    assert sum(c for c, _b, _n in sent) == 1 and sum(b for _c, b, _n in sent) == len(same), sent


def test_helper_processes_follow_the_cpus_unless_told(monkeypatch):
    from steps.repository import helper_process
    from steps.repository.helper_process import helpers_wanted

    monkeypatch.delenv(runtime.HELPER_PROCESSES, raising=False)
    for count, wanted in ((1, False), (2, True), (8, True)):
        monkeypatch.setattr(helper_process, "available_cpus", lambda count=count: count)
        assert helpers_wanted() is wanted, count
    monkeypatch.setattr(helper_process, "available_cpus", lambda: 1)
    monkeypatch.setenv(runtime.HELPER_PROCESSES, "1")
    assert helpers_wanted()
    monkeypatch.setattr(helper_process, "available_cpus", lambda: 8)
    monkeypatch.setenv(runtime.HELPER_PROCESSES, "0")
    assert not helpers_wanted()


@pytest.mark.parametrize(
    "executable", ["/nonexistent/python", "/bin/false"], ids=["no-exec", "exits-at-once"]
)
def test_a_creating_process_that_cannot_start_leaves_the_files_to_the_restore(
    small_snapshot, tmp_path, monkeypatch, executable
):
    # GIVEN a creating process that cannot be started, or that ends before it says it runs
    import sys

    repo, sid, src = small_snapshot
    monkeypatch.setattr(sys, "executable", executable)
    monkeypatch.setenv(runtime.HELPER_PROCESSES, "1")
    # WHEN the snapshot is restored
    restorer = _restore(repo, sid, tmp_path / "out")
    # THEN the restore's thread created the files (the tree is the source's), and one warning says why
    assert "the restore creates them itself" in _created_by_the_restore(restorer, src, tmp_path / "out")
