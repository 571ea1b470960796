"""Backup and prune interleaved at every store operation, with deterministic barriers on a MemoryStore.

A backup (copy + commit, like the copy step and finalize) is stopped at its N-th store operation while
prune runs (mark, or mark and - after the grace period - sweep), then resumed. Whatever happens to that
backup (committed, or refused), every committed backup must restore byte-identical afterwards and
verify must pass. The same the other way round: prune stopped at its N-th operation while a whole
backup runs. Each side works through its own view of one MemoryStore (:class:`ActorStore`), so that
all threads of a side (uploaders included) stop at the barrier; one worker per stage keeps the order
of operations the same from run to run.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from steps.drivers.objectstore import MemoryStore, ObjectStore
from steps.errors import PermanentError, TemporaryError
from steps.repository.pruner import PruneOptions, prune
from steps.repository.retention import Rules
from tests.fixtures.prune import assert_valid, backup, make_repo, open_repo, restored_equal, write_files

GRACE = timedelta(hours=1)


class Barrier:
    """Counts one side's store operations; from the ``at``-th on, every operation waits for release."""

    def __init__(self, at: int):
        self.at = at
        self.count = 0
        self.lock = threading.Lock()
        self.reached = threading.Event()
        self.release = threading.Event()

    def __call__(self, op: str, key: str) -> None:
        with self.lock:
            self.count += 1
            stop = self.at > 0 and self.count >= self.at
        if stop:
            self.reached.set()
            assert self.release.wait(60), "barrier never released"


class ActorStore(ObjectStore):
    """One side's view of a shared store: every operation passes ``barrier`` first."""

    def __init__(self, inner: MemoryStore, barrier: Barrier):
        self.inner = inner
        self.barrier = barrier
        self.url = inner.url

    def _b(self, op, key):
        self.barrier(op, key)

    def put(self, key, data):
        self._b("put", key)
        self.inner.put(key, data)

    def get(self, key, version_id=None):
        self._b("get", key)
        return self.inner.get(key, version_id)

    def get_range(self, key, offset, length, version_id=None):
        self._b("get", key)
        return self.inner.get_range(key, offset, length, version_id)

    def stat(self, key):
        self._b("stat", key)
        return self.inner.stat(key)

    def list(self, prefix=""):
        self._b("list", prefix)
        return list(self.inner.list(prefix))

    def list_versions(self, prefix=""):
        self._b("list", prefix)
        return list(self.inner.list_versions(prefix))

    def delete(self, key, version_id=None):
        self._b("delete", key)
        self.inner.delete(key, version_id)

    def server_time(self):
        return self.inner.server_time()


@pytest.fixture(autouse=True)
def _one_worker_per_stage(monkeypatch):
    for var in ("SNAPFLOW_FILE_WORKERS", "SNAPFLOW_UPLOADERS", "SNAPFLOW_SCAN_THREADS"):
        monkeypatch.setenv(var, "1")


def _world(clock, tmp_path):
    repo = make_repo(clock)
    shared = write_files(tmp_path / "shared", 1, names=("a.bin", "b.bin"), size=60_000)
    other = write_files(tmp_path / "other", 2, names=("c.bin",), size=60_000)
    backup(repo, shared, "old", app="db")  # forgotten by keep-last 1: its packs become candidates
    clock.advance(minutes=1)
    backup(repo, other, "new", app="db")
    clock.advance(minutes=1)
    return repo, {"old": shared, "new": other}


def _settle_and_check(repo, clock, sources: dict[str, str]) -> None:
    """Two more prune cycles (everything due is swept), then: every committed backup restores."""
    for _ in range(2):
        clock.advance(hours=2)
        _prune(repo.store)
    fresh = assert_valid(repo)
    committed = {r.data["backup_id"]: r.data for r in fresh.list_records("backups")}
    assert committed, "no committed backup left"
    for bid, rec in committed.items():
        for vol in rec["volumes"]:
            assert restored_equal(fresh, vol["snapshot"], sources[bid]), bid


def _backup_app2(store, sources, result: dict) -> None:
    writer = open_repo(store)
    try:
        result["sid"] = backup(writer, sources["old"], "app2", app="web")
    except (TemporaryError, PermanentError) as err:  # refused: allowed, as long as nothing breaks
        result["error"] = err


def _prune(store, errors: list | None = None) -> None:
    try:
        prune(open_repo(store), PruneOptions(rules=Rules(last=1), grace=GRACE))
    except Exception as err:
        if errors is None:
            raise
        errors.append(err)


