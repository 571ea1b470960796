"""The in-memory index keeps its entries in fixed-size segments: lookups across segment boundaries,
entries that do not fit, and the memory an index of many blobs leaves resident."""

import json
import os
import random
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import pytest

from steps.repository.index import (
    _SEG,
    NOT_DATA,
    NOT_INDEXED,
    IndexPack,
    MemIndex,
    PackEntries,
    decode_index_file,
    encode_index_file,
)
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
        assert idx.data_lengths([bid]) == [e.raw_length if e.type == BLOB_DATA else NOT_DATA]
        assert idx.raw_length(bid) == e.raw_length
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
    # the lookup of many at once answers as the lookups one by one
    assert idx.has_all([first[-1].id]) and idx.has_all([])
    assert not idx.has_all([first[-1].id, first[0].id])


def test_many_lookups_at_once_answer_as_one_by_one():
    entries = [_entry(i) for i in range(2 * _SEG + 5)]  # across segments
    idx = MemIndex()
    idx.add_pack("a", b"s" * 32, 1, entries[:_SEG])
    idx.add_pack("b", b"s" * 32, 1, entries[_SEG:])
    ids = [e.id for e in entries]
    assert idx.has_all(ids) and all(map(idx.has, ids))
    for absent in (os.urandom(32), ids[3][:31], ids[3] + b"x", b""):
        assert not idx.has(absent) and not idx.has_all([*ids[:100], absent])


def test_places_and_data_lengths_answer_as_get_one_by_one():
    # GIVEN blobs across segments, a duplicate whose first pack is excluded, a blob only in an excluded
    # pack, trees among the data blobs, and IDs that are not indexed at all
    entries = [_entry(i) for i in range(_SEG + 40)]
    idx = MemIndex()
    idx.add_pack("a", b"s" * 32, 1, entries[:_SEG])
    idx.add_pack("b", b"s" * 32, 1, entries[_SEG:])
    idx.add_pack("c", b"s" * 32, 1, [entries[1], _entry(2)])  # entries[1] stored again
    idx.exclude_packs(["a"])
    ids = [e.id for e in entries] + [os.urandom(32), entries[5].id[:31], b""]
    # THEN each answer is what get() says: the location not excluded, None where there is none
    places = idx.places(ids)
    lengths = idx.data_lengths(ids)
    assert len(places) == len(lengths) == len(ids)
    for bid, place, length in zip(ids, places, lengths, strict=True):
        loc = idx.get(bid)
        if loc is None:
            assert place is None and length == NOT_INDEXED
            continue
        assert place == (loc.pack_no, loc.offset, loc.length, loc.raw_length)
        assert length == (loc.raw_length if loc.type == BLOB_DATA else NOT_DATA)
    assert places[1] == (2, entries[1].offset, entries[1].length, entries[1].raw_length)  # from "c"
    assert places[3] is None and places[_SEG + 3] is not None  # "a" is excluded, "b" is not
    assert NOT_DATA in lengths and idx.places([]) == [] == idx.data_lengths([])


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


def _encoded_as_lists(packs, supersedes, backup_id, writer, created):
    """The index file as the JSON encoder writes it from a list of lists per pack (the reference)."""
    doc = {
        "version": 1,
        "created": created,
        "backup_id": backup_id,
        "writer": writer or {},
        "supersedes": sorted(supersedes),
        "packs": [
            {
                "id": p.id,
                "size": p.size,
                "salt": p.salt.hex(),
                **({"backup_id": p.backup_id} if p.backup_id and p.backup_id != backup_id else {}),
                "blobs": [[e.id.hex(), e.type.decode(), e.offset, e.length, e.raw_length] for e in p.entries],
            }
            for p in packs
        ],
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def test_index_files_are_written_byte_for_byte_as_the_json_encoder_writes_them():
    rng = random.Random(11)
    for round_ in range(12):
        packs = []
        for p in range(rng.randrange(0, 5)):
            entries = [
                PackEntry(
                    rng.choice([BLOB_DATA, BLOB_TREE]),
                    rng.randbytes(32),
                    rng.randrange(0, 1 << 40),
                    rng.randrange(0, 1 << 20),
                    rng.randrange(0, 1 << 20),
                )
                for _ in range(rng.randrange(0, 40))
            ]
            if round_ == 3 and entries:  # values the plain path does not write itself
                entries[0] = PackEntry(b"x", entries[0].id, True, 2, 3)
            written_by = rng.choice([None, "b1", "b2", 'odd "name" \u00e9'])
            packs.append(
                IndexPack(f"{p:064x}", rng.randbytes(32), rng.randrange(1 << 30), entries, written_by)
            )
        supersedes = [f"{i:064x}" for i in range(rng.randrange(0, 3))]
        writer = rng.choice([None, {"host": "h", "pid": 7}])
        got = encode_index_file(packs, supersedes, "b1", writer)
        created = json.loads(got)["created"]
        assert got == _encoded_as_lists(packs, supersedes, "b1", writer, created)


def test_encoding_an_index_file_holds_no_object_per_blob():
    entries = PackEntries()
    for i in range(20_000):
        entries.append(PackEntry(BLOB_DATA, os.urandom(32), 37 + 3000 * i, 2900, 4000))
    packs = [IndexPack("a" * 64, b"s" * 32, 1, entries)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    data = encode_index_file(packs)
    _current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # about two copies of the text (the output being built and the bytes returned), not a list per blob
    assert (peak - before) / len(entries) < 3 * len(data) / len(entries) + 20, (peak - before) / len(entries)
    assert decode_index_file(data, "index/x")[1][0].entries == entries
