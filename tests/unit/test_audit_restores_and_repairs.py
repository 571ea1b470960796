"""bucket-restore, registry-restore and etcd-restore record which backup they restored and into where;
repair records and repair index record what they changed; finalize records the Object Lock a flagged
backup put on the last good one. A failed action is recorded as failed, a dry run not at all."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from steps.cli import main
from steps.commands import bucket_restore, etcd_restore, registry_restore
from steps.drivers.objectstore import LocalStore
from steps.errors import PermanentError
from steps.repository import audit
from steps.repository.anomaly_commit import lock_audit
from steps.repository.repo import Repository
from tests.fixtures.prune import backup, write_files
from tests.fixtures.repository import TEST_KDF

PASSWORD = "audit password"
SNAP = SimpleNamespace(
    id="ab" * 32,
    backup_id="backup-shop-media-x1",
    data={"source": "s3://media", "cluster": "c1", "namespace": "shop", "app": "media"},
)


def _records(repo) -> list[audit.Entry]:
    return audit.read_trail(repo).ordered()


def test_a_bucket_restore_names_its_backup_target_and_prefixes(mem_repo):
    args = SimpleNamespace(from_prefix="small/", to_prefix="restored/", versions="current", objects_as_of="")
    target = SimpleNamespace(where="s3://restored-media")
    assert bucket_restore._audited(args, mem_repo, SNAP, target, lambda: 42) == 42
    (rec,) = _records(mem_repo)
    assert (rec.action, rec.result) == ("bucket-restore", "ok")
    assert rec.what == {
        "snapshot": SNAP.id,
        "backup_id": "backup-shop-media-x1",
        "source": "s3://media",
        "target": "s3://restored-media",
        "from_prefix": "small/",
        "to_prefix": "restored/",
        "versions": "current",
        "written": 42,
    }
    assert rec.app == {"cluster": "c1", "namespace": "shop", "name": "media"}


def test_a_failed_registry_restore_is_recorded_failed_and_still_raised(mem_repo):
    args = SimpleNamespace(rehome=["harbor-a/shop=harbor-b/shop"], allow_uncommitted=False)

    def push():
        raise PermanentError("harbor-b: 403 on blob upload")

    with pytest.raises(PermanentError):
        registry_restore._audited(args, mem_repo, SNAP, "harbor-b", push)
    stats = SimpleNamespace(tags=3, manifests_pushed=4, blobs_pushed=5, bytes_pushed=6)
    out = ({"registry": "harbor-a"}, None, stats)
    registry_restore._audited(args, mem_repo, SNAP, "harbor-b", lambda: out)
    failed, ok = _records(mem_repo)
    assert (failed.action, failed.result) == ("registry-restore", "failed")
    assert "403 on blob upload" in failed.what["error"] and failed.what["registry"] == "harbor-b"
    assert (ok.result, ok.what["rehome"], ok.what["source_registry"]) == (
        "ok",
        ["harbor-a/shop=harbor-b/shop"],
        "harbor-a",
    )
    assert (ok.what["backup_id"], ok.what["blobs_pushed"], ok.what["bytes_pushed"]) == (SNAP.backup_id, 5, 6)


def test_an_etcd_restore_names_the_data_directory_member_and_revision(mem_repo):
    what = {"snapshot": SNAP.id, "backup_id": SNAP.backup_id, "data_dir": "/var/lib/etcd", "member": "m1"}
    desc = {"etcd_version": "3.5.12", "revision": 9001, "cluster_id": "c0ffee"}
    assert etcd_restore._audited(mem_repo, what, lambda: (desc, 1234, 7))[2] == 7
    (rec,) = _records(mem_repo)
    assert (rec.action, rec.result) == ("etcd-restore", "ok")
    assert rec.what == {**what, **desc, "size": 1234}


@pytest.fixture
def repo_url(tmp_path, monkeypatch):
    monkeypatch.setenv("SNAPFLOW_PASSWORD", PASSWORD)
    monkeypatch.setenv("SNAPFLOW_KDF_TEST_N", "1024")
    path = tmp_path / "repo"
    repo = Repository.init(LocalStore(str(path)), PASSWORD, kdf_params=TEST_KDF)
    backup(repo, write_files(tmp_path / "db", 1, names=("a.bin",), size=20_000), "b-db-1", app="db")
    return f"file://{path}"


def _open(url: str) -> Repository:
    return Repository.open(LocalStore(url.removeprefix("file://")), PASSWORD)


def test_repairs_record_what_they_changed_and_a_dry_run_is_not_recorded(repo_url, capsys):
    # GIVEN a snapshot record stored under another name
    repo = _open(repo_url)
    (snap,) = repo.list_snapshots()
    moved = "snapshots/" + "f" * 64
    repo.store.put(moved, repo.store.get(f"snapshots/{snap.id}"))
    repo.store.delete(f"snapshots/{snap.id}")

    # WHEN repair records is tried, then run; and the index is rebuilt
    assert main(["repair", "records", "--repo", repo_url, "--dry-run"]) == 0
    assert _records(_open(repo_url)) == []
    assert main(["repair", "records", "--repo", repo_url]) == 0
    assert main(["repair", "index", "--repo", repo_url]) == 0
    capsys.readouterr()

    # THEN each change is one record naming what it changed
    records, index = _records(_open(repo_url))
    assert (records.action, records.result) == ("repair.records", "ok")
    assert records.what["put_back"] == 1 and records.what["put_back_keys"] == [f"snapshots/{snap.id}"]
    # ... and the misnamed copy it removed, with why
    assert records.what["removed"] == 1 and records.what["removed_keys"][0]["key"] == moved
    assert "wrong name" in records.what["removed_keys"][0]["problem"]
    assert (index.action, index.result) == ("repair.index", "ok")
    assert index.what["packs"] >= 1 and index.what["new_index"] >= 1 and index.what["damaged_packs"] == []


def test_the_lock_a_flagged_backup_put_on_the_last_good_one_is_described_for_the_trail():
    flagged = {"backup_id": "b3", "anomaly": {"flagged": True, "reasons": ["changed 80% of bytes"]}}
    assert lock_audit({"backup_id": "b2", "anomaly": {"flagged": False}}) is None
    locked = {"backupId": "b2", "until": "2027-01-05T00:00:00Z", "extended": 10, "held": 2, "failed": []}
    what, result = lock_audit({**flagged, "anomaly": {**flagged["anomaly"], "lockedLastGood": locked}})
    assert result == "ok"
    assert what == {
        "reason": "anomaly",
        "flagged_backup": "b3",
        "backup_id": "b2",
        "until": "2027-01-05T00:00:00Z",
        "extended": 10,
        "held": 2,
        "failed": [],
        "reasons": ["changed 80% of bytes"],
    }
    partial = {**locked, "failed": ["packs/x: AccessDenied"]}
    assert lock_audit({**flagged, "anomaly": {"lockedLastGood": partial}})[1] == "partial"
    error = {"backupId": None, "until": None, "error": "listing failed"}
    what, result = lock_audit({**flagged, "anomaly": {"lockedLastGood": error}})
    assert result == "failed" and what["error"] == "listing failed"
    # no earlier unflagged backup, or no Object Lock on the repository: nothing locked, nothing recorded
    none = {"backupId": None, "until": None, "extended": 0, "held": 0, "failed": []}
    unlocked = {"backupId": "b2", "until": None, "extended": 0, "held": 0, "failed": []}
    assert lock_audit({**flagged, "anomaly": {"lockedLastGood": none}}) is None
    assert lock_audit({**flagged, "anomaly": {"lockedLastGood": unlocked}}) is None


def test_finalize_records_the_lock_its_flagged_backup_put_on_the_last_good_one(mem_repo):
    from steps.commands import finalize

    app = {"cluster": "c1", "namespace": "shop", "name": "db", "policy": "db"}
    plan = SimpleNamespace(app=SimpleNamespace(to_dict=lambda: app))
    locked = {"backupId": "b2", "until": "2027-01-05T00:00:00Z", "extended": 10, "held": 0, "failed": []}
    anomaly = {"flagged": True, "reasons": ["changed 80% of bytes"], "lockedLastGood": locked}
    mem_repo.save_record("backups", {"backup_id": "b3", "anomaly": anomaly}, key="b3")
    mem_repo.save_record("backups", {"backup_id": "b4", "anomaly": {"flagged": False}}, key="b4")
    finalize._audit_lock(mem_repo, plan, "b4")  # not flagged: nothing to record
    finalize._audit_lock(mem_repo, plan, "b3")
    (rec,) = _records(mem_repo)
    assert (rec.action, rec.result, rec.app) == ("object-lock.extend", "ok", app)
    assert (rec.what["backup_id"], rec.what["flagged_backup"], rec.what["extended"]) == ("b2", "b3", 10)
