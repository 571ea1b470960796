"""The prescan lists the source in the walk's order within a bounded window, and hands its listings
(each entry stat'ed once) to the copy's walk."""

import os
import shutil
import time

import pytest

from steps.errors import PermanentError
from steps.repository.archiver import CopyOptions, copy_source
from steps.repository.restorer import restore_snapshot
from steps.repository.scan import Prescan
from tests.fixtures.repository import describe_tree


def _tree(root, dirs=("b", "a", "c"), subdirs=("y", "x"), files=3) -> list[bytes]:
    """Directories with files and subdirectories; returns the directories in the walk's order."""
    order = [os.fsencode(str(root))]
    for d in sorted(dirs):
        order.append(os.fsencode(str(root / d)))
        for s in sorted(subdirs):
            order.append(os.fsencode(str(root / d / s)))
    for d in dirs:
        for s in subdirs:
            (root / d / s).mkdir(parents=True)
            for i in range(files):
                (root / d / s / f"f{i}").write_bytes(b"z" * (i + 1))
        (root / d / "top").write_bytes(b"t" * 5)
    return order


def _settle(scan: Prescan, timeout: float = 5.0) -> None:
    """Wait until the scan threads are idle (finished, or held back by a full window)."""
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        now = (scan.held, scan.total, scan.finished.is_set())
        if now == last and scan._busy == 0 and not scan._slices:
            return
        last = now
        time.sleep(0.05)


@pytest.mark.parametrize("threads", [1, 2])
def test_listings_come_in_the_walks_order_within_a_bounded_window(tmp_path, monkeypatch, threads):
    # GIVEN a window much smaller than the tree (each directory holds 2 to 4 entries, 13 directories)
    monkeypatch.setenv("SNAPFLOW_SCAN_AHEAD", "6")
    monkeypatch.setattr(Prescan, "SLICE", 2)  # directories stat'ed in slices, by both threads
    order = _tree(tmp_path)
    scan = Prescan(str(tmp_path), threads=threads)
    _settle(scan)
    # THEN it stopped a window ahead: at most the window plus one directory per thread is held
    assert not scan.finished.is_set()
    assert scan.held <= 6 + 2 * 4
    # WHEN the walk takes the directories in its order
    for path in order:
        entries = scan.take(path)
        # THEN every one was listed ahead (sorted, each entry's lstat cached), none twice
        assert entries is not None, path
        assert [e.name for e in entries] == sorted(os.listdir(path))
        assert all(e.stat(follow_symlinks=False) for e in entries)
        assert scan.held <= 6 + 2 * 4
    assert scan.finished.wait(5)
    assert scan.take(order[1]) is None
    # and the total, final once the scan reached the end, counts every file
    assert scan.total == 3 * 2 * (1 + 2 + 3) + 3 * 5
    assert scan.held == 0


def test_a_window_of_one_still_lists_every_directory_the_walk_waits_for(tmp_path, monkeypatch):
    monkeypatch.setenv("SNAPFLOW_SCAN_AHEAD", "1")
    order = _tree(tmp_path, dirs=("d1", "d2"), subdirs=("s",), files=2)
    scan = Prescan(str(tmp_path), threads=1)
    for path in order:
        assert scan.take(path) is not None, path
    assert scan.finished.wait(5)


def test_listings_the_walk_passed_are_dropped(tmp_path, monkeypatch):
    # GIVEN a scan with room for the whole tree
    order = _tree(tmp_path)
    scan = Prescan(str(tmp_path))
    assert scan.finished.wait(5)
    held = scan.held
    # WHEN the walk skips directory "a" and its subdirectories (say they changed) and takes "b"
    assert scan.take(order[0]) is not None
    assert scan.take(order[4]) is not None
    # THEN what it passed is no longer held, and not handed out afterwards
    dropped = sum(len(os.listdir(p)) for p in order[:5])
    assert scan.held == held - dropped
    assert scan.take(order[1]) is None


