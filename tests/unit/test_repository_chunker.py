"""Keyed content-defined chunking."""

import io
import os
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from steps.repository.chunker import Chunker

SMALL = {"min_size": 1024, "avg_size": 4096, "max_size": 16384}


def _chunks(chunker, data: bytes, read_size: int | None = None) -> list[bytes]:
    f = io.BytesIO(data)
    if read_size is None:
        return [bytes(c) for c in chunker.chunks(f.readinto)]

    def readinto(buf):
        return f.readinto(buf[:read_size])

    return [bytes(c) for c in chunker.chunks(readinto)]


@given(st.binary(max_size=200_000), st.integers(min_value=1, max_value=70_000))
@settings(max_examples=40, deadline=None)
def test_chunks_reassemble_the_input_whatever_the_read_sizes(data, read_size):
    c = Chunker(b"k" * 32, **SMALL)
    c.block = 40_000  # several blocks per input: exercises the carry-over between blocks
    a = _chunks(c, data)
    b = _chunks(c, data, read_size)
    assert b"".join(a) == data
    assert a == b
    assert all(len(x) <= SMALL["max_size"] for x in a)
    assert all(len(x) >= SMALL["min_size"] for x in a[:-1])


def test_boundaries_are_content_defined_an_insert_only_changes_nearby_chunks():
    rnd = random.Random(1)
    data = rnd.randbytes(2_000_000)
    c = Chunker(b"k" * 32, **SMALL)
    before = set(_chunks(c, data))
    after = set(_chunks(c, data[:1_000_000] + b"INSERTED" + data[1_000_000:]))
    assert len(before - after) <= 3
    assert len(before & after) > 0.9 * len(before)


def test_boundaries_depend_on_the_key():
    data = random.Random(2).randbytes(1_000_000)
    a = [len(x) for x in _chunks(Chunker(b"a" * 32, **SMALL), data)]
    b = [len(x) for x in _chunks(Chunker(b"b" * 32, **SMALL), data)]
    assert a != b


def test_default_sizes_give_megabyte_chunks():
    data = os.urandom(24 * 1024 * 1024)
    sizes = [len(x) for x in _chunks(Chunker(b"k" * 32), data)]
    assert 512 * 1024 < sum(sizes) / len(sizes) < 3 * 1024 * 1024
    assert sum(sizes) == len(data)


def test_empty_input_has_no_chunks():
    assert _chunks(Chunker(b"k" * 32, **SMALL), b"") == []
