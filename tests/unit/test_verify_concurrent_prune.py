"""Readers under a concurrent prune, interleaved deterministically on a MemoryStore.

A reader (verify, the backup's own verify, check --read-data, restore) is stopped right after it listed
the snapshot records and loaded the index - at its first operation on a pack (:class:`PausingStore`, the
reader's own view of the shared store). Then ``prune --keep-last 1 --grace 5s --wait`` runs to completion:
it forgets the older backup, repacks the pack that backup shared with live data (its live blobs are
copied into a new pack) and, after the grace period, deletes the old packs and compacts the index. Then
the reader goes on with the view it loaded before. A snapshot prune forgot and a blob it moved are not
damage: the reader must pass. A blob a live snapshot still needs that is in no pack is damage: with the
live pack really deleted as well, it must still fail, naming that pack.
"""

from __future__ import annotations

import os
import shutil
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from steps.drivers.objectstore import MemoryStore, ObjectLock, ObjectStore
from steps.repository.checker import check_repository, verify
from steps.repository.pruner import PruneOptions, prune
from steps.repository.restorer import restore_snapshot
from steps.repository.retention import Rules
from tests.fixtures.prune import backup, make_repo, open_repo, write_files

GRACE = timedelta(seconds=5)


class PausingStore(ObjectStore):
    """A reader's view of a shared store. Its first operation on a pack (``data/``) - or, with ``at``,
    its ``at``-th operation - waits until ``release`` is set; ``reached`` tells that it got there, and
    ``ops`` lists the keys (or prefixes) of the operations it made."""

    def __init__(self, inner: MemoryStore, at: int | None = None):
        self.inner = inner
        self.url = inner.url
        self.at = at
        self.ops: list[str] = []
        self._lock = threading.Lock()
        self.reached = threading.Event()
        self.release = threading.Event()

    def _gate(self, key: str) -> None:
        with self._lock:
            self.ops.append(key)
            here = len(self.ops) >= self.at if self.at is not None else key.startswith("data/")
        if here and not self.release.is_set():
            self.reached.set()
            assert self.release.wait(60), "the reader was never released"

    def put(self, key, data):
        self._gate(key)
        self.inner.put(key, data)

    def get(self, key, version_id=None):
        self._gate(key)
        return self.inner.get(key, version_id)

    def get_range(self, key, offset, length, version_id=None):
        self._gate(key)
        return self.inner.get_range(key, offset, length, version_id)

    def stat(self, key):
        self._gate(key)
        return self.inner.stat(key)

    def list(self, prefix=""):
        self._gate(prefix)
        return list(self.inner.list(prefix))

    def list_versions(self, prefix=""):
        self._gate(prefix)
        return list(self.inner.list_versions(prefix))

    def delete(self, key, version_id=None):
        self._gate(key)
        self.inner.delete(key, version_id)

    def server_time(self):
        return self.inner.server_time()

    def versioning_enabled(self):
        return self.inner.versioning_enabled()


@pytest.fixture(autouse=True)
def _one_worker_per_stage(monkeypatch):
    # one pack buffer: the data to drop and the live data share a pack, so prune repacks it
    for var in ("SNAPFLOW_FILE_WORKERS", "SNAPFLOW_UPLOADERS", "SNAPFLOW_SCAN_THREADS"):
        monkeypatch.setenv(var, "1")


DROPS = ["a 3 MB file", "300 small files"]


BUCKETS = {
    "plain": {},
    "versioned": {"versioned": True},  # (prune purges the old versions of what it deleted at once)
    "object-lock": {"versioned": True, "lock": ObjectLock("governance", 30)},  # (they stay, readable)
}


def _world(clock, tmp_path: Path, drop: str, bucket: str = "plain"):
    """Backup "old" of live data plus data to drop (one pack holds both), then backup "new" of the live
    data only, and a backup of another app that shares nothing. The live data is in ``live/``, whose tree
    both snapshots share: a reader reaches it first from "old" (the snapshot prune forgets) and from
    "new" only as a tree already walked. Returns the repository, the source directory and the IDs of
    the snapshots of "old" and "new"."""
    repo = make_repo(clock, **BUCKETS[bucket])
    src = tmp_path / "src"
    write_files(src / "live", 1, names=("keep.bin", "also-kept.bin"), size=400_000)
    backup(repo, write_files(tmp_path / "web", 4, names=("index.html",), size=50_000), "web-1", app="web")
    if drop == "a 3 MB file":
        write_files(src, 2, names=("drop.bin",), size=3 * 1024 * 1024)
    else:
        write_files(src / "many", 3, names=[f"f{i:03d}" for i in range(300)], size=2_000)
    old = backup(repo, src, "old")
    clock.advance(minutes=1)
    if drop == "a 3 MB file":
        os.unlink(src / "drop.bin")
    else:
        shutil.rmtree(src / "many")
    new = backup(repo, src, "new")
    clock.advance(minutes=1)
    return repo, src, old, new


