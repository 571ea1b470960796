"""The compact in-memory index and index files."""

import os
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steps.errors import IntegrityError
from steps.repository.index import (
    IndexPack,
    MemIndex,
    PackEntries,
    _decode_compact,
    decode_index_file,
    encode_index_file,
)
from steps.repository.pack import BLOB_DATA, BLOB_TREE, PackEntry


def _entries(n, start=0):
    return [
        PackEntry(BLOB_DATA if i % 3 else BLOB_TREE, os.urandom(32), 37 + i * 10, 10, 20 + i)
        for i in range(start, start + n)
    ]


@given(st.lists(st.binary(min_size=32, max_size=32), unique=True, max_size=400))
@settings(max_examples=30, deadline=None)
def test_every_added_blob_is_found_and_nothing_else(ids):
    idx = MemIndex()
    entries = [PackEntry(BLOB_DATA, bid, 37 + i, 1, i) for i, bid in enumerate(ids)]
    idx.add_pack("p" * 64, b"s" * 32, 1000, entries)
    for i, bid in enumerate(ids):
        loc = idx.get(bid)
        assert loc is not None and loc.offset == 37 + i and loc.raw_length == i and loc.pack_id == "p" * 64
    assert idx.get(b"\0" * 31 + b"\1") is None or b"\0" * 31 + b"\1" in ids
    assert len(idx) == len(ids)


def test_blobs_sharing_a_prefix_are_told_apart():
    idx = MemIndex()
    a = b"A" * 8 + os.urandom(24)
    b = b"A" * 8 + os.urandom(24)
    idx.add_pack("p1", b"s" * 32, 100, [PackEntry(BLOB_DATA, a, 37, 1, 1)])
    idx.add_pack("p2", b"s" * 32, 100, [PackEntry(BLOB_DATA, b, 37, 2, 2)])
    assert idx.get(a).pack_id == "p1"
    assert idx.get(b).pack_id == "p2"


def test_first_location_wins_and_duplicates_are_counted():
    idx = MemIndex()
    e = _entries(1)
    idx.add_pack("p1", b"s" * 32, 100, e)
    idx.add_pack("p2", b"s" * 32, 100, e)
    assert idx.get(e[0].id).pack_id == "p1"
    assert idx.duplicates == 1


def test_excluded_packs_are_not_found():
    idx = MemIndex()
    e = _entries(3)
    idx.add_pack("p1", b"s" * 32, 100, e)
    idx.exclude_packs(["p1"])
    assert not idx.has(e[0].id)


def test_memory_per_entry_is_about_64_bytes():
    # GIVEN 200k blobs
    entries = _entries(100_000)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    idx = MemIndex()
    for i in range(0, len(entries), 1000):
        idx.add_pack(f"pack{i}", os.urandom(32), 8_000_000, entries[i : i + 1000])
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    # THEN the index costs well under a dict per blob (~276 B)
    per_entry = (after - before) / len(entries)
    assert per_entry < 90, per_entry
    assert all(idx.has(e.id) for e in entries[::997])


def test_index_files_round_trip():
    packs = [
        IndexPack("a" * 64, b"s" * 32, 1234, _entries(5)),
        IndexPack("b" * 64, b"t" * 32, 99, _entries(2)),
    ]
    doc, decoded = decode_index_file(
        encode_index_file(packs, supersedes=["x" * 64], backup_id="b1"), "index/1"
    )
    assert doc["supersedes"] == ["x" * 64] and doc["backup_id"] == "b1"
    assert [(p.id, p.salt, p.size, p.entries) for p in decoded] == [
        (p.id, p.salt, p.size, p.entries) for p in packs
    ]


def test_which_backup_wrote_a_pack_survives_a_compacted_index_file():
    # GIVEN packs written by two backups, listed together in one index file of no backup (compaction)
    packs = [
        IndexPack("a" * 64, b"s" * 32, 1234, _entries(2), backup_id="b1"),
        IndexPack("b" * 64, b"t" * 32, 99, _entries(1), backup_id="b2"),
        IndexPack("c" * 64, b"u" * 32, 99, _entries(1)),
    ]
    _doc, decoded = decode_index_file(encode_index_file(packs, supersedes=["x" * 64]), "index/1")
    # THEN each pack still names its backup
    assert [p.backup_id for p in decoded] == ["b1", "b2", None]
    # AND in a file written by a backup, its packs name it
    _doc, decoded = decode_index_file(encode_index_file(packs[2:], backup_id="b3"), "index/2")
    assert [p.backup_id for p in decoded] == ["b3"]
    # AND the in-memory index knows it per pack
    idx = MemIndex()
    for p in packs:
        idx.add_pack(p.id, p.salt, p.size, p.entries, backup_id=p.backup_id)
    assert [idx.pack_backup.get(n) for n in range(3)] == ["b1", "b2", None]


