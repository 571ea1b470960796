"""Pack files: many encrypted blobs in one object, with an encrypted header listing them.

Layout (all integers little-endian)::

    "SNFP" | version (1 byte) | salt (32 bytes)          ← prefix; the pack key is HKDF(master, salt, "pack")
    blob 0: nonce (12) | AES-GCM(flag | payload) (+16 tag)
    blob 1: ...
    header: nonce (12) | AES-GCM(entries) (+16 tag)      entries: type (1) | blob ID (32) | stored length (4) | raw length (4)
    header length (4)

Blob offsets are implicit (the prefix length plus the lengths of the blobs before), so a pack describes
itself and ``repair index`` can rebuild the index from packs alone. A pack's name is the BLAKE3 hash
of all its bytes. Provides :class:`PackWriter` (seals blobs straight into one reusable buffer),
:func:`parse_pack_header` and :func:`lazy_buffer`; called by :mod:`.blob_sink`, :mod:`.checker`,
:mod:`.repo` and :mod:`.restorer`.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag

from steps.errors import IntegrityError

from .crypto import FORMAT_VERSION, NONCE_LEN, SALT_LEN, MasterKeys, seal_blob_into, sealed_bound, storage_id

PACK_MAGIC = b"SNFP"
PREFIX_LEN = len(PACK_MAGIC) + 1 + SALT_LEN
ENTRY = struct.Struct("<c32sII")
TAIL = struct.Struct("<I")
_HEADER_AAD = b"snapflow/v1/pack-header/"

BLOB_DATA = b"d"
BLOB_TREE = b"t"
BLOB_TYPES = (BLOB_DATA, BLOB_TREE)


@dataclass(frozen=True)
class PackEntry:
    type: bytes
    id: bytes
    offset: int
    length: int
    raw_length: int


@dataclass
class FinishedPack:
    id: str
    data: bytes
    salt: bytes
    entries: list[PackEntry]

    @property
    def size(self) -> int:
        return len(self.data)


def lazy_buffer(size: int):
    """A zero-filled, writable buffer of ``size`` bytes whose pages only become resident once written
    (an anonymous mapping), so a buffer sized for the worst case costs memory only for what is used."""
    return mmap.mmap(-1, max(size, 1))


class PackWriter:
    """Accumulates sealed blobs for one pack in one reusable buffer. Not thread-safe: one writer per
    thread. After :meth:`finish` the writer starts the next pack (new salt) in the same buffer."""

    def __init__(self, keys: MasterKeys, capacity: int = 0):
        self.keys = keys
        self._buf = lazy_buffer(max(capacity, PREFIX_LEN + 4096))
        self._mv = memoryview(self._buf)
        self._scratch = lazy_buffer(1)
        self._start()

    def _start(self) -> None:
        self.salt = os.urandom(SALT_LEN)
        self.aead = self.keys.pack_aead(self.salt)
        self.prefix = PACK_MAGIC + bytes((FORMAT_VERSION,)) + self.salt
        self._mv[:PREFIX_LEN] = self.prefix
        self.size = PREFIX_LEN
        self.entries: list[PackEntry] = []

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def capacity(self) -> int:
        return len(self._buf)

    def fits(self, length: int) -> bool:
        """True when a blob of ``length`` plaintext bytes surely fits in the buffer as it is."""
        return self.size + sealed_bound(length) <= len(self._buf)

    def _reserve(self, need: int) -> None:
        if need <= len(self._buf):
            return
        bigger = lazy_buffer(need)
        bigger[: self.size] = self._mv[: self.size]
        self._mv.release()
        self._buf = bigger
        self._mv = memoryview(bigger)

    def add(self, blob_type: bytes, blob_id: bytes, data, packed=None, nonce: bytes | None = None) -> int:
        """Seal and append one blob (the buffer grows when it must); returns its stored length.
        ``packed`` and ``nonce``: see :func:`~.crypto.seal_blob_into`."""
        n = len(data)
        self._reserve(self.size + sealed_bound(n))
        if len(self._scratch) < n + 1:
            self._scratch = lazy_buffer(n + 1)
        stored = seal_blob_into(
            self.aead, blob_type, blob_id, data, self._mv[self.size :], self._scratch, packed, nonce
        )
        self.entries.append(PackEntry(blob_type, blob_id, self.size, stored, n))
        self.size += stored
        return stored

    def finish(self) -> FinishedPack:
        """The finished pack (its bytes are a copy: the buffer is reused for the next pack)."""
        plain = b"".join(ENTRY.pack(e.type, e.id, e.length, e.raw_length) for e in self.entries)
        nonce = os.urandom(NONCE_LEN)
        header = nonce + self.aead.encrypt(nonce, plain, _HEADER_AAD + self.prefix)
        data = b"".join((self._mv[: self.size], header, TAIL.pack(len(header))))
        pack = FinishedPack(storage_id(data), data, self.salt, self.entries)
        self._start()
        return pack


def header_length(tail: bytes, pack_size: int, name: str) -> int:
    """Length of the encrypted header given at least the last 4 bytes of a pack."""
    if len(tail) < TAIL.size:
        raise IntegrityError(f"{name}: pack too short")
    (hlen,) = TAIL.unpack(tail[-TAIL.size :])
    if hlen < NONCE_LEN + 16 or hlen + TAIL.size + PREFIX_LEN > pack_size:
        raise IntegrityError(
            f"{name}: pack header length {hlen} is impossible for a pack of {pack_size} bytes"
        )
    return hlen


def parse_pack_header(
    keys: MasterKeys, prefix: bytes, header: bytes, pack_size: int, name: str
) -> tuple[bytes, list[PackEntry]]:
    """Decrypt a pack's header; returns (salt, entries with offsets). IntegrityError naming ``name``."""
    if prefix[:4] != PACK_MAGIC or len(prefix) < PREFIX_LEN:
        raise IntegrityError(f"{name}: not a Snapflow pack (bad magic)")
    if prefix[4] != FORMAT_VERSION:
        raise IntegrityError(f"{name}: unknown pack format version {prefix[4]}")
    prefix = bytes(prefix[:PREFIX_LEN])
    salt = prefix[5:]
    aead = keys.pack_aead(salt)
    try:
        plain = aead.decrypt(bytes(header[:NONCE_LEN]), bytes(header[NONCE_LEN:]), _HEADER_AAD + prefix)
    except InvalidTag:
        raise IntegrityError(f"{name}: pack header authentication failed") from None
    if len(plain) % ENTRY.size:
        raise IntegrityError(f"{name}: pack header has a partial entry")
    entries = []
    offset = PREFIX_LEN
    for t, bid, length, raw in ENTRY.iter_unpack(plain):
        if t not in BLOB_TYPES:
            raise IntegrityError(f"{name}: unknown blob type {t!r} in pack header")
        entries.append(PackEntry(t, bid, offset, length, raw))
        offset += length
    if offset + len(header) + TAIL.size != pack_size:
        raise IntegrityError(
            f"{name}: pack size {pack_size} does not match its header (expected {offset + len(header) + TAIL.size})"
        )
    return salt, entries


def read_pack_entries(keys: MasterKeys, data: bytes, name: str) -> tuple[bytes, list[PackEntry]]:
    """Header entries of a whole pack held in memory."""
    hlen = header_length(data, len(data), name)
    header = data[len(data) - TAIL.size - hlen : len(data) - TAIL.size]
    return parse_pack_header(keys, data[:PREFIX_LEN], header, len(data), name)


def pack_key(pack_id: str) -> str:
    return f"data/{pack_id[:2]}/{pack_id}"
