"""The copy's cache warmer: a second process that lists and stats the source in the walk's order, as
far as the walk lets it, with the walk's excludes, never through a symlink, and gone when the prescan
stops."""

from __future__ import annotations

import os
import time

import pytest

from steps import runtime
from steps.repository.scan import Prescan
from steps.repository.scan_warmer import ScanWarmer
from tests.fixtures.processes import children, runs


@pytest.fixture(autouse=True)
def helpers_on(monkeypatch):
    monkeypatch.setenv(runtime.HELPER_PROCESSES, "1")


def until(check, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.01)


def files(d, n):
    d.mkdir(parents=True)
    for i in range(n):
        (d / f"f{i:04d}").write_bytes(b"x")


def test_it_lists_what_the_walk_lists_and_nothing_excluded_or_behind_a_symlink(tmp_path):
    # GIVEN a source with an excluded folder and a symlink to a folder outside it
    src, outside = tmp_path / "src", tmp_path / "outside"
    files(src / "a", 3)
    files(src / "b", 50)
    files(src / "d" / "e", 2)
    files(outside, 20)
    (src / "c").symlink_to(outside)

    # WHEN the warmer runs with the exclude
    warmer = ScanWarmer.start(os.fsencode(src), ["b"])
    try:
        until(lambda: warmer.done is not None)
    finally:
        warmer.stop()

    # THEN it listed the root (a, b, c, d), a (3 files), d (e) and e (2 files): not b's, not outside's
    assert warmer.done == 4 + 3 + 1 + 2


def test_it_stays_a_lead_ahead_of_the_walk_and_goes_on_when_told(tmp_path):
    for i in range(10):
        files(tmp_path / f"d{i}", 100)
    warmer = ScanWarmer.start(os.fsencode(tmp_path), lead=150)
    try:
        until(lambda: warmer.waiting is not None)
        time.sleep(0.2)
        assert warmer.done is None and 150 < warmer.waiting <= 150 + 100

        warmer.walked(2000)

        until(lambda: warmer.done is not None)
        assert warmer.done == 10 + 10 * 100
    finally:
        warmer.stop()


def test_the_prescan_stop_ends_a_waiting_warmer(tmp_path, monkeypatch):
    monkeypatch.setattr("steps.repository.scan_warmer.LEAD", 50)
    monkeypatch.setattr("steps.repository.scan.WARM_AFTER", 0)
    for i in range(5):
        files(tmp_path / f"d{i}", 100)
    scan = Prescan(str(tmp_path))
    warmer = scan._warmer
    assert warmer is not None
    until(lambda: warmer.waiting is not None)  # 50 ahead of a walk that took nothing
    assert runs(warmer.pid, b"scan_warmer")

    scan.stop()

    assert warmer.pid not in children(os.getpid()) and not runs(warmer.pid, b"scan_warmer")
    assert scan._warmer is None
    scan.stop()  # twice is fine


def test_none_without_helper_processes_and_none_when_it_cannot_start(tmp_path, monkeypatch):
    monkeypatch.setattr("steps.repository.scan.WARM_AFTER", 0)
    monkeypatch.setenv(runtime.HELPER_PROCESSES, "0")
    assert ScanWarmer.start(os.fsencode(tmp_path)) is None
    assert Prescan(str(tmp_path))._warmer is None

    monkeypatch.setenv(runtime.HELPER_PROCESSES, "1")
    monkeypatch.setattr("sys.executable", str(tmp_path / "no-python"))
    assert ScanWarmer.start(os.fsencode(tmp_path)) is None


def test_the_prescan_starts_it_once_the_walk_took_enough_entries(tmp_path, monkeypatch):
    monkeypatch.setattr("steps.repository.scan.WARM_AFTER", 150)
    for i in range(3):
        files(tmp_path / f"d{i}", 100)
    scan = Prescan(str(tmp_path))
    try:
        assert scan._warmer is None
        scan.take(os.fsencode(tmp_path))  # 3 entries
        assert scan._warmer is None
        scan.take(os.fsencode(tmp_path / "d0"))  # 103
        assert scan._warmer is None
        scan.take(os.fsencode(tmp_path / "d1"))  # 203: it starts
        assert scan._warmer is not None and runs(scan._warmer.pid, b"scan_warmer")
    finally:
        scan.stop()


def test_a_copy_that_fails_before_its_walk_leaves_no_warmer(tmp_path, monkeypatch):
    from steps.drivers.objectstore import MemoryStore
    from steps.repository.archiver import CopyOptions, copy_source
    from steps.repository.repo import Repository
    from tests.fixtures.repository import TEST_KDF

    monkeypatch.setattr("steps.repository.scan_warmer.LEAD", 50)
    monkeypatch.setattr("steps.repository.scan.WARM_AFTER", 0)
    repo = Repository.init(MemoryStore(), "pw", kdf_params=TEST_KDF)
    for i in range(3):
        files(tmp_path / f"d{i}", 100)
    with pytest.raises(Exception, match="0123abcd"):  # no such parent snapshot
        copy_source(repo, CopyOptions(str(tmp_path), parent="0123abcd"))
    assert not [p for p in children(os.getpid()) if runs(p, b"scan_warmer")]


def test_a_directory_it_lists_keeps_its_access_time_and_one_replaced_by_a_symlink_is_not_entered(tmp_path):
    # GIVEN a source whose directories were last read long ago, and a folder outside it
    src, outside = tmp_path / "src", tmp_path / "outside"
    files(src / "a", 100)
    files(src / "z" / "deep", 3)
    files(outside, 500)
    old = 1_000_000_000 * 10**9
    for d in (src / "a", src / "z", src / "z" / "deep"):
        os.utime(d, ns=(old, old + 1))

    # WHEN the warmer, held back by the walk after src and a, finds z replaced by a symlink to outside
    warmer = ScanWarmer.start(os.fsencode(src), lead=50)
    try:
        until(lambda: warmer.waiting is not None)
        os.rename(src / "z", tmp_path / "z-moved")
        (src / "z").symlink_to(outside)
        warmer.walked(10**6)
        until(lambda: warmer.done is not None)
    finally:
        warmer.stop()

    # THEN it listed src and a only, and a's access time is still the old one
    assert warmer.done == 2 + 100
    assert (src / "a").stat().st_atime_ns == old


def test_it_waits_for_the_walk_inside_a_large_directory_too(tmp_path):
    files(tmp_path / "big", 1000)
    warmer = ScanWarmer.start(os.fsencode(tmp_path), lead=100)
    try:
        until(lambda: warmer.waiting is not None)
        assert warmer.done is None and 100 < warmer.waiting <= 125
        warmer.walked(10**6)
        until(lambda: warmer.done is not None)
        assert warmer.done == 1 + 1000
    finally:
        warmer.stop()
