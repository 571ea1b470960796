"""The repository facade on an in-memory store: keys, config, records, copy/restore/verify engines."""

import json
import os

import pytest

from steps.drivers.objectstore import MemoryStore
from steps.errors import IntegrityError, RepositoryError, WrongPasswordError
from steps.repository.archiver import CopyOptions, copy_source, store_files
from steps.repository.checker import rebuild_index, verify
from steps.repository.repo import Repository
from steps.repository.restorer import load_files, restore_snapshot
from tests.fixtures.repository import TEST_KDF, describe_tree


def test_wrong_password_is_a_one_line_wrong_password_error(mem_repo):
    with pytest.raises(WrongPasswordError) as err:
        Repository.open(mem_repo.store, "not the password")
    assert "\n" not in str(err.value) and "wrong password" in str(err.value)
    assert "not the password" not in str(err.value)


def test_init_refuses_to_overwrite_a_repository(mem_repo):
    with pytest.raises(RepositoryError, match="already exists"):
        Repository.init(mem_repo.store, "x", kdf_params=TEST_KDF)


def test_unknown_format_version_is_refused_before_any_key_is_tried(mem_repo):
    doc = json.loads(mem_repo.store.get("config"))
    doc["version"] = 99
    mem_repo.store.put("config", json.dumps(doc).encode())
    with pytest.raises(RepositoryError, match="format version 99 is not supported"):
        Repository.open(mem_repo.store, "test password")


def test_altered_config_is_detected(mem_repo):
    doc = json.loads(mem_repo.store.get("config"))
    doc["chunker"]["avg"] = 4096
    mem_repo.store.put("config", json.dumps(doc).encode())
    with pytest.raises(IntegrityError, match="MAC"):
        Repository.open(mem_repo.store, "test password")


def test_keys_can_be_added_and_removed_without_touching_data(mem_repo, tmp_path):
    (tmp_path / "f").write_bytes(b"data" * 1000)
    sid = copy_source(mem_repo, CopyOptions(str(tmp_path))).snapshot_id
    data_before = {
        k: v for k, v in mem_repo.store.objects.items() if k.startswith(("data/", "index/", "snapshots/"))
    }
    new_id = mem_repo.add_key("second password", TEST_KDF)
    second = Repository.open(mem_repo.store, "second password")
    assert second.key_id == new_id
    second.remove_key(mem_repo.key_id)
    with pytest.raises(WrongPasswordError):
        Repository.open(mem_repo.store, "test password")
    reopened = Repository.open(mem_repo.store, "second password")
    assert reopened.find_snapshot(sid[:8]).id == sid
    assert {
        k: v for k, v in mem_repo.store.objects.items() if k.startswith(("data/", "index/", "snapshots/"))
    } == data_before
    key_doc = json.loads(mem_repo.store.get(f"keys/{new_id}"))
    assert key_doc["kdf"]["name"] == "scrypt" and key_doc["kdf"]["n"] == 1024


def test_new_keys_default_to_at_least_restic_cost(monkeypatch):
    from steps.repository.keys import kdf_params_for_new_key

    monkeypatch.delenv("SNAPFLOW_KDF_TEST_N", raising=False)
    assert kdf_params_for_new_key() == {"n": 2**15, "r": 8, "p": 4}


def test_records_are_encrypted_grouped_by_key_and_listed(mem_repo):
    rid = mem_repo.save_record(
        "runs", {"name": "verify", "ok": True, "time": "2024-01-01T00:00:00Z"}, key="backup-1"
    )
    mem_repo.save_record("runs", {"name": "consistent-point", "time": "2024-01-01T00:00:01Z"}, key="backup-2")
    stored = [k for k in mem_repo.store.objects if k.startswith("runs/")]
    assert len(stored) == 2 and all("backup-" not in k for k in stored)
    assert b"verify" not in mem_repo.store.objects[next(k for k in stored if k.endswith(rid))]
    recs = mem_repo.list_records("runs", key="backup-1")
    assert [r.data["name"] for r in recs] == ["verify"]
    assert mem_repo.load_record("runs", rid).data["ok"] is True
    assert len(mem_repo.list_records("runs")) == 2