def _assert_refused(data: bytes, name: str) -> None:
    """``data`` read as index file ``name`` is refused with an IntegrityError that names it."""
    try:
        decode_index_file(data, name)
    except IntegrityError as err:
        assert name in str(err)
    else:
        raise AssertionError(f"accepted: {data[:300]!r}")


def _respaced(data: bytes) -> bytes:
    """The same document as another JSON writer might lay it out (spaces after separators)."""
    import json

    return json.dumps(json.loads(data), separators=(", ", ": ")).encode()


def test_index_files_decode_the_same_by_either_path():
    # GIVEN an index file as Snapflow writes it, and the same document laid out differently
    packs = [
        IndexPack("a" * 64, b"s" * 32, 1234, _entries(50), backup_id="b1"),
        IndexPack("b" * 64, b"t" * 32, 99, []),
        IndexPack("c" * 64, b"u" * 32, 7, _entries(3)),
    ]
    canonical = encode_index_file(packs, supersedes=["x" * 64])
    # THEN the compact reader takes the file as written, and leaves the other layout to the general one
    assert _decode_compact(canonical, "index/1") is not None
    assert _decode_compact(_respaced(canonical), "index/1") is None
    # AND both give the same document and the same packs and entries
    for data in (canonical, _respaced(canonical)):
        doc, decoded = decode_index_file(data, "index/1")
        assert doc["supersedes"] == ["x" * 64] and "packs" not in doc
        assert [(p.id, p.salt, p.size, p.backup_id, list(p.entries)) for p in decoded] == [
            (p.id, p.salt, p.size, p.backup_id or None, p.entries) for p in packs
        ]
        assert all(isinstance(p.entries, PackEntries) for p in decoded)


def test_a_damaged_blob_list_is_refused_by_name_whichever_path_reads_it():
    packs = [IndexPack("a" * 64, b"s" * 32, 1234, _entries(4))]
    good = encode_index_file(packs)
    for bad in (
        good.replace(b'","d",', b'","x",', 1),  # unknown blob type
        good.replace(b'","d",', b'","d","7",', 1),  # a field too many
        good.replace(b"]]", b"]", 1),  # the list not closed
        good.replace(b'"blobs":[', b'"blobs":5,"x":[', 1),  # not a list
    ):
        _assert_refused(bad, "index/9")


def test_compact_entries_fill_the_index_like_a_list():
    entries = _entries(300)
    compact = PackEntries()
    for e in entries:
        compact.append(e)
    assert compact == entries and len(compact) == 300 and compact[-1] == entries[-1]
    a, b = MemIndex(), MemIndex()
    a.add_pack("p" * 64, b"s" * 32, 5000, entries)
    b.add_pack("p" * 64, b"s" * 32, 5000, compact)
    assert list(a.iter_blobs()) == list(b.iter_blobs())
    assert a.pack_flags == b.pack_flags and list(a.pack_blob_counts) == list(b.pack_blob_counts)


def test_loading_index_files_holds_no_object_per_blob():
    # GIVEN index files of 20 000 blobs, decoded and added the way the repository loads them
    files = [
        encode_index_file(
            [IndexPack(f"{f}{p}".ljust(64, "0"), b"s" * 32, 1, _entries(5000)) for p in range(2)]
        )
        for f in range(2)
    ]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    idx = MemIndex()
    decoded = [decode_index_file(d, "index/x")[1] for d in files]
    for packs in decoded:
        for p in packs:
            idx.add_pack(p.id, p.salt, p.size, p.entries)
    _current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # THEN the peak stays near the compact index and the compact entries (a PackEntry per blob, as
    # decoded before, costs several hundred bytes per blob)
    per_blob = (peak - before) / len(idx)
    assert len(idx) == 20_000
    assert per_blob < 200, per_blob


