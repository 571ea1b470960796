"""The commit point in the repository package: run records and the backup record, stored and read back."""

from __future__ import annotations

from steps.plan import plan_from_dict
from steps.repository.records import commit_backup, save_run_record

BACKUP = "backup-db-q7w3"


def plan():
    return plan_from_dict(
        {
            "app": {"namespace": "shop", "name": "db", "cluster": "eu", "policy": "db"},
            "repository": {"url": "mem://records"},
            "snapshot": {"driver": "local"},
            "targets": [{"name": "db-0", "hook": "none", "local": True}],
            "volumes": [{"name": "data", "path": "/srv/data"}],
        }
    )


def store_backup_run(repo, backup_id=BACKUP, verify_ok=True):
    """A snapshot of the plan's volume, and the consistent-point and verify run records of the run."""
    sid = repo.save_snapshot(
        {
            "time": "2026-01-02T03:04:05Z",
            "backup_id": backup_id,
            "volume": "data",
            "tags": {"backup": backup_id},
            "summary": {"files": 4, "bytes_total": 123},
        }
    )
    save_run_record(repo, backup_id, "consistent-point", {"verdict": "crash-consistent", "reasons": []})
    save_run_record(repo, backup_id, "verify", {"ok": verify_ok, "snapshots": [sid], "problems": []})
    return sid


def test_a_run_record_is_found_under_its_backup_only(mem_repo):
    # GIVEN run records of two backups
    rid = save_run_record(mem_repo, BACKUP, "pipeline", {"status": "Succeeded"})
    save_run_record(mem_repo, "backup-db-other", "pipeline", {"status": "Failed"})

    # THEN each backup's listing holds its own, with its name and backup ID
    mine = mem_repo.list_records("runs", key=BACKUP)
    assert [(r.id, r.data) for r in mine] == [
        (rid, {"name": "pipeline", "backup_id": BACKUP, "status": "Succeeded"})
    ]


def test_commit_writes_the_backup_record_once(mem_repo):
    # GIVEN a run whose copy, consistent point and verify all passed
    sid = store_backup_run(mem_repo)
    log: list[str] = []

    # WHEN it is committed twice
    first = commit_backup(mem_repo, plan(), BACKUP, log.append)
    second = commit_backup(mem_repo, plan(), BACKUP, log.append)

    # THEN one backup record holds the snapshot and the verdict, and the second call finds it
    rid, problems, already = first
    assert rid is not None and problems == [] and already is False
    assert second == (rid, [], True)
    (record,) = mem_repo.list_records("backups", key=BACKUP)
    assert record.id == rid
    assert record.data["workflow_status"] == "Succeeded" and record.data["time"]
    assert [v["snapshot"] for v in record.data["volumes"]] == [sid]
    assert record.data["consistency"]["verdict"] == "crash-consistent"
    assert mem_repo.commits().committed(mem_repo.find_snapshot(sid))


def test_a_failed_verify_commits_nothing(mem_repo):
    # GIVEN a run whose verify failed
    store_backup_run(mem_repo, verify_ok=False)

    # WHEN finalize's commit runs
    rid, problems, already = commit_backup(mem_repo, plan(), BACKUP, lambda _m: None)

    # THEN it says why, and no backup record exists
    assert rid is None and already is False
    assert problems and "verify failed" in problems[0]
    assert mem_repo.list_records("backups", key=BACKUP) == []
