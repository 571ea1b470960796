"""The scanning process lists and stats the source in the walk's order, as the prescan's threads do, and
the walk lists for itself whatever it did not send."""

import marshal
import os
import stat as stat_mod
import time

from steps.repository.archiver import CopyOptions, copy_source
from steps.repository.excludes import excluded
from steps.repository.helper_process import ChildGone
from steps.repository.restorer import restore_snapshot
from steps.repository.scan import Prescan
from steps.repository.scan_process import PIECE, ScanStream
from tests.fixtures.repository import describe_tree

FIELDS = (
    "st_mode",
    "st_ino",
    "st_dev",
    "st_nlink",
    "st_uid",
    "st_gid",
    "st_size",
    "st_mtime_ns",
    "st_ctime_ns",
)


def _walk_order(root: bytes, excluded=()) -> list[bytes]:
    """The directories of ``root`` in the walk's order (entries sorted by name, depth first)."""
    out = [root]
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if os.path.relpath(path, root) in excluded:
            continue
        if stat_mod.S_ISDIR(os.lstat(path).st_mode):
            out.extend(_walk_order(path, excluded) if path not in excluded else [])
    return out


def _source(tmp_path):
    src = tmp_path / "src"
    for d in ("b", "a/x", "a/y", "empty", "skip/deep", "big"):
        (src / d).mkdir(parents=True)
    for d in ("b", "a/x", "a/y", "skip/deep"):
        for i in range(3):
            (src / d / f"f{i}").write_bytes(b"z" * (i + 1))
    for i in range(PIECE + 5):  # a directory that comes in two frames
        (src / "big" / f"e{i:05d}").touch()
    os.symlink("a", src / "link-to-dir")
    os.symlink("missing", src / "a" / "dangling")
    os.mkfifo(src / "b" / "fifo")
    (src / os.fsdecode(b"caf\xe9")).mkdir()  # a name that is no UTF-8
    (src / os.fsdecode(b"caf\xe9") / "inside").write_bytes(b"i")
    return src


def _listed(entries) -> list:
    return [
        (e.name, e.path, tuple(getattr(e.stat(follow_symlinks=False), f) for f in FIELDS)) for e in entries
    ]


def test_the_process_lists_what_the_threads_list_in_the_walks_order(tmp_path):
    # GIVEN a source with nested, empty and large directories, symlinks, a fifo, a name that is no UTF-8
    src = _source(tmp_path)
    root = os.fsencode(str(src))
    excludes = ["skip", "a/x"]
    # WHEN the scanning process and the prescan's threads list it, with the same excludes
    by_process = Prescan(str(src), excludes, process=True)
    by_threads = Prescan(str(src), excludes, process=False)
    assert by_process._stream is not None and by_threads._stream is None
    order = [
        p
        for p in _walk_order(root)
        if not any(p.startswith(os.path.join(root, x.encode())) for x in excludes)
    ]
    # THEN each directory comes from both, the same entries in the same order, with the same lstat
    for path in order:
        got, expected = by_process.take(path), by_threads.take(path)
        assert got is not None and expected is not None, path
        # (the threads' listings keep excluded entries, unstat'ed, for the walk to skip)
        rel = os.path.relpath(path, root).decode("utf-8", "surrogateescape").lstrip(".")
        kept = [
            e
            for e in expected
            if not excluded(f"{rel}/{os.fsdecode(e.name)}".lstrip("/"), os.fsdecode(e.name), excludes)
        ]
        assert _listed(got) == _listed(kept), path
    assert not by_process._stream._ready
    # and the total counts the same files, final once the process reached the end
    assert by_process.finished.wait(5) and by_threads.finished.wait(5)
    assert by_process.total == by_threads.total == 2 * (1 + 2 + 3) + 1
    # and an excluded directory is never handed out
    assert by_process.take(os.path.join(root, b"skip")) is None
    by_process.stop()
    by_threads.stop()


def _frames(stream: ScanStream, *listings) -> None:
    for rel, items, last in listings:
        stream._deliver(b"L", marshal.dumps((rel, items, last)))


def _item(name: bytes) -> tuple:
    st = os.lstat("/")
    return (name, (*st, *st.__reduce__()[1][1].values()))


