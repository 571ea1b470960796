"""A bucket source that cannot be read fails ``bucket-backup`` with one line naming the source, a non-zero
exit, and nothing stored: an endpoint that does not answer, refused keys, a missing bucket, keys not
given, and versions asked of a bucket that keeps none."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.bucket_source import KEY_ENV, SECRET_ENV, key_args, unique_bucket
from workflows.demo.seaweedfs import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def repo(tmp_path, monkeypatch):
    monkeypatch.setenv("SNAPFLOW_PASSWORD", "bucket-test-pw")
    monkeypatch.setenv("SNAPFLOW_KDF_TEST_N", "1024")
    url = f"file://{tmp_path / 'repo'}"
    subprocess.run([sys.executable, "-m", "steps", "init", "--repo", url], cwd=ROOT, check=True,
                   capture_output=True)  # fmt: skip
    return url


def backup_fails(repo: str, endpoint: str, source: str, *args: str) -> tuple[int, str]:
    """Runs ``bucket-backup``; checks that it stored nothing; returns the exit code and its one line."""
    root = Path(repo.removeprefix("file://"))
    before = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert "config" in before
    proc = subprocess.run(
        [sys.executable, "-m", "steps", "bucket-backup", "--repo", repo, "--source-endpoint", endpoint,
         "--source", source, *args],
        cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    listed = subprocess.run(
        [sys.executable, "-m", "steps", "snapshots", "--repo", repo, "--json"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert json.loads(listed.stdout) == []
    stored = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    # no pack, index or record (an audit trail's record of the attempt is not the backup's)
    assert [f for f in stored if f not in before and not f.startswith("audit/")] == []
    return proc.returncode, lines[0]


def test_an_endpoint_that_does_not_answer_is_named_and_worth_a_retry(repo, source_client):
    endpoint = f"http://127.0.0.1:{free_port()}"
    code, line = backup_fails(repo, endpoint, "s3://photos", *key_args("source"))
    assert code == 75
    assert f"bucket {endpoint}/photos" in line and "no answer" in line


def test_refused_keys_name_the_source_and_the_options(repo, bucket_source_server, source_client, monkeypatch):
    name = unique_bucket("keys")
    source_client(name)
    monkeypatch.setenv(SECRET_ENV, "not-the-secret")
    code, line = backup_fails(repo, bucket_source_server.endpoint, f"s3://{name}", *key_args("source"))
    assert code == 3
    assert f"bucket {bucket_source_server.endpoint}/{name}" in line
    assert "--source-secret-key-*" in line
    assert "not-the-secret" not in line


def test_a_missing_bucket_is_named(repo, bucket_source_server, source_client):
    code, line = backup_fails(repo, bucket_source_server.endpoint, "s3://no-such-bucket", *key_args("source"))
    assert code == 3
    assert line.endswith(
        f"bucket {bucket_source_server.endpoint}/no-such-bucket: the bucket 'no-such-bucket' does not exist"
    )


def test_versions_of_a_bucket_without_versioning_are_refused(repo, bucket_source_server, source_client):
    name = unique_bucket("plain")
    client = source_client(name)
    client.write("one", io.BytesIO(b"1"), 1, None, {})
    code, line = backup_fails(
        repo, bucket_source_server.endpoint, f"s3://{name}", *key_args("source"), "--versions"
    )
    assert code == 3
    assert f"bucket {bucket_source_server.endpoint}/{name}" in line and "does not keep versions" in line


def test_keys_named_but_not_set_are_a_usage_error(repo, bucket_source_server, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    code, line = backup_fails(repo, bucket_source_server.endpoint, "s3://any", *key_args("source"))
    assert code == 2
    assert line.endswith(
        f"--source-access-key-env: the environment variable {KEY_ENV} holding the access key ID is not set or empty"
    )


def restore_fails(repo: str, endpoint: str, target: str, *args: str) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "steps", "bucket-restore", "--repo", repo, "--target-endpoint", endpoint,
         "--target", target, *key_args("target"), *args],
        cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.returncode, lines[0]


def test_a_restore_names_a_missing_target_bucket_and_refused_keys(
    repo, bucket_source_server, source_client, monkeypatch
):
    # GIVEN a repository with one bucket snapshot
    name = unique_bucket("one")
    client = source_client(name)
    client.write("k", io.BytesIO(b"v"), 1, None, {})
    subprocess.run(
        [sys.executable, "-m", "steps", "bucket-backup", "--repo", repo, "--source-endpoint",
         bucket_source_server.endpoint, "--source", f"s3://{name}", *key_args("source")],
        cwd=ROOT, env=dict(os.environ), check=True, capture_output=True,
    )  # fmt: skip
    endpoint = bucket_source_server.endpoint
    # WHEN the target bucket does not exist THEN one line names it, and nothing is created
    code, line = restore_fails(repo, endpoint, "s3://not-there")
    assert code == 3 and line.endswith(f"bucket {endpoint}/not-there: the bucket 'not-there' does not exist")
    # WHEN the snapshot is not a bucket snapshot's ID THEN one line says so
    code, line = restore_fails(repo, endpoint, f"s3://{name}", "--snapshot", "ffffffff")
    assert code != 0 and "ffffffff" in line
    # WHEN the target's keys are refused THEN one line names the target and its options; nothing is written
    monkeypatch.setenv(SECRET_ENV, "wrong")
    code, line = restore_fails(repo, endpoint, f"s3://{name}")
    assert code == 3 and f"bucket {endpoint}/{name}" in line and "--target-secret-key-*" in line
