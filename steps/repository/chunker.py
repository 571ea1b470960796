"""Keyed content-defined chunking (FastCDC 2020 through pyfastcdc).

Provides :class:`Chunker`, whose :meth:`~Chunker.chunks` turns a byte stream into chunks whose
boundaries depend on the content and on the repository's key, and :meth:`~Chunker.stream`, the same
over one reusable buffer (the copy engine's file workers). Called by :mod:`.archiver`.

pyfastcdc only accepts a 64-bit ``seed`` that it XORs into its public gear table. To make the cut points
depend on the key more strongly, the effective gear table is a secret permutation of the public table,
XORed with a secret seed: a gear hash over ``S(data)`` (``bytes.translate`` with a secret permutation
``S`` of 0..255) with table ``G`` equals a gear hash over ``data`` with table ``G∘S``. The chunker
writes ``G∘S`` into its pyfastcdc instance once (after checking that the instance's memory holds exactly
the table pyfastcdc documents, and that the result cuts like the translation), so no substituted copy
of the data is made; when that is not possible (another pyfastcdc build), it falls back to cutting a
translated copy. Both give the same cut points. The chunks handed out are slices of the original data.
The residual fingerprinting risk is discussed in the threat model of docs/design.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import blake3
import pyfastcdc

from steps import runtime

from .config import CHUNK_AVG, CHUNK_MAX, CHUNK_MIN

READ_BLOCK = 8 * 1024 * 1024
_U64 = (1 << 64) - 1


def _keyed_permutation(key: bytes) -> bytes:
    stream = blake3.blake3(b"permutation", key=key).digest(length=2048)
    table = list(range(256))
    for i in range(255, 0, -1):
        j = int.from_bytes(stream[8 * i : 8 * i + 8], "little") % (i + 1)
        table[i], table[j] = table[j], table[i]
    return bytes(table)


def _keyed_seed(key: bytes) -> int:
    # pyfastcdc shifts the seed left by one inside a uint64: keep it below 2**63
    seed = int.from_bytes(blake3.blake3(b"seed", key=key).digest(length=8), "little") & (2**63 - 1)
    return seed or 1


def _permute_gear(cdc, avg: int, min_size: int, max_size: int, seed: int, table: bytes) -> bool:
    """Replace the gear tables of a seeded pyfastcdc instance by their keyed permutation, in place.

    The compiled FastCDC object holds its configuration (three uint32 sizes, four uint64 masks, the
    pointers to the gear tables in use) followed by the pointers to its own seeded copies of the tables.
    Nothing is written unless that layout and the tables' contents (the public GEAR/GEAR_LS tables XORed
    with ``seed``) are exactly as expected. Returns False (instance untouched) otherwise.
    """
    try:
        import ctypes

        from pyfastcdc.py.constants import GEAR, GEAR_LS

        if type(cdc).__basicsize__ != 96:
            return False
        words = (ctypes.c_uint64 * 12).from_address(id(cdc))
        if words[2] != avg | (min_size << 32) or words[3] & 0xFFFFFFFF != max_size:
            return False
        gear_p, gear_ls_p = words[8], words[9]
        if not gear_p or not gear_ls_p or (words[10], words[11]) != (gear_p, gear_ls_p):
            return False
        gear = (ctypes.c_uint64 * 256).from_address(gear_p)
        gear_ls = (ctypes.c_uint64 * 256).from_address(gear_ls_p)
        seed_ls = (seed << 1) & _U64
        if list(gear) != [g ^ seed for g in GEAR] or list(gear_ls) != [g ^ seed_ls for g in GEAR_LS]:
            return False
        old, old_ls = list(gear), list(gear_ls)
        for b in range(256):
            gear[b] = old[table[b]]
            gear_ls[b] = old_ls[table[b]]
        return True
    except Exception:
        return False


def _keyed_fastcdc(avg: int, min_size: int, max_size: int, seed: int, table: bytes):
    """A pyfastcdc instance cutting raw data at the keyed boundaries, or None (use translation)."""
    if os.environ.get(runtime.CHUNKER_TRANSLATE):
        return None
    # Check the procedure on a small instance first: many cuts over random data, compared with the
    # reference (cutting the translated data with the seeded public table).
    probe = pyfastcdc.FastCDC(256, min_size=64, max_size=1024, seed=seed)
    if not _permute_gear(probe, 256, 64, 1024, seed, table):
        return None
    sample = os.urandom(1 << 16)
    ref = pyfastcdc.FastCDC(256, min_size=64, max_size=1024, seed=seed)
    expected = [(c.offset, c.length) for c in ref.cut_buf(sample.translate(table))]
    if [(c.offset, c.length) for c in probe.cut_buf(sample)] != expected:
        return None
    cdc = pyfastcdc.FastCDC(avg, min_size=min_size, max_size=max_size, seed=seed)
    return cdc if _permute_gear(cdc, avg, min_size, max_size, seed, table) else None


class Chunker:
    """Cuts byte streams at content-defined, key-dependent boundaries. Thread-safe (no shared state
    changes after construction)."""

    def __init__(
        self, key: bytes, min_size: int = CHUNK_MIN, avg_size: int = CHUNK_AVG, max_size: int = CHUNK_MAX
    ):
        self.key = key
        self.min_size, self.avg_size, self.max_size = min_size, avg_size, max_size
        self.table = _keyed_permutation(key)
        self.seed = _keyed_seed(key)
        self.block = max(READ_BLOCK, 2 * max_size)
        # a reusable stream buffer needs room for one maximal chunk plus what the next read brings
        self.stream_block = max_size + max(min_size, 1024 * 1024)
        self._keyed = _keyed_fastcdc(avg_size, min_size, max_size, self.seed, self.table)
        self._plain = pyfastcdc.FastCDC(avg_size, min_size=min_size, max_size=max_size, seed=self.seed)

    @property
    def keyed_table(self) -> bool:
        """True when cut points are found without a translated copy of the data."""
        return self._keyed is not None

    def cuts(self, view: memoryview, eof: bool) -> tuple[list[tuple[int, int]], int]:
        """Final chunk boundaries in ``view`` (the start of the not yet chunked stream).

        Returns ``[(offset, length), ...]`` and the end of the last chunk. Unless ``eof``, a chunk that
        starts less than ``max_size`` before the end of ``view`` could still move once more data is read,
        so it is left for the next call.
        """
        n = len(view)
        if n == 0:
            return [], 0
        if eof and n <= self.min_size:
            return [(0, n)], n
        if self._keyed is not None:
            found = self._keyed.cut_buf(view)
        else:
            found = self._plain.cut_buf(view.tobytes().translate(self.table))
        out: list[tuple[int, int]] = []
        pos = 0
        for c in found:
            if not eof and n - c.offset < self.max_size:
                break
            out.append((c.offset, c.length))
            pos = c.offset + c.length
        return out, pos

    def stream(self, readinto: Callable[[memoryview], int], buf) -> Iterator[memoryview]:
        """Chunks of the stream read with ``readinto`` into the reusable buffer ``buf``, in order.

        ``buf`` (a bytearray or mmap) must be longer than ``max_size`` (``stream_block`` bytes: each read
        then brings at least ``stream_block - max_size``). Each chunk is a view of ``buf`` that is only
        valid until the next chunk is requested (the caller hashes and seals it before that), so a worker
        reads any amount of data with one buffer and no allocation per block.
        """
        mv = memoryview(buf)
        cap = len(buf)
        if cap <= self.max_size:
            raise ValueError("chunk buffer must be longer than a maximal chunk")
        n = 0  # bytes in buf
        eof = False
        while True:
            while n < cap and not eof:
                got = readinto(mv[n:])
                if not got:
                    eof = True
                else:
                    n += got
            if n == 0:
                return
            cuts, pos = self.cuts(mv[:n], eof)
            for off, length in cuts:
                yield mv[off : off + length]
            if eof and pos >= n:
                return
            rest = n - pos
            if rest and pos:  # carry the tail to the front (memoryview assignment copies like memmove)
                mv[:rest] = mv[pos:n]
            n = rest

    def chunks(
        self, readinto: Callable[[memoryview], int], size_hint: int | None = None
    ) -> Iterator[memoryview]:
        """Chunks of the stream read with ``readinto`` (like ``file.readinto``), in order.

        Each yielded memoryview stays valid after the next one is produced (every read block is a fresh
        buffer), so chunks can be handed to other threads without copying. ``size_hint`` (the expected
        stream length) keeps the buffers of small files small.
        """
        carry = b""
        eof = False
        consumed = 0
        while True:
            if size_hint is None or consumed >= size_hint:
                cap = self.block
            else:  # one spare byte lets the read that hits the end of the stream see it
                cap = min(self.block, len(carry) + size_hint - consumed + 1)
            buf = bytearray(cap)
            view = memoryview(buf)
            n = len(carry)
            view[:n] = carry
            while n < cap and not eof:
                got = readinto(view[n:])
                if not got:
                    eof = True
                else:
                    n += got
                    consumed += got
            if n == 0:
                return
            if n < cap:  # shrink in place rather than slicing a copy
                view.release()
                del buf[n:]
                view = memoryview(buf)
            cuts, pos = self.cuts(view, eof)
            for off, length in cuts:
                yield view[off : off + length]
            if eof and pos >= n:
                return
            carry = bytes(view[pos:n])

    def chunk_bytes(self, data: bytes) -> list[memoryview]:
        """All chunks of an in-memory buffer."""
        mv = memoryview(data)
        if not mv.nbytes:
            return []
        out = []
        start = 0
        while start < len(mv):
            rest = mv[start:]
            cuts, pos = self.cuts(rest, True)
            out.extend(rest[off : off + length] for off, length in cuts)
            start += pos
            if not pos:
                break
        return out
