"""The restore's batches overlap: batch N+1 is planned and fetched while batch N's files are written, at
most one batch ahead, and an error in one batch stops the whole restore cleanly."""

from __future__ import annotations

import os
import random
import threading
import time

import pytest

from steps.drivers.objectstore import MemoryStore
from steps.errors import SnapflowError, StoreUnavailable
from steps.repository import restore_content, restorer
from steps.repository.archiver import CopyOptions, copy_source
from steps.repository.pack import pack_key
from steps.repository.repo import Repository
from steps.repository.snapshot_read import blob_offsets
from tests.fixtures.repository import TEST_KDF, describe_tree

FILES = 200
PER_BATCH = 50
WAIT_S = 10


class RangeStore(MemoryStore):
    """A memory store that tells ``on_range`` about every ranged read of a pack before answering it."""

    on_range = None

    def get_range(self, key, offset, length, version_id=None):
        if self.on_range is not None and key.startswith("data/"):
            self.on_range(key, offset)
        return super().get_range(key, offset, length, version_id)


@pytest.fixture
def four_batches(tmp_path, monkeypatch):
    """A snapshot of FILES distinct small files in one directory, restored in batches of PER_BATCH files,
    and where each batch's blobs start in the packs: {(pack key, offset): batch number}."""
    monkeypatch.setenv("SNAPFLOW_KDF_TEST_N", "1024")
    monkeypatch.setenv("SNAPFLOW_RESTORE_CONNECTIONS", "2")
    monkeypatch.setattr(restorer, "BATCH_FILES", PER_BATCH)
    repo = Repository.init(RangeStore(), "test password", kdf_params=TEST_KDF)
    src = tmp_path / "src"
    src.mkdir()
    rng = random.Random(3)
    for i in range(FILES):
        (src / f"f{i:04d}").write_bytes(rng.randbytes(rng.randrange(1024, 3072)))
    snap = repo.find_snapshot(copy_source(repo, CopyOptions(str(src))).snapshot_id)
    starts: dict[tuple[str, int], int] = {}
    batch_of: dict[bytes, int] = {}
    tree = repo.load_tree(snap.data["tree"])
    files = sorted((n for n in tree if n["type"] == "file"), key=lambda n: n["name"])
    assert len(files) == FILES
    index = repo.index
    for no, node in enumerate(files):
        batch_of[os.fsencode(node["name"])] = no // PER_BATCH
        for _bid, _off, _raw, loc in blob_offsets(repo, node, node["name"], index):
            starts[(pack_key(index.pack_ids[loc.pack_no]), loc.offset)] = no // PER_BATCH
    return repo, snap, src, starts, batch_of


def _restore_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("restore-")]


def _record(repo, starts, batch_of, monkeypatch, creator: str, fail_batch: int | None = None):
    """Events ("get", batch) and ("write", batch) in the order they happen. The last small file of batch 0
    is written only once a range of batch 1 was requested (or after WAIT_S, when nothing overlaps); with
    ``fail_batch``, the store fails that batch's reads, and batch 0's last file waits for the failure.
    ``creator``: ``thread`` (the restore's thread creates the small files) or ``process`` (a file is
    "written" when it is handed to the creating process)."""
    events: list[tuple[str, int]] = []
    lock = threading.Lock()
    ahead = threading.Event()
    written = [0]

    def on_range(key, offset):
        batch = starts.get((key, offset))
        assert batch is not None, (key, offset)  # every range starts at a blob a file needs
        with lock:
            events.append(("get", batch))
        if batch == 1:
            ahead.set()
        if batch == fail_batch:
            raise StoreUnavailable(f"{key}: connection reset by the object store")

    def before_write(self, ref) -> None:
        batch = batch_of[ref.name]
        if batch == 0:
            written[0] += 1
            if written[0] == PER_BATCH:  # batch 0's last file waits for batch 1's first range
                ahead.wait(WAIT_S)
                deadline = time.monotonic() + WAIT_S
                while fail_batch is not None and not self._errors and time.monotonic() < deadline:
                    time.sleep(0.005)

    def wrote(ref) -> None:
        with lock:
            events.append(("write", batch_of[ref.name]))

    repo.store.on_range = on_range
    if creator == "thread":
        write_whole = restore_content.ContentWriter._write_whole

        def recording_write(self, ref, plain, zero):
            before_write(self, ref)
            result = write_whole(self, ref, plain, zero)
            wrote(ref)
            return result

        monkeypatch.setattr(restore_content.ContentWriter, "_write_whole", recording_write)
    else:  # a file "written" is one handed to the creating process
        to_child = restore_content.ContentWriter._to_child

        def recording_hand(self, child, batch, files):
            for ref, _plain, _zero in files:
                before_write(self, ref)
                wrote(ref)
            return to_child(self, child, batch, files)

        monkeypatch.setattr(restore_content.ContentWriter, "_to_child", recording_hand)
    monkeypatch.setenv("SNAPFLOW_HELPER_PROCESSES", "1" if creator == "process" else "0")
    return events


