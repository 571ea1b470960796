"""Encryption, compression and naming of stored objects and blobs."""

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steps.errors import IntegrityError
from steps.repository import crypto
from steps.repository.crypto import MasterKeys

KEYS = MasterKeys(bytes(range(32)))


@given(st.binary(max_size=5000))
@settings(max_examples=60, deadline=None)
def test_objects_round_trip_and_never_contain_the_plaintext(payload):
    sealed = crypto.seal_object(KEYS, "snapshots", payload)
    assert crypto.open_object(KEYS, "snapshots", sealed, "x") == payload
    if len(payload) >= 16 and len(set(payload)) > 4:
        assert payload not in sealed


def test_object_opened_as_another_kind_fails_authentication():
    # GIVEN a sealed snapshot record
    sealed = crypto.seal_object(KEYS, "snapshots", b'{"a": 1}')
    # WHEN it is read as a backups record THEN authentication fails, naming the object
    with pytest.raises(IntegrityError, match="backups/abc"):
        crypto.open_object(KEYS, "backups", sealed, "backups/abc")


def test_object_with_a_flipped_bit_is_rejected():
    sealed = bytearray(crypto.seal_object(KEYS, "index", b"x" * 100))
    sealed[60] ^= 1
    with pytest.raises(IntegrityError):
        crypto.open_object(KEYS, "index", bytes(sealed), "index/1")


def test_another_master_key_cannot_open_an_object():
    sealed = crypto.seal_object(KEYS, "index", b"payload")
    with pytest.raises(IntegrityError):
        crypto.open_object(MasterKeys(os.urandom(32)), "index", sealed, "index/1")


def test_every_object_gets_its_own_salt_and_so_its_own_key():
    a = crypto.seal_object(KEYS, "index", b"same")
    b = crypto.seal_object(KEYS, "index", b"same")
    assert a[5:37] != b[5:37]
    assert a != b


def test_blob_is_bound_to_its_type_and_id():
    aead = KEYS.pack_aead(b"s" * 32)
    bid = KEYS.blob_id(b"content")
    sealed = crypto.seal_blob(aead, b"d", bid, b"content")
    assert crypto.open_blob(aead, b"d", bid, sealed) == b"content"
    with pytest.raises(IntegrityError):
        crypto.open_blob(aead, b"t", bid, sealed)
    with pytest.raises(IntegrityError):
        crypto.open_blob(aead, b"d", KEYS.blob_id(b"other"), sealed)


def test_compressible_data_is_stored_compressed_and_random_data_raw():
    assert crypto.compress(b"a" * 10000)[0] == crypto.COMPRESSION_ZSTD
    assert len(crypto.compress(b"a" * 10000)) < 100
    rnd = os.urandom(10000)
    packed = crypto.compress(rnd)
    assert packed[0] == crypto.COMPRESSION_RAW and packed[1:] == rnd
    assert crypto.decompress(packed) == rnd


def test_blob_ids_are_keyed():
    assert KEYS.blob_id(b"x") != MasterKeys(os.urandom(32)).blob_id(b"x")
    assert KEYS.blob_id(b"x") == KEYS.blob_id(b"x")
    assert len(KEYS.blob_id(b"x")) == 32
