"""The index: which pack holds each blob, where, and how long it is.

Provides :class:`MemIndex`, the compact in-memory form (about 60 bytes per blob: fixed-size segments of
parallel arrays plus an open-addressing hash table of 4-byte slots, instead of a ~276-byte Python dict
entry per blob), and
:func:`encode_index_file` / :func:`decode_index_file` for the JSON index files stored under ``index/``.
Called by :mod:`.repo`, :mod:`.archiver`, :mod:`.checker`.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

import orjson

from steps.errors import IntegrityError, printable

from .pack import BLOB_DATA, BLOB_TREE, BLOB_TYPES, PackEntry
from .tree import is_blob_id

INDEX_FORMAT_VERSION = 1
_LOAD = 0.7
FLAG_DATA = 1
FLAG_TREE = 2
FLAG_EXCLUDED = 4
_TREE = BLOB_TREE[0]
_TYPE_BYTES = [bytes((b,)) for b in range(256)]  # a stored type byte as the one-byte bytes


class BlobLocation(NamedTuple):
    """Where a blob is stored (a named tuple: a restore builds one per blob it plans, and a frozen
    dataclass takes three times as long to build)."""

    type: bytes
    pack_id: str
    pack_no: int
    offset: int
    length: int
    raw_length: int
    salt: bytes


# Entries live in fixed-size segments, allocated whole and never resized: an array that grows is copied
# to a larger block at each resize, and the blocks it leaves behind stay with the allocator (measured:
# about 90 bytes per blob of free heap after loading a 400 000-blob index, more than the index itself).
_SEG_BITS = 14
_SEG = 1 << _SEG_BITS  # entries per segment
_SEG_MASK = _SEG - 1
_ORDER = sys.byteorder  # an ID's first 8 bytes as a machine word are its hash
NOT_INDEXED, NOT_DATA = -1, -2  # what MemIndex.data_lengths gives for a blob it has no data blob for


class MemIndex:
    """Blob ID → location, compact. Thread-safe. The first location added for a blob wins; further
    locations are kept aside (they are rare) so that a blob stays found when the pack of its first
    location is excluded.

    Per blob: the 32-byte ID (its first 8 bytes are the hash), pack number, offset, length and plaintext
    length (4 bytes each) and type (1 byte) in segments of 16 384 entries, plus the hash table's 4-byte
    slots (at most 70 % full): 49 bytes and 5.7 to 11.4 bytes of table."""

    def __init__(self, capacity: int = 1024):
        self._lock = threading.Lock()
        # packs
        self.pack_ids: list[str] = []
        self.pack_salts: list[bytes] = []
        self.pack_sizes = array("Q")
        self.pack_flags = bytearray()
        self.pack_blob_counts = array("I")
        self._pack_no: dict[str, int] = {}
        self.pack_backup: dict[int, str] = {}  # pack number -> the backup that wrote it, when known
        # blobs: entry n is item n & _SEG_MASK of segment n >> _SEG_BITS of each list
        self._n = 0
        self._ids: list[bytearray] = []
        self._pack: list[array] = []
        self._offset: list[array] = []
        self._length: list[array] = []
        self._raw: list[array] = []
        self._type: list[bytearray] = []
        cap = 1024
        while cap * _LOAD < capacity:
            cap *= 2
        self._table = array("I", [0]) * cap
        self._mask = cap - 1
        self.duplicates = 0
        self._dups: dict[int, list[int]] = {}  # entry number of the first location -> other entries

    # -- size ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._n

    @property
    def pack_count(self) -> int:
        return len(self.pack_ids)

    def nbytes(self) -> int:
        """Memory held by the blob segments and the hash table."""
        return len(self._ids) * _SEG * (32 + 4 * 4 + 1) + len(self._table) * 4

    # -- packs --------------------------------------------------------------------------------
    def pack_no(self, pack_id: str) -> int | None:
        return self._pack_no.get(pack_id)

    def has_pack(self, pack_id: str) -> bool:
        return pack_id in self._pack_no

    def add_pack(
        self,
        pack_id: str,
        salt: bytes,
        size: int,
        entries: Iterable[PackEntry],
        backup_id: str | None = None,
    ) -> int:
        """Register a pack and its blobs (and the backup that wrote it, when known); returns the pack
        number. Re-adding a known pack is a no-op."""
        with self._lock:
            existing = self._pack_no.get(pack_id)
            if existing is not None:
                return existing
            if not isinstance(entries, PackEntries):  # PackEntry objects: to columns first
                entries = _columns(entries)
            no = len(self.pack_ids)
            self._add_entries(no, entries)  # raises before anything is added when an entry is unfit
            if backup_id:
                self.pack_backup[no] = backup_id
            self.pack_ids.append(pack_id)
            self.pack_salts.append(salt)
            self.pack_sizes.append(size)
            self._pack_no[pack_id] = no
            count = len(entries)
            trees = entries.types.count(_TREE)
            flags = (FLAG_TREE if trees else 0) | (FLAG_DATA if trees < count else 0)
            self.pack_flags.append(flags)
            self.pack_blob_counts.append(count)
            return no

    def exclude_packs(self, pack_ids: Iterable[str]) -> None:
        """Hide packs (e.g. prune's deletion candidates): their blobs are no longer found by lookups,
        unless another, not excluded, pack holds them too."""
        with self._lock:
            for pid in pack_ids:
                no = self._pack_no.get(pid)
                if no is not None:
                    self.pack_flags[no] |= FLAG_EXCLUDED

    def is_tree_pack(self, pack_no: int) -> bool:
        return self.pack_flags[pack_no] & (FLAG_TREE | FLAG_DATA) == FLAG_TREE

    # -- blobs --------------------------------------------------------------------------------
    def _add_entries(self, no: int, e: PackEntries) -> None:
        """Append a pack's blobs to the segments column by column, then hash each one (a blob already
        indexed keeps its first location; this one is kept aside as a duplicate)."""
        count = len(e)
        if len(e.ids) != 32 * count or not len(e.offsets) == len(e.lengths) == len(e.raws) == count:
            raise ValueError("blob IDs are 32 bytes")
        # converted before anything is added: a value beyond 4 bytes raises OverflowError here
        packs = array("I", [no]) * count
        offsets, lengths, raws = array("I", e.offsets), array("I", e.lengths), array("I", e.raws)
        while self._n + count > _LOAD * (self._mask + 1):
            self._grow()
        first = pos = self._n
        k = 0
        while k < count:
            s, i = pos >> _SEG_BITS, pos & _SEG_MASK
            if s == len(self._ids):
                self._ids.append(bytearray(32 * _SEG))
                self._pack.append(array("I", [0]) * _SEG)
                self._offset.append(array("I", [0]) * _SEG)
                self._length.append(array("I", [0]) * _SEG)
                self._raw.append(array("I", [0]) * _SEG)
                self._type.append(bytearray(_SEG))
            take = min(count - k, _SEG - i)
            self._ids[s][32 * i : 32 * (i + take)] = e.ids[32 * k : 32 * (k + take)]
            self._pack[s][i : i + take] = packs[k : k + take]
            self._offset[s][i : i + take] = offsets[k : k + take]
            self._length[s][i : i + take] = lengths[k : k + take]
            self._raw[s][i : i + take] = raws[k : k + take]
            self._type[s][i : i + take] = e.types[k : k + take]
            pos += take
            k += take
        self._n = first + count
        self._hash_in(first, e.ids)

    def _hash_in(self, first: int, ids: bytearray) -> None:
        """Hash entries ``first``, ``first + 1``, ... whose IDs are ``ids``. A function of its own:
        tracemalloc finds the line of each allocation at a cost that grows with the function's length."""
        table, mask, segs = self._table, self._mask, self._ids
        # each segment's IDs as words too: a slot taken by another ID is told apart by its first word,
        # without copying either ID (the whole IDs are compared only when those are equal)
        words_of = [memoryview(seg).cast("Q") for seg in segs]
        try:
            with memoryview(ids) as view, view.cast("Q") as words:
                for j, prefix in enumerate(words[::4]):  # the first 8 bytes of each ID
                    i = prefix & mask
                    while True:
                        v = table[i]
                        if not v:
                            table[i] = first + j + 1
                            break
                        m = v - 1
                        if words_of[m >> _SEG_BITS][4 * (m & _SEG_MASK)] == prefix:
                            o = 32 * (m & _SEG_MASK)
                            if segs[m >> _SEG_BITS][o : o + 32] == ids[32 * j : 32 * j + 32]:
                                self.duplicates += 1
                                self._dups.setdefault(m, []).append(first + j)
                                break
                        i = (i + 1) & mask
        finally:
            for w in words_of:
                w.release()

    def _grow(self) -> None:
        cap = (self._mask + 1) * 2
        self._table = array("I")  # the entries are rehashed from their IDs: free the old table first
        table = self._table = array("I", [0]) * cap
        self._mask = mask = cap - 1
        dups = {d for extra in self._dups.values() for d in extra}
        n = 0
        for seg in self._ids:
            k = min(_SEG, self._n - n)
            with memoryview(seg) as view, view.cast("Q") as words:
                for prefix in words[: 4 * k : 4]:  # the first 8 bytes of each ID
                    n += 1
                    if dups and n - 1 in dups:
                        continue
                    i = prefix & mask
                    while table[i]:
                        i = (i + 1) & mask
                    table[i] = n

    def _find(self, blob_id: bytes, prefix: int) -> int:
        table, mask, ids = self._table, self._mask, self._ids
        i = prefix & mask
        while True:
            v = table[i]
            if not v:
                return -1
            n = v - 1
            j = 32 * (n & _SEG_MASK)
            if ids[n >> _SEG_BITS][j : j + 32] == blob_id:
                return n
            i = (i + 1) & mask

    def _entry(self, blob_id: bytes) -> int:
        with self._lock:
            return self._visible(self._find(blob_id, int.from_bytes(blob_id[:8], _ORDER)))

    def _visible(self, n: int) -> int:
        """Entry ``n``, or, when its pack is excluded, another location of the blob in a pack that is
        not; -1 for none (and for ``n`` -1)."""
        if n >= 0 and self.pack_flags[self._pack_of(n)] & FLAG_EXCLUDED:
            for d in self._dups.get(n, ()):
                if not self.pack_flags[self._pack_of(d)] & FLAG_EXCLUDED:
                    return d
            return -1
        return n

    def _pack_of(self, n: int) -> int:
        return self._pack[n >> _SEG_BITS][n & _SEG_MASK]

    def _id_of(self, n: int) -> bytes:
        j = 32 * (n & _SEG_MASK)
        return bytes(self._ids[n >> _SEG_BITS][j : j + 32])

    def is_excluded(self, pack_no: int) -> bool:
        return bool(self.pack_flags[pack_no] & FLAG_EXCLUDED)

    def excluded_packs(self) -> set[str]:
        return {pid for no, pid in enumerate(self.pack_ids) if self.pack_flags[no] & FLAG_EXCLUDED}

    def has(self, blob_id: bytes) -> bool:
        return self._entry(blob_id) >= 0

    def has_all(self, blob_ids: Iterable[bytes]) -> bool:
        """Whether every one of ``blob_ids`` is indexed (in a pack not excluded): :meth:`has` for many
        IDs under one lock, for an incremental copy's unchanged files (hundreds of thousands of
        lookups, where the calls themselves were most of the cost)."""
        with self._lock:
            return -1 not in self._entries(blob_ids)

    def __contains__(self, blob_id: bytes) -> bool:
        return self._entry(blob_id) >= 0

    def _location(self, n: int) -> BlobLocation:
        s, i = n >> _SEG_BITS, n & _SEG_MASK
        p = self._pack[s][i]
        return BlobLocation(
            _TYPE_BYTES[self._type[s][i]],
            self.pack_ids[p],
            p,
            self._offset[s][i],
            self._length[s][i],
            self._raw[s][i],
            self.pack_salts[p],
        )

    def get(self, blob_id: bytes) -> BlobLocation | None:
        n = self._entry(blob_id)
        return None if n < 0 else self._location(n)

    def raw_length(self, blob_id: bytes) -> int | None:
        n = self._entry(blob_id)
        return self._raw[n >> _SEG_BITS][n & _SEG_MASK] if n >= 0 else None

    def _entries(self, blob_ids: Iterable[bytes]) -> list[int]:
        """:meth:`_entry` of each of ``blob_ids`` (call with the lock held): the probe written out in one
        loop, without a call per ID, for the lookups of an incremental copy's unchanged files and of a
        restore's survey and plan (a million of each for a million small files, where the calls were most
        of the cost). The IDs' hashes are read in one pass over the joined IDs, and a slot's ID is compared
        in place (``startswith`` at its offset) instead of as a copy: both only for IDs of 32 bytes, the
        only length ever indexed (other lengths are looked up one by one, and found nowhere)."""
        blob_ids = blob_ids if isinstance(blob_ids, list) else list(blob_ids)
        if not blob_ids:
            return []
        if set(map(len, blob_ids)) != {32}:
            return [self._visible(self._find(b, int.from_bytes(b[:8], _ORDER))) for b in blob_ids]
        with memoryview(b"".join(blob_ids)) as view, view.cast("Q") as words:
            prefixes = words[::4].tolist()  # the first 8 bytes of each ID, as _hash_in reads them
        out: list[int] = []
        put = out.append
        table, mask, ids, flags, packs, visible = (
            self._table,
            self._mask,
            self._ids,
            self.pack_flags,
            self._pack,
            self._visible,
        )
        excluded = any(f & FLAG_EXCLUDED for f in flags)
        for bid, prefix in zip(blob_ids, prefixes, strict=False):  # (equal lengths, by construction)
            i = prefix & mask
            while True:
                v = table[i]
                if not v:
                    put(-1)
                    break
                n = v - 1
                if ids[n >> _SEG_BITS].startswith(bid, (n & _SEG_MASK) << 5):
                    put(
                        visible(n)
                        if excluded and flags[packs[n >> _SEG_BITS][n & _SEG_MASK]] & FLAG_EXCLUDED
                        else n
                    )
                    break
                i = (i + 1) & mask
        return out

    def data_lengths(self, blob_ids: Iterable[bytes]) -> list[int]:
        """The plaintext length of each of ``blob_ids`` as a data blob, for many IDs under one lock:
        :data:`NOT_INDEXED` for one not indexed (or only in excluded packs), :data:`NOT_DATA` for a tree."""
        data = BLOB_DATA[0]
        with self._lock:
            types, raws = self._type, self._raw
            return [
                NOT_INDEXED
                if n < 0
                else NOT_DATA
                if types[n >> _SEG_BITS][n & _SEG_MASK] != data
                else raws[n >> _SEG_BITS][n & _SEG_MASK]
                for n in self._entries(blob_ids)
            ]

    def places(self, blob_ids: Iterable[bytes]) -> list[tuple[int, int, int, int] | None]:
        """(pack number, offset, stored length, plaintext length) of each of ``blob_ids``, None for one not
        indexed (or only in excluded packs): :meth:`get` of many IDs under one lock, without a location
        object per blob."""
        with self._lock:
            packs, offsets, lengths, raws = self._pack, self._offset, self._length, self._raw
            return [
                None
                if n < 0
                else (
                    packs[n >> _SEG_BITS][n & _SEG_MASK],
                    offsets[n >> _SEG_BITS][n & _SEG_MASK],
                    lengths[n >> _SEG_BITS][n & _SEG_MASK],
                    raws[n >> _SEG_BITS][n & _SEG_MASK],
                )
                for n in self._entries(blob_ids)
            ]

    def iter_blobs(self) -> Iterator[tuple[bytes, BlobLocation]]:
        for n in range(self._n):
            yield self._id_of(n), self._location(n)

    def pack_entries(self) -> dict[int, list[PackEntry]]:
        """Blobs grouped by pack number (for writing index files and checks)."""
        out: dict[int, list[PackEntry]] = {}
        for n in range(self._n):
            loc = self._location(n)
            out.setdefault(loc.pack_no, []).append(
                PackEntry(loc.type, self._id_of(n), loc.offset, loc.length, loc.raw_length)
            )
        return out


