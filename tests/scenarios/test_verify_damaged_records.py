"""Damaged records are loud: a snapshot, backup or run record that does not authenticate, or whose stored
bytes do not match its name, fails verify and check, named by its object key; ``verify --snapshot X`` on
a damaged X says it is damaged, not missing. Damage outside what a scoped verify checks is a warning.

Records are written through the repository's own path into a local directory repository, damaged in
place, and the commands run as the step image runs them (``python -m steps``).
"""

from __future__ import annotations

import pytest

from steps.drivers.objectstore import LocalStore
from steps.repository.repo import Repository
from steps.repository.stored_files import store_files
from tests.fixtures.crafted_trees import damage_object
from tests.fixtures.prune import TEST_KDF, TEST_PASSWORD, commit_backup, run_steps

ENV = {"SNAPFLOW_PASSWORD": TEST_PASSWORD, "SNAPFLOW_KDF_TEST_N": "1024"}


@pytest.fixture
def two_backups(tmp_path):
    """A local repository with committed backups b1 and b2 (a snapshot, a verify run record and a backup
    record each): (repository, URL, {backup ID: {"snapshot": key, "run": key, "backup": key}})."""
    path = tmp_path / "repo"
    repo = Repository.init(LocalStore(path), TEST_PASSWORD, kdf_params=TEST_KDF)
    keys = {}
    for bid in ("b1", "b2"):
        sid = store_files(repo, {f"{bid}.txt": bid.encode() * 100}, tags={"backup": bid}, backup_id=bid)
        run = repo.save_record("runs", {"name": "verify", "backup_id": bid, "ok": True}, key=bid)
        rec = commit_backup(repo, bid, [sid])
        group = repo.key_group(bid)
        keys[bid] = {
            "snapshot": f"snapshots/{sid}",
            "run": f"runs/{group}/{run}",
            "backup": f"backups/{group}/{rec}",
        }
    return repo, f"file://{path}", keys


def _steps(url: str, *args: str):
    return run_steps(*args, "--repo", url, env=ENV, check=False)


@pytest.mark.parametrize("kind", ["snapshot", "backup", "run"])
def test_a_damaged_record_fails_verify_and_check_naming_its_key(two_backups, kind):
    # GIVEN one record of backup b1 whose stored bytes were changed
    repo, url, keys = two_backups
    key = keys["b1"][kind]
    damage_object(repo.store, key)
    for args in (["verify"], ["verify", "--read-data", "100"], ["check"], ["check", "--read-data", "100"]):
        # WHEN verify or check runs
        proc = _steps(url, *args)
        # THEN it fails with the exit code of damage, naming the object key as a problem
        assert proc.returncode == 3, (args, proc.stdout, proc.stderr)
        problems = [line for line in proc.stdout.splitlines() if line.startswith("problem:")]
        assert any(key in line and "damaged" in line for line in problems), (args, proc.stdout)
        assert "Traceback" not in proc.stderr


def test_a_record_moved_to_another_backups_group_is_damage(two_backups):
    # GIVEN b2's run record copied into b1's group (same name, same bytes: it does not authenticate there)
    repo, url, keys = two_backups
    moved = keys["b1"]["run"].rsplit("/", 1)[0] + "/" + keys["b2"]["run"].rsplit("/", 1)[1]
    repo.store.put(moved, repo.store.get(keys["b2"]["run"]))
    # WHEN verify runs THEN it names the moved record
    proc = _steps(url, "verify")
    assert proc.returncode == 3 and moved in proc.stdout, proc.stdout


def test_verify_of_a_damaged_snapshot_says_it_is_damaged_not_missing(two_backups):
    # GIVEN b1's snapshot record damaged
    repo, url, keys = two_backups
    key = keys["b1"]["snapshot"]
    damage_object(repo.store, key)
    sid = key.rsplit("/", 1)[1]
    # WHEN it is verified by its ID
    proc = _steps(url, "verify", "--snapshot", sid[:10])
    # THEN verify fails as damage (exit 3), naming the record, and does not call it missing
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert key in proc.stdout + proc.stderr and "damaged" in proc.stdout + proc.stderr
    assert "no snapshot" not in proc.stdout + proc.stderr


def test_verify_latest_fails_when_a_damaged_snapshot_record_may_be_the_newest(two_backups):
    repo, url, keys = two_backups
    damage_object(repo.store, keys["b1"]["snapshot"])
    proc = _steps(url, "verify", "--snapshot", "latest")
    assert proc.returncode == 3 and keys["b1"]["snapshot"] in proc.stdout + proc.stderr, proc.stdout


def test_a_scoped_verify_warns_about_damage_it_does_not_check(two_backups):
    # GIVEN b1's snapshot record damaged
    repo, url, keys = two_backups
    damage_object(repo.store, keys["b1"]["snapshot"])
    b2 = keys["b2"]["snapshot"].rsplit("/", 1)[1]
    # WHEN b2's snapshot, or backup b2, is verified THEN it passes, warning about the damaged record
    for args in (["--snapshot", b2[:8]], ["--backup-id", "b2"]):
        proc = _steps(url, "verify", *args)
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
        assert f"warning: the snapshot record {keys['b1']['snapshot']} is damaged" in proc.stderr, proc.stderr
    # WHEN backup b1, whose only snapshot record it was, is verified THEN that is damage (not "no snapshot")
    proc = _steps(url, "verify", "--backup-id", "b1")
    assert proc.returncode == 3 and keys["b1"]["snapshot"] in proc.stderr, proc.stderr


def test_the_verify_of_a_backup_fails_on_its_own_damaged_records_only(two_backups):
    # GIVEN b1's run record damaged
    repo, url, keys = two_backups
    damage_object(repo.store, keys["b1"]["run"])
    # WHEN backup b1 is verified THEN its damaged record fails it, and the failing verdict is stored
    proc = _steps(url, "verify", "--backup-id", "b1", "--json")
    assert proc.returncode == 3 and keys["b1"]["run"] in proc.stdout, proc.stdout
    verdicts = [r.data for r in repo.list_records("runs", key="b1") if r.data.get("name") == "verify"]
    assert any(not v["ok"] and keys["b1"]["run"] in " ".join(v["problems"]) for v in verdicts)
    # WHEN backup b2 is verified THEN another backup's record is none of its business
    proc = _steps(url, "verify", "--backup-id", "b2")
    assert proc.returncode == 0 and keys["b1"]["run"] not in proc.stdout + proc.stderr, proc.stderr


def test_a_snapshot_record_of_the_backup_stored_under_a_wrong_name_fails_that_backups_verify(two_backups):
    # GIVEN backup b1 with a second snapshot, whose record was renamed (intact bytes under a wrong name)
    repo, url, _keys = two_backups
    second = store_files(repo, {"more.txt": b"more" * 100}, tags={"backup": "b1"}, backup_id="b1")
    renamed = f"snapshots/{'0' * 64}"
    repo.store.put(renamed, repo.store.get(f"snapshots/{second}"))
    repo.store.delete(f"snapshots/{second}")
    # WHEN backup b1 is verified THEN the renamed record is its problem (it opens: it is b1's), by key
    proc = _steps(url, "verify", "--backup-id", "b1")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert any(renamed in line for line in proc.stdout.splitlines() if line.startswith("problem:"))
    assert "repair records" in proc.stderr
    # WHEN backup b2 is verified THEN it is only a warning there
    proc = _steps(url, "verify", "--backup-id", "b2")
    assert proc.returncode == 0 and f"warning: the snapshot record {renamed} is damaged" in proc.stderr