def test_excluded_directories_are_neither_listed_nor_counted(tmp_path, monkeypatch):
    _tree(tmp_path)
    scan = Prescan(str(tmp_path), excludes=["b", "a/x"])
    assert scan.finished.wait(5)
    assert scan.take(os.fsencode(str(tmp_path / "b"))) is None
    assert scan.take(os.fsencode(str(tmp_path / "a" / "x"))) is None
    assert scan.take(os.fsencode(str(tmp_path / "a" / "y"))) is not None
    # a and c: "top" (5 bytes) each, c/x and c/y and a/y: 1+2+3 each
    assert scan.total == 2 * 5 + 3 * 6


def test_a_stopped_scan_hands_out_nothing(tmp_path):
    order = _tree(tmp_path)
    scan = Prescan(str(tmp_path))
    scan.stop()
    assert all(scan.take(p) is None for p in order)
    assert scan.held == 0


class _Progress:
    def __init__(self):
        self.total_bytes = 0
        self.total_final = False
        self.done_bytes = 0
        self.files = 0
        self.totals: list[tuple[int, bool]] = []

    def __setattr__(self, name, value):
        object.__setattr__(self, name, value)
        if name in ("total_bytes", "total_final") and hasattr(self, "totals"):
            self.totals.append((self.total_bytes, self.total_final))


def test_the_parents_size_is_the_total_until_the_scan_ends(mem_repo, tmp_path, monkeypatch):
    # GIVEN a parent snapshot of 10 000 bytes, and a source that has shrunk to 10 bytes since
    src = tmp_path / "src"
    src.mkdir()
    (src / "big").write_bytes(b"b" * 10_000)
    old = 1_600_000_000_000_000_000
    os.utime(src / "big", ns=(old, old))
    copy_source(mem_repo, CopyOptions(str(src)))
    (src / "big").unlink()
    for d in ("d1", "d2", "d3"):
        (src / d).mkdir()
        for i in range(5):
            (src / d / f"f{i}").write_bytes(b"s" * (i % 2))
    # WHEN it is copied with a window smaller than the tree (the scan cannot finish before the walk)
    monkeypatch.setenv("SNAPFLOW_SCAN_AHEAD", "2")
    progress = _Progress()
    scan = Prescan(str(src), progress=progress)
    _settle(scan)
    assert not scan.finished.is_set()
    copy_source(mem_repo, CopyOptions(str(src)), progress, prescan=scan)
    # THEN the total shown was the parent's size while the scan ran, and the exact size at its end
    provisional = [t for t, final in progress.totals if not final]
    assert 10_000 in provisional
    assert progress.totals[-1] == (6, True)
    assert progress.total_bytes == 6 and progress.total_final


def _prescanned(src) -> Prescan:
    scan = Prescan(str(src))
    assert scan.finished.wait(5)
    return scan


def _source(tmp_path):
    src = tmp_path / "src"
    for d in ("keep", "vanish"):
        (src / d).mkdir(parents=True)
        for i in range(3):
            (src / d / f"f{i}").write_bytes(b"%d" % i * 100)
    return src


def test_a_directory_that_vanished_after_the_scan_is_reported_not_copied_from_the_listing(mem_repo, tmp_path):
    # GIVEN a source listed ahead, then one of its directories removed before the walk reaches it
    src = _source(tmp_path)
    scan = _prescanned(src)
    shutil.rmtree(src / "vanish")
    # THEN the copy records no snapshot and names the directory
    with pytest.raises(PermanentError, match="vanish"):
        copy_source(mem_repo, CopyOptions(str(src)), prescan=scan)
    # and with --allow-errors the snapshot holds an empty directory, nothing of the listing made ahead
    (src / "vanish").mkdir()
    (src / "vanish" / "late").write_bytes(b"late")
    scan = _prescanned(src)
    shutil.rmtree(src / "vanish")
    result = copy_source(mem_repo, CopyOptions(str(src), allow_errors=True), prescan=scan)
    snap = mem_repo.find_snapshot(result.snapshot_id)
    assert snap.data.get("incomplete") is True
    names = {n["name"]: n for n in mem_repo.load_tree(snap.data["tree"])}
    assert names["vanish"]["type"] == "dir"
    assert mem_repo.load_tree(names["vanish"]["subtree"]) == []
    assert not mem_repo.index.has(mem_repo.keys.blob_id(b"late"))