def _columns(entries: Iterable[PackEntry]) -> PackEntries:
    listed = list(entries)
    if any(len(e.id) != 32 for e in listed):
        raise ValueError("blob IDs are 32 bytes")
    columns = PackEntries()
    columns.types = bytearray(b"".join(e.type for e in listed))
    columns.ids = bytearray(b"".join(e.id for e in listed))
    columns.offsets = array("Q", [e.offset for e in listed])
    columns.lengths = array("Q", [e.length for e in listed])
    columns.raws = array("Q", [e.raw_length for e in listed])
    return columns


# -- index files ---------------------------------------------------------------------------------


class PackEntries:
    """A pack's blobs as read from an index file, compact: parallel arrays (about 60 bytes per blob)
    instead of a :class:`PackEntry` per blob (several hundred bytes with its ID). Iterating, indexing
    and comparing with a list give :class:`PackEntry` objects, one at a time."""

    __slots__ = ("ids", "lengths", "offsets", "raws", "types")

    def __init__(self) -> None:
        self.types = bytearray()
        self.ids = bytearray()
        self.offsets = array("Q")
        self.lengths = array("Q")
        self.raws = array("Q")

    def append(self, entry: PackEntry) -> None:
        self.types += entry.type
        self.ids += entry.id
        self.offsets.append(entry.offset)
        self.lengths.append(entry.length)
        self.raws.append(entry.raw_length)

    def __len__(self) -> int:
        return len(self.types)

    def __getitem__(self, i: int) -> PackEntry:
        if i < 0:
            i += len(self.types)
        if not 0 <= i < len(self.types):
            raise IndexError(i)
        return PackEntry(
            bytes(self.types[i : i + 1]),
            bytes(self.ids[32 * i : 32 * i + 32]),
            self.offsets[i],
            self.lengths[i],
            self.raws[i],
        )

    def __iter__(self) -> Iterator[PackEntry]:
        for i in range(len(self.types)):
            yield self[i]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PackEntries | list | tuple):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"PackEntries({list(self)!r})"


