"""One deleting prune per repository at a time: the prune lease (steps/repository/lease.py)."""

from __future__ import annotations

import socket
import subprocess
import time
from datetime import timedelta

import pytest

from steps.errors import TemporaryError
from steps.repository.lease import LEASE_KIND, LEASE_TTL, PruneLease
from steps.repository.pruner import PruneOptions, prune
from steps.repository.retention import Rules
from tests.fixtures.prune import assert_valid, backup, make_repo, open_repo, write_files


def opts(**kw) -> PruneOptions:
    kw.setdefault("rules", Rules(last=1))
    kw.setdefault("grace", timedelta(0))
    kw.setdefault("wait", True)
    return PruneOptions(**kw)


def pruned(repo, clock, **kw):
    """A prune that waits out its grace period in the store's (test) clock and sweeps."""
    return prune(open_repo(repo.store), opts(**kw), sleep=lambda seconds: clock.advance(seconds=seconds))


def leases(repo) -> list:
    return repo.list_records(LEASE_KIND)


def three_backups(clock, tmp_path):
    repo = make_repo(clock)
    for i in range(3):
        backup(repo, write_files(tmp_path / f"d{i}", i), f"b{i}")
        clock.advance(minutes=1)
    return repo


def test_two_contenders_that_both_wrote_agree_on_one_holder(clock):
    # GIVEN two prunes that both wrote their lease record before either listed (same store second)
    repo = make_repo(clock)
    tick = lambda seconds: clock.advance(seconds=seconds)  # noqa: E731
    a, b = PruneLease(open_repo(repo.store), sleep=tick), PruneLease(open_repo(repo.store), sleep=tick)
    a.write()
    b.write()
    # THEN both see the same holder, one of the two
    assert a.holder()["lease"] == b.holder()["lease"] in {a.id, b.id}
    # AND settling: exactly one holds, the other withdraws its record
    outcomes = []
    for lease in (a, b):
        try:
            lease.settle()
            outcomes.append(True)
        except TemporaryError:
            outcomes.append(False)
    assert sorted(outcomes) == [False, True]
    held = a if outcomes[0] else b
    assert {r.data["lease"] for r in leases(repo)} == {held.id}
    held.release()
    assert leases(repo) == []


def test_a_contender_that_lists_before_the_other_writes_holds_it(clock):
    # GIVEN a prune that wrote and listed before another one wrote
    repo = make_repo(clock)
    tick = lambda seconds: clock.advance(seconds=seconds)  # noqa: E731
    first = PruneLease(open_repo(repo.store), sleep=tick).acquire()
    clock.advance(seconds=1)
    late = PruneLease(open_repo(repo.store), sleep=tick)
    # THEN the later one is refused, also when the first one renews its record meanwhile
    late.write()
    clock.advance(seconds=1)
    first.write()  # a renewal carries the first acquisition time
    with pytest.raises(TemporaryError, match="is being pruned"):
        late.settle()
    first.release()
    assert leases(repo) == []


def test_a_second_prune_is_refused_while_the_first_deletes(clock, tmp_path):
    # GIVEN a prune that is about to delete packs
    repo = three_backups(clock, tmp_path)
    refusals: list[str] = []

    def second_prune(op: str, key: str) -> None:
        if op == "delete" and key.startswith("data/") and not refusals:
            repo.store.hook = None
            # WHEN another prune of the same repository starts meanwhile
            with pytest.raises(TemporaryError) as err:
                pruned(repo, clock)
            refusals.append(str(err.value))
            repo.store.hook = second_prune

    repo.store.hook = second_prune
    report = pruned(repo, clock)
    repo.store.hook = None
    # THEN it was refused (exit 75, retried later), naming the running prune; the first one finished
    assert len(refusals) == 1 and "is being pruned by a prune on" in refusals[0]
    assert report.sweep.get("packs_deleted", 0) > 0
    assert leases(repo) == []
    assert_valid(repo)


def test_the_lease_of_a_prune_killed_elsewhere_blocks_until_it_expires(clock, tmp_path):
    # GIVEN the lease record of a prune killed on another host
    repo = three_backups(clock, tmp_path)
    repo.save_record(LEASE_KIND, {"lease": "f" * 32, "acquired": None, "host": "elsewhere", "pid": 7})
    clock.advance(seconds=30)
    # WHEN a prune starts before the lease expired THEN it is refused and deletes nothing
    before = {i.key for i in repo.store.list("")}
    with pytest.raises(TemporaryError, match="elsewhere"):
        pruned(repo, clock)
    assert {i.key for i in repo.store.list("")} == before
    # AND once the lease is older than its TTL, prune runs
    clock.advance(seconds=LEASE_TTL.total_seconds() + 1)
    report = pruned(repo, clock)
    assert report.sweep.get("packs_deleted", 0) > 0


def test_the_lease_of_a_dead_prune_on_this_host_is_ignored_at_once(clock, tmp_path):
    # GIVEN the lease record of a prune process of this host that no longer exists
    repo = three_backups(clock, tmp_path)
    gone = subprocess.Popen(["true"])
    gone.wait()
    repo.save_record(
        LEASE_KIND, {"lease": "0" * 32, "acquired": None, "host": socket.gethostname(), "pid": gone.pid}
    )
    # WHEN a prune starts THEN it runs
    assert pruned(repo, clock).sweep.get("packs_deleted", 0) > 0


def test_a_live_prune_of_this_host_still_holds_its_lease(clock, tmp_path):
    # GIVEN the lease record of a prune process of this host that is running (this one)
    repo = three_backups(clock, tmp_path)
    import os

    repo.save_record(
        LEASE_KIND, {"lease": "f" * 32, "acquired": None, "host": socket.gethostname(), "pid": os.getpid()}
    )
    clock.advance(seconds=30)
    # THEN another prune is refused
    with pytest.raises(TemporaryError, match="is being pruned"):
        pruned(repo, clock)


def test_a_holder_that_could_not_renew_stops_before_deleting(clock):
    # GIVEN a holder whose renewals failed for half the TTL
    repo = make_repo(clock)
    lease = PruneLease(repo, sleep=lambda seconds: clock.advance(seconds=seconds)).acquire()
    try:
        lease._renewed = time.monotonic() - LEASE_TTL.total_seconds() / 2 - 1
        # THEN its check before deleting stops it
        with pytest.raises(TemporaryError, match="last renewed"):
            lease.check()
    finally:
        lease.release()
    assert leases(repo) == []


def test_a_dry_run_takes_no_lease_and_a_failed_prune_releases_it(clock, tmp_path):
    repo = three_backups(clock, tmp_path)
    seen: list[str] = []
    repo.store.hook = lambda op, key: seen.append(key) if op == "put" else None
    pruned(repo, clock, dry_run=True)
    assert not [k for k in seen if k.startswith(LEASE_KIND + "/")]

    def fail(op: str, key: str) -> None:
        if op == "delete" and key.startswith("data/"):
            raise TemporaryError("store unavailable")

    repo.store.hook = fail
    with pytest.raises(TemporaryError, match="store unavailable"):
        pruned(repo, clock)
    repo.store.hook = None
    assert leases(repo) == []
