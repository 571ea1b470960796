"""Small files copied in batches: read together (page-cache reads, or the fallback for files not cached),
hashed, then compressed and sealed by one call; the snapshot is the one file-by-file reading makes."""

import os

import pytest

from steps.repository import file_reading as reading_mod
from steps.repository.archiver import Archiver, CopyOptions, copy_source
from steps.repository.checker import verify
from steps.repository.crypto import (
    COMPRESSION_RAW,
    COMPRESSION_ZSTD,
    NONCE_LEN,
    _compressor,
    compress_many,
    open_blob,
    seal_blob_into,
    sealed_bound,
)
from steps.repository.pack import lazy_buffer
from steps.repository.restorer import restore_snapshot
from tests.fixtures.repository import describe_tree


def _source(root):
    """A directory of small files of every kind a batch meets."""
    root.mkdir()
    (root / "empty").write_bytes(b"")
    (root / "text").write_bytes(b"the same line again\n" * 150)  # compressible
    (root / "random").write_bytes(os.urandom(3000))  # incompressible: stored raw
    (root / "dup-a").write_bytes(b"twice" * 100)
    (root / "dup-b").write_bytes(b"twice" * 100)  # the same blob twice in one batch
    (root / "at-limit").write_bytes(os.urandom(Archiver.SMALL_FILE))
    (root / "larger").write_bytes(os.urandom(Archiver.SMALL_FILE + 1))  # one by one, not in a batch
    with open(root / "sparse", "wb") as f:  # data, a hole, data
        f.write(b"head" * 1024)
        f.seek(40 * 1024)
        f.write(b"tail" * 1024)
    os.link(root / "text", root / "text-link")
    sub = root / "sub"
    sub.mkdir()
    for i in range(150):  # more than one batch
        (sub / f"f{i:03d}").write_bytes(bytes([i]) * (i * 7))
    return root


def _batches(monkeypatch) -> list[int]:
    """Count the files each batch call archives."""
    seen: list[int] = []
    original = Archiver._archive_batch

    def counting(self, jobs, *args):
        seen.append(len(jobs))
        return original(self, jobs, *args)

    monkeypatch.setattr(Archiver, "_archive_batch", counting)
    return seen


def test_a_batch_of_every_kind_of_small_file_round_trips_and_checks(mem_repo, tmp_path, monkeypatch):
    # GIVEN small files of every kind (empty, compressible, incompressible, duplicated, sparse, linked)
    src = _source(tmp_path / "src")
    batches = _batches(monkeypatch)
    # WHEN they are copied
    res = copy_source(mem_repo, CopyOptions(str(src)))
    # THEN every small file went through a batch, none was lost, and the snapshot restores byte for byte
    assert res.warnings == []
    assert sum(batches) == res.stats.files_read - 1  # all but the one larger file
    assert res.stats.files_read == res.stats.files - 1  # the hard link's second name is not read
    out = tmp_path / "out"
    stats = restore_snapshot(mem_repo, mem_repo.find_snapshot(res.snapshot_id), str(out))
    assert stats.warnings == []
    assert describe_tree(out) == describe_tree(src)
    report = verify(mem_repo, mem_repo.list_snapshots(), 100)
    assert report.ok and report.packs_read == report.packs_referenced


def test_batches_make_the_snapshot_file_by_file_reading_makes(mem_repo, tmp_path, monkeypatch):
    src = _source(tmp_path / "src")
    copy_source(mem_repo, CopyOptions(str(src)))  # the first listing of each directory sets its atime
    monkeypatch.setattr(Archiver, "BATCH_READS", False)
    one_by_one = copy_source(mem_repo, CopyOptions(str(src), parent=None))
    monkeypatch.setattr(Archiver, "BATCH_READS", True)
    batched = copy_source(mem_repo, CopyOptions(str(src), parent=None))
    tree = mem_repo.find_snapshot(one_by_one.snapshot_id).data["tree"]
    assert mem_repo.find_snapshot(batched.snapshot_id).data["tree"] == tree  # same nodes, same blob IDs
    assert batched.stats.files_read == one_by_one.stats.files_read == one_by_one.stats.files - 1


@pytest.mark.parametrize("nowait", ["cold", "unsupported"])
def test_files_not_in_the_page_cache_are_read_through_the_fallback(mem_repo, tmp_path, monkeypatch, nowait):
    # GIVEN a reader that finds nothing cached (a cold page cache, or a file system without RWF_NOWAIT),
    # and one file that shrinks before it is read
    src = _source(tmp_path / "src")

    def not_cached(self, fd, address, length, offset):
        self.usable = nowait != "unsupported"
        return 0

    monkeypatch.setattr(reading_mod._CachedReads, "read_cached", not_cached)
    batches = _batches(monkeypatch)
    original = Archiver._archive_batch

    def shrink_first(self, jobs, *args):
        for job in jobs:
            if job.path.endswith(b"/text"):
                os.truncate(job.path, 100)
        return original(self, jobs, *args)

    monkeypatch.setattr(Archiver, "_archive_batch", shrink_first)
    res = copy_source(mem_repo, CopyOptions(str(src)))
    assert sum(batches) == res.stats.files_read - 1  # still in batches
    # THEN the shrunk file is stored as read, with a warning that loses nothing, and everything restores
    assert len(res.warnings) == 1 and "text: file changed while it was read" in res.warnings[0]
    assert res.stats.errors == 0
    out = tmp_path / "out"
    restore_snapshot(mem_repo, mem_repo.find_snapshot(res.snapshot_id), str(out))
    assert (out / "text").read_bytes() == b"the same line again\n" * 5  # the first 100 bytes
    assert (out / "text-link").read_bytes() == (out / "text").read_bytes()
    assert (out / "random").read_bytes() == (src / "random").read_bytes()
    assert (out / "sparse").read_bytes() == (src / "sparse").read_bytes()
    assert verify(mem_repo, mem_repo.list_snapshots(), 100).ok


