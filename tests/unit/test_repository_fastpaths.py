"""The copy and restore fast paths: they must give exactly what the simple paths give."""

import io
import os
import random
import stat
import threading

import pytest

from steps.repository.archiver import Archiver, CopyOptions, copy_source
from steps.repository.chunker import Chunker
from steps.repository.crypto import MasterKeys, open_blob
from steps.repository.pack import BLOB_DATA, PackWriter, lazy_buffer, read_pack_entries
from steps.repository.restorer import _interleave, restore_snapshot
from steps.repository.scan import Prescan
from tests.fixtures.repository import describe_tree

SMALL = {"min_size": 1024, "avg_size": 4096, "max_size": 16384}


def _chunks(chunker: Chunker, data: bytes) -> list[bytes]:
    return [bytes(c) for c in chunker.chunks(io.BytesIO(data).readinto)]


@pytest.mark.parametrize("params", [{}, SMALL], ids=["default", "small"])
def test_the_reusable_buffer_cuts_exactly_like_fresh_buffers(params):
    # GIVEN a chunker and data of several maximal chunks
    chunker = Chunker(b"k" * 32, **params)
    data = random.Random(4).randbytes(12 * chunker.max_size + 12345)
    expected = _chunks(chunker, data)
    # WHEN the data is cut through one reusable buffer of various sizes (the carry overlaps itself)
    for size in (chunker.stream_block, chunker.max_size + 1, chunker.max_size + 4096, 2 * chunker.max_size):
        got = [bytes(c) for c in chunker.stream(io.BytesIO(data).readinto, lazy_buffer(size))]
        # THEN the chunks are the same
        assert got == expected, size


def test_the_keyed_gear_table_cuts_like_the_translated_reference(monkeypatch):
    # GIVEN a chunker that writes the keyed table into pyfastcdc, and one that cuts a translated copy
    fast = Chunker(b"q" * 32, **SMALL)
    monkeypatch.setenv("SNAPFLOW_CHUNKER_TRANSLATE", "1")
    reference = Chunker(b"q" * 32, **SMALL)
    assert fast.keyed_table and not reference.keyed_table
    data = random.Random(5).randbytes(3_000_000)
    # THEN both cut at the same places (the repository format does not depend on the path taken)
    assert _chunks(fast, data) == _chunks(reference, data)


def test_a_pack_writer_reuses_its_buffer_and_tells_when_a_blob_would_not_fit():
    keys = MasterKeys(bytes(range(32)))
    w = PackWriter(keys, 64 * 1024)
    first = os.urandom(40_000)
    w.add(BLOB_DATA, keys.blob_id(first), first)
    assert w.fits(20_000) and not w.fits(30_000)
    a = w.finish()
    second = os.urandom(100_000)  # bigger than the buffer: it grows
    w.add(BLOB_DATA, keys.blob_id(second), second)
    b = w.finish()
    assert a.salt != b.salt and a.id != b.id
    for pack, data in ((a, first), (b, second)):
        salt, entries = read_pack_entries(keys, pack.data, "p")
        e = entries[0]
        stored = pack.data[e.offset : e.offset + e.length]
        assert open_blob(keys.pack_aead(salt), BLOB_DATA, e.id, stored, e.raw_length) == data


def test_interleaving_spreads_ranges_and_keeps_each_once():
    items = list(range(23))
    out = _interleave(items, 6)
    assert sorted(out) == items
    assert out[:4] == [0, 4, 8, 12]
    assert _interleave(items, 1) == items


def test_a_prescan_hands_each_listing_over_once(tmp_path):
    # GIVEN a tree scanned ahead
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        for i in range(5):
            (tmp_path / d / f"f{i}").write_bytes(b"x" * i)
    scan = Prescan(str(tmp_path))
    assert scan.finished.wait(10)
    # THEN its totals are right, and each listing comes once, with the lstat already cached
    assert scan.total == 2 * sum(range(5))
    listed = scan.take(os.fsencode(str(tmp_path / "a")))
    assert sorted(e.name for e in listed) == [b"f%d" % i for i in range(5)]
    assert all(e.stat(follow_symlinks=False).st_size == int(e.name[1:]) for e in listed)
    assert scan.take(os.fsencode(str(tmp_path / "a"))) is None


def test_a_prescan_lists_a_directory_larger_than_its_budget(tmp_path, monkeypatch):
    monkeypatch.setenv("SNAPFLOW_SCAN_AHEAD", "3")
    for i in range(5):
        (tmp_path / f"f{i}").write_bytes(b"y")
    scan = Prescan(str(tmp_path))
    assert scan.finished.wait(10)
    assert scan.total == 5
    assert len(scan.take(os.fsencode(str(tmp_path)))) == 5