def test_the_walk_gets_none_for_what_the_process_did_not_list_or_passed():
    # GIVEN listings as the process sends them: the root, "a" that it could not list, "b" in two pieces,
    # "c" and "c/d"
    stream = ScanStream(b"/src", lead=4)
    _frames(
        stream,
        (b"", [_item(b"a"), _item(b"b"), _item(b"c")], True),
        (b"a", None, True),
        (b"b", [_item(b"one")], False),
        (b"b", [_item(b"two")], True),
        (b"c", [_item(b"d")], True),
        (b"c/d", [], True),
    )
    # THEN the walk gets the root's entries with their paths
    assert [(e.name, e.path) for e in stream.take(b"/src")] == [
        (b"a", b"/src/a"),
        (b"b", b"/src/b"),
        (b"c", b"/src/c"),
    ]
    # and lists "a" itself, gets "b" whole, and None for a directory the process never came to
    assert stream.take(b"/src/a") is None
    assert stream.take(b"/src/aa") is None
    assert [e.path for e in stream.take(b"/src/b")] == [b"/src/b/one", b"/src/b/two"]
    # and when, after the process listed the whole tree, it passes "c" (changed since it was listed),
    # "c/d" below it is dropped, never handed out
    stream._deliver(b"D", b"")
    assert stream.take(b"/src/e") is None
    assert stream.take(b"/src/c/d") is None
    assert not stream._ready
    # and once the process is gone, nothing more is waited for
    stream._deliver(b"", ChildGone(True, "killed by signal 9"))
    t0 = time.monotonic()
    assert stream.take(b"/src/f") is None
    assert time.monotonic() - t0 < 0.4
    # and a path outside the source is never looked up
    assert stream.take(b"/srcx") is None
    # the walk's progress was told to the process when it waited or passed a quarter of the lead
    sent = []
    while not stream._helper._out.empty():
        sent.append(stream._helper._out.get()[0])
    assert sent and all(s[:1] == b"P" for s in sent)
    told = [int.from_bytes(s[5:], "little") for s in sent]
    assert told == sorted(told) and 0 < told[-1] <= stream._consumed


def test_the_process_stays_within_its_lead(tmp_path, monkeypatch):
    # GIVEN a lead of 8 entries and a tree of 13 directories of 2 to 4 entries
    monkeypatch.setenv("SNAPFLOW_SCAN_AHEAD", "8")
    for d in ("a", "b", "c"):
        for s in ("x", "y"):
            (tmp_path / d / s).mkdir(parents=True)
            for i in range(3):
                (tmp_path / d / s / f"f{i}").write_bytes(b"q")
    scan = Prescan(str(tmp_path), process=True)
    stream = scan._stream
    time.sleep(1.0)
    # THEN it stopped a lead ahead: at most the lead plus one directory is held
    held = sum(len(e) if e else 1 for _k, e in stream._ready)
    assert 0 < held <= 8 + 4
    assert not scan.finished.is_set()
    # WHEN the walk takes the directories in its order, THEN each was listed, and the end is reached
    for path in _walk_order(os.fsencode(str(tmp_path))):
        assert scan.take(path) is not None, path
    assert scan.finished.wait(5)
    assert scan.total == 3 * 2 * 3
    scan.stop()


def test_a_killed_scanning_process_leaves_the_listing_to_the_walk(mem_repo, tmp_path, monkeypatch):
    # GIVEN a copy whose scanning process is killed before the walk starts (a lead of 4 entries: it
    # had listed only the first directories)
    monkeypatch.setenv("SNAPFLOW_SCAN_AHEAD", "4")
    src = tmp_path / "src"
    for d in ("a", "b", "c"):
        (src / d).mkdir(parents=True)
        for i in range(5):
            (src / d / f"f{i}").write_bytes(b"%d" % i * 50)
    scan = Prescan(str(src), process=True)
    time.sleep(0.5)
    scan._stream._helper.kill()
    end = time.monotonic() + 5
    while scan._stream.gone is None and time.monotonic() < end:
        time.sleep(0.05)
    assert scan._stream.gone is not None
    # WHEN it is copied and restored
    result = copy_source(mem_repo, CopyOptions(str(src)), prescan=scan)
    assert result.stats.files == 15
    out = tmp_path / "out"
    restore_snapshot(mem_repo, mem_repo.find_snapshot(result.snapshot_id), str(out))
    # THEN the snapshot is the source
    assert describe_tree(out) == describe_tree(src)


def test_without_helper_processes_the_threads_list(tmp_path, monkeypatch):
    monkeypatch.setenv("SNAPFLOW_HELPER_PROCESSES", "0")
    (tmp_path / "a").mkdir()
    scan = Prescan(str(tmp_path))
    assert scan._stream is None
    assert [e.name for e in scan.take(os.fsencode(str(tmp_path)))] == [b"a"]
    scan.stop()


def test_the_process_and_the_threads_make_the_same_snapshot(mem_repo, tmp_path):
    # GIVEN a source copied twice with the process listing it, then with the threads (last: listing a
    # directory without O_NOATIME, as they do, moves its access time, which the next copy would record)
    src = _source(tmp_path)
    opts = CopyOptions(str(src), excludes=["a/x"])
    runs = [
        copy_source(mem_repo, opts, prescan=Prescan(str(src), ["a/x"], process=process))
        for process in (True, True, False)
    ]
    # THEN the last two snapshots hold the same tree (same entries, same metadata, same content; the
    # first copy's reading of the symlinks moved their access time, which the later ones record)
    trees = {mem_repo.find_snapshot(r.snapshot_id).data["tree"] for r in runs[1:]}
    assert len(trees) == 1
    assert runs[0].stats.files == runs[2].stats.files == PIECE + 5 + 2 * 3 + 3 + 1