@dataclass
class IndexPack:
    id: str
    salt: bytes
    size: int
    entries: list[PackEntry]
    backup_id: str | None = None  # the backup whose copy wrote the pack, when known


def encode_index_file(
    packs: Iterable[IndexPack],
    supersedes: Iterable[str] = (),
    backup_id: str | None = None,
    writer: dict | None = None,
) -> bytes:
    """The index file's JSON. Each pack's blob list is written straight into the output, as
    ``json.dumps`` writes it, instead of as a list of lists first (about 300 bytes per blob while the
    file is encoded)."""
    packs = list(packs)
    token = os.urandom(8).hex()  # stands for each blob list in the rest of the document
    doc = {
        "version": INDEX_FORMAT_VERSION,
        "created": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "backup_id": backup_id,
        "writer": writer or {},
        "supersedes": sorted(supersedes),
        "packs": [
            {
                "id": p.id,
                "size": p.size,
                "salt": p.salt.hex(),
                # who wrote the pack, where the file's own backup_id does not say it (compaction)
                **({"backup_id": p.backup_id} if p.backup_id and p.backup_id != backup_id else {}),
                "blobs": f"{token}:{i}",
            }
            for i, p in enumerate(packs)
        ],
    }
    skeleton = json.dumps(doc, separators=(",", ":")).encode()
    out = bytearray()
    pos = 0
    for i, p in enumerate(packs):
        mark = b'"%s:%d"' % (token.encode(), i)
        at = skeleton.index(mark, pos)
        out += skeleton[pos:at]
        _blob_list_into(out, p.entries)
        pos = at + len(mark)
    out += skeleton[pos:]
    return bytes(out)


