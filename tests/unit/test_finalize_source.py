"""``finalize`` of a source's backup (etcd, registry, bucket: a plan with ``source``): the newest snapshot of
the backup of the source's kind is committed when the passing verify checked it; without either, nothing is
committed, one line says why, and the exit status is non-zero. Repository in a local directory; finalize
runs in-process through the steps' command line."""

from __future__ import annotations

import json

import pytest

from steps.cli import main
from steps.commands.registry_restore import find_registry_snapshot
from steps.drivers.objectstore import LocalStore
from steps.errors import UsageError
from steps.plan import plan_from_dict
from steps.repository.records import referenced_snapshots, save_run_record
from steps.repository.repo import Repository
from tests.fixtures.repository import TEST_KDF

PASSWORD = "source finalize password"
BACKUP = "backup-harbor-k2x9"


@pytest.fixture
def repo_path(tmp_path, monkeypatch):
    monkeypatch.setenv("SNAPFLOW_PASSWORD", PASSWORD)
    monkeypatch.setenv("SNAPFLOW_KDF_TEST_N", "1024")
    path = tmp_path / "repo"
    Repository.init(LocalStore(str(path)), PASSWORD, kdf_params=TEST_KDF)
    return path


def _repo(path) -> Repository:
    return Repository.open(LocalStore(str(path)), PASSWORD)


def _plan_file(tmp_path, path, kind: str = "registry") -> str:
    plan = {
        "app": {"namespace": "platform", "name": "harbor", "cluster": "eu", "policy": "harbor"},
        "repository": {"url": f"file://{path}"},
        "source": {"kind": kind, "name": "harbor"},
    }
    plan_from_dict(plan)  # what the steps accept
    f = tmp_path / "plan.json"
    f.write_text(json.dumps(plan))
    return str(f)


def _snapshot(repo, kind: str, time: str, backup_id: str = BACKUP) -> str:
    """A snapshot record as the source steps tag theirs: kind, and the backup it belongs to."""
    return repo.save_snapshot(
        {
            "time": time,
            "backup_id": backup_id,
            "tags": {"kind": kind, "backup": backup_id},
            "summary": {"files": 3, "bytes_total": 4096},
        }
    )


def _finalize(capsys, plan_file: str) -> tuple[int, str]:
    rc = main(["finalize", "--plan", plan_file, "--backup-id", BACKUP, "--workflow-status", "Succeeded"])
    return rc, capsys.readouterr().err


def test_a_verified_registry_snapshot_is_committed_and_is_the_latest_restore_point(
    repo_path, tmp_path, capsys
):
    # GIVEN an older and a newer registry snapshot of the backup, a bucket snapshot of it, and a passing
    # verify that checked them
    repo = _repo(repo_path)
    _snapshot(repo, "registry", "2026-01-02T03:04:05Z")
    sid = _snapshot(repo, "registry", "2026-01-02T03:05:05Z")
    other = _snapshot(repo, "bucket", "2026-01-02T03:06:05Z")
    save_run_record(repo, BACKUP, "verify", {"ok": True, "snapshots": [sid, other], "problems": []})

    # WHEN finalize runs for the registry source, twice
    rc, _ = _finalize(capsys, _plan_file(tmp_path, repo_path))
    again, err = _finalize(capsys, _plan_file(tmp_path, repo_path))

    # THEN one backup record names the newest registry snapshot, and keeps it (and only it) alive
    assert rc == 0 and again == 0 and "committed" in err
    repo = _repo(repo_path)
    (record,) = repo.list_records("backups", key=BACKUP)
    data = record.data
    assert data["source"] == {
        "kind": "registry",
        "snapshot": sid,
        "summary": {"files": 3, "bytes_total": 4096},
        "time": "2026-01-02T03:05:05Z",  # the snapshot's: the point in time it restores
    }
    assert data["snapshots"] == [sid] and data["consistency"] is None and data["volumes"] == []
    assert data["workflow_status"] == "Succeeded" and data["verify"]["ok"] is True
    assert referenced_snapshots(data) == {sid}

    # AND restoring the latest registry snapshot without allow-uncommitted finds it
    assert find_registry_snapshot(repo, "latest", allow_uncommitted=False).id == sid


