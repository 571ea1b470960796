"""Pack files: self-describing containers of encrypted blobs."""

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steps.errors import IntegrityError
from steps.repository.crypto import MasterKeys, open_blob, storage_id
from steps.repository.pack import BLOB_DATA, BLOB_TREE, PackWriter, read_pack_entries

KEYS = MasterKeys(bytes(range(1, 33)))


@given(
    st.lists(
        st.tuples(st.sampled_from([BLOB_DATA, BLOB_TREE]), st.binary(max_size=3000)), min_size=1, max_size=30
    )
)
@settings(max_examples=40, deadline=None)
def test_a_pack_describes_its_blobs_and_every_blob_reads_back(blobs):
    w = PackWriter(KEYS)
    for t, data in blobs:
        w.add(t, KEYS.blob_id(data), data)
    pack = w.finish()
    assert pack.id == storage_id(pack.data)
    salt, entries = read_pack_entries(KEYS, pack.data, "p")
    assert salt == pack.salt
    assert [(e.type, e.id) for e in entries] == [(t, KEYS.blob_id(d)) for t, d in blobs]
    for e, (t, data) in zip(entries, blobs, strict=True):
        stored = pack.data[e.offset : e.offset + e.length]
        assert open_blob(KEYS.pack_aead(salt), t, e.id, stored, e.raw_length) == data


def _pack() -> bytes:
    w = PackWriter(KEYS)
    for i in range(5):
        data = os.urandom(1000 + i)
        w.add(BLOB_DATA, KEYS.blob_id(data), data)
    return w.finish().data


def test_truncated_pack_is_rejected():
    data = _pack()
    with pytest.raises(IntegrityError):
        read_pack_entries(KEYS, data[:-10], "p")


def test_pack_with_a_flipped_header_bit_is_rejected():
    data = bytearray(_pack())
    data[-20] ^= 0x10
    with pytest.raises(IntegrityError, match="header"):
        read_pack_entries(KEYS, bytes(data), "p")


def test_pack_header_is_encrypted():
    w = PackWriter(KEYS)
    data = b"x" * 100
    bid = KEYS.blob_id(data)
    w.add(BLOB_DATA, bid, data)
    pack = w.finish()
    assert bid not in pack.data
