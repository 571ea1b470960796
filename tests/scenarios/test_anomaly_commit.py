"""A backup's commit records its changes and the anomaly verdict, commits a flagged backup all the same,
and (``finalize --lock-last-good``) extends the Object Lock of the newest unflagged backup: in memory,
and on a real S3 server with Object Lock (SeaweedFS)."""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from steps.plan import AppRef, Plan, RepositoryRef, SnapshotSpec, Volume
from steps.repository.archiver import CopyOptions, copy_source
from steps.repository.records import commit_backup, save_run_record, utc_now_iso
from tests.fixtures.prune import minio_client, run_steps
from tests.scenarios.anomaly_world import encrypt_files, make_app_data, normal_day


def _plan(src, url: str) -> Plan:
    return Plan(
        app=AppRef(namespace="shop", name="orders", cluster="c1", policy="orders"),
        repository=RepositoryRef(url=url, endpoint=None),
        targets=(),
        volumes=(Volume(name="data", path=str(src)),),
        snapshot=SnapshotSpec(driver="local"),
    )


def _backup(repo, plan, src, n: int, lock_days=None) -> dict:
    """One backup through the real copy and commit: the copy, its consistent point and passing verify
    (run records as the steps write them), then ``commit_backup``; returns the committed record."""
    bid = f"backup-orders-{n:03d}"
    identity = {"cluster": "c1", "namespace": "shop", "app": "orders", "volume": "data"}
    result = copy_source(repo, CopyOptions(source=str(src), backup_id=bid, identity=identity))
    save_run_record(repo, bid, "consistent-point", {"verdict": "app-consistent", "reasons": []})
    save_run_record(repo, bid, "verify", {"ok": True, "snapshots": [result.snapshot_id]})
    logged: list[str] = []
    rid, problems, _ = commit_backup(repo, plan, bid, logged.append, lock_days)
    assert rid and not problems, problems
    record = repo.list_records("backups", key=bid)[-1].data
    record["_log"] = logged
    return record


@pytest.fixture
def mem_world(mem_repo, tmp_path):
    src = tmp_path / "app"
    make_app_data(src, seed=21, files=120)
    return mem_repo, _plan(src, "mem://anomaly"), src


def test_a_committed_backup_records_its_changes_and_a_flagged_one_is_committed_all_the_same(mem_world):
    repo, plan, src = mem_world
    rng = random.Random(21)
    # GIVEN a week of daily backups of normal churn
    records = [_backup(repo, plan, src, 0)]
    for n in range(1, 8):
        normal_day(src, rng)
        records.append(_backup(repo, plan, src, n))
    # THEN each record holds the backup's changes and an unflagged verdict with its baseline
    last = records[-1]
    assert set(last["changes"]) >= {
        "newBytes", "newDataRatio", "newDataCompressibility", "filesAdded", "filesChanged",
        "filesDeleted", "filesRenamed", "filesTotal",
    }  # fmt: skip
    assert last["changes"]["filesTotal"] == sum(1 for p in src.rglob("*") if p.is_file())
    assert last["anomaly"]["flagged"] is False and last["anomaly"]["baseline"] == 7
    assert records[0]["anomaly"]["baseline"] == 0  # nothing to compare the first one with
    # WHEN 30 % of the files are encrypted
    encrypt_files(src, rng, 0.3)
    flagged = _backup(repo, plan, src, 8, lock_days=3)
    # THEN the backup is committed, flagged, and says so in the log
    assert flagged["anomaly"]["flagged"] is True and flagged["anomaly"]["reasons"]
    assert any("WARNING" in line and "changed unusually much" in line for line in flagged["_log"])
    # AND a store without versioning locks nothing, but names the last good backup
    locked = flagged["anomaly"]["lockedLastGood"]
    assert locked["backupId"] == "backup-orders-007" and locked["until"] is None


