"""Object Lock and append-only mode on a real S3 server (SeaweedFS), through the step command line.

Measured S3 semantics these tests rely on: on a versioned bucket with Object Lock a PUT to an existing
key and a plain DELETE succeed (new version, delete marker); deleting a locked *version* is refused.
The backup credentials are append-only: SeaweedFS identities cannot leave s3:DeleteObjectVersion out
of "Write", so a bucket policy denies it to the backup identity.
"""

from __future__ import annotations

import io
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from minio.error import S3Error

from tests.fixtures.prune import last_json, minio_client, run_steps, write_files
from tests.fixtures.repository import build_tricky_tree, describe_tree


def _now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _bucket() -> str:
    return f"lk-{uuid.uuid4().hex[:12]}"


def _copy(repo: str, src, env: dict) -> str:
    return run_steps("copy", "--repo", repo, "--source", str(src), env=env).stdout.strip().splitlines()[-1]


def test_overwritten_and_deleted_backup_restores_byte_identical_as_of_before_the_attack(
    locked_s3_server, s3_env, tmp_path
):
    server = locked_s3_server
    bucket = _bucket()
    repo = f"s3://{bucket}/repo"
    admin, writer = server.admin_env(), server.writer_env()
    # GIVEN a repository in a bucket with Object Lock, and append-only backup credentials
    run_steps(
        "init", "--repo", repo, "--object-lock-mode", "compliance", "--object-lock-days", "1", env=admin
    )
    server.deny_version_deletes(bucket)
    src = build_tricky_tree(tmp_path / "src", small_files=50)
    _copy(repo, src, writer)
    time.sleep(1.2)  # Last-Modified has whole seconds
    before_attack = _now_iso()
    time.sleep(1.2)
    # WHEN someone with the backup credentials overwrites every object, then deletes them
    client = minio_client(server, writer)
    names = [o.object_name for o in client.list_objects(bucket, prefix="repo/", recursive=True)]
    assert any("/snapshots/" in n for n in names) and any("/data/" in n for n in names)
    for name in names:
        client.put_object(bucket, name, io.BytesIO(b"ransom note"), 11)
    for name in names:
        client.remove_object(bucket, name)
    # AND tries to delete the old versions
    refused = 0
    for o in client.list_objects(bucket, prefix="repo/", recursive=True, include_version=True):
        if o.is_delete_marker:
            continue
        with pytest.raises(S3Error) as err:
            client.remove_object(bucket, o.object_name, version_id=o.version_id)
        assert err.value.code == "AccessDenied"
        refused += 1
    assert refused >= 2 * len(names)
    # THEN the repository as it is now restores nothing
    broken = run_steps(
        "restore",
        "--repo",
        repo,
        "--snapshot",
        "latest",
        "--target",
        str(tmp_path / "x"),
        env=writer,
        check=False,
    )
    assert broken.returncode != 0
    # AND as of before the attack it lists the snapshot and restores it byte- and metadata-identical
    listed = last_json(run_steps("snapshots", "--repo", repo, "--as-of", before_attack, "--json", env=writer))
    assert len(listed) == 1 and listed[0]["committed"]
    out = tmp_path / "restored"
    run_steps(
        "restore",
        "--repo",
        repo,
        "--snapshot",
        "latest",
        "--as-of",
        before_attack,
        "--target",
        str(out),
        env=writer,
    )
    assert describe_tree(out) == describe_tree(src)
    ls = run_steps("ls", "--repo", repo, "--snapshot", "latest", "--as-of", before_attack, env=writer).stdout
    assert "/text.txt" in ls


def test_a_locked_version_cannot_be_deleted_even_with_admin_credentials(locked_s3_server, s3_env, tmp_path):
    server = locked_s3_server
    bucket = _bucket()
    repo = f"s3://{bucket}/repo"
    # GIVEN a compliance-locked repository with one snapshot
    run_steps(
        "init",
        "--repo",
        repo,
        "--object-lock-mode",
        "compliance",
        "--object-lock-days",
        "1",
        env=server.admin_env(),
    )
    _copy(repo, write_files(tmp_path / "src", 1), server.writer_env())
    admin = minio_client(server)
    version = next(
        o for o in admin.list_objects(bucket, prefix="repo/data/", recursive=True, include_version=True)
    )
    # WHEN the admin deletes that version THEN the store refuses
    with pytest.raises(S3Error) as err:
        admin.remove_object(bucket, version.object_name, version_id=version.version_id)
    assert err.value.code == "AccessDenied"
    # AND its retention runs about a day
    retention = admin.get_object_retention(bucket, version.object_name, version_id=version.version_id)
    assert retention.mode == "COMPLIANCE"
    assert timedelta(hours=23) < retention.retain_until_date - datetime.now(UTC) < timedelta(hours=25)