def test_a_long_blob_list_is_read_in_chunks_exactly_as_written(monkeypatch):
    # GIVEN an index file whose blob lists span many chunks (the chunk made small), the last chunk short
    import steps.repository.index as index_mod

    monkeypatch.setattr(index_mod, "_CHUNK", 700)
    packs = [
        IndexPack("a" * 64, b"s" * 32, 1234, _entries(101)),
        IndexPack("b" * 64, b"t" * 32, 99, []),
        IndexPack("c" * 64, b"u" * 32, 7, _entries(1)),
        IndexPack("d" * 64, b"v" * 32, 8, _entries(37, start=500)),
    ]
    data = encode_index_file(packs)
    # THEN the compact reader takes it, with every entry in order
    fast = _decode_compact(data, "index/1")
    assert fast is not None
    assert [(p.id, list(p.entries)) for p in fast[1]] == [(p.id, p.entries) for p in packs]
    # AND a flaw next to any chunk boundary sends the file to the general reader, which refuses or reads
    # it as JSON says, never as the chunks would have it
    cuts = [i for i in range(len(data)) if data.startswith(b"],[", i)]
    assert len(cuts) > 100
    for cut in cuts[::9]:
        for bad in (
            data[:cut] + b"], [" + data[cut + 3 :],  # a space another writer might put
            data[:cut] + b"],,[" + data[cut + 3 :],  # an empty element
            data[:cut] + b"][" + data[cut + 3 :],  # the comma missing
            data[:cut] + b',"x"],[' + data[cut + 3 :],  # a field too many
        ):
            assert _decode_compact(bad, "index/1") is None
            try:
                _doc, general = decode_index_file(bad, "index/9")
            except IntegrityError as err:
                assert "index/9" in str(err)
            else:  # only the spaced one is valid JSON: then it reads as written
                assert b"], [" in bad
                assert [list(p.entries) for p in general] == [p.entries for p in packs]


def _doc_with(packs_json: str, writer: str = "{}") -> bytes:
    head = '{"version":1,"created":"2026-01-01T00:00:00Z","backup_id":null,'
    return f'{head}"writer":{writer},"supersedes":[],"packs":{packs_json}}}'.encode()


_H = "ab" * 32


def _blob(off) -> str:
    return f'["{_H}","d",{off},2,3]'


def _pack(pid: str, blobs: str) -> str:
    return f'{{"id":"{pid}","size":5,"salt":"00","blobs":{blobs}}}'


def test_a_blob_list_anywhere_but_at_its_pack_is_not_taken_for_the_packs():
    # GIVEN index files whose blob lists stand elsewhere than at their pack's "blobs" (which holds the
    # number the fast reader once put in a list's place), one of them not even valid JSON
    a, b = _pack("a" * 64, "0"), _pack("b" * 64, "1")
    cases = [
        _doc_with(f"[{a}]", writer=f'{{"blobs":[{_blob(7)}]}}'),
        _doc_with(f"[{a}]", writer=f'{{"x\\"blobs":[{_blob(7)}]}}'),
        _doc_with(f"[{a},{b}]", writer=f'{{"a":{{"blobs":[{_blob(7)}]}},"b":{{"blobs":[{_blob(8)}]0}}}}'),
    ]
    for data in cases:
        # THEN the fast reader leaves them to the general one, which refuses them by name
        assert _decode_compact(data, "index/1") is None
        _assert_refused(data, "index/7")


def test_a_blob_list_not_laid_out_as_written_costs_no_memory_per_blob(monkeypatch):
    # GIVEN a long blob list laid out by another writer (a space after each comma: no chunk boundary)
    import steps.repository.index as index_mod

    monkeypatch.setattr(index_mod, "_CHUNK", 700)
    blobs = ", ".join(_blob(i) for i in range(20_000))
    data = _doc_with(f"[{_pack('a' * 64, f'[{blobs}]')}]")
    # WHEN the fast reader looks at it
    tracemalloc.start()
    try:
        fast = _decode_compact(data, "index/1")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # THEN it gives up within two chunks, holding far less than one object per blob
    assert fast is None
    assert peak < 64 * 1024, peak
    # AND the general reader takes it
    _doc, packs = decode_index_file(data, "index/1")
    assert len(packs[0].entries) == 20_000