def test_a_directory_replaced_by_a_symlink_after_the_scan_is_not_followed(mem_repo, tmp_path):
    # GIVEN a source listed ahead, then a directory of it replaced by a symlink to a directory outside
    src = _source(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f0").write_bytes(b"secret")
    scan = _prescanned(src)
    shutil.rmtree(src / "vanish")
    os.symlink(str(outside), src / "vanish")
    # THEN the copy reports the change
    with pytest.raises(PermanentError, match="no longer the directory listed"):
        copy_source(mem_repo, CopyOptions(str(src)), prescan=scan)
    # and with --allow-errors nothing outside the source is read
    os.unlink(src / "vanish")
    (src / "vanish").mkdir()
    (src / "vanish" / "f0").write_bytes(b"inside")
    scan = _prescanned(src)
    shutil.rmtree(src / "vanish")
    os.symlink(str(outside), src / "vanish")
    result = copy_source(mem_repo, CopyOptions(str(src), allow_errors=True), prescan=scan)
    snap = mem_repo.find_snapshot(result.snapshot_id)
    assert snap.data.get("incomplete") is True
    names = {n["name"]: n for n in mem_repo.load_tree(snap.data["tree"])}
    assert mem_repo.load_tree(names["vanish"]["subtree"]) == []
    assert not mem_repo.index.has(mem_repo.keys.blob_id(b"secret"))
    assert not mem_repo.index.has(mem_repo.keys.blob_id(b"inside"))


def test_a_copy_through_a_small_window_equals_the_source(mem_repo, tmp_path, monkeypatch):
    # GIVEN a window far smaller than the source, and excludes
    monkeypatch.setenv("SNAPFLOW_SCAN_AHEAD", "4")
    src = tmp_path / "src"
    _tree(src, dirs=("b", "a", "c", "skip"), files=4)
    # WHEN it is copied twice (the second with the first as parent) and restored
    opts = CopyOptions(str(src), excludes=["skip"])
    first = copy_source(mem_repo, opts, prescan=Prescan(str(src), ["skip"]))
    second = copy_source(mem_repo, opts, prescan=Prescan(str(src), ["skip"]))
    assert second.stats.files == first.stats.files == 3 * (2 * 4 + 1)
    out = tmp_path / "out"
    restore_snapshot(mem_repo, mem_repo.find_snapshot(second.snapshot_id), str(out))
    shutil.rmtree(src / "skip")
    # THEN the snapshot is the source without the excluded directory
    assert describe_tree(out) == describe_tree(src)


def test_a_directory_the_scan_cannot_list_is_left_to_the_walk(tmp_path, monkeypatch):
    # GIVEN a scan whose listing of one directory fails, and whose stat of another slice raises
    from steps.repository import scan as scan_mod

    order = _tree(tmp_path, dirs=("a", "b"), subdirs=("s",), files=2)
    real_list, real_stat = scan_mod.beneath.list_dir, Prescan._stat
    monkeypatch.setattr(
        scan_mod.beneath,
        "list_dir",
        lambda path: (
            (_ for _ in ()).throw(PermissionError(13, "denied")) if path == order[1] else real_list(path)
        ),
    )

    def stat(self, entries, listing):
        real_stat(self, entries, listing)
        if listing.key == (b"b",):
            raise RuntimeError("unexpected")

    monkeypatch.setattr(Prescan, "_stat", stat)
    scan = Prescan(str(tmp_path))
    # THEN the walk lists that directory itself, gets the others, and never waits forever
    got = {p: scan.take(p) for p in order}
    assert got[order[1]] is None
    assert all(got[p] is not None for p in order if not p.startswith(order[1]))
    assert scan.finished.wait(5)
