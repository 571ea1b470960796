"""Encryption, compression and naming of everything the repository stores.

Provides :class:`MasterKeys` (the subkeys derived from the repository's master secret), object sealing
(:func:`seal_object` / :func:`open_object` for index files and records), blob sealing inside packs
(:func:`seal_blob` / :func:`open_blob`, and :func:`seal_blob_into` / :func:`open_blob_into`, which
encrypt into and decrypt from caller-owned buffers without per-blob copies) and :func:`storage_id` (the
name of a stored object: the BLAKE3 hash of its stored bytes). Called by :mod:`.pack`, :mod:`.keys`,
:mod:`.repo`, :mod:`.restorer`.

Only AES-256-GCM is used. Every stored object and every pack gets its own key, derived with HKDF-SHA256
from the master encryption key and a 32-byte random salt in the object's header, so the number of
messages under one GCM key stays tiny whatever the size of the fleet writing to the repository. The
associated data binds the object type (and, for blobs, the blob ID), so an object cannot be moved to a
place where it would be read as something else.
"""

from __future__ import annotations

import os
import threading

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from steps.errors import IntegrityError

FORMAT_VERSION = 1
OBJECT_MAGIC = b"SNFO"
SALT_LEN = 32
NONCE_LEN = 12
TAG_LEN = 16
OBJECT_HEADER_LEN = len(OBJECT_MAGIC) + 1 + SALT_LEN + NONCE_LEN
BLOB_OVERHEAD = NONCE_LEN + TAG_LEN + 1  # nonce, GCM tag, compression flag

COMPRESSION_RAW = 0
COMPRESSION_ZSTD = 1
ZSTD_LEVEL = 3

_BLOB_AAD = b"snapflow/v1/blob/"
_OBJECT_AAD = b"snapflow/v1/object/"


def storage_id(data: bytes | bytearray | memoryview) -> str:
    """The name of a stored object: hex BLAKE3 of its stored bytes (verifiable without any key)."""
    return blake3.blake3(data).hexdigest()


def _derive(secret: bytes, purpose: str) -> bytes:
    return blake3.blake3(secret, derive_key_context=f"snapflow v1 {purpose}").digest()


class MasterKeys:
    """Subkeys derived from the 32-byte master secret (the only thing a key file wraps)."""

    def __init__(self, secret: bytes):
        if len(secret) != 32:
            raise ValueError("master secret must be 32 bytes")
        self.secret = secret
        self.encryption = _derive(secret, "encryption")
        self.blob_id_key = _derive(secret, "blob id")
        self.chunker = _derive(secret, "chunker")
        self.mac_key = _derive(secret, "mac")
        self._aead_cache: dict[bytes, AESGCM] = {}
        self._lock = threading.Lock()

    @classmethod
    def generate(cls) -> MasterKeys:
        return cls(os.urandom(32))

    def blob_id(self, data) -> bytes:
        """Keyed BLAKE3 of a blob's plaintext: equal contents dedup, but IDs reveal nothing without the key."""
        return blake3.blake3(data, key=self.blob_id_key).digest()

    def mac(self, data: bytes) -> str:
        return blake3.blake3(data, key=self.mac_key).hexdigest()

    def subkey_aead(self, salt: bytes, purpose: bytes) -> AESGCM:
        """AES-256-GCM under HKDF(master encryption key, salt, purpose); cached per (salt, purpose)."""
        cache_key = purpose + b"\0" + salt
        with self._lock:
            aead = self._aead_cache.get(cache_key)
        if aead is None:
            key = HKDF(
                algorithm=hashes.SHA256(), length=32, salt=salt, info=b"snapflow/v1/" + purpose
            ).derive(self.encryption)
            aead = AESGCM(key)
            with self._lock:
                if len(self._aead_cache) > 4096:
                    self._aead_cache.clear()
                self._aead_cache[cache_key] = aead
        return aead

    def pack_aead(self, salt: bytes) -> AESGCM:
        return self.subkey_aead(salt, b"pack")


# -- compression --------------------------------------------------------------------------------

_local = threading.local()


def _compressor():
    c = getattr(_local, "cctx", None)
    if c is None:
        import zstandard

        c = _local.cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    return c


def _decompressor():
    d = getattr(_local, "dctx", None)
    if d is None:
        import zstandard

        d = _local.dctx = zstandard.ZstdDecompressor()
    return d


def compress(data) -> bytes:
    """Flag byte + payload: zstd when that is smaller, the raw bytes otherwise."""
    packed = _compressor().compress(data)
    if len(packed) < len(data):
        return bytes((COMPRESSION_ZSTD,)) + packed
    return bytes((COMPRESSION_RAW,)) + bytes(data)


def decompress(payload: bytes, raw_length: int | None = None) -> bytes:
    if not payload:
        raise IntegrityError("empty payload")
    flag = payload[0]
    if flag == COMPRESSION_RAW:
        return payload[1:]
    if flag == COMPRESSION_ZSTD:
        body = memoryview(payload)[1:]
        if raw_length is not None:
            return _decompressor().decompress(body, max_output_size=raw_length)
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress(body)
    raise IntegrityError(f"unknown compression flag {flag}")


# -- objects (index files, records) -------------------------------------------------------------


def _object_aad(header: bytes, kind: str, context: bytes) -> bytes:
    return _OBJECT_AAD + kind.encode() + b"\0" + context + b"\0" + header


def seal_object(keys: MasterKeys, kind: str, payload: bytes, context: bytes = b"") -> bytes:
    """Encrypt one stored object: ``magic | version | salt | nonce | AES-GCM(flag | payload)``."""
    salt = os.urandom(SALT_LEN)
    nonce = os.urandom(NONCE_LEN)
    header = OBJECT_MAGIC + bytes((FORMAT_VERSION,)) + salt + nonce
    aead = keys.subkey_aead(salt, b"object/" + kind.encode())
    return header + aead.encrypt(nonce, compress(payload), _object_aad(header, kind, context))


