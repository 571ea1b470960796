"""The repository facade on an in-memory store: keys, config, records, copy/restore/verify engines."""

import json
import os

import pytest

from steps.drivers.objectstore import MemoryStore
from steps.errors import IntegrityError, PermanentError, RepositoryError, WrongPasswordError
from steps.repository.archiver import CopyOptions, copy_source
from steps.repository.checker import verify
from steps.repository.repair_index import rebuild_index
from steps.repository.repo import Repository
from steps.repository.restorer import restore_snapshot
from steps.repository.snapshot_read import load_files
from steps.repository.stored_files import store_files
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


def _put_key_file_before(store, doc, other_id: str) -> str:
    """Store ``doc`` as a key file named by its hash, padded until it sorts (and so is tried) before
    ``other_id``."""
    from steps.repository.crypto import storage_id

    for pad in range(10_000):
        body = json.dumps(doc if pad == 0 else {**doc, "pad": pad} if isinstance(doc, dict) else [*doc, pad])
        data = body.encode()
        if storage_id(data) < other_id:
            store.put(f"keys/{storage_id(data)}", data)
            return storage_id(data)
    raise AssertionError("no name sorts first")


MALFORMED_KEYS = [
    {"version": 2, "kdf": {"name": "scrypt"}, "data": ""},  # a newer format
    {"version": 1, "kdf": {"name": "argon2id", "salt": "AA=="}, "data": "AA=="},  # unknown KDF
    {"version": 1, "data": "AA=="},  # no kdf
    {"version": 1, "kdf": {"name": "scrypt", "salt": "AA==", "n": 1024, "r": 8}, "data": "AA=="},  # no p
    {"version": 1, "kdf": {"name": "scrypt", "salt": "AA==", "n": 1024, "r": 8, "p": 1}},  # no data
    {"version": 1, "kdf": {"name": "scrypt", "salt": "!!", "n": "x", "r": 8, "p": 1}, "data": "AA=="},
    ["not", "an", "object"],
]


def test_unknown_or_malformed_key_files_are_skipped_with_a_warning(mem_repo, capsys):
    # GIVEN key files of an unknown format, KDF or shape, each tried before the real key
    skipped = [_put_key_file_before(mem_repo.store, doc, mem_repo.key_id) for doc in MALFORMED_KEYS]
    # WHEN the repository is opened with the password THEN the real key opens it
    opened = Repository.open(mem_repo.store, "test password")
    assert opened.key_id == mem_repo.key_id
    # AND each skipped file is named in a warning on stderr, without a traceback
    err = capsys.readouterr().err
    for kid in skipped:
        assert f"key {kid[:8]}" in err
    assert "Traceback" not in err and "KeyError" not in err
    # AND listing keys still works
    assert mem_repo.key_id in {k["id"] for k in opened.list_keys()}


def test_only_malformed_key_files_give_a_one_line_error(mem_repo, capsys):
    # GIVEN a repository whose only good key is gone, and a malformed one
    _put_key_file_before(mem_repo.store, MALFORMED_KEYS[2], mem_repo.key_id)
    mem_repo.store.delete(f"keys/{mem_repo.key_id}")
    # WHEN it is opened THEN the error is one line saying that no key file could be used
    with pytest.raises(IntegrityError) as err:
        Repository.open(mem_repo.store, "test password")
    assert "\n" not in str(err.value) and "1 key file(s)" in str(err.value)


def test_new_keys_default_to_at_least_restic_cost(monkeypatch):
    from steps.repository.keys import kdf_params_for_new_key

    monkeypatch.delenv("SNAPFLOW_KDF_TEST_N", raising=False)
    assert kdf_params_for_new_key() == {"n": 2**15, "r": 8, "p": 4}


def test_a_lowered_kdf_cost_for_tests_is_announced_on_stderr(monkeypatch, capsys):
    from steps.repository.keys import kdf_params_for_new_key

    monkeypatch.setenv("SNAPFLOW_KDF_TEST_N", "1024")
    assert kdf_params_for_new_key()["n"] == 1024
    assert "warning: SNAPFLOW_KDF_TEST_N=1024" in capsys.readouterr().err


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


def _data_pack_keys(store: MemoryStore) -> list[str]:
    return sorted(k for k in store.objects if k.startswith("data/"))


