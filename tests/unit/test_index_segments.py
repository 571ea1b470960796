"""The in-memory index keeps its entries in fixed-size segments: lookups across segment boundaries,
entries that do not fit, and the memory an index of many blobs leaves resident."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from steps.repository.index import _SEG, MemIndex, PackEntries
from steps.repository.pack import BLOB_DATA, BLOB_TREE, PackEntry

ROOT = Path(__file__).resolve().parents[2]


def _entry(i: int, blob_id: bytes | None = None) -> PackEntry:
    return PackEntry(
        BLOB_TREE if i % 7 == 0 else BLOB_DATA, blob_id or os.urandom(32), 37 + i, 100 + i % 50, i
    )


def test_blobs_across_segments_are_found_with_their_first_location():
    # GIVEN more than a segment's worth of blobs in packs that straddle segment boundaries, half of
    # them added as compact columns, and some blobs stored again in later packs
    entries = [_entry(i) for i in range(_SEG + 9000)]
    idx = MemIndex()
    expected: dict[bytes, tuple[str, PackEntry]] = {}
    order: list[bytes] = []
    step = 3001
    for p, start in enumerate(range(0, len(entries), step)):
        chunk = entries[start : start + step]
        if p % 7 == 3:  # a few blobs of an earlier pack stored again
            chunk = chunk + [entries[start - step + k] for k in range(0, step, 500)]
        if p % 2:
            compact = PackEntries()
            for e in chunk:
                compact.append(e)
            idx.add_pack(f"pack{p}", b"s" * 32, 1, compact)
        else:
            idx.add_pack(f"pack{p}", b"s" * 32, 1, chunk)
        for e in chunk:
            expected.setdefault(e.id, (f"pack{p}", e))
            order.append(e.id)
    # THEN every blob is found where it was first added, duplicates counted, unknown IDs not found
    assert len(idx) == len(entries) + idx.duplicates and idx.duplicates > 0
    for bid, (pack, e) in expected.items():
        loc = idx.get(bid)
        assert (loc.pack_id, loc.type, loc.offset, loc.length, loc.raw_length) == (
            pack,
            e.type,
            e.offset,
            e.length,
            e.raw_length,
        )
        assert idx.type_and_raw_length(bid) == (e.type, e.raw_length) and idx.raw_length(bid) == e.raw_length
    assert not idx.has(os.urandom(32))
    # AND the entries read back in the order they were added, grouped by pack as before
    assert [bid for bid, _loc in idx.iter_blobs()] == order
    assert sum(len(v) for v in idx.pack_entries().values()) == len(idx)
    assert idx.is_tree_pack(0) is False and idx.pack_flags[0] == 3


def test_a_duplicate_is_found_again_once_its_first_pack_is_excluded():
    first = [_entry(i) for i in range(_SEG + 10)]
    idx = MemIndex()
    idx.add_pack("a", b"s" * 32, 1, first)
    idx.add_pack("b", b"s" * 32, 1, [first[-1], _entry(5)])
    idx.exclude_packs(["a"])
    assert idx.get(first[-1].id).pack_id == "b"
    assert not idx.has(first[0].id)


def test_an_entry_that_does_not_fit_adds_nothing_of_its_pack():
    idx = MemIndex()
    good = [_entry(i) for i in range(10)]
    idx.add_pack("a", b"s" * 32, 1, good)
    # an offset beyond 4 bytes, and an ID of the wrong length
    with pytest.raises(OverflowError):
        idx.add_pack("b", b"s" * 32, 1, [_entry(1), PackEntry(BLOB_DATA, os.urandom(32), 1 << 32, 1, 1)])
    with pytest.raises(ValueError, match="32 bytes"):
        idx.add_pack("c", b"s" * 32, 1, [PackEntry(BLOB_DATA, os.urandom(31), 1, 1, 1)])
    assert len(idx) == 10 and idx.pack_count == 1 and not idx.has_pack("b")
    assert all(idx.get(e.id).pack_id == "a" for e in good)
    later = [_entry(i) for i in range(3)]
    idx.add_pack("d", b"s" * 32, 1, later)
    assert idx.get(later[2].id).pack_no == 1 and len(idx.pack_flags) == 2


def test_an_index_of_many_blobs_leaves_little_more_than_itself_resident():
    # GIVEN a fresh process with the copy's allocator settings, adding 150 000 blobs pack by pack,
    # each pack decoded into compact entries first and dropped once added (as index files are loaded)
    code = textwrap.dedent(
        """
        import os
        from steps.repository.blob_sink import tune_malloc
        from steps.repository.index import MemIndex, PackEntries
        from steps.repository.pack import BLOB_DATA, PackEntry
        tune_malloc()
        def rss():
            with open("/proc/self/status") as f:
                return next(int(x.split()[1]) * 1024 for x in f if x.startswith("VmRSS"))
        ids = os.urandom(32 * 150_000)
        idx = MemIndex()
        before = rss()
        for p in range(30):
            entries = PackEntries()
            for n in range(5000 * p, 5000 * (p + 1)):
                entries.append(PackEntry(BLOB_DATA, ids[32 * n : 32 * n + 32], 37 + 2000 * n, 1900, 2000))
            idx.add_pack(f"{p:064x}", os.urandom(32), 8 << 20, entries)
            del entries
        print((rss() - before) / len(idx))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True, timeout=120
    )
    per_blob = float(out.stdout)
    # THEN the resident memory it added is the index's own (about 59 bytes per blob here); arrays grown
    # one entry at a time, reallocated between the packs' own allocations, kept 79 bytes per blob here
    # (and 100-170 in a real load of index files)
    assert per_blob < 70, per_blob