def _blob_list_into(out: bytearray, entries: Iterable[PackEntry]) -> None:
    out += b"["
    sep = b""
    for e in entries:
        out += sep
        sep = b","
        if e.type in BLOB_TYPES and type(e.offset) is type(e.length) is type(e.raw_length) is int:
            out += b'["%s","%s",%d,%d,%d]' % (e.id.hex().encode(), e.type, e.offset, e.length, e.raw_length)
        else:  # anything unusual is written by the JSON encoder itself
            blob = [e.id.hex(), e.type.decode(), e.offset, e.length, e.raw_length]
            out += json.dumps(blob, separators=(",", ":")).encode()
    out += b"]"


# A blob list exactly as encode_index_file writes it; anything else takes the general path.
_NUMBER = rb"(?:0|[1-9][0-9]{0,18})"  # (at most 19 digits: below 2**64, as the columns hold)
# (an ID is matched as 64 bytes other than a quote, so that cutting at quotes leaves each blob's parts
# in their places, and the IDs are checked as lower-case hex digits together afterwards: the hex class
# was two thirds of the pattern's time)
_BLOB = rb'\["[^"]{64}","[a-z]",' + _NUMBER + rb"," + _NUMBER + rb"," + _NUMBER + rb"\]"
_BLOB_LIST = re.compile(_BLOB + rb"(?:," + _BLOB + rb")*")
_TYPE_BYTES_SET = bytes(t[0] for t in BLOB_TYPES)
_HEX_DIGITS = b"0123456789abcdef"
_CHUNK = 1 << 18  # bytes of a blob list decoded at once (about 2 800 blobs)