@pytest.fixture(scope="module")
def backup_ops(tmp_path_factory):
    """How many store operations one backup makes (on a twin world)."""
    from tests.fixtures.prune import Clock

    repo, sources = _world(Clock(), tmp_path_factory.mktemp("ops"))
    counter = Barrier(at=0)
    _backup_app2(ActorStore(repo.store, counter), sources, {})
    return counter.count


@pytest.mark.parametrize("phase", ["mark", "mark-then-sweep"])
def test_every_committed_backup_restores_whenever_prune_runs_during_a_backup(
    clock, tmp_path, backup_ops, phase
):
    assert backup_ops > 10
    outcomes = {"committed": 0, "refused": 0}
    for at in range(1, backup_ops + 1):
        # GIVEN a repository where prune will forget a backup whose data a new backup shares
        repo, sources = _world(clock, tmp_path / f"{phase}-{at}")
        sources["app2"] = sources["old"]
        barrier = Barrier(at)
        result: dict = {}
        t = threading.Thread(target=_backup_app2, args=(ActorStore(repo.store, barrier), sources, result))
        # WHEN the backup is stopped at its at-th store operation while prune runs
        t.start()
        assert barrier.reached.wait(30)
        _prune(repo.store)
        if phase == "mark-then-sweep":
            clock.advance(hours=2)
            _prune(repo.store)
        barrier.release.set()
        t.join(60)
        assert not t.is_alive()
        outcomes["refused" if "error" in result else "committed"] += 1
        # THEN every committed backup restores byte-identical, after any later prune
        _settle_and_check(repo, clock, sources)
    # (both outcomes occur: a backup the sweep overtook refuses, the others commit)
    assert outcomes["committed"] > 0
    if phase == "mark-then-sweep":
        assert outcomes["refused"] > 0


def _prune_world(clock, tmp_path):
    repo, sources = _world(clock, tmp_path)
    sources["app2"] = sources["old"]
    _prune(repo.store)  # forgets "old", marks its packs
    clock.advance(hours=2)  # due for the sweep
    return repo, sources


@pytest.fixture
def prune_ops(tmp_path):
    """How many store operations one prune with candidates due for the sweep makes (on a twin world,
    with one worker per stage like the test)."""
    from tests.fixtures.prune import Clock

    pilot, _ = _prune_world(Clock(), tmp_path / "pilot")
    counter = Barrier(at=0)
    _prune(ActorStore(pilot.store, counter))
    return counter.count


def test_every_committed_backup_restores_whenever_a_backup_runs_during_a_prune(clock, tmp_path, prune_ops):
    assert prune_ops > 20
    for at in range(1, prune_ops + 1):
        # GIVEN a prune with candidates due for the sweep, stopped at its at-th store operation
        repo, sources = _prune_world(clock, tmp_path / f"p-{at}")
        barrier = Barrier(at)
        errors: list = []
        t = threading.Thread(target=_prune, args=(ActorStore(repo.store, barrier), errors))
        t.start()
        assert barrier.reached.wait(30)
        # WHEN a whole backup of the shared data runs meanwhile
        result: dict = {}
        _backup_app2(repo.store, sources, result)
        barrier.release.set()
        t.join(60)
        assert not t.is_alive()
        # THEN both finished, the backup committed (it is young) and every committed backup restores
        assert not errors, errors
        assert "error" not in result, result.get("error")
        _settle_and_check(repo, clock, sources)


class Killed(BaseException):
    """The process died here (BaseException: no ``except Exception`` in the code under test stops it)."""


class Killer(Barrier):
    """From the ``at``-th operation on, every operation of this side fails: the process is gone."""

    def __call__(self, op: str, key: str) -> None:
        with self.lock:
            self.count += 1
            dead = self.count >= self.at
        if dead:
            self.reached.set()
            raise Killed(f"killed at operation {self.at} ({op} {key})")


def test_a_prune_killed_at_any_operation_leaves_a_valid_repository(clock, tmp_path, prune_ops):
    assert prune_ops > 20
    for at in range(1, prune_ops + 1):
        # GIVEN a prune with forgotten backups and candidates due for the sweep
        repo, sources = _prune_world(clock, tmp_path / f"k-{at}")
        # WHEN it dies at its at-th store operation
        with pytest.raises(Killed):
            _prune(ActorStore(repo.store, Killer(at)))
        # THEN verify passes and every committed backup restores, also after later prunes
        assert_valid(repo, context=at)
        _settle_and_check(repo, clock, sources)