def open_object(keys: MasterKeys, kind: str, data: bytes, name: str, context: bytes = b"") -> bytes:
    """Decrypt an object sealed by :func:`seal_object`; IntegrityError naming ``name`` when it fails."""
    if len(data) < OBJECT_HEADER_LEN + TAG_LEN + 1 or data[:4] != OBJECT_MAGIC:
        raise IntegrityError(f"{name}: not a Snapflow object (bad magic or too short)")
    if data[4] != FORMAT_VERSION:
        raise IntegrityError(f"{name}: unknown object format version {data[4]}")
    header = bytes(data[:OBJECT_HEADER_LEN])
    salt = header[5 : 5 + SALT_LEN]
    nonce = header[5 + SALT_LEN :]
    aead = keys.subkey_aead(salt, b"object/" + kind.encode())
    try:
        plain = aead.decrypt(nonce, bytes(data[OBJECT_HEADER_LEN:]), _object_aad(header, kind, context))
    except InvalidTag:
        raise IntegrityError(
            f"{name}: authentication failed (corrupt, or not written for this place)"
        ) from None
    return decompress(plain)


# -- blobs inside packs -------------------------------------------------------------------------


def blob_aad(blob_type: bytes, blob_id: bytes) -> bytes:
    return _BLOB_AAD + blob_type + blob_id


def seal_blob(aead: AESGCM, blob_type: bytes, blob_id: bytes, data) -> bytes:
    """``nonce | AES-GCM(flag | payload)`` under the pack's subkey, bound to the blob's type and ID."""
    nonce = os.urandom(NONCE_LEN)
    return nonce + aead.encrypt(nonce, compress(data), blob_aad(blob_type, blob_id))


def sealed_bound(length: int) -> int:
    """The largest stored size of a blob of ``length`` plaintext bytes (raw form: nonce, flag, tag)."""
    return length + BLOB_OVERHEAD


def compress_many(blobs: list):
    """zstd frames of several blobs from one call, which releases the interpreter lock once for all of
    them instead of once per blob. Frame ``i`` holds the very bytes :func:`seal_blob_into` compresses
    ``blobs[i]`` to (same compressor, same parameters, content size in the frame header). Every blob
    must be non-empty. Returns a sequence of buffers, one per blob."""
    if not blobs:
        return []
    return _compressor().multi_compress_to_buffer(blobs)


def seal_blob_into(
    aead: AESGCM,
    blob_type: bytes,
    blob_id: bytes,
    data,
    out: memoryview,
    scratch: bytearray,
    packed=None,
    nonce: bytes | None = None,
) -> int:
    """:func:`seal_blob` written straight into ``out`` (at least :func:`sealed_bound` bytes); returns the
    stored length. ``scratch`` (a reusable buffer of at least ``len(data) + 1`` bytes) holds the flag and
    payload between compression and encryption, so no per-blob buffer is allocated but zstd's output.
    ``packed`` (the blob's zstd frame from :func:`compress_many`) and ``nonce`` (12 fresh random bytes)
    let a caller sealing many blobs compress them and draw their nonces in one call each."""
    n = len(data)
    if packed is None:
        packed = _compressor().compress(data)
    if len(packed) < n:
        body, flag = packed, COMPRESSION_ZSTD
    else:
        body, flag = data, COMPRESSION_RAW
    m = 1 + len(body)
    scratch[0] = flag
    scratch[1:m] = body
    if nonce is None:
        nonce = os.urandom(NONCE_LEN)
    out[:NONCE_LEN] = nonce
    aead.encrypt_into(
        nonce, memoryview(scratch)[:m], blob_aad(blob_type, blob_id), out[NONCE_LEN : NONCE_LEN + m + TAG_LEN]
    )
    return NONCE_LEN + m + TAG_LEN


def open_blob_into(
    aead: AESGCM, blob_type: bytes, blob_id: bytes, stored: memoryview, raw_length: int, scratch: bytearray
) -> memoryview | bytes:
    """:func:`open_blob` without a copy of raw blobs: decrypts into ``scratch`` (at least
    ``len(stored)`` bytes) and returns a view of it for raw payloads, or zstd's output. The view is
    only valid until ``scratch`` is used again."""
    m = len(stored) - NONCE_LEN - TAG_LEN
    if m < 1:
        raise IntegrityError("truncated")
    plain = memoryview(scratch)[:m]
    try:
        aead.decrypt_into(stored[:NONCE_LEN], stored[NONCE_LEN:], blob_aad(blob_type, blob_id), plain)
    except InvalidTag:
        raise IntegrityError("authentication failed") from None
    flag = plain[0]
    if flag == COMPRESSION_RAW:
        return plain[1:]
    if flag == COMPRESSION_ZSTD:
        return _decompressor().decompress(plain[1:], max_output_size=raw_length)
    raise IntegrityError(f"unknown compression flag {flag}")


def open_blob(aead: AESGCM, blob_type: bytes, blob_id: bytes, stored, raw_length: int | None = None) -> bytes:
    """Decrypt and decompress one blob; raises IntegrityError (without the blob's name; callers add it)."""
    stored = memoryview(stored)
    try:
        plain = aead.decrypt(
            bytes(stored[:NONCE_LEN]), bytes(stored[NONCE_LEN:]), blob_aad(blob_type, blob_id)
        )
    except InvalidTag:
        raise IntegrityError("authentication failed") from None
    return decompress(plain, raw_length)
