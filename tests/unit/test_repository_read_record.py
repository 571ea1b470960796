"""``Repository.read_record``: one record opened by the name a listing gave (what the metrics exporter's
incremental cache reads), authenticated, with its group and Last-Modified."""

from __future__ import annotations

import pytest

from steps.drivers.objectstore import ObjectNotFound
from steps.errors import IntegrityError, UsageError
from steps.repository.records import save_run_record

BACKUP = "backup-db-q7w3"


def test_a_listed_run_record_opens_by_its_name_with_its_group_and_time(mem_repo):
    # GIVEN a run record of a backup, listed from the store
    rid = save_run_record(mem_repo, BACKUP, "verify", {"ok": True, "time": "2026-01-02T03:04:05Z"})
    (info,) = list(mem_repo.store.list("runs/"))

    # WHEN it is read by that name
    record = mem_repo.read_record("runs", info.key, info.last_modified)

    # THEN it is the record stored, in its backup's group, with the listing's time
    assert record.id == rid == info.key.rsplit("/", 1)[-1]
    assert record.key_group == mem_repo.key_group(BACKUP) == info.key.split("/")[1]
    assert record.data == {"name": "verify", "backup_id": BACKUP, "ok": True, "time": "2026-01-02T03:04:05Z"}
    assert record.modified == info.last_modified


def test_a_record_gone_since_the_listing_is_a_key_error(mem_repo):
    save_run_record(mem_repo, BACKUP, "verify", {"ok": True})
    (info,) = list(mem_repo.store.list("runs/"))
    mem_repo.store.delete(info.key)
    with pytest.raises(KeyError):
        mem_repo.read_record("runs", info.key)
    assert issubclass(ObjectNotFound, KeyError)


def test_a_record_whose_bytes_were_replaced_does_not_open(mem_repo):
    # GIVEN two run records, one's bytes put under the other's name
    save_run_record(mem_repo, BACKUP, "verify", {"ok": True})
    save_run_record(mem_repo, BACKUP, "verify", {"ok": False})
    first, second = sorted(i.key for i in mem_repo.store.list("runs/"))
    mem_repo.store.put(first, mem_repo.store.get(second))

    # WHEN the replaced one is read; THEN it is refused (it must not pass for the other record)
    with pytest.raises(IntegrityError, match="do not match their name"):
        mem_repo.read_record("runs", first)


def test_a_name_of_another_kind_is_refused(mem_repo):
    save_run_record(mem_repo, BACKUP, "verify", {"ok": True})
    (info,) = list(mem_repo.store.list("runs/"))
    with pytest.raises(UsageError, match="not a name of a backups record"):
        mem_repo.read_record("backups", info.key)