def test_blob_numbers_at_their_edges_read_as_json_reads_them():
    # GIVEN blob lists whose numbers are at the edges of what the compact reader takes (19 digits), past
    # them, or not canonical JSON integers, next to a usual blob
    def one(number: str) -> bytes:
        tree_blob = '["' + _H + '","t",' + number + ",2," + number + "]"
        return _doc_with(f"[{_pack('a' * 64, f'[{_blob(5)},{tree_blob}]')}]")

    taken = {"0": 0, "7": 7, "9" * 19: 10**19 - 1, "1" + "0" * 18: 10**18}
    for number, value in taken.items():
        # THEN the compact reader takes the 19-digit ones and reads them exactly, tree type included
        fast = _decode_compact(one(number), "index/1")
        assert fast is not None
        (entries,) = [p.entries for p in fast[1]]
        assert [(e.type, e.offset, e.raw_length) for e in entries] == [(b"d", 5, 3), (b"t", value, value)]
    for number in (str(2**64 - 1), "01", "-1", "1.0", "1.5", "1e3", "true", " 7", str(2**64)):
        # AND leaves the others to the general reader, which reads a 20-digit number that fits exactly and
        # refuses the rest by name
        data = one(number)
        assert _decode_compact(data, "index/1") is None
        if number == str(2**64 - 1):
            (pack,) = decode_index_file(data, "index/1")[1]
            assert pack.entries[1].offset == 2**64 - 1
        elif number != " 7":
            _assert_refused(data, "index/8")


def test_blob_ids_other_than_lower_case_hex_leave_the_compact_reader():
    # GIVEN blob lists whose second ID is 64 bytes of anything but lower-case hex digits
    def with_id(blob_id: bytes) -> bytes:
        blob = b'["' + blob_id + b'","d",9,2,3]'
        return _doc_with(f"[{_pack('a' * 64, f'[{_blob(5)},X]')}]").replace(b"X", blob)

    for blob_id in (
        b"AB" * 32,  # upper case
        b"ab" * 29 + b"\\u0061",  # an escape JSON reads as a letter: 64 bytes, 59 characters
        b"ab" * 31 + b"\\\\",  # an escaped backslash
        b"ab" * 31 + b'a"',  # a quote inside: the list is cut elsewhere
        b"ab" * 31 + b"\xc3\xa9",  # not ASCII
        b"ab" * 31 + b"g0",
    ):
        data = with_id(blob_id)
        # THEN the compact reader leaves each to the general one, which reads it as JSON says or refuses
        assert _decode_compact(data, "index/1") is None, blob_id
        try:
            _doc, (pack,) = decode_index_file(data, "index/8")
        except IntegrityError as err:
            assert "index/8" in str(err)
        else:
            assert blob_id == b"AB" * 32 and pack.entries[1].id == b"\xab" * 32


def test_malformed_index_files_are_refused_by_name_and_nothing_else():
    def one(blob: str) -> bytes:
        return _doc_with(f"[{_pack('a' * 64, f'[{blob}]')}]")

    for data in (
        b"[]",
        b"7",
        _doc_with("[1]"),
        one(f'["{_H}",1,0,0,0]'),  # a type that is no string
        one(_blob(-1)),  # a negative offset
        one(_blob(2**64)),  # past 64 bits
        one(_blob("Infinity")),
        b'{"version":1,"x":' + b"[" * 200_000,  # nested past the decoder's recursion
    ):
        _assert_refused(data, "index/8")


def test_a_pack_named_or_sized_otherwise_than_a_writer_does_is_refused_by_name():
    # GIVEN index files whose pack is named by anything but its 64 lower-case hex digits (its object key
    # is made of the name), or sized by anything but a non-negative integer
    blobs = f"[{_blob(5)}]"
    pid = '"' + "a" * 64 + '"'

    def pack(pack_id: str, size: str) -> str:
        return '{"id":' + pack_id + ',"size":' + size + ',"salt":"00","blobs":' + blobs + "}"

    assert decode_index_file(_doc_with(f"[{pack(pid, '5')}]"), "index/8")[1][0].size == 5  # (as written)
    for pack_json, why in (
        (pack('"../../' + "a" * 58 + '"', "5"), "pack ID"),
        (pack('"' + "A" * 64 + '"', "5"), "pack ID"),
        (pack('"' + "a" * 63 + '"', "5"), "pack ID"),
        (pack("7", "5"), "pack ID"),
        (pack(pid, '"5"'), "size"),
        (pack(pid, "-1"), "size"),
        (pack(pid, "5.0"), "size"),
    ):
        data = _doc_with(f"[{pack_json}]")
        # THEN whichever reader sees it, the file is refused, naming it and the field
        assert _decode_compact(data, "index/1") is None
        with pytest.raises(IntegrityError, match=f"^index/8: .*{why}"):
            decode_index_file(data, "index/8")
