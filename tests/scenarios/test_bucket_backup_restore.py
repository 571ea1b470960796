"""A bucket on a second S3 server backed up into the repository and restored: thousands of small objects,
multipart objects, content types and user metadata, keys that are not file names, object versions, an
incremental run that reads only what changed (counted by the source client's GETs), a dry run that
writes nothing, and a restore compared byte for byte with the source."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.fixtures.bucket_source import key_args, unique_bucket

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SMALL = 2000
MiB = 1024 * 1024
ODD_KEYS = [
    "a",  # an object and objects below a/ side by side
    "a/b",
    "dir/",  # a folder marker
    "dir/inner",  # (SeaweedFS folds '//' and a leading '/': such keys are covered by the mapping's unit test)
    "dots.../..x",
    "%41 percent",
    "spaces and\ttab",
    "ünïcödé/名前",
    "long/" + "%" * 200,  # 600 bytes once encoded: the name is shortened
]


def steps(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "steps", *args], cwd=ROOT, env=dict(os.environ), capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip
    if check and proc.returncode != 0:
        raise AssertionError(f"steps {args[0]} failed ({proc.returncode}): {proc.stderr}")
    return proc


def backup(repo: str, server, bucket: str, *extra: str) -> dict:
    proc = steps(
        "bucket-backup", "--repo", repo, "--source-endpoint", server.endpoint, "--source", f"s3://{bucket}",
        *key_args("source"), "--json", *extra,
    )  # fmt: skip
    return json.loads(proc.stdout)


def restore(repo: str, server, bucket: str, *extra: str) -> dict:
    proc = steps(
        "bucket-restore", "--repo", repo, "--target-endpoint", server.endpoint, "--target", f"s3://{bucket}",
        *key_args("target"), "--json", *extra,
    )  # fmt: skip
    return json.loads(proc.stdout)


def put(client, key: str, data: bytes, content_type=None, metadata=None, part=16 * MiB) -> None:
    client.write(key, io.BytesIO(data), len(data), content_type, metadata or {}, part_size=part)


def read_all(client) -> dict[str, tuple[str, str | None, dict]]:
    """key -> (SHA-256 of the bytes, content type, user metadata), every object read back."""

    def one(obj):
        reader = client.open(obj)
        digest = hashlib.sha256()
        buf = bytearray(MiB)
        try:
            while n := reader.readinto(memoryview(buf)):
                digest.update(memoryview(buf)[:n])
        finally:
            reader.close()
        return obj.key, (digest.hexdigest(), reader.content_type, reader.metadata)

    with ThreadPoolExecutor(8) as pool:
        return dict(pool.map(one, client.list()))


@pytest.fixture
def repo(s3_repo):
    steps("init", "--repo", s3_repo)
    return s3_repo


def test_bucket_is_backed_up_incrementally_and_restored_byte_for_byte(
    repo, bucket_source_server, source_client
):
    # GIVEN a bucket with thousands of small objects, multipart objects, metadata and odd keys
    name = unique_bucket("src")
    src = source_client(name)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: put(src, f"small/{i:05d}", b"object %d\n" % i * (1 + i % 7)), range(SMALL)))
    big = os.urandom(13 * MiB)
    put(src, "big/multipart.bin", big, "application/x-test", {"owner": "team-a", "note": "big"}, part=5 * MiB)
    put(src, "big/other.bin", os.urandom(6 * MiB) + big[: 2 * MiB], None, {}, part=5 * MiB)
    for i, key in enumerate(ODD_KEYS):
        if key.endswith("/"):  # a folder marker: empty (SeaweedFS keeps neither bytes nor metadata on one)
            put(src, key, b"")
        else:
            put(src, key, f"odd {i}".encode(), "text/plain; charset=utf-8", {"index": str(i)})
    total = SMALL + 2 + len(ODD_KEYS)
    assert src.list()[0].etag  # the listing gives ETags
    assert any(o.etag.endswith("-3") for o in src.list() if o.key == "big/multipart.bin")

    # WHEN it is backed up for the first time THEN every object is read once
    first = backup(repo, bucket_source_server, name)
    assert (first["objects"], first["objects_read"], first["gets"]) == (total, total, total)
    assert first["objects_unchanged"] == 0 and first["parent"] is None

    # WHEN 1% of the small objects change, some are added and deleted, and one gets new metadata
    changed = [f"small/{i:05d}" for i in range(0, SMALL, 100)]
    for key in changed:
        put(src, key, b"changed " + key.encode())
    for i in range(5):
        put(src, f"new/{i}", b"new %d" % i)
    for i in range(5):
        src.delete(f"small/{i * 100 + 1:05d}")
    put(src, "a/b", b"odd 1", "text/markdown", {"index": "1", "reviewed": "yes"})  # same bytes, new metadata
    second = backup(repo, bucket_source_server, name)

    # THEN only what changed was read (the source client counted its GETs), the rest came from the parent
    expected_reads = len(changed) + 5 + 1
    assert second["parent"] == first["snapshot"]
    assert (second["objects_read"], second["gets"]) == (expected_reads, expected_reads)
    assert second["objects"] == total + 5 - 5
    assert second["objects_unchanged"] == second["objects"] - expected_reads
    assert second["bytes_added"] < first["bytes_added"] / 20

    source_now = read_all(src)
    assert source_now["a/b"][1:] == ("text/markdown", {"index": "1", "reviewed": "yes"})

    # WHEN a restore into another bucket is only tried THEN it lists every object and writes nothing
    target_name = unique_bucket("dst")
    target = source_client(target_name)
    dry = restore(repo, bucket_source_server, target_name, "--dry-run")
    assert (dry["create"], dry["update"], dry["written"]) == (len(source_now), 0, 0)
    assert {c["key"] for c in dry["changes"]} == set(source_now)
    assert target.list() == []

    # WHEN it is restored THEN content, content type and metadata match the source byte for byte
    done = restore(repo, bucket_source_server, target_name, "--part-size", "5")
    assert done["written"] == len(source_now)
    assert read_all(target) == source_now

    # WHEN it is restored again THEN nothing is written; a changed object is the only update
    put(target, "small/00002", b"tampered")
    again = restore(repo, bucket_source_server, target_name, "--dry-run")
    assert (again["create"], again["update"], again["same"]) == (0, 1, len(source_now) - 1), again["changes"]
    assert [c["key"] for c in again["changes"]] == ["small/00002"]
    restore(repo, bucket_source_server, target_name)
    assert read_all(target) == source_now

    # WHEN the first backup is restored under another prefix THEN the deleted objects are back, renamed
    renamed = restore(repo, bucket_source_server, target_name, "--snapshot", first["snapshot"],
                      "--from-prefix", "small/", "--to-prefix", "restored/small/")  # fmt: skip
    assert renamed["create"] == SMALL and renamed["written"] == SMALL
    back = {o.key: o for o in target.list() if o.key.startswith("restored/")}
    assert len(back) == SMALL and "restored/small/00001" in back


def test_every_version_and_delete_marker_is_kept_with_versions(
    repo, bucket_source_server, source_client, tmp_path
):
    # GIVEN a versioned bucket whose key has three versions and then a delete marker
    name = unique_bucket("ver")
    src = source_client(name, versioned=True)
    for i in range(3):
        put(src, "doc", b"version %d" % i, "text/plain", {"rev": str(i)})
    put(src, "kept", b"still here")
    src.delete("doc")
    versions = src.list(versions=True)
    assert len(versions) == 5

    # WHEN it is backed up with --versions THEN every version and the marker are in the snapshot
    result = backup(repo, bucket_source_server, name, "--versions")
    assert (result["versions"], result["objects"], result["gets"]) == (5, 1, 4)
    listing = steps("ls", "--repo", repo, "--snapshot", result["snapshot"]).stdout
    assert "doc%~v1" in listing and "doc%~v3" in listing and "kept" in listing

    # THEN the snapshot passes verify (reading its data back), and restores into a directory too
    steps("verify", "--repo", repo, "--snapshot", result["snapshot"], "--read-data", "100")
    steps("restore", "--repo", repo, "--snapshot", result["snapshot"], "--target", str(tmp_path / "dir"))
    assert (tmp_path / "dir" / "kept").read_bytes() == b"still here"
    assert (tmp_path / "dir" / "doc%~v3").read_bytes() == b"version 0"

    # WHEN nothing changed THEN a second run (of a backup run this time) reads nothing
    again = backup(repo, bucket_source_server, name, "--versions", "--backup-id", "backup-bucket-1")
    assert again["gets"] == 0 and again["objects_unchanged"] == 4  # (and the delete marker)
    shown = json.loads(steps("snapshots", "--repo", repo, "--json").stdout)
    assert {s["id"]: s["tags"].get("backup") for s in shown}[again["snapshot"]] == "backup-bucket-1"

    # WHEN the snapshot is restored THEN the deleted key stays deleted and the kept one is back
    target_name = unique_bucket("vdst")
    target = source_client(target_name)
    restore(repo, bucket_source_server, target_name)
    assert [o.key for o in target.list()] == ["kept"]

    # WHEN the repository holds a second bucket THEN latest needs the bucket's name
    other = unique_bucket("other")
    put(source_client(other), "x", b"x")
    backup(repo, bucket_source_server, other)
    refused = steps("bucket-restore", "--repo", repo, "--target-endpoint", bucket_source_server.endpoint,
                    "--target", f"s3://{target_name}", *key_args("target"), check=False)  # fmt: skip
    assert refused.returncode == 2 and "give --bucket NAME" in refused.stderr
    restore(repo, bucket_source_server, target_name, "--bucket", other)
    assert [o.key for o in target.list()] == ["kept", "x"]