def _awkward_tree(root) -> str:
    root = os.fspath(root)
    os.makedirs(os.path.join(root, "shared"))
    os.chmod(os.path.join(root, "shared"), 0o2775)
    files = {
        "group-writable": (b"g" * 10, 0o664),
        "everyone": (b"e" * 10, 0o777),
        "setuid": (b"s" * 10, 0o4755),
        "read-only": (b"r" * 10, 0o444),
        "shared/inside": (b"i" * 10, 0o660),
        "zeros": (bytes(200_000), 0o644),  # one all-zero blob: comes back as a hole
        "at-min": (os.urandom(256 * 1024), 0o644),  # exactly one minimal chunk
        "above-min": (os.urandom(256 * 1024 + 1), 0o644),
        "twin-a": (b"same content", 0o644),
        "twin-b": (b"same content", 0o600),
        "empty": (b"", 0o644),
    }
    for rel, (data, mode) in files.items():
        path = os.path.join(root, rel)
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, mode)
    if os.geteuid() == 0:
        os.chown(os.path.join(root, "group-writable"), 1234, 4321)
        os.chown(os.path.join(root, "setuid"), 1234, 0)  # chown before chmod would drop the set-uid bit
        os.chmod(os.path.join(root, "setuid"), 0o4755)
    old = 1_600_000_000_000_000_000
    for dirpath, dirs, names in os.walk(root, topdown=False):
        for name in dirs + names:
            os.utime(os.path.join(dirpath, name), ns=(old, old + len(name)), follow_symlinks=False)
    return root


def test_one_blob_files_come_back_with_their_modes_owners_times_and_holes(mem_repo, tmp_path):
    # GIVEN files whose modes the umask would change, set-id bits, other owners, zeros and twins
    src = _awkward_tree(tmp_path / "src")
    sid = copy_source(mem_repo, CopyOptions(src)).snapshot_id
    # WHEN they are restored into a fresh directory
    out = tmp_path / "out"
    stats = restore_snapshot(mem_repo, mem_repo.find_snapshot(sid), str(out))
    # THEN everything is as it was, and the all-zero file is sparse
    assert stats.warnings == []
    expected = describe_tree(src)
    expected[b"zeros"]["allocated_less_than_size"] = True
    assert describe_tree(out) == expected
    assert os.stat(out / "zeros").st_blocks * 512 < 200_000


def test_restore_into_a_non_empty_target_replaces_what_is_in_the_way(mem_repo, tmp_path):
    src = _awkward_tree(tmp_path / "src")
    sid = copy_source(mem_repo, CopyOptions(src)).snapshot_id
    # GIVEN a target with a directory where a file goes, a file where a directory goes, and a symlink
    out = tmp_path / "out"
    (out / "everyone").mkdir(parents=True)
    (out / "everyone" / "junk").write_bytes(b"junk")
    (out / "shared").write_bytes(b"not a directory")
    os.symlink("/etc/passwd", out / "read-only")
    (out / "twin-a").write_bytes(b"older and longer content")
    # WHEN the snapshot is restored there with --overwrite always
    stats = restore_snapshot(mem_repo, mem_repo.find_snapshot(sid), str(out), overwrite="always")
    # THEN the target holds exactly the snapshot
    assert stats.warnings == []
    got = describe_tree(out)
    want = describe_tree(src)
    want[b"zeros"]["allocated_less_than_size"] = True
    assert got == want
    assert stat.S_ISREG(os.lstat(out / "read-only").st_mode)


def test_an_incremental_copy_reads_with_one_worker_until_much_is_new(mem_repo, tmp_path, monkeypatch):
    # GIVEN a parent snapshot
    src = tmp_path / "src"
    src.mkdir()
    (src / "old").write_bytes(os.urandom(100_000))
    copy_source(mem_repo, CopyOptions(str(src)))
    # WHEN an incremental copy finds a little new data
    (src / "small-change").write_bytes(os.urandom(10_000))
    arch = Archiver(mem_repo, CopyOptions(str(src)))
    arch.run()
    # THEN one worker did it
    assert len(arch._workers) == 1
    # WHEN it finds more new data than the threshold
    monkeypatch.setattr(Archiver, "SCALE_UP_BYTES", 1 << 20)
    for i in range(3):
        (src / f"new-{i}").write_bytes(os.urandom(1 << 20))
    arch = Archiver(mem_repo, CopyOptions(str(src)))
    result = arch.run()
    # THEN a second worker joined, and the copy is complete
    assert len(arch._workers) == 2
    assert result.stats.files_new == 3


def test_a_copy_started_with_an_early_scan_counts_racy_files_from_the_scan(mem_repo, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"data")
    scan = Prescan(str(src))
    result = copy_source(mem_repo, CopyOptions(str(src)), prescan=scan)
    snap = mem_repo.find_snapshot(result.snapshot_id)
    assert snap.data["scan_start_ns"] <= scan.started_ns