def _blob_columns(data: bytes, start: int, end: int) -> PackEntries | None:
    """The blob list ``data[start:end]`` (``[`` to ``]``) as columns, or None when it is not exactly as
    :func:`_blob_list_into` writes it. Read a chunk of whole blobs at a time: the chunk is first matched
    whole against the written form (no object per blob), then cut at its quotes, which in that form
    leave each blob as ``[``, ID, ``,``, type and ``,offset,length,raw_length],[`` (the last without
    ``,[``): the IDs and types are joined column-wise and the numbers parsed in one call."""
    entries = PackEntries()
    pos, last = start + 1, end - 1  # after the list's "[", at its closing "]"
    while pos < last:
        # A chunk ends at a blob's "]" followed by ",[" (never inside a blob: a blob holds no "["), found
        # within a second chunk's length (the writer's blobs are under 120 bytes): a list without one
        # there is not as written, and is not matched whatever its length.
        cut = -1
        if pos + _CHUNK < last:
            cut = data.find(b"],[", pos + _CHUNK, min(last, pos + 2 * _CHUNK))
            if cut < 0 and pos + 2 * _CHUNK < last:
                return None
        stop = last if cut < 0 else cut + 1
        if _BLOB_LIST.fullmatch(data, pos, stop) is None:
            return None
        parts = data[pos:stop].split(b'"')
        types = b"".join(parts[3::4])
        if types.translate(None, _TYPE_BYTES_SET):  # a letter that is not a blob type
            return None
        ids = b"".join(parts[1::4])
        if ids.translate(None, _HEX_DIGITS):  # not only 0-9a-f
            return None
        # ",o,l,r],[" ... ",o,l,r]" -> "o,l,r,o,l,r...": canonical decimal integers, as matched
        values = orjson.loads(b"[%s]" % b"".join(parts[4::4]).replace(b"],[", b"")[1:-1])
        entries.types += types
        entries.ids += bytes.fromhex(ids.decode())
        entries.offsets.extend(values[0::3])
        entries.lengths.extend(values[1::3])
        entries.raws.extend(values[2::3])
        pos = stop + 1  # past the comma between two chunks (or past the end)
    return entries