@pytest.mark.parametrize("creator", ["process", "thread"])
def test_the_next_batch_is_fetched_while_the_current_one_is_written(
    four_batches, tmp_path, monkeypatch, creator
):
    # GIVEN a snapshot restored in four batches, over two connections
    repo, snap, src, starts, batch_of = four_batches
    events = _record(repo, starts, batch_of, monkeypatch, creator)
    # WHEN it is restored
    out = tmp_path / "out"
    stats = restorer.restore_snapshot(repo, snap, str(out))
    # THEN everything came back
    assert stats.files == FILES and stats.warnings == []
    assert describe_tree(out) == describe_tree(src)

    def first(kind, batch):
        return events.index((kind, batch))

    def last(kind, batch):
        return len(events) - 1 - events[::-1].index((kind, batch))

    # and batch N+1's first range was requested before batch N's last file was written (batch 0 waits
    # for it; the others overlap on their own or not, but never run more than one batch ahead)
    assert first("get", 1) < last("write", 0), events
    for n in range(2):
        assert first("get", n + 2) > last("write", n), events
    assert sum(1 for e in events if e[0] == "write") == FILES
    assert _restore_threads() == []


@pytest.mark.parametrize("creator", ["process", "thread"])
def test_an_error_fetching_the_next_batch_stops_the_restore(four_batches, tmp_path, monkeypatch, creator):
    # GIVEN a snapshot restored in four batches, whose object store fails batch 1's read while batch 0's
    # files are being written
    repo, snap, _src, starts, batch_of = four_batches
    events = _record(repo, starts, batch_of, monkeypatch, creator, fail_batch=1)
    fds_before = len(os.listdir("/proc/self/fd"))
    # WHEN it is restored
    out = tmp_path / "out"
    with pytest.raises(SnapflowError) as caught:
        restorer.restore_snapshot(repo, snap, str(out))
    # THEN the store's error is raised, as one line (exit code 75: worth retrying)
    assert isinstance(caught.value, StoreUnavailable)
    assert "connection reset" in str(caught.value) and "\n" not in str(caught.value)
    assert caught.value.exit_code == 75  # EXIT_TEMPORARY
    # and nothing went on: no batch after the failed one was fetched, no thread is left and every
    # directory descriptor of the batches is closed
    assert ("get", 1) in events
    assert not any(e == ("get", 2) or e == ("get", 3) for e in events), events
    assert not any(e[0] == "write" and e[1] >= 1 for e in events), events
    assert _restore_threads() == []
    assert len(os.listdir("/proc/self/fd")) == fds_before


@pytest.mark.parametrize(("pack_size", "limit_mib"), [(8 << 20, 9), (1 << 20, 4), (1 << 40, 16), (-5, 4)])
def test_a_range_spans_a_whole_pack_within_bounds_whatever_the_recorded_pack_size(
    pack_size, limit_mib, monkeypatch
):
    # GIVEN a repository whose config records ``pack_size`` (a crafted one may record anything)
    monkeypatch.delenv("SNAPFLOW_RESTORE_RANGE_MIB", raising=False)
    # THEN one ranged GET spans the pack and the MiB its last blob may add, never less than 4 MiB
    # nor more than 16 MiB (a response is held whole in memory)
    assert restore_content.range_limit(pack_size) == limit_mib << 20
    # AND the environment's value wins
    monkeypatch.setenv("SNAPFLOW_RESTORE_RANGE_MIB", "2")
    assert restore_content.range_limit(pack_size) == 2 << 20


@pytest.mark.parametrize(("range_mib", "fewest"), [(None, False), ("1", True)])
def test_a_packs_blobs_are_fetched_in_one_get_unless_the_range_is_limited(
    range_mib, fewest, tmp_path, monkeypatch
):
    # GIVEN a snapshot of 40 files of 256 KiB (one blob each; packs of more than 4 MiB)
    monkeypatch.setenv("SNAPFLOW_KDF_TEST_N", "1024")
    if range_mib is None:
        monkeypatch.delenv("SNAPFLOW_RESTORE_RANGE_MIB", raising=False)
    else:
        monkeypatch.setenv("SNAPFLOW_RESTORE_RANGE_MIB", range_mib)
    repo = Repository.init(RangeStore(), "test password", kdf_params=TEST_KDF)
    src = tmp_path / "src"
    src.mkdir()
    rng = random.Random(5)
    for i in range(40):
        (src / f"f{i:02d}").write_bytes(rng.randbytes(256 << 10))
    snap = repo.find_snapshot(copy_source(repo, CopyOptions(str(src))).snapshot_id)
    gets: list[str] = []
    repo.store.on_range = lambda key, offset: gets.append(key)
    # WHEN it is restored
    out = tmp_path / "out"
    restorer.restore_snapshot(repo, snap, str(out))
    # THEN the files are the source's, and each pack was read in one GET by default, in several with
    # SNAPFLOW_RESTORE_RANGE_MIB=1
    assert describe_tree(out) == describe_tree(src)
    packs = set(gets)
    assert max(repo.index.pack_sizes) > 4 << 20
    if fewest:  # 10 MiB of blobs, at most 1 MiB per GET
        assert len(gets) >= 10 and len(gets) > len(packs)
    else:
        assert len(gets) == len(packs)