def test_unchanged_directories_reuse_the_parent_trees_and_changed_ones_do_not(mem_repo, tmp_path):
    # GIVEN a parent snapshot of two directories
    src = tmp_path / "src"
    for d in ("kept", "touched"):
        (src / d).mkdir(parents=True)
        for i in range(3):
            (src / d / f"f{i}").write_bytes(b"%d" % i * 1000)
    old = 1_600_000_000_000_000_000
    for p in sorted(src.rglob("*"), reverse=True):
        os.utime(p, ns=(old, old))
    first = copy_source(mem_repo, CopyOptions(str(src)))
    parent_trees = {
        n["name"]: n["subtree"]
        for n in mem_repo.load_tree(mem_repo.find_snapshot(first.snapshot_id).data["tree"])
    }
    # WHEN nothing changed (listing a directory may update its own atime, so compare below the root)
    again = copy_source(mem_repo, CopyOptions(str(src)))
    # THEN both directories keep the parent's trees
    root = mem_repo.find_snapshot(again.snapshot_id).data["tree"]
    assert {n["name"]: n["subtree"] for n in mem_repo.load_tree(root)} == parent_trees
    # WHEN only the mode of a file in one directory changes
    os.chmod(src / "touched" / "f1", 0o600)
    third = copy_source(mem_repo, CopyOptions(str(src)))
    trees = {
        n["name"]: n["subtree"]
        for n in mem_repo.load_tree(mem_repo.find_snapshot(third.snapshot_id).data["tree"])
    }
    # THEN that directory gets a new tree, the other keeps its parent's, and the metadata is right
    assert trees["kept"] == parent_trees["kept"]
    assert trees["touched"] != parent_trees["touched"]
    node = next(n for n in mem_repo.load_tree(trees["touched"]) if n["name"] == "f1")
    assert node["mode"] == 0o600
    out = tmp_path / "out"
    restore_snapshot(mem_repo, mem_repo.find_snapshot(third.snapshot_id), str(out))
    assert describe_tree(out) == describe_tree(src)


@pytest.mark.parametrize("creator", ["process", "thread"])
def test_small_files_are_created_by_one_creator_while_the_connections_fetch(
    mem_repo, tmp_path, monkeypatch, creator
):
    # GIVEN many small files in several directories (twins among them), next to larger one-blob files
    # and a file of several blobs
    from steps import runtime
    from steps.repository import restore_content
    from steps.repository.config import CHUNK_MAX

    src = tmp_path / "src"
    rng = random.Random(7)
    for d in range(6):
        (src / f"d{d}").mkdir(parents=True)
        for i in range(60):
            data = b"twin" if i % 10 == 0 else rng.randbytes(rng.randrange(0, 4096))
            (src / f"d{d}" / f"f{i}").write_bytes(data)
    (src / "d0" / "larger").write_bytes(rng.randbytes(restore_content.SMALL_WHOLE + 1))
    # past the largest chunk, so always several blobs (a one-blob file that large is written by a connection)
    (src / "d1" / "big").write_bytes(rng.randbytes(CHUNK_MAX + 1024 * 1024))
    sid = copy_source(mem_repo, CopyOptions(str(src))).snapshot_id
    writers: set[str] = set()
    fetchers: set[str] = set()
    write_whole = restore_content.ContentWriter._write_whole
    fetch_range = restore_content.ContentWriter._fetch_range

    def recording_write(self, ref, plain, zero):
        writers.add(threading.current_thread().name)
        return write_whole(self, ref, plain, zero)

    def recording_fetch(self, *args):
        fetchers.add(threading.current_thread().name)
        return fetch_range(self, *args)

    handed: list[bytes] = []
    to_child = restore_content.ContentWriter._to_child

    def recording_hand(self, child, batch, files):
        handed.extend(ref.name for ref, _plain, _zero in files)
        return to_child(self, child, batch, files)

    monkeypatch.setattr(restore_content.ContentWriter, "_write_whole", recording_write)
    monkeypatch.setattr(restore_content.ContentWriter, "_fetch_range", recording_fetch)
    monkeypatch.setattr(restore_content.ContentWriter, "_to_child", recording_hand)
    monkeypatch.setenv(runtime.RESTORE_CONNECTIONS, "3")
    monkeypatch.setenv(runtime.HELPER_PROCESSES, "1" if creator == "process" else "0")
    # WHEN it is restored over three connections
    out = tmp_path / "out"
    stats = restore_snapshot(mem_repo, mem_repo.find_snapshot(sid), str(out))
    # THEN everything came back, the small files created by the creating process (or by the thread that
    # runs the restore), the larger one-blob file by a connection, and the ranges fetched by the connections
    assert stats.warnings == [] and stats.files == 362
    assert describe_tree(out) == describe_tree(src)
    if creator == "process":
        assert len(handed) == 360, len(handed)
        assert len(writers) == 1 and next(iter(writers)).startswith("restore-"), writers
    else:
        assert handed == []
        assert threading.main_thread().name in writers and len(writers) == 2, writers
    assert fetchers and all(name.startswith("restore-") for name in fetchers), fetchers
