"""The fleet report's warm read: a repository whose record names have not changed since its record
cache was written renders from the cache without being opened (no key derivation); one with new or
vanished names is opened and read as before; a cache sealed under another repository key, a foreign or
tampered one, or one without its local key is never used once the repository is opened."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from steps.api import Repository, open_store
from workflows.report.fleet_reading import LazyRepository, read_repositories
from workflows.report.record_cache import LOCAL_KEY, RecordTable

NOW = time.time()
PASSWORD = "correct horse battery staple"
KDF = {"n": 1024, "r": 8, "p": 1}
APP = {"cluster": "c1", "namespace": "ns", "name": "db", "policy": "db"}


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def commit(repo, backup_id: str, t: float) -> None:
    repo.save_record(
        "runs", {"name": "verify", "backup_id": backup_id, "time": iso(t + 50), "ok": True}, key=backup_id
    )
    repo.save_record(
        "backups",
        {
            "version": 1,
            "backup_id": backup_id,
            "time": iso(t + 60),
            "app": APP,
            "volumes": [{"name": "data", "files": 3, "bytes": 4096}],
            "consistency": {
                "verdict": "app-consistent",
                "timeline": {"volumes": [{"name": "data", "cut": iso(t)}]},
            },
            "verify": {"ok": True},
        },
        key=backup_id,
    )


def new_repo(name: str) -> Repository:
    return Repository.init(open_store(f"mem://{name}-{time.monotonic_ns()}"), PASSWORD, kdf_params=KDF)


class Reader:
    """read_repositories on one repository, counting how often it is opened and its records read."""

    def __init__(self, repo, cache, url="mem://warm"):
        self.repo, self.cache, self.url, self.opened, self.gets = repo, cache, url, 0, []
        repo.store.hook = lambda op, key: self.gets.append(key) if op == "get" else None

    def open(self, url, endpoint):
        self.opened += 1
        return self.repo

    def read(self, url=None):
        self.gets.clear()
        ((read, repo),) = read_repositories(
            [(url or self.url, None)],
            cache_dir=self.cache,
            opener=self.open,
            store_opener=lambda u, e: self.repo.store,
        )
        assert read.error is None, read.error
        return read, repo

    def records_read(self) -> int:
        return len([k for k in self.gets if k.startswith(("backups/", "runs/"))])


def test_unchanged_names_render_from_the_cache_without_opening_the_repository(tmp_path):
    repo = new_repo("warm")
    for i in range(3):
        commit(repo, f"b-{i}", NOW - (3 - i) * 86400)
    reader = Reader(repo, tmp_path / "cache")
    cold, _ = reader.read()
    assert reader.opened == 1 and cold.read == 6 and not cold.cache_used
    key_file = tmp_path / "cache" / "records" / LOCAL_KEY
    assert key_file.stat().st_mode & 0o777 == 0o600 and len(key_file.read_bytes()) == 32

    # WHEN nothing changed: the rows come from the cache; the repository is neither opened nor read
    warm, lazy = reader.read()
    assert reader.opened == 1 and reader.records_read() == 0
    assert warm.cache_used and warm.read == 0 and warm.records == 6 and warm.open_seconds == 0.0
    assert warm.facts == cold.facts and warm.warnings == []
    # ... and a per-app report, which needs the repository, still gets it (opened on first use)
    assert isinstance(lazy, LazyRepository) and lazy.config.id == repo.config.id and reader.opened == 2

    # WHEN a backup is committed: the repository is opened and only the new records are read
    commit(repo, "b-new", NOW - 60)
    again, _ = reader.read()
    assert reader.opened == 3 and again.read == 2 and reader.records_read() == 2
    newest = again.facts[("c1", "ns", "db")]
    assert newest.backups == 4

    # WHEN a backup record is pruned (a name vanished): opened again, the count follows
    pruned = next(i.key for i in repo.store.list("backups/"))
    repo.store.delete(pruned)
    after, _ = reader.read()
    assert reader.opened == 4 and after.read == 0 and after.facts[("c1", "ns", "db")].backups == 3
    # ... and then the cache is current again
    reader.read()
    assert reader.opened == 4


def test_a_cache_read_through_another_url_or_without_its_local_key_opens_the_repository(tmp_path):
    repo = new_repo("url")
    commit(repo, "b-1", NOW - 3600)
    cache = tmp_path / "cache"
    reader = Reader(repo, cache)
    reader.read()
    reader.read(url="mem://elsewhere")  # (the same repository under another URL)
    assert reader.opened == 2
    reader.read(url="mem://elsewhere")
    assert reader.opened == 2

    # WHEN the local key is gone: the cache cannot be opened; every record is read again
    (cache / "records" / LOCAL_KEY).unlink()
    read, _ = reader.read(url="mem://elsewhere")
    assert reader.opened == 3 and read.read == 2 and not read.cache_used
    assert any("not used" in w for w in read.warnings), read.warnings


def test_a_cache_sealed_under_another_repository_key_is_dropped_once_the_repository_opens(tmp_path):
    repo, other = new_repo("mine"), new_repo("other")
    commit(repo, "b-1", NOW - 3600)
    cache = tmp_path / "cache"
    reader = Reader(repo, cache)
    reader.read()
    # a cache of the right names and ID, but sealed under another repository's key and forged content
    table = RecordTable.load(cache, repo.config.id, repo.keys, print, url="mem://warm")
    forged = {k: (*e[:2], "forged", *e[3:]) for k, e in table.entries.items()}
    table.entries = forged
    table.save(cache, other.keys, "mem://warm")

    # WHEN a record is added, the repository is opened: the forged cache does not authenticate under
    # its key, is not used, and every record is read again
    commit(repo, "b-2", NOW - 60)
    read, _ = reader.read()
    assert reader.opened == 2 and read.read == 4 and not read.cache_used
    assert any("not written under this repository's key" in w for w in read.warnings), read.warnings
    fresh = RecordTable.load(cache, repo.config.id, repo.keys, print, url="mem://warm")
    assert "forged" not in {e[2] for e in fresh.entries.values()}


def test_a_tampered_cache_is_not_used_even_when_the_names_did_not_change(tmp_path):
    repo = new_repo("tamper")
    commit(repo, "b-1", NOW - 3600)
    cache = tmp_path / "cache"
    reader = Reader(repo, cache)
    reader.read()
    path = RecordTable.path(cache, repo.config.id)
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0x01
    path.write_bytes(bytes(raw))
    read, _ = reader.read()
    assert reader.opened == 2 and read.read == 2 and not read.cache_used
    assert any("not used" in w and str(path) in w for w in read.warnings), read.warnings


def test_without_an_opener_a_warm_read_derives_no_key_but_still_wants_the_password(tmp_path, monkeypatch):
    url = f"file://{tmp_path / 'repo'}"
    repo = Repository.init(open_store(url), PASSWORD, kdf_params=KDF)
    commit(repo, "b-1", NOW - 3600)
    monkeypatch.setenv("SNAPFLOW_PASSWORD", PASSWORD)
    monkeypatch.delenv("SNAPFLOW_PASSWORD_FILE", raising=False)
    ((cold, _),) = read_repositories([(url, None)], cache_dir=tmp_path / "cache")
    ((warm, lazy),) = read_repositories([(url, None)], cache_dir=tmp_path / "cache")
    assert cold.read == 2 and cold.open_seconds > 0
    assert warm.cache_used and warm.read == 0 and warm.open_seconds == 0.0 and warm.facts == cold.facts
    assert lazy.config.id == repo.config.id  # (opened when used, with the password)
    monkeypatch.delenv("SNAPFLOW_PASSWORD")
    ((nopw, _),) = read_repositories([(url, None)], cache_dir=tmp_path / "cache")
    assert nopw.error is not None and not nopw.facts


def test_a_file_repository_lists_the_same_record_names_as_its_store(tmp_path):
    from workflows.report.record_cache import list_records

    url = f"file://{tmp_path / 'repo'}"
    repo = Repository.init(open_store(url), PASSWORD, kdf_params=KDF)
    for i in range(3):
        commit(repo, f"b-{i}", NOW - i * 3600)
    some = next(i.key for i in repo.store.list("backups/"))
    (tmp_path / "repo" / some).with_name(".partial.tmp").write_bytes(b"x")  # (a write in progress)
    (tmp_path / "repo" / "backups" / "stray").write_bytes(b"x")  # (not KIND/GROUP/ID)
    store = open_store(url)
    listing = list_records(store)
    names = sorted(i.key for _kind, infos in listing.listed for i in infos)
    assert names == sorted(
        i.key for k in ("backups", "runs") for i in store.list(f"{k}/") if i.key.count("/") == 2
    )
    assert len(names) == 6 and len(listing.seen) == 6


def test_the_local_key_is_made_once_and_one_others_may_read_is_replaced(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from workflows.report.record_cache import local_key

    cache = tmp_path / "cache"
    assert local_key(cache, create=False) is None
    with ThreadPoolExecutor(8) as pool:
        keys = set(pool.map(lambda _: local_key(cache), range(16)))
    assert len(keys) == 1 and len(next(iter(keys))) == 32
    (path := cache / "records" / LOCAL_KEY).chmod(0o644)
    assert local_key(cache, create=False) is None
    fresh = local_key(cache)
    assert fresh not in keys and path.stat().st_mode & 0o777 == 0o600


def test_a_file_repository_whose_directories_did_not_change_is_not_even_listed(tmp_path, monkeypatch):
    import os

    import workflows.report.fleet_reading as reading

    url = f"file://{tmp_path / 'repo'}"
    root = tmp_path / "repo"
    repo = Repository.init(open_store(url), PASSWORD, kdf_params=KDF)
    commit(repo, "b-1", NOW - 3600)
    monkeypatch.setenv("SNAPFLOW_PASSWORD", PASSWORD)
    monkeypatch.delenv("SNAPFLOW_PASSWORD_FILE", raising=False)
    listed = []
    real = reading.list_records
    monkeypatch.setattr(reading, "list_records", lambda store: listed.append(1) or real(store))

    def age(seconds: float) -> None:  # the record directories as if last changed ``seconds`` ago
        for d in [root / "backups", root / "runs", *root.glob("backups/*"), *root.glob("runs/*")]:
            os.utime(d, (time.time() - seconds, time.time() - seconds))

    def read():
        ((r, _),) = read_repositories([(url, None)], cache_dir=tmp_path / "cache")
        assert r.error is None, r.error
        return r

    age(3600)
    assert read().read == 2  # (cold: the names listed while reading, the directories' state kept)
    listed.clear()
    warm = read()
    assert warm.cache_used and warm.read == 0 and listed == []

    # WHEN a run record is added to an existing run's directory (its time as old as the others'):
    # the directory's time differs, the names are listed, the new record is read
    group = next(root.glob("runs/*"))
    commit_time = time.time() - 1800
    repo.save_record(
        "runs",
        {"name": "restore-test", "backup_id": "b-1", "time": iso(NOW), "ok": True, "app": APP},
        key="b-1",
    )
    os.utime(group, (commit_time, commit_time))
    again = read()
    assert listed == [1] and again.read == 1 and again.facts[("c1", "ns", "db")].restore_ok is True

    # WHEN a directory changed within the last minute: no fingerprint is trusted, the names are listed
    listed.clear()
    age(5)
    assert read().cache_used and listed == [1]


def test_a_damaged_record_of_a_file_repository_is_reported_on_every_run(tmp_path, monkeypatch):
    import os

    url = f"file://{tmp_path / 'repo'}"
    root = tmp_path / "repo"
    repo = Repository.init(open_store(url), PASSWORD, kdf_params=KDF)
    commit(repo, "b-1", NOW - 3600)
    bad = next(root.glob("backups/*/*"))
    bad.write_bytes(b"not what its name says")
    for d in [root / "backups", root / "runs", *root.glob("backups/*"), *root.glob("runs/*")]:
        os.utime(d, (time.time() - 3600, time.time() - 3600))
    monkeypatch.setenv("SNAPFLOW_PASSWORD", PASSWORD)
    monkeypatch.delenv("SNAPFLOW_PASSWORD_FILE", raising=False)
    for _ in range(2):
        ((r, _),) = read_repositories([(url, None)], cache_dir=tmp_path / "cache")
        assert r.damaged == 1 and any("damaged" in w for w in r.warnings), r.warnings


def test_a_record_moved_to_another_group_is_not_taken_for_the_one_cached(tmp_path):
    # GIVEN two backups read into the cache
    repo = new_repo("moved")
    commit(repo, "b-1", NOW - 7200)
    commit(repo, "b-2", NOW - 3600)
    reader = Reader(repo, tmp_path / "cache")
    cold, _ = reader.read()
    assert cold.facts[("c1", "ns", "db")].backups == 2
    # WHEN someone with bucket access moves one backup record into the other's group (same ID)
    names = sorted(i.key for i in repo.store.list("backups/"))
    first, second = names[0], names[1]
    group = second.split("/")[1]
    moved = f"backups/{group}/{first.rsplit('/', 1)[-1]}"
    repo.store.put(moved, repo.store.get(first))
    repo.store.delete(first)
    # THEN the warm run notices the new name, opens the repository, and the record (which does not open
    # in its new place) no longer counts as a backup
    after, _ = reader.read()
    assert reader.opened == 2 and after.facts[("c1", "ns", "db")].backups == 1
    assert after.warnings == ["mem://warm: 1 record(s) do not open (damaged)"]