def _pack_head(p, file_backup) -> tuple[str, bytes, int, str | None] | str:
    """A pack's ID, salt, size and writer as an index file gives them, or why they are unfit: the ID is
    what the pack's object key is made of (``data/<2>/<id>``), so nothing but a pack's own name is taken.
    Both readers apply it."""
    pid, size, written_by = p["id"], p["size"], p.get("backup_id", file_backup)
    if not is_blob_id(pid):  # (a pack is named by the hex BLAKE3 of its stored bytes: spelled as a blob ID)
        return f"pack ID {printable(repr(pid)[:80])}: expected 64 lower-case hex digits"
    if type(size) is not int or size < 0:
        return f"pack {pid}: size: expected a non-negative integer"
    if written_by is not None and not isinstance(written_by, str):
        return f"backup_id: expected a string, got {printable(repr(written_by)[:80])}"
    return pid, bytes.fromhex(p["salt"]), size, written_by


def _decode_compact(data: bytes, name: str) -> tuple[dict, list[IndexPack]] | None:
    """The index file decoded without a Python object per blob (each pack's blob list is read in chunks
    straight into :class:`PackEntries`, the rest of the document as JSON), or None when the file is not
    exactly as :func:`encode_index_file` writes it: then the general decoder reads it."""
    lists: list[PackEntries] = []
    pieces: list[bytes] = []  # the document with each blob list replaced by a token and its number
    # The token cannot be in the file: a list found anywhere but at its pack's "blobs" leaves a pack
    # without its token, and the file goes to the general reader.
    token = os.urandom(8).hex()
    pos = 0
    while (at := data.find(b'"blobs":[', pos)) >= 0:  # also found after an escaped quote in a string
        start = at + 8
        end = start + 2 if data.startswith(b"[]", start) else data.find(b"]]", start) + 2
        if end < start + 2:
            return None
        entries = _blob_columns(data, start, end)
        if entries is None:
            return None
        pieces += (data[pos:start], b'"%s:%d"' % (token.encode(), len(lists)))
        lists.append(entries)
        pos = end
    pieces.append(data[pos:])
    skeleton = b"".join(pieces)
    try:
        doc = json.loads(skeleton)
        if not isinstance(doc, dict) or doc.get("version") != INDEX_FORMAT_VERSION:
            return None
        file_backup = doc.get("backup_id")
        packs = []
        raw_packs = doc["packs"]
        if not isinstance(raw_packs, list) or len(raw_packs) != len(lists):
            return None
        for i, p in enumerate(raw_packs):
            if not isinstance(p, dict) or p.get("blobs") != f"{token}:{i}":
                return None
            head = _pack_head(p, file_backup)
            if isinstance(head, str):
                return None
            packs.append(IndexPack(*head[:3], lists[i], head[3]))
    except (KeyError, TypeError, ValueError, RecursionError):
        return None
    doc.pop("packs", None)
    return doc, packs


