"""The revision reader of etcd snapshot files says "don't know" (None) for what it does not recognise,
so that etcd's own tool is asked instead; real snapshots are checked against that tool in
tests/scenarios/test_etcd_backup_restore.py."""

from __future__ import annotations

import struct

from steps.drivers.etcd_bolt import MAGIC, snapshot_revision


def meta_page(page_size: int, txid: int, root: int, checksum: int | None = None) -> bytes:
    from steps.drivers.etcd_bolt import _fnv1a64

    body = struct.pack("<IIII QQ QQQ", MAGIC, 2, page_size, 0, root, 0, 2, 4, txid)
    value = _fnv1a64(body) if checksum is None else checksum
    page = struct.pack("<QHHI", 0, 0x04, 0, 0) + body + struct.pack("<Q", value)
    return page.ljust(page_size, b"\0")


def test_files_that_are_not_bbolt_databases_have_no_revision(tmp_path):
    cases = {
        "empty": b"",
        "text": b"not a database at all\n" * 500,
        "zeros": bytes(8192),
        "bad checksum": meta_page(4096, 1, 3, checksum=1) + meta_page(4096, 2, 3, checksum=2),
        "root beyond the end": meta_page(4096, 1, 99) + meta_page(4096, 2, 99),
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        assert snapshot_revision(str(path)) is None, name
    assert snapshot_revision(str(tmp_path / "missing")) is None


def test_a_database_without_a_key_bucket_has_no_revision(tmp_path):
    # GIVEN two valid meta pages whose root is an empty leaf page
    leaf = struct.pack("<QHHI", 2, 0x02, 0, 0).ljust(4096, b"\0")
    path = tmp_path / "db"
    path.write_bytes(meta_page(4096, 1, 2) + meta_page(4096, 2, 2) + leaf + bytes(4096))
    # THEN there is no revision to read
    assert snapshot_revision(str(path)) is None