@pytest.mark.parametrize("cached", [True, False])
def test_a_file_that_cannot_be_opened_keeps_its_entry_and_fails_the_copy(
    mem_repo, tmp_path, monkeypatch, cached
):
    src = _source(tmp_path / "src")
    if not cached:
        monkeypatch.setattr(
            reading_mod._CachedReads, "read_cached", lambda self, fd, address, length, offset: 0
        )
    original = Archiver._archive_batch

    def vanish(self, jobs, *args):
        for job in jobs:
            if job.path.endswith(b"/sub/f007"):
                os.unlink(job.path)
        return original(self, jobs, *args)

    monkeypatch.setattr(Archiver, "_archive_batch", vanish)
    # WHEN a file of a batch vanished between the walk and the read
    with pytest.raises(Exception, match=r"1 item\(s\) of .* could not be read.*f007"):
        copy_source(mem_repo, CopyOptions(str(src), parent=None))
    # THEN with --allow-errors the snapshot is recorded as incomplete, the others of the batch intact
    (src / "sub" / "f007").write_bytes(b"")
    res = copy_source(mem_repo, CopyOptions(str(src), parent=None, allow_errors=True))
    assert res.stats.errors == 1 and "f007" in res.warnings[0]
    snap = mem_repo.find_snapshot(res.snapshot_id)
    assert snap.data["incomplete"] is True
    out = tmp_path / "out"
    restore_snapshot(mem_repo, snap, str(out))
    assert (out / "sub" / "f007").read_bytes() == b""
    assert all((out / "sub" / f"f{i:03d}").read_bytes() == bytes([i]) * (i * 7) for i in range(8, 150))


def test_frames_compressed_together_are_the_frames_compressed_one_by_one():
    blobs = [b"a" * 5000, os.urandom(4000), b"x", bytes(range(256)) * 20]
    frames = compress_many(blobs)
    assert [bytes(f) for f in frames] == [_compressor().compress(b) for b in blobs]
    assert compress_many([]) == []


def test_a_blob_sealed_from_a_batch_is_the_blob_sealed_alone(mem_repo):
    aead = mem_repo.keys.pack_aead(os.urandom(32))
    blobs = [b"compress me " * 300, os.urandom(2048)]
    frames = compress_many(blobs)
    nonces = os.urandom(NONCE_LEN * len(blobs))
    scratch = lazy_buffer(1 << 16)
    for i, data in enumerate(blobs):
        bid = mem_repo.keys.blob_id(data)
        nonce = nonces[i * NONCE_LEN : (i + 1) * NONCE_LEN]
        alone, batched = bytearray(sealed_bound(len(data))), bytearray(sealed_bound(len(data)))
        n = seal_blob_into(aead, b"d", bid, data, memoryview(alone), scratch, nonce=nonce)
        m = seal_blob_into(aead, b"d", bid, data, memoryview(batched), scratch, frames[i], nonce)
        assert alone[:n] == batched[:m]
        assert open_blob(aead, b"d", bid, bytes(batched[:m]), len(data)) == data
        flag = COMPRESSION_ZSTD if i == 0 else COMPRESSION_RAW
        assert aead.decrypt(nonce, bytes(batched[NONCE_LEN:m]), b"snapflow/v1/blob/d" + bid)[0] == flag


def test_files_on_a_file_system_whose_open_may_wait_are_read_one_by_one(mem_repo, tmp_path, monkeypatch):
    # GIVEN a source whose file system the mount table names NFS (a batch opens its files with the
    # interpreter lock held: an NFS open that waits would stall every thread)
    from steps.drivers import mounts as mounts_mod

    src = _source(tmp_path / "src")
    copy_source(
        mem_repo, CopyOptions(str(src))
    )  # the first reading of each file and directory sets its atime
    dev = os.stat(src).st_dev
    table = tmp_path / "mountinfo"
    table.write_text(f"99 1 {os.major(dev)}:{os.minor(dev)} / {src} rw - nfs4 server:/export rw\n")
    monkeypatch.setattr(mounts_mod, "MOUNTINFO", str(table))
    batches = _batches(monkeypatch)
    # WHEN it is copied
    res = copy_source(mem_repo, CopyOptions(str(src), parent=None))
    # THEN no file went through a batch, and the snapshot is the one batches make of a local source
    assert batches == [] and res.warnings == []
    monkeypatch.setattr(mounts_mod, "MOUNTINFO", "/proc/self/mountinfo")
    batched = copy_source(mem_repo, CopyOptions(str(src), parent=None))
    assert sum(batches) == batched.stats.files_read - 1
    assert (
        mem_repo.find_snapshot(res.snapshot_id).data["tree"]
        == mem_repo.find_snapshot(batched.snapshot_id).data["tree"]
    )