def _prune_to_completion(store: MemoryStore, clock):
    """``prune --keep-last 1 --grace 5s --wait``: forget, mark (repacking), wait the grace, sweep."""
    report = prune(
        open_repo(store),
        PruneOptions(rules=Rules(last=1), grace=GRACE, wait=True),
        sleep=lambda s: clock.advance(seconds=s),
    )
    assert report.forgotten_backups == ["old"]
    assert report.mark["packs_repacked"] >= 1, report.mark  # the live data moved to a new pack
    assert report.sweep["packs_deleted"] >= 2, report.sweep  # the repacked pack and the old trees
    return report


def _live_pack(store: MemoryStore, snapshot: str) -> str:
    """The pack that now holds the live data (what the repack wrote): ID of the pack of live/keep.bin's
    first blob in ``snapshot``, as a fresh reader finds it."""
    fresh = open_repo(store)
    root = fresh.load_tree(fresh.find_snapshot(snapshot).data["tree"])
    live = next(n for n in root if n["name"] == "live")
    node = next(n for n in fresh.load_tree(live["subtree"]) if n["name"] == "keep.bin")
    return fresh.index.get(bytes.fromhex(node["content"][0])).pack_id


def _interleave(
    repo, clock, read, delete_live_pack: str | None = None, at: int | None = None
) -> tuple[object, str | None]:
    """Run ``read(reader_repo)`` on a paused view; meanwhile prune to completion (and delete the pack
    holding the live data of snapshot ``delete_live_pack`` for real); then let the reader go on. Returns
    its result and the deleted pack. With ``at``, the reader stops at its ``at``-th store operation (or
    finishes first, if it makes fewer)."""
    store: MemoryStore = repo.store
    paused = PausingStore(store, at)
    out: dict = {}

    def run():
        try:
            out["result"] = read(open_repo(paused))
        except BaseException as err:
            out["error"] = err

    t = threading.Thread(target=run)
    t.start()
    while not paused.reached.wait(0.01):
        assert t.is_alive() or at is not None, "the reader never reached its first pack"
        if not t.is_alive():
            break
    _prune_to_completion(store, clock)
    gone = None
    if delete_live_pack:
        gone = _live_pack(store, delete_live_pack)
        store.delete(f"data/{gone[:2]}/{gone}")
    paused.release.set()
    t.join(60)
    assert not t.is_alive()
    if "error" in out:
        raise out["error"]
    return out["result"], gone


def _verify_all(read_data: float):
    return lambda r: verify(r, r.list_snapshots(), read_data)


def _verify_backup(backup_id: str):
    def run(r):
        snaps = [s for s in r.list_snapshots() if s.backup_id == backup_id]
        return verify(r, snaps, 0, new_packs_of=backup_id)

    return run


VERIFIES = {
    "verify": _verify_all(0),
    "verify --read-data 100": _verify_all(100),
    "verify --backup-id new": _verify_backup("new"),
}


@pytest.mark.parametrize("drop", DROPS)
@pytest.mark.parametrize("mode", list(VERIFIES))
def test_a_verify_overlapping_a_prune_passes_when_prune_only_forgot_and_moved_data(
    clock, tmp_path, drop, mode
):
    # GIVEN a repository where prune will forget backup "old" and repack what "new" shares with it
    repo, _src, old, _new = _world(clock, tmp_path, drop)
    # WHEN verify is paused after loading the index while prune runs to completion, then goes on
    report, _ = _interleave(repo, clock, VERIFIES[mode])
    # THEN it passes: the forgotten snapshot vanished, the moved blobs were checked where they are now,
    # and only the snapshot that reaches them was checked again (not the other app's)
    assert report.ok, report.problems
    assert report.rechecked == 1
    if mode != "verify --backup-id new":
        assert report.vanished == [old]
    if mode == "verify --read-data 100":
        assert report.packs_read >= 1  # (including the pack the repack wrote)


def test_the_verify_of_a_backup_whose_snapshot_a_prune_deletes_meanwhile_fails(clock, tmp_path):
    # GIVEN the verify of backup "old" (as its own verify would run), paused after loading the index
    repo, _src, old, _new = _world(clock, tmp_path, "a 3 MB file")
    # WHEN prune deletes the snapshot meanwhile (here: forgets it) and the verify goes on
    report, _ = _interleave(repo, clock, _verify_backup("old"))
    # THEN it fails: that backup cannot be committed without its snapshot
    assert report.vanished == [old]
    assert report.problems == [f"snapshot {old[:8]} of backup old was deleted while it was verified"]


