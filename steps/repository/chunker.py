"""Keyed content-defined chunking (FastCDC 2020 through pyfastcdc).

Provides :class:`Chunker`, whose :meth:`~Chunker.chunks` turns a byte stream into chunks whose
boundaries depend on the content and on the repository's key. Called by :mod:`.archiver`.

pyfastcdc only accepts a 64-bit ``seed`` that it XORs into its public gear table. To make the cut points
depend on the key more strongly, the chunker runs FastCDC over a keyed byte substitution of the data
(``bytes.translate`` with a secret permutation of 0..255): a gear hash over ``S(data)`` with table ``G``
equals a gear hash over ``data`` with table ``G∘S``. The effective table is therefore a secret
permutation of the public table, XORed with a secret seed. The chunks handed out are slices of the
original data; the substituted copy is only used to find the boundaries. The residual fingerprinting
risk is discussed in the threat model of docs/design.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import blake3
import pyfastcdc

from .config import CHUNK_AVG, CHUNK_MAX, CHUNK_MIN

READ_BLOCK = 8 * 1024 * 1024


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


class Chunker:
    """Cuts byte streams at content-defined, key-dependent boundaries. Thread-safe (no shared state)."""

    def __init__(
        self, key: bytes, min_size: int = CHUNK_MIN, avg_size: int = CHUNK_AVG, max_size: int = CHUNK_MAX
    ):
        self.key = key
        self.min_size, self.avg_size, self.max_size = min_size, avg_size, max_size
        self.table = _keyed_permutation(key)
        self.seed = _keyed_seed(key)
        self.block = max(READ_BLOCK, 2 * max_size)

    def _cdc(self) -> pyfastcdc.FastCDC:
        return pyfastcdc.FastCDC(
            self.avg_size, min_size=self.min_size, max_size=self.max_size, seed=self.seed
        )

    def chunks(
        self, readinto: Callable[[memoryview], int], size_hint: int | None = None
    ) -> Iterator[memoryview]:
        """Chunks of the stream read with ``readinto`` (like ``file.readinto``), in order.

        Each yielded memoryview stays valid after the next one is produced (every read block is a fresh
        buffer), so chunks can be handed to other threads without copying. ``size_hint`` (the expected
        stream length) keeps the buffers of small files small.
        """
        cdc = self._cdc()
        carry = b""
        eof = False
        consumed = 0
        while True:
            if size_hint is None:
                cap = self.block
            else:  # one spare byte lets the read that hits the end of the stream see it
                cap = min(self.block, len(carry) + max(size_hint - consumed, 0) + 1)
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
            if eof and n <= self.min_size:
                yield view
                return
            pos = 0
            for c in cdc.cut_buf(buf.translate(self.table)):
                if not eof and n - c.offset < self.max_size:
                    break  # this cut could move once more data is read: carry it over
                yield view[c.offset : c.offset + c.length]
                pos = c.offset + c.length
            if eof and pos >= n:
                return
            carry = bytes(view[pos:n])

    def chunk_bytes(self, data: bytes) -> list[memoryview]:
        """All chunks of an in-memory buffer."""
        mv = memoryview(data)
        pos = 0

        def readinto(target: memoryview) -> int:
            nonlocal pos
            k = min(len(target), len(mv) - pos)
            target[:k] = mv[pos : pos + k]
            pos += k
            return k

        return list(self.chunks(readinto, len(data)))
