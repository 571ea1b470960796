"""The object-store drivers behave alike: memory, local directory and a real S3 server."""

from __future__ import annotations

import time

import pytest

from steps.drivers.objectstore import LocalStore, MemoryStore, ObjectNotFound, open_store
from steps.drivers.objectstore_s3 import S3Settings, S3Store
from steps.errors import StoreUnavailable, UsageError


@pytest.fixture(params=["memory", "local", "s3"])
def store(request, tmp_path):
    if request.param == "memory":
        return MemoryStore()
    if request.param == "local":
        s = LocalStore(tmp_path / "store")
        s.ensure_container()
        return s
    server = request.getfixturevalue("s3_server")
    request.getfixturevalue("monkeypatch").setenv("AWS_ACCESS_KEY_ID", server.access_key)
    request.getfixturevalue("monkeypatch").setenv("AWS_SECRET_ACCESS_KEY", server.secret_key)
    s = S3Store(S3Settings(server.endpoint, retries=1), f"b-{time.monotonic_ns()}", "some/prefix")
    s.ensure_container()
    return s


def test_put_get_stat_list_delete_round_trip(store):
    store.put("data/ab/abcdef", b"hello pack")
    store.put("index/01", b"x" * 1000)
    store.put("config", b"{}")

    assert store.get("data/ab/abcdef") == b"hello pack"
    assert store.get_range("data/ab/abcdef", 6, 4) == b"pack"
    assert store.stat("index/01").size == 1000
    assert store.stat("missing") is None
    assert [i.key for i in store.list("data/")] == ["data/ab/abcdef"]
    assert [i.key for i in store.list()] == ["config", "data/ab/abcdef", "index/01"]

    store.delete("index/01")
    store.delete("index/01")  # deleting twice is not an error
    assert not store.exists("index/01")
    with pytest.raises(ObjectNotFound):
        store.get("index/01")


def test_server_time_is_close_to_local_time(store):
    skew = abs(store.server_time().timestamp() - time.time())
    assert skew < 60


def test_stopped_s3_server_gives_a_clear_error_within_the_retry_bound(private_s3_server):
    s = S3Store(
        S3Settings(private_s3_server.endpoint, retries=2, backoff=0.1, connect_timeout=1, read_timeout=2),
        "stopped",
        "",
    )
    s.ensure_container()
    private_s3_server.stop()

    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as err:
        s.put("config", b"x")
    assert time.monotonic() - started < 15
    assert "did not answer PUT config after 3 attempts" in str(err.value)
    assert private_s3_server.secret_key not in str(err.value)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("bucket/prefix", "--repo: expected a repository URL s3://BUCKET/PREFIX"),
        ("s3:///prefix", "--repo: expected s3://BUCKET/PREFIX"),
        ("ftp://x/y", "--repo: expected a repository URL s3://BUCKET/PREFIX"),
    ],
)
def test_malformed_repository_urls_are_refused_with_one_line(url, message):
    with pytest.raises(UsageError) as err:
        open_store(url, endpoint="http://127.0.0.1:1")
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_missing_endpoint_names_the_setting(monkeypatch):
    monkeypatch.delenv("SNAPFLOW_S3_ENDPOINT", raising=False)
    with pytest.raises(UsageError, match="SNAPFLOW_S3_ENDPOINT"):
        open_store("s3://bucket/prefix")


def test_invalid_bucket_names_are_refused_before_any_request():
    with pytest.raises(UsageError, match="bucket name 'Bad_Bucket' is not valid"):
        open_store("s3://Bad_Bucket/x", endpoint="http://127.0.0.1:1")


def test_a_pack_sized_object_is_one_put_not_a_multipart_upload(s3_server, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    s = S3Store(S3Settings(s3_server.endpoint, retries=0), f"one-put-{time.monotonic_ns()}", "")
    s.ensure_container()
    data = bytes(range(256)) * (9 * 4096)  # 9 MiB: above the multipart threshold minio would split at
    s.put("data/pack", data)
    st = s.client.stat_object(s.bucket, "data/pack")
    assert "-" not in st.etag  # multipart uploads get an ETag of the form <md5>-<parts>
    assert s.get("data/pack") == data


def test_the_embedded_server_serves_many_buckets(private_s3_server):
    # Each bucket is a collection that takes several volumes: with the server's automatic volume limit
    # every PUT failed with InternalError after a few dozen buckets.
    for i in range(45):
        s = S3Store(S3Settings(private_s3_server.endpoint, retries=0), f"many-{i:03d}", "")
        s.ensure_container()
        s.put("config", b"x" * 100)
    assert s.get("config") == b"x" * 100


def test_a_local_put_syncs_the_directories_after_the_rename(tmp_path):
    # GIVEN a local store, and a put traced at the system-call level (a real process, a real kernel)
    import re
    import subprocess
    import sys

    root = tmp_path / "store"
    root.mkdir()
    trace = tmp_path / "trace"
    script = (
        "import sys; from steps.drivers.objectstore import LocalStore; "
        "LocalStore(sys.argv[1]).put('data/ab/abcdef', b'pack bytes')"
    )
    subprocess.run(
        ["strace", "-f", "-qq", "-o", str(trace), "-e", "trace=open,openat,rename,renameat,renameat2,fsync",
         sys.executable, "-c", script, str(root)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    calls = trace.read_text().splitlines()
    # WHEN the object is renamed into place
    renamed = next(
        i for i, c in enumerate(calls) if "rename" in c and c.rstrip().endswith("= 0") and 'abcdef"' in c
    )

    # THEN the directory holding it, and the one where its new folder was created, are fsynced after
    def synced_after(directory) -> bool:
        opened = {}
        for c in calls[renamed:]:
            m = re.search(r'open(?:at)?\((?:AT_FDCWD, )?"([^"]+)".*O_DIRECTORY.*= (\d+)', c)
            if m:
                opened[m.group(2)] = m.group(1)
            m = re.search(r"fsync\((\d+)\)\s+= 0", c)
            if m and opened.get(m.group(1)) == str(directory):
                return True
        return False

    assert synced_after(root / "data" / "ab"), "\n".join(calls[renamed:])
    assert synced_after(root / "data") and synced_after(root)
