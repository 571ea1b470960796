"""The revision of an etcd snapshot file, read from the file itself.

etcd 3.4 names no revision in its snapshot stream, and its ``snapshot status`` reads (and hashes) the
whole file. The revision is the main revision of the last key in the ``key`` bucket of etcd's bbolt
database, so it is found by reading a few pages: the newest valid meta page, the root bucket's tree
down to the ``key`` bucket, and the rightmost path of that bucket's tree.

The on-disk layout read here (little-endian): a page starts with ``id u64, flags u16, count u16,
overflow u32``; a meta page continues with ``magic u32 (0xED0CDAED), version u32, page size u32, flags
u32, root bucket (root page u64, sequence u64), freelist u64, high water mark u64, txid u64, checksum
u64`` (FNV-1a 64 of the fields before it); branch elements are ``pos u32, key size u32, page u64`` and
leaf elements ``flags u32, pos u32, key size u32, value size u32`` (``pos`` counted from the element);
a bucket's value is ``root page u64, sequence u64`` followed, when the root is 0, by an inline page.
A key of etcd's ``key`` bucket is ``main u64 BE, '_', sub u64 BE`` (and ``t`` for a deletion).

Provides :func:`snapshot_revision`, which returns None for anything it does not recognise (the caller
then asks etcd's tool); it never writes. Called by ``etcd-snapshot``.
"""

from __future__ import annotations

import struct

MAGIC = 0xED0CDAED
_PAGE_HEADER = struct.Struct("<QHHI")
_META = struct.Struct("<IIII QQ QQQ Q")
_BRANCH = struct.Struct("<IIQ")
_LEAF = struct.Struct("<IIII")
_BUCKET = struct.Struct("<QQ")
BRANCH, LEAF, META = 0x01, 0x02, 0x04
BUCKET_LEAF = 0x01
MAX_DEPTH = 64


class _Unrecognised(Exception):
    pass


def _fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


class _Bolt:
    def __init__(self, f, size: int):
        self.f, self.size = f, size
        self.page_size, self.root = self._meta()

    def _read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise _Unrecognised
        self.f.seek(offset)
        data = self.f.read(length)
        if len(data) != length:
            raise _Unrecognised
        return data

    def _meta(self) -> tuple[int, int]:
        best = None
        first = self._read(0, _PAGE_HEADER.size + _META.size)
        page_size = _META.unpack_from(first, _PAGE_HEADER.size)[2]
        if page_size < 512 or page_size > 1 << 20 or page_size & (page_size - 1):
            raise _Unrecognised
        for n in (0, 1):
            raw = self._read(n * page_size, _PAGE_HEADER.size + _META.size)
            _, flags, _, _ = _PAGE_HEADER.unpack_from(raw)
            fields = _META.unpack_from(raw, _PAGE_HEADER.size)
            magic, _version, psize, _flags, root, _seq, _freelist, _hwm, txid, checksum = fields
            body = raw[_PAGE_HEADER.size : _PAGE_HEADER.size + _META.size - 8]
            valid = flags & META and magic == MAGIC and psize == page_size and checksum == _fnv1a64(body)
            if valid and (best is None or txid > best[0]):
                best = (txid, root)
        if best is None:
            raise _Unrecognised
        return page_size, best[1]

    def page(self, pgid: int) -> bytes:
        head = self._read(pgid * self.page_size, _PAGE_HEADER.size)
        _, _, _, overflow = _PAGE_HEADER.unpack(head)
        return self._read(pgid * self.page_size, (overflow + 1) * self.page_size)

    @staticmethod
    def elements(page: bytes, base: int = 0):
        """``(flags, key, value_or_child)`` of a branch or leaf page starting at ``base`` of ``page``."""
        _, flags, count, _ = _PAGE_HEADER.unpack_from(page, base)
        out = []
        start = base + _PAGE_HEADER.size
        for i in range(count):
            at = start + i * 16
            if flags & BRANCH:
                pos, ksize, child = _BRANCH.unpack_from(page, at)
                out.append((0, page[at + pos : at + pos + ksize], child))
            elif flags & LEAF:
                eflags, pos, ksize, vsize = _LEAF.unpack_from(page, at)
                key = page[at + pos : at + pos + ksize]
                out.append((eflags, key, page[at + pos + ksize : at + pos + ksize + vsize]))
            else:
                raise _Unrecognised
        return flags, out

    def bucket(self, name: bytes) -> tuple[bytes, int] | None:
        """The ``(page bytes, offset)`` of the root page of the top-level bucket ``name``."""
        pgid = self.root
        for _ in range(MAX_DEPTH):
            flags, elems = self.elements(self.page(pgid))
            if flags & BRANCH:
                below = [child for _, key, child in elems if key <= name]
                if not below:
                    return None
                pgid = below[-1]
                continue
            for eflags, key, value in elems:
                if key == name and eflags & BUCKET_LEAF:
                    root, _ = _BUCKET.unpack_from(value)
                    if root == 0:  # an inline bucket: its page follows the header in the value
                        return value, _BUCKET.size
                    return self.page(root), 0
            return None
        raise _Unrecognised

    def last_key(self, page: bytes, base: int) -> bytes | None:
        for _ in range(MAX_DEPTH):
            flags, elems = self.elements(page, base)
            if not elems:
                return None
            if flags & LEAF:
                return elems[-1][1]
            page, base = self.page(elems[-1][2]), 0
        raise _Unrecognised


def snapshot_revision(path: str) -> int | None:
    """The revision of the etcd snapshot (or data) file at ``path``; None when the file is not a bbolt
    database this reader recognises or its ``key`` bucket is empty."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            bolt = _Bolt(f, f.tell())
            found = bolt.bucket(b"key")
            if found is None:
                return None
            key = bolt.last_key(*found)
    except (_Unrecognised, struct.error, OSError):
        return None
    if key is None or len(key) < 17 or key[8:9] != b"_":
        return None
    return int.from_bytes(key[:8], "big")