def test_prune_with_the_backup_credentials_can_hide_but_not_destroy(locked_s3_server, s3_env, tmp_path):
    server = locked_s3_server
    bucket = _bucket()
    repo = f"s3://{bucket}/repo"
    writer = server.writer_env()
    # GIVEN an append-only locked repository with two snapshots of different data
    run_steps(
        "init",
        "--repo",
        repo,
        "--object-lock-mode",
        "governance",
        "--object-lock-days",
        "1",
        env=server.admin_env(),
    )
    server.deny_version_deletes(bucket)
    first = write_files(tmp_path / "first", 1)  # what the source held at the first copy
    src = write_files(tmp_path / "src", 1)
    _copy(repo, src, writer)
    time.sleep(1.1)
    _copy(repo, write_files(src, 2), writer)
    time.sleep(1.2)
    before = _now_iso()
    time.sleep(1.2)
    # WHEN a prune with the backup credentials forgets the first and sweeps at once
    report = last_json(
        run_steps("prune", "--repo", repo, "--keep-last", "1", "--grace", "0", "--wait", "--json", env=writer)
    )
    # THEN it deleted packs (delete markers), and every old version is still held
    assert report["forgotten_snapshots"] and report["sweep"]["packs_deleted"] > 0
    assert report["versions"]["versions_deleted"] == 0 and report["versions"]["versions_held"] > 0
    # AND the first snapshot still restores as of before the prune
    out = tmp_path / "out"
    run_steps(
        "restore", "--repo", repo, "--snapshot", "latest", "--as-of", before, "--target", str(out), env=writer
    )
    old = [
        s for s in last_json(run_steps("snapshots", "--repo", repo, "--as-of", before, "--json", env=writer))
    ]
    assert len(old) == 2
    first_id = min(old, key=lambda s: s["time"])["id"]
    run_steps(
        "restore",
        "--repo",
        repo,
        "--snapshot",
        first_id,
        "--as-of",
        before,
        "--target",
        str(tmp_path / "f"),
        env=writer,
    )
    assert describe_tree(tmp_path / "f") == describe_tree(first)


def test_prune_extends_the_locks_of_what_kept_backups_need(locked_s3_server, s3_env, tmp_path):
    server = locked_s3_server
    bucket = _bucket()
    repo = f"s3://{bucket}/repo"
    admin_env = server.admin_env()
    # GIVEN a repository whose objects are locked for one day (the bucket's default retention)
    run_steps(
        "init", "--repo", repo, "--object-lock-mode", "governance", "--object-lock-days", "1", env=admin_env
    )
    _copy(repo, write_files(tmp_path / "src", 1), server.writer_env())

    def prune_keeping_it_locked_3_days() -> dict:
        return last_json(
            run_steps(
                "prune", "--repo", repo, "--keep-last", "3", "--lock-mode", "governance", "--lock-days", "3",
                "--json", env=admin_env,
            )
        )  # fmt: skip

    # WHEN prune keeps the backup and is told to keep it locked for 3 days
    report = prune_keeping_it_locked_3_days()
    # THEN the retention of its packs, index, snapshot, key and config now runs about 3 days
    assert report["locks"]["extended"] >= 5 and not report["locks"]["failed"]
    admin = minio_client(server)
    for prefix in ("repo/data/", "repo/snapshots/", "repo/index/", "repo/config"):
        obj = next(admin.list_objects(bucket, prefix=prefix, recursive=True))
        retention = admin.get_object_retention(bucket, obj.object_name)
        left = retention.retain_until_date - datetime.now(UTC)
        assert timedelta(days=2, hours=23) < left < timedelta(days=3, hours=1), prefix
    # AND a second run leaves them alone (more than half the period left)
    again = prune_keeping_it_locked_3_days()
    assert again["locks"]["extended"] == 0 and again["locks"]["held"] >= 5


def test_prune_deletes_only_expired_versions_and_reports_what_is_held(locked_s3_server, s3_env, tmp_path):
    server = locked_s3_server
    bucket = _bucket()
    repo = f"s3://{bucket}/repo"
    # GIVEN a locked bucket whose objects are written with a retention of a few seconds
    minio_client(server).make_bucket(bucket, object_lock=True)
    env = {
        **server.admin_env(),
        "SNAPFLOW_OBJECT_LOCK_MODE": "governance",
        "SNAPFLOW_OBJECT_LOCK_DAYS": "0.0001",
    }
    run_steps("init", "--repo", repo, env=env)
    src = write_files(tmp_path / "src", 1)
    _copy(repo, src, env)
    time.sleep(1.1)
    _copy(repo, write_files(src, 2), env)
    # WHEN prune forgets the first snapshot and sweeps while the locks still hold
    first = last_json(
        run_steps("prune", "--repo", repo, "--keep-last", "1", "--grace", "0", "--wait", "--json", env=env)
    )
    # THEN the packs are deleted (delete markers) and their versions reported as held
    assert first["sweep"]["packs_deleted"] > 0
    assert first["versions"]["versions_held"] > 0 and first["versions"]["held_until"]
    assert first["versions"]["deleted_outside_prune"] == 0
    # WHEN prune runs again after the retention expired
    time.sleep(10)
    second = last_json(run_steps("prune", "--repo", repo, "--keep-last", "1", "--json", env=env))
    # THEN the old versions are gone, nothing of prune's is held any more, and the kept snapshot is whole
    assert second["versions"]["versions_deleted"] > 0
    client = minio_client(server)
    data_versions = [
        o for o in client.list_objects(bucket, prefix="repo/data/", recursive=True, include_version=True)
    ]
    assert all(not o.is_delete_marker for o in data_versions)
    run_steps("verify", "--repo", repo, "--read-data", "100", env=env)
    out = tmp_path / "out"
    run_steps("restore", "--repo", repo, "--snapshot", "latest", "--target", str(out), env=env)
    assert sorted(p.name for p in out.iterdir()) == ["a.bin", "b.bin", "c.bin"]
    assert (out / "a.bin").read_bytes() == (tmp_path / "src" / "a.bin").read_bytes()