def test_a_backup_copied_without_telemetry_gets_no_verdict(mem_world):
    repo, plan, src = mem_world
    # GIVEN a snapshot as an older copy wrote it (no changes field)
    bid = "backup-orders-old"
    identity = {"cluster": "c1", "namespace": "shop", "app": "orders", "volume": "data"}

    result = copy_source(repo, CopyOptions(source=str(src), backup_id=bid, identity=identity))
    snap = repo.find_snapshot(result.snapshot_id).data
    snap.pop("changes")
    sid = repo.save_snapshot({**snap, "time": utc_now_iso(), "host": "older"})  # the newer one
    save_run_record(repo, bid, "consistent-point", {"verdict": "app-consistent", "reasons": []})
    save_run_record(repo, bid, "verify", {"ok": True, "snapshots": [sid]})
    # WHEN it is committed (the newest snapshot of the backup is the one without telemetry)
    rid, problems, _ = commit_backup(repo, plan, bid, lambda _m: None)
    record = repo.list_records("backups", key=bid)[-1].data
    # THEN it is committed without changes or anomaly (old readers and the report see what they saw)
    assert rid and not problems
    assert record["volumes"][0]["snapshot"] == sid
    assert "changes" not in record and "anomaly" not in record


def test_finalize_refuses_a_bad_lock_duration_after_the_thaw_in_one_line(tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(_plan(tmp_path, "file:///nonexistent-repo").to_dict()))
    proc = run_steps(
        "finalize", "--plan", str(plan), "--backup-id", "b1", "--workflow-status", "Succeeded",
        "--lock-last-good", "soon", check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "--lock-last-good: expected a duration like 24h" in proc.stderr
    assert "Traceback" not in proc.stderr


def _retention_left(client, bucket: str, key: str) -> timedelta:
    r = client.get_object_retention(bucket, key)
    return r.retain_until_date - datetime.now(UTC)


def test_a_flagged_backup_extends_the_lock_of_the_last_good_backup_on_s3(
    locked_s3_server, s3_env, tmp_path, monkeypatch
):
    from steps.repository.opener import open_repository

    server = locked_s3_server
    bucket = f"an-{uuid.uuid4().hex[:12]}"
    url = f"s3://{bucket}/repo"
    # GIVEN a repository whose objects are locked for a day by default
    run_steps(
        "init", "--repo", url, "--object-lock-mode", "governance", "--object-lock-days", "1",
        env=server.admin_env(),
    )  # fmt: skip
    for k, v in server.admin_env().items():
        monkeypatch.setenv(k, v)
    repo = open_repository(url)
    src = tmp_path / "app"
    make_app_data(src, seed=31, files=60)
    plan = _plan(src, url)
    rng = random.Random(31)
    # AND six backups of normal churn
    records = [_backup(repo, plan, src, 0)]
    for n in range(1, 6):
        normal_day(src, rng)
        records.append(_backup(repo, plan, src, n))
    assert not any(r["anomaly"]["flagged"] for r in records)
    # WHEN ransomware encrypts 30 % of the files and the next backup is committed with a 3-day lock
    encrypt_files(src, rng, 0.3)
    flagged = _backup(repo, plan, src, 6, lock_days=3)
    # THEN it is flagged, and the last good backup's objects are locked for about 3 days
    assert flagged["anomaly"]["flagged"]
    locked = flagged["anomaly"]["lockedLastGood"]
    assert locked["backupId"] == "backup-orders-005" and not locked["failed"]
    assert locked["extended"] >= 4, locked
    client = minio_client(server)
    good = records[-1]["volumes"][0]["snapshot"]
    assert timedelta(days=2, hours=23) < _retention_left(client, bucket, f"repo/snapshots/{good}")
    packs = [o.object_name for o in client.list_objects(bucket, prefix="repo/data/", recursive=True)]
    longest = max(_retention_left(client, bucket, p) for p in packs)
    assert timedelta(days=2, hours=23) < longest < timedelta(days=3, hours=1)
    # AND what only the flagged backup wrote keeps the bucket's default of one day
    bad = flagged["volumes"][0]["snapshot"]
    assert _retention_left(client, bucket, f"repo/snapshots/{bad}") < timedelta(days=1, hours=1)