@pytest.mark.parametrize("bucket", ["plain", "object-lock"])
@pytest.mark.parametrize("drop", DROPS)
@pytest.mark.parametrize("mode", list(VERIFIES))
def test_a_verify_overlapping_a_prune_fails_naming_a_live_pack_that_is_really_gone(
    clock, tmp_path, drop, mode, bucket
):
    # GIVEN the same, and the pack now holding the live data is deleted too (not by prune)
    repo, _src, _old, new = _world(clock, tmp_path, drop, bucket)
    report, gone = _interleave(repo, clock, VERIFIES[mode], delete_live_pack=new)
    if bucket == "plain":
        # THEN verify fails, naming that pack as missing and the live snapshot that needs it
        assert not report.ok
        assert any(f"pack {gone}: missing" in p and new[:8] in p for p in report.problems), report.problems
    else:
        # THEN where Object Lock keeps its older version, verify reads that and says so (check reports
        # the deletion as tampering); the forgotten snapshot reached the shared live/ tree first here
        assert report.ok, report.problems
        assert any(f"pack {gone}: missing; an intact older version" in w for w in report.warnings), (
            report.warnings
        )


@pytest.mark.parametrize("bucket", list(BUCKETS))
@pytest.mark.parametrize("read_data", [0, 100])
def test_check_overlapping_a_prune_passes_and_still_finds_a_lost_live_pack(
    clock, tmp_path, bucket, read_data
):
    def read(r):
        return check_repository(r, read_data, save_state=False)

    # GIVEN a repository where prune will forget and repack
    repo, _src, _old, _new = _world(clock, tmp_path / "pruned", "a 3 MB file", bucket)
    # WHEN check is paused after loading the index while prune runs to completion, then goes on
    report, _ = _interleave(repo, clock, read)
    # THEN it passes: nothing prune did is damage, nor tampering (what it deleted is in its log)
    assert report.ok, (report.problems, report.tampering)
    assert report.structure["rechecked"] == 1

    # GIVEN the same, WHEN the pack now holding the live data is deleted as well, outside Snapflow
    repo, _src, _old, new = _world(clock, tmp_path / "lost", "a 3 MB file", bucket)
    report, gone = _interleave(repo, clock, read, delete_live_pack=new)
    # THEN check fails naming it: as missing, or where older versions keep it, as tampering
    assert not report.ok
    if bucket == "plain":
        assert any(f"pack {gone}: missing" in p and new[:8] in p for p in report.problems), report.problems
    else:
        assert any(gone in t for t in report.tampering), report.tampering


def test_a_restore_overlapping_a_prune_writes_every_byte(clock, tmp_path):
    # GIVEN the live backup "new", whose data prune will repack
    repo, src, _old, new = _world(clock, tmp_path, "a 3 MB file")
    target = tmp_path / "restored"

    def read(r):
        return restore_snapshot(r, r.find_snapshot(new), str(target))

    # WHEN its restore is paused after loading the index while prune runs to completion
    stats, _ = _interleave(repo, clock, read)
    # THEN the restore found the moved trees and blobs where they are now and wrote every byte
    assert stats.bytes_written == sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    files = sorted(p.relative_to(src) for p in src.rglob("*"))
    assert sorted(p.relative_to(target) for p in target.rglob("*")) == files
    for rel in files:
        assert (src / rel).is_dir() or (target / rel).read_bytes() == (src / rel).read_bytes(), rel


READERS = {
    "verify --read-data 100": lambda r: VERIFIES["verify --read-data 100"](r),
    "check --read-data 100": lambda r: check_repository(r, 100, save_state=False),
}


@pytest.mark.parametrize("reader", list(READERS))
def test_a_reader_stopped_at_any_of_its_store_operations_by_a_prune_passes_and_still_finds_lost_data(
    clock, tmp_path, reader
):
    # GIVEN the store operations the reader makes (on a twin world): opening the repository, listing
    # records, loading the index, walking the trees, listing the packs, reading them back
    read = READERS[reader]
    repo, _src, _old, _new = _world(clock, tmp_path / "count", "a 3 MB file")
    counter = PausingStore(repo.store, at=10**9)
    read(open_repo(counter))
    # (the read-back after the last listing of packs runs in threads, in any order)
    listed = len(counter.ops) - counter.ops[::-1].index("data/")
    assert listed >= 10
    for at in range(1, len(counter.ops) + 1):
        for delete in (False, True) if at <= listed else (False,):
            # WHEN the reader stops at its at-th operation while prune runs to completion
            repo, _src, _old, new = _world(clock, tmp_path / f"{at}-{delete}", "a 3 MB file")
            report, gone = _interleave(repo, clock, read, delete_live_pack=new if delete else None, at=at)
            # THEN it passes; and with the live pack really deleted as well, it fails naming it
            if not delete:
                assert report.ok, (at, counter.ops[at - 1], report.problems)
            else:
                assert any(f"pack {gone}: missing" in p for p in report.problems), (at, report.problems)
