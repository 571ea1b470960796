"""The scheduled check on a real S3 server (SeaweedFS): a rotating read-back that covers all data over
runs, damage and tampering found, and the restore test."""

from __future__ import annotations

import math
import os
import uuid

from steps.drivers.objectstore import open_store
from tests.fixtures.prune import last_json, minio_client, run_steps, write_files


def _repo_with_packs(repo: str, tmp_path, copies: int = 4) -> None:
    run_steps("init", "--repo", repo)
    for seed in range(copies):
        src = write_files(tmp_path / f"src{seed}", seed, names=("a.bin", "b.bin"), size=150_000)
        run_steps("copy", "--repo", repo, "--source", src)


def test_rotating_read_data_reads_every_pack_over_successive_checks(s3_repo, tmp_path):
    # GIVEN a repository of several packs
    _repo_with_packs(s3_repo, tmp_path)
    total = len(list(open_store(s3_repo).list("data/")))
    assert total >= 8
    # WHEN check reads 25% per run, four times
    seen: list[str] = []
    reports = []
    for _ in range(4):
        report = last_json(run_steps("check", "--repo", s3_repo, "--read-data", "25", "--json"))
        assert report["ok"], report["problems"]
        seen += report["read_data"]["packs"]
        reports.append(report)
    # THEN each run read a quarter, the runs did not repeat themselves, and together they read every pack
    per_run = math.ceil(total * 25 / 100)
    assert all(r["read_data"]["packs_read"] == per_run for r in reports)
    assert len(set(seen)) == total
    assert reports[-1]["read_data"]["rounds_completed"] == 1
    # AND the position is kept in the repository (one state record)
    assert len(list(open_store(s3_repo).list("check/"))) == 1


def test_check_names_a_damaged_pack(s3_repo, tmp_path):
    # GIVEN a pack whose bytes were damaged in place (no versions to fall back to)
    _repo_with_packs(s3_repo, tmp_path, copies=2)
    store = open_store(s3_repo)
    victim = next(iter(store.list("data/"))).key
    data = bytearray(store.get(victim))
    data[len(data) // 2] ^= 0xFF
    store.put(victim, bytes(data))
    # WHEN check reads all data
    proc = run_steps("check", "--repo", s3_repo, "--read-data", "100", check=False)
    # THEN it fails with the integrity exit code and names the pack
    assert proc.returncode == 3
    assert victim.rsplit("/", 1)[-1] in proc.stdout + proc.stderr


def test_check_reports_objects_deleted_outside_snapflow_on_a_versioned_bucket(s3_server, s3_env, tmp_path):
    # GIVEN a repository in a versioned bucket, and a snapshot record deleted by someone else
    bucket = f"v-{uuid.uuid4().hex[:12]}"
    minio_client(s3_server).make_bucket(bucket, object_lock=True)  # object lock implies versioning
    repo = f"s3://{bucket}/r"
    env = s3_server.client_env()
    for key, value in env.items():
        s3_env.setenv(key, value)
    run_steps("init", "--repo", repo, env=env)
    run_steps("copy", "--repo", repo, "--source", write_files(tmp_path / "src", 1), env=env)
    snap_key = next(iter(open_store(repo, s3_server.endpoint).list("snapshots/"))).key
    minio_client(s3_server).remove_object(bucket, f"r/{snap_key}")
    # WHEN check runs
    proc = run_steps("check", "--repo", repo, "--json", env=env, check=False)
    # THEN it fails and reports the deletion as tampering
    assert proc.returncode == 3
    report = last_json(proc)
    assert any(snap_key in t and "deleted outside" in t for t in report["tampering"])


def test_the_restore_test_restores_the_newest_backup_and_runs_the_check_command(s3_repo, tmp_path):
    # GIVEN a repository with a snapshot
    run_steps("init", "--repo", s3_repo)
    src = write_files(tmp_path / "src", 3)
    run_steps("copy", "--repo", s3_repo, "--source", src)
    scratch = tmp_path / "scratch"
    # WHEN the restore test runs a command that checks the restored files
    command = 'cmp "$SNAPFLOW_RESTORE_DIR"/*/a.bin ' + os.path.join(src, "a.bin")
    report = last_json(
        run_steps(
            "check",
            "--repo",
            s3_repo,
            "--restore-test",
            "--scratch",
            str(scratch),
            "--restore-check",
            command,
            "--json",
        )
    )
    # THEN the restore and the command passed, and the scratch space is left empty
    assert report["ok"] and report["restore_test"]["ok"]
    assert report["restore_test"]["check_command"]["exit"] == 0
    assert report["restore_test"]["volumes"][0]["files"] == 3
    assert not (scratch / "restore-test").exists()
    # WHEN the command fails THEN check fails and says so
    failing = run_steps(
        "check",
        "--repo",
        s3_repo,
        "--restore-test",
        "--restore-check",
        "echo broken >&2; exit 7",
        check=False,
    )
    assert failing.returncode == 3
    assert "--restore-check failed (exit 7): broken" in failing.stdout + failing.stderr


def test_the_restore_test_of_an_app_without_a_committed_backup_fails_and_says_so(s3_repo, tmp_path):
    # GIVEN a repository holding a snapshot but no committed backup of the app
    run_steps("init", "--repo", s3_repo)
    run_steps("copy", "--repo", s3_repo, "--source", write_files(tmp_path / "src", 4))
    # WHEN the restore test of that app runs
    proc = run_steps(
        "check", "--repo", s3_repo, "--restore-test", "--app", "orders-db", "--namespace", "shop", "--json",
        check=False,
    )  # fmt: skip
    # THEN the check fails and names what it could not find (it restores no other app's data instead)
    assert proc.returncode == 3
    report = last_json(proc)
    assert report["restore_test"]["problems"] == [
        "no committed backup of app orders-db (namespace shop) to restore"
    ]
    assert "volumes" not in report["restore_test"]
    # AND choosing an app without a restore test is a usage error
    usage = run_steps("check", "--repo", s3_repo, "--app", "orders-db", check=False)
    assert usage.returncode == 2
    assert "--app/--namespace/--cluster" in usage.stderr
