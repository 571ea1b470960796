"""A restored etcd snapshot file is checked before etcd's tool sees it: its trailing SHA-256, and the
size and SHA-256 its etcd.json recorded when it was taken."""

from __future__ import annotations

import hashlib
import random

import pytest

from steps.drivers.etcd import check_snapshot_file
from steps.errors import IntegrityError


def snapshot_bytes(size: int = 300_000) -> bytes:
    data = random.Random(15).randbytes(size)
    return data + hashlib.sha256(data).digest()


def test_a_whole_snapshot_passes_and_its_record_must_match(tmp_path):
    # GIVEN a snapshot file as etcd streams it (data, then the SHA-256 of the data)
    raw = snapshot_bytes()
    path = tmp_path / "snapshot.db"
    path.write_bytes(raw)
    recorded = {"size": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
    # THEN it passes alone and against its record
    assert check_snapshot_file(str(path)) == len(raw)
    assert check_snapshot_file(str(path), recorded) == len(raw)
    # and a record of another snapshot is named
    with pytest.raises(
        IntegrityError, match=r"^snapshot.db: 300032 bytes with SHA-256 .*, but etcd.json records 5 bytes"
    ):
        check_snapshot_file(str(path), {"size": 5, "sha256": "00" * 32})


@pytest.mark.parametrize("at", [0, 150_000, 299_999, 300_000, 300_031])
def test_a_flipped_byte_anywhere_fails_the_trailing_digest(tmp_path, at):
    raw = bytearray(snapshot_bytes())
    raw[at] ^= 0x40
    path = tmp_path / "snapshot.db"
    path.write_bytes(bytes(raw))
    with pytest.raises(
        IntegrityError, match=r"^snapshot\.db: the snapshot's SHA-256 does not match its trailing digest$"
    ):
        check_snapshot_file(str(path))


def test_a_missing_or_tiny_file_is_named(tmp_path):
    with pytest.raises(IntegrityError, match=r"^snapshot\.db: the etcd snapshot holds no such file$"):
        check_snapshot_file(str(tmp_path / "snapshot.db"))
    (tmp_path / "snapshot.db").write_bytes(bytes(32))
    with pytest.raises(IntegrityError, match=r"^snapshot\.db: 32 bytes is too small for an etcd snapshot$"):
        check_snapshot_file(str(tmp_path / "snapshot.db"))