def decode_index_file(data: bytes, name: str) -> tuple[dict, list[IndexPack]]:
    fast = _decode_compact(bytes(data), name)
    if fast is not None:
        return fast
    try:
        doc = json.loads(data)
        if doc.get("version") != INDEX_FORMAT_VERSION:
            raise IntegrityError(f"{name}: unknown index format version {doc.get('version')!r}")
        packs = []
        file_backup = doc.get("backup_id")
        for p in doc["packs"]:
            head = _pack_head(p, file_backup)
            if isinstance(head, str):
                raise IntegrityError(f"{name}: {head}")
            entries = PackEntries()
            for bid, t, off, length, raw in p["blobs"]:
                bt = t.encode()
                if bt not in BLOB_TYPES:
                    raise IntegrityError(f"{name}: unknown blob type {t!r}")
                if not type(off) is type(length) is type(raw) is int:  # (not 1.5, 1e3 or true)
                    raise IntegrityError(f"{name}: a blob's offset and lengths are not all integers")
                entries.append(PackEntry(bt, bytes.fromhex(bid), off, length, raw))
            packs.append(IndexPack(*head[:3], entries, head[3]))
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError, RecursionError) as err:
        raise IntegrityError(f"{name}: malformed index file ({type(err).__name__})") from None
    doc.pop("packs", None)
    return doc, packs


__all__ = [
    "BLOB_DATA",
    "BLOB_TREE",
    "NOT_DATA",
    "NOT_INDEXED",
    "BlobLocation",
    "IndexPack",
    "MemIndex",
    "PackEntries",
    "decode_index_file",
    "encode_index_file",
]
