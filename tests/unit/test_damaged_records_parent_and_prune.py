"""Damaged snapshot records cost an incremental copy its parent (with a warning), never data: prune keeps
what a renamed record references, and deletes nothing while a record that cannot be read is there."""

from __future__ import annotations

import pytest

from steps.errors import DamagedRecordError
from steps.repository.archiver import CopyOptions, copy_source
from steps.repository.pruner import PruneOptions, prune
from steps.repository.repair_records import repair_records
from steps.repository.retention import Rules
from tests.fixtures.prune import backup, make_repo, open_repo, restored_equal, write_files

IDENT = {"cluster": "c1", "namespace": "ns", "app": "db", "volume": "data", "policy": "db"}


def _copy(repo, src, backup_id):
    return copy_source(repo, CopyOptions(str(src), {"backup": backup_id}, backup_id, IDENT))


def _flip(store, key):
    data = bytearray(store.get(key))
    data[len(data) // 2] ^= 1
    store.put(key, bytes(data))


def _rename(store, key):
    new = "snapshots/" + "f" * 64
    store.put(new, store.get(key))
    store.delete(key)
    return new


def test_an_incremental_copy_reads_everything_and_says_why_when_its_parent_may_be_hidden(clock, tmp_path):
    # GIVEN two committed backups of one source, the newest one's snapshot record damaged
    repo = make_repo(clock)
    src = write_files(tmp_path / "src", 1)
    backup(repo, src, "b1")
    clock.advance(minutes=1)
    newest = backup(repo, src, "b2")
    clock.advance(minutes=1)
    # (undamaged, the next copy's parent is b2's snapshot and it reads nothing)
    control = _copy(open_repo(repo.store), src, "b3")
    assert control.parent == newest and control.stats.files_read == 0 and control.warnings == []
    _flip(repo.store, f"snapshots/{newest}")
    # WHEN the next copy runs
    result = _copy(open_repo(repo.store), src, "b4")
    # THEN it takes no parent (not b1's either: that would choose around the damage), reads every file,
    # and its warnings name the damaged record; nothing it stores is lost
    assert result.parent is None
    assert result.stats.files_read == result.stats.files == 3
    assert any(f"snapshots/{newest}" in w and "reads every file" in w for w in result.warnings)
    assert result.stats.errors == 0


def test_a_damaged_record_of_another_source_leaves_the_parent_alone(clock, tmp_path):
    # GIVEN a snapshot record of another source stored under a wrong name (its content is readable)
    repo = make_repo(clock)
    src = write_files(tmp_path / "src", 1)
    other = write_files(tmp_path / "other", 2)
    parent = backup(repo, src, "b1")
    clock.advance(minutes=1)
    stray = copy_source(repo, CopyOptions(str(other), {"x": "y"})).snapshot_id
    _rename(repo.store, f"snapshots/{stray}")
    # WHEN a copy of the first source runs THEN its parent is found as usual
    result = _copy(open_repo(repo.store), src, "b2")
    assert result.parent == parent and result.warnings == []


def test_prune_keeps_what_a_renamed_snapshot_record_references_and_repair_brings_it_back(clock, tmp_path):
    # GIVEN a committed backup whose snapshot record was renamed, and an older one forgotten
    repo = make_repo(clock)
    old_src = write_files(tmp_path / "old", 1)
    src = write_files(tmp_path / "new", 2)
    backup(repo, old_src, "b1")
    clock.advance(minutes=1)
    sid = backup(repo, src, "b2")
    moved = _rename(repo.store, f"snapshots/{sid}")
    # WHEN prune runs its whole cycle (mark, then sweep after the grace period), forgetting nothing
    for _ in range(2):
        prune(open_repo(repo.store), PruneOptions(rules=None))
        clock.advance(hours=25)
    # THEN repair records puts the snapshot record back, and it restores byte-identical
    report = repair_records(open_repo(repo.store))
    assert report.restored == [{"key": f"snapshots/{sid}", "from": moved}]
    assert moved not in repo.store.objects
    assert restored_equal(open_repo(repo.store), sid, src)


def test_prune_deletes_nothing_while_a_snapshot_record_cannot_be_read(clock, tmp_path):
    repo = make_repo(clock)
    backup(repo, write_files(tmp_path / "a", 1), "b1")
    clock.advance(minutes=1)
    sid = backup(repo, write_files(tmp_path / "b", 2), "b2")
    _flip(repo.store, f"snapshots/{sid}")
    before = set(repo.store.objects)
    with pytest.raises(DamagedRecordError) as err:
        prune(open_repo(repo.store), PruneOptions(rules=None))
    assert f"snapshots/{sid}" in str(err.value) and "nothing is deleted" in str(err.value)
    assert {k for k in repo.store.objects if not k.startswith(("prune/", "prune-lease/"))} >= {
        k for k in before if not k.startswith(("prune/", "prune-lease/"))
    }
    # (with rules, retention refuses first, naming the same record)
    with pytest.raises(DamagedRecordError, match=f"retention: .*snapshots/{sid}"):
        prune(open_repo(repo.store), PruneOptions(rules=Rules(last=1)))