def test_record_moved_to_another_backup_group_does_not_authenticate(mem_repo):
    rid = mem_repo.save_record("runs", {"name": "verify", "ok": False}, key="b1")
    src = f"runs/{mem_repo.key_group('b1')}/{rid}"
    mem_repo.store.put(f"runs/{mem_repo.key_group('b2')}/{rid}", mem_repo.store.get(src))
    assert mem_repo.list_records("runs", key="b2") == []
    assert any("damaged" in w for w in mem_repo.warnings)


def test_tricky_tree_round_trips_byte_and_metadata_identical(mem_repo, tricky_tree, tmp_path):
    res = copy_source(mem_repo, CopyOptions(tricky_tree))
    assert res.warnings == []
    out = tmp_path / "restored"
    stats = restore_snapshot(mem_repo, mem_repo.find_snapshot(res.snapshot_id), str(out))
    assert stats.warnings == []
    assert describe_tree(out) == describe_tree(tricky_tree)
    assert os.stat(out).st_mode == os.stat(tricky_tree).st_mode


def test_incremental_copy_reads_only_changed_files(mem_repo, tricky_tree):
    first = copy_source(mem_repo, CopyOptions(tricky_tree))
    with open(os.path.join(tricky_tree, "many", "f0001.dat"), "ab") as f:
        f.write(b"changed")
    second = copy_source(mem_repo, CopyOptions(tricky_tree))
    assert second.parent == first.snapshot_id
    assert second.stats.files_read == 1
    assert second.stats.files_changed == 1
    assert second.stats.bytes_read == os.path.getsize(os.path.join(tricky_tree, "many", "f0001.dat"))


def test_files_modified_close_to_the_parent_scan_are_reread(mem_repo, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "fresh").write_bytes(b"x" * 100)  # mtime = now: within 2 s of the parent's scan
    copy_source(mem_repo, CopyOptions(str(src)))
    again = copy_source(mem_repo, CopyOptions(str(src)))
    assert again.stats.files_read == 1 and again.stats.files_unchanged == 0


def test_dedup_across_snapshots_and_sources(mem_repo, tmp_path):
    blob = os.urandom(3 * 1024 * 1024)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "same.bin").write_bytes(blob)
    first = copy_source(mem_repo, CopyOptions(str(tmp_path / "a")))
    second = copy_source(mem_repo, CopyOptions(str(tmp_path / "b")))
    assert second.parent is None  # another source
    assert first.stats.bytes_added > len(blob)
    assert second.stats.bytes_added < 20_000  # only its tree


def test_manifests_stored_as_files_read_back(mem_repo):
    files = {"deployment.yaml": b"kind: Deployment\n", "configmaps/app.yaml": b"kind: ConfigMap\n" * 1000}
    sid = store_files(mem_repo, files, tags={"kind": "manifests"}, backup_id="backup-1")
    snap = mem_repo.find_snapshot(sid)
    assert snap.tags == {"kind": "manifests"} and snap.backup_id == "backup-1"
    assert load_files(mem_repo, snap) == files


def test_verify_names_the_corrupt_pack_and_repair_rebuilds_the_index(mem_repo, tricky_tree):
    copy_source(mem_repo, CopyOptions(tricky_tree))
    assert verify(mem_repo, mem_repo.list_snapshots(), 100).ok
    store: MemoryStore = mem_repo.store
    pack = next(k for k in sorted(store.objects) if k.startswith("data/"))
    data = bytearray(store.objects[pack])
    data[100] ^= 1
    store.objects[pack] = bytes(data)
    report = verify(mem_repo, mem_repo.list_snapshots(), 100)
    assert not report.ok
    assert any(pack.rsplit("/", 1)[-1] in p for p in report.problems)
    # repair: drop the index, rebuild it from the packs
    for k in [k for k in store.objects if k.startswith("index/")]:
        del store.objects[k]
    rep = rebuild_index(mem_repo)
    assert rep.packs == len([k for k in store.objects if k.startswith("data/")])
    store.objects[pack] = bytes(data[:100]) + bytes([data[100] ^ 1]) + bytes(data[101:])
    assert verify(mem_repo, mem_repo.list_snapshots(), 100).ok