def test_without_a_passing_verify_nothing_is_committed(repo_path, tmp_path, capsys):
    # GIVEN a bucket snapshot of the backup and a verify that did not check it
    repo = _repo(repo_path)
    sid = _snapshot(repo, "bucket", "2026-01-02T03:04:05Z")
    save_run_record(repo, BACKUP, "verify", {"ok": True, "snapshots": [], "problems": []})

    # WHEN finalize runs
    rc, err = _finalize(capsys, _plan_file(tmp_path, repo_path, "bucket"))

    # THEN it fails with one line naming the snapshot, and commits nothing
    assert rc != 0
    (line,) = [ln for ln in err.splitlines() if "not committed:" in ln]
    assert (
        f"source bucket: snapshot {sid[:8]} was not checked by the passing verify of backup {BACKUP}" in line
    )
    assert "Traceback" not in err
    assert _repo(repo_path).list_records("backups", key=BACKUP) == []


def test_without_a_verify_record_nothing_is_committed(repo_path, tmp_path, capsys):
    _snapshot(_repo(repo_path), "bucket", "2026-01-02T03:04:05Z")

    rc, err = _finalize(capsys, _plan_file(tmp_path, repo_path, "bucket"))

    assert rc != 0 and f"backup {BACKUP}: no verify run record" in err and "Traceback" not in err
    assert _repo(repo_path).list_records("backups", key=BACKUP) == []


def test_without_a_snapshot_of_the_source_kind_nothing_is_committed(repo_path, tmp_path, capsys):
    # GIVEN only a registry snapshot of the backup, verified, and an etcd plan
    repo = _repo(repo_path)
    sid = _snapshot(repo, "registry", "2026-01-02T03:04:05Z")
    save_run_record(repo, BACKUP, "verify", {"ok": True, "snapshots": [sid], "problems": []})

    # WHEN finalize runs for the etcd source
    rc, err = _finalize(capsys, _plan_file(tmp_path, repo_path, "etcd"))

    # THEN it refuses: no etcd snapshot of this backup
    assert rc != 0 and f"source etcd: no snapshot of backup {BACKUP} in the repository" in err
    assert _repo(repo_path).list_records("backups", key=BACKUP) == []
    with pytest.raises(UsageError, match="never committed"):
        find_registry_snapshot(_repo(repo_path), "latest", allow_uncommitted=False)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"source": {"kind": "ftp", "name": "x"}}, "source.kind: expected one of etcd, registry, bucket"),
        ({}, "volumes: expected at least one volume"),
        (
            {"source": {"kind": "etcd", "name": "x"}, "volumes": [{"name": "d", "path": "/d"}]},
            "source: expected no volumes and no targets",
        ),
    ],
)
def test_the_plan_takes_a_source_or_volumes(extra, message):
    with pytest.raises(UsageError, match=message):
        plan_from_dict({"app": {"namespace": "n", "name": "a"}, **extra})


def test_a_source_plan_reads_back_as_written():
    plan = plan_from_dict({"app": {"namespace": "n", "name": "a"}, "source": {"kind": "etcd", "name": "cp"}})
    assert plan_from_dict(plan.to_dict()) == plan
    assert plan.to_dict()["source"] == {"kind": "etcd", "name": "cp"}
    app = plan_from_dict({"app": {"namespace": "n", "name": "a"}, "volumes": [{"name": "d", "path": "/d"}]})
    assert "source" not in app.to_dict()  # an app's plan is written as before


def test_copy_then_verify_then_finalize_commits_a_bucket_backup(repo_path, tmp_path, capsys):
    # GIVEN a bucket snapshot stored by the copy step (tagged as bucket-backup tags its snapshots) and
    # checked by the verify step of the same backup
    src = tmp_path / "objects"
    src.mkdir()
    (src / "a.txt").write_bytes(b"object a\n" * 100)
    url = f"file://{repo_path}"
    assert (
        main(["copy", "--repo", url, "--source", str(src), "--backup-id", BACKUP, "--tag", "kind=bucket"])
        == 0
    )
    sid = capsys.readouterr().out.strip().splitlines()[-1]
    assert main(["verify", "--repo", url, "--backup-id", BACKUP, "--read-data", "100"]) == 0
    capsys.readouterr()

    # WHEN finalize runs for the bucket source
    rc, _ = _finalize(capsys, _plan_file(tmp_path, repo_path, "bucket"))

    # THEN the backup is committed, naming that snapshot, which is now a committed one
    assert rc == 0
    repo = _repo(repo_path)
    (record,) = repo.list_records("backups", key=BACKUP)
    assert record.data["source"]["snapshot"] == record.data["snapshots"][0]
    snap = repo.find_snapshot(record.data["source"]["snapshot"])
    assert snap.id.startswith(sid) and snap.tags["kind"] == "bucket"
    assert repo.commits().state(snap) == "committed"