def test_repair_changes_nothing_when_a_pack_cannot_be_read(mem_repo, tricky_tree):
    # GIVEN a repository with one pack that cannot be read at the moment (permissions, a flaky disk)
    copy_source(mem_repo, CopyOptions(tricky_tree))
    store: MemoryStore = mem_repo.store
    unreadable = _data_pack_keys(store)[0]

    def deny(op, key):
        if op == "get" and key == unreadable:
            raise PermissionError(13, "Permission denied", key)

    store.hook = deny
    before = {k: v for k, v in store.objects.items() if k.startswith("index/")}
    # WHEN the index is rebuilt THEN it fails, naming the pack, and neither writes nor deletes an index file
    with pytest.raises(PermanentError, match=rf"pack {unreadable.rsplit('/', 1)[-1]}.*nothing was changed"):
        rebuild_index(mem_repo)
    assert {k: v for k, v in store.objects.items() if k.startswith("index/")} == before
    store.hook = None
    assert verify(Repository.open(store, "test password"), mem_repo.list_snapshots(), 100).ok


def test_repair_skips_a_pack_whose_bytes_do_not_match_its_name(mem_repo, tricky_tree):
    # GIVEN a pack truncated (its header is gone, its bytes no longer match its name)
    copy_source(mem_repo, CopyOptions(tricky_tree))
    store: MemoryStore = mem_repo.store
    damaged = _data_pack_keys(store)[0]
    store.objects[damaged] = store.objects[damaged][:-100]
    # WHEN the index is rebuilt THEN the others are indexed, the damaged one is reported as skipped
    report = rebuild_index(mem_repo)
    assert [d.split(":")[0] for d in report.damaged] == [f"pack {damaged.rsplit('/', 1)[-1]}"]
    assert report.packs == len(_data_pack_keys(store)) - 1


def test_verify_of_a_backup_reads_back_every_pack_that_backup_wrote(mem_repo, tmp_path):
    # GIVEN a backup b1, then a backup b2 of the same files plus a new one (it reuses b1's pack)
    src = tmp_path / "src"
    src.mkdir()
    (src / "old.bin").write_bytes(os.urandom(300_000))
    copy_source(mem_repo, CopyOptions(str(src), tags={"backup": "b1"}, backup_id="b1"))
    packs_b1 = {k for k in mem_repo.store.objects if k.startswith("data/")}
    (src / "new.bin").write_bytes(os.urandom(300_000))
    sid = copy_source(mem_repo, CopyOptions(str(src), tags={"backup": "b2"}, backup_id="b2")).snapshot_id
    packs_b2 = {k for k in mem_repo.store.objects if k.startswith("data/")} - packs_b1
    snap = mem_repo.find_snapshot(sid)
    # WHEN verify of b2 runs without a read-back share THEN it reads every pack b2 wrote, and no other
    report = verify(mem_repo, [snap], 0, new_packs_of="b2")
    assert report.ok and report.packs_new == len(packs_b2) and report.packs_read == len(packs_b2)
    assert report.packs_referenced > len(packs_b2)
    # WHEN one of b2's packs has a flipped bit (same size: the structural check cannot see it)
    store: MemoryStore = mem_repo.store
    key = next(k for k in sorted(packs_b2) if len(store.objects[k]) > 100_000)
    data = bytearray(store.objects[key])
    data[len(data) // 2] ^= 1
    store.objects[key] = bytes(data)
    # THEN verify of b2 finds it, even with --read-data 0
    report = verify(mem_repo, [snap], 0, new_packs_of="b2")
    assert not report.ok and any(key.rsplit("/", 1)[-1] in p for p in report.problems)
    # AND after `repair index` the rebuilt index still knows which packs b2 wrote
    data[len(data) // 2] ^= 1
    store.objects[key] = bytes(data)
    rebuild_index(mem_repo)
    assert verify(mem_repo, [snap], 0, new_packs_of="b2").packs_new == len(packs_b2)


def test_a_snapshot_of_an_uncommitted_backup_is_no_restore_point_unless_asked(mem_repo, tmp_path):
    # GIVEN a snapshot of backup b1, which finalize never committed, and a plain snapshot
    from steps.errors import UsageError

    (tmp_path / "f").write_bytes(b"data" * 1000)
    sid = copy_source(mem_repo, CopyOptions(str(tmp_path), tags={"backup": "b1"}, backup_id="b1")).snapshot_id
    plain = copy_source(mem_repo, CopyOptions(str(tmp_path), tags={"x": "y"})).snapshot_id
    # WHEN restore looks it up THEN it is refused, saying why and how to restore it anyway
    with pytest.raises(UsageError, match=r"b1, which was never committed.*--allow-uncommitted"):
        mem_repo.find_restore_point(sid[:8])
    assert mem_repo.find_restore_point(sid[:8], allow_uncommitted=True).id == sid
    assert mem_repo.find_restore_point(plain).id == plain
    # AND once the backup is committed it is a restore point
    mem_repo.save_record("backups", {"backup_id": "b1", "volumes": [{"snapshot": sid}]}, key="b1")
    assert mem_repo.find_restore_point(sid).id == sid
