"""Older versions of a bucket restored from a snapshot that kept them: ``bucket-restore --versions all``
recreates every version and delete marker of each key, oldest first, in a versioned bucket (refused,
in one line, for a bucket without versioning), and ``--as-of TIME`` writes each key as it was then.
Both are compared with the source's versions byte for byte, with content type and user metadata, and
both have a dry run that writes nothing."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from steps.repository.bucket_tree import newest_first
from tests.fixtures.bucket_source import key_args, unique_bucket

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def repo(tmp_path, monkeypatch):
    monkeypatch.setenv("SNAPFLOW_PASSWORD", "bucket-versions-pw")
    monkeypatch.setenv("SNAPFLOW_KDF_TEST_N", "1024")
    url = f"file://{tmp_path / 'repo'}"
    subprocess.run([sys.executable, "-m", "steps", "init", "--repo", url], cwd=ROOT, check=True,
                   capture_output=True)  # fmt: skip
    return url


def steps(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "steps", *args], cwd=ROOT, env=dict(os.environ), capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip


def restore(repo: str, server, bucket: str, *extra: str, code: int = 0) -> subprocess.CompletedProcess:
    proc = steps("bucket-restore", "--repo", repo, "--target-endpoint", server.endpoint,
                 "--target", f"s3://{bucket}", *key_args("target"), *extra)  # fmt: skip
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc


def put(client, key: str, data: bytes, content_type=None, metadata=None) -> None:
    client.write(key, io.BytesIO(data), len(data), content_type, metadata or {})


def histories(client) -> dict[str, list[tuple]]:
    """key -> its versions oldest first: ("deleted",) for a delete marker, else (SHA-256, content type,
    user metadata), every version read back."""
    out = {}
    for group in newest_first(client.list(versions=True)):
        entries = []
        for obj in reversed(group):
            if obj.delete_marker:
                entries.append(("deleted",))
                continue
            reader = client.open(obj)
            try:
                data = reader.response.read()
            finally:
                reader.close()
            entries.append((hashlib.sha256(data).hexdigest(), reader.content_type, reader.metadata))
        out[group[0].key] = entries
    return out


def shape(entries: list[tuple]) -> tuple:
    """The versions in order, how many delete markers, whether the latest is one: all a listing shows
    when the versions were written in the same second (the server lists such a marker apart)."""
    return [e for e in entries if e != ("deleted",)], entries.count(("deleted",)), entries[-1] == ("deleted",)


def current(client) -> dict[str, tuple]:
    return {key: entries[-1] for key, entries in histories(client).items() if entries[-1] != ("deleted",)}


def newest_time(client) -> str:
    return max(o.last_modified for o in client.list(versions=True)).isoformat().replace("+00:00", "Z")


def test_older_versions_are_restored_every_one_or_as_of_a_time(repo, bucket_source_server, source_client):
    # GIVEN a versioned bucket written in five rounds a second apart (the server's times are whole seconds,
    # and it lists a delete marker apart from versions of the same second)
    name = unique_bucket("hist")
    src = source_client(name, versioned=True)
    put(src, "doc", b"doc v0", "text/plain", {"rev": "0"})
    put(src, "gone", b"short-lived", "application/x-gone")
    put(src, "kept", b"kept all along", None, {"owner": "team-a"})
    first_round = newest_time(src)
    time.sleep(1.2)
    put(src, "doc", b"doc v1" * 1000, "text/markdown", {"rev": "1"})
    src.delete("gone")
    second_round = newest_time(src)
    time.sleep(1.2)
    put(src, "doc", b"doc v2", "text/plain", {"rev": "2"})
    time.sleep(1.2)
    src.delete("doc")
    time.sleep(1.2)
    put(src, "doc", b"doc v3, after its deletion", "text/plain", {"rev": "3"})
    put(src, "later/new", b"written last")
    source = histories(src)
    assert [len(source[k]) for k in ("doc", "gone", "kept", "later/new")] == [5, 2, 1, 1]
    assert source["doc"][3] == ("deleted",) and source["gone"][1] == ("deleted",)
    proc = steps("bucket-backup", "--repo", repo, "--source-endpoint", bucket_source_server.endpoint,
                 "--source", f"s3://{name}", *key_args("source"), "--versions", "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    snapshot = json.loads(proc.stdout)["snapshot"]

    # WHEN every version is restored into a bucket without versioning THEN it is refused in one line
    plain = unique_bucket("plain")
    source_client(plain)
    refused = restore(repo, bucket_source_server, plain, "--versions", "all", code=3)
    assert refused.stderr.strip().count("\n") == 0
    assert "versioning is Off" in refused.stderr and plain in refused.stderr

    # WHEN it is only tried on a versioned bucket THEN each key is listed and nothing is written
    versioned = unique_bucket("vtarget")
    target = source_client(versioned, versioned=True)
    dry = json.loads(restore(repo, bucket_source_server, versioned, "--versions", "all", "--dry-run",
                             "--json").stdout)  # fmt: skip
    assert (dry["create"], dry["written"]) == (4, 0)
    shown = {c["key"]: (c["versions"], c["delete_markers"]) for c in dry["changes"]}
    assert shown == {"doc": (5, 1), "gone": (2, 1), "kept": (1, 0), "later/new": (1, 0)}
    assert target.list(versions=True) == []

    # WHEN every version is restored THEN each key has the source's versions in order, markers included
    done = json.loads(restore(repo, bucket_source_server, versioned, "--versions", "all", "--json").stdout)
    assert done["written"] == 9
    assert {k: shape(v) for k, v in histories(target).items()} == {k: shape(v) for k, v in source.items()}
    assert current(target) == {
        "doc": source["doc"][4],
        "kept": source["kept"][0],
        "later/new": source["later/new"][0],
    }

    # WHEN it is restored again THEN nothing is written
    again = json.loads(restore(repo, bucket_source_server, versioned, "--versions", "all", "--json").stdout)
    assert (again["same"], again["written"], again["changes"]) == (4, 0, [])

    # WHEN each key is restored as of the end of the first round THEN the objects are those of then
    then = unique_bucket("then")
    first = source_client(then)
    tried = json.loads(restore(repo, bucket_source_server, then, "--as-of", first_round, "--dry-run",
                               "--json").stdout)  # fmt: skip
    assert sorted(c["key"] for c in tried["changes"]) == ["doc", "gone", "kept"] and tried["absent"] == 1
    assert first.list() == []
    restore(repo, bucket_source_server, then, "--as-of", first_round)
    assert current(first) == {"doc": source["doc"][0], "gone": source["gone"][0], "kept": source["kept"][0]}

    # WHEN as of the second round THEN doc is its second version and the deleted key is not written
    second = source_client(unique_bucket("then2"))
    restore(repo, bucket_source_server, second.access.bucket, "--as-of", second_round)
    assert current(second) == {"doc": source["doc"][1], "kept": source["kept"][0]}

    # WHEN as of a time before the first object THEN nothing is written
    empty = source_client(unique_bucket("then3"))
    before = json.loads(restore(repo, bucket_source_server, empty.access.bucket, "--as-of",
                                "2000-01-01T00:00:00Z", "--json").stdout)  # fmt: skip
    assert (before["written"], before["absent"]) == (0, 4) and empty.list() == []

    # WHEN --as-of is empty (a workflow parameter left empty) THEN the current objects are restored
    latest = json.loads(
        restore(repo, bucket_source_server, plain, "--as-of", "", "--dry-run", "--json").stdout
    )
    assert (
        sorted(c["key"] for c in latest["changes"]) == ["doc", "kept", "later/new"] and "absent" not in latest
    )

    # WHEN the options are combined, or the snapshot kept no versions THEN one line, exit 2
    both = restore(repo, bucket_source_server, plain, "--versions", "all", "--as-of", first_round, code=2)
    assert "give one of them" in both.stderr and both.stderr.strip().count("\n") == 0
    proc = steps("bucket-backup", "--repo", repo, "--source-endpoint", bucket_source_server.endpoint,
                 "--source", f"s3://{name}", *key_args("source"), "--json")  # fmt: skip
    current_only = json.loads(proc.stdout)["snapshot"]
    assert current_only != snapshot
    for option in (["--as-of", first_round], ["--versions", "all"]):
        no = restore(repo, bucket_source_server, plain, "--snapshot", current_only, *option, code=2)
        assert "without bucket-backup --versions" in no.stderr and no.stderr.strip().count("\n") == 0
