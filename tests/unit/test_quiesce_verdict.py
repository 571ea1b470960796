"""The consistency verdict: app-consistent only if quiesced <= cut <= released for every volume."""

from __future__ import annotations

from steps.drivers.snapshot import CutResult
from steps.quiesce.verdict import TargetHold, build_record


def hold(name="db", q=10.0, r=20.0, by="release", **kw):
    base = dict(
        name=name,
        hook="postgresql",
        method="checkpoint",
        recovery="crash",
        non_atomic_ok=False,
        quiesced=q,
        released=r,
        released_by=by,
    )
    base.update(kw)
    return TargetHold(**base)


def atomic_cut(t, volume="v"):
    return CutResult(
        volume=volume, snapshot="s", atomic=True, cut_time=t, started=t - 0.01, finished=t + 0.01
    )


def copy_cut(start, end, volume="v", deferred=(), deferred_copied=None):
    return CutResult(
        volume=volume,
        snapshot="s",
        atomic=False,
        cut_time=None,
        started=start,
        finished=end,
        deferred=list(deferred),
        deferred_copied=deferred_copied,
    )


def test_cut_inside_the_hold_is_app_consistent():
    rec = build_record([hold()], [atomic_cut(15.0)], {"v": ["db"]})
    assert rec["verdict"] == "app-consistent" and rec["reasons"] == []
    assert rec["timeline"]["targets"][0]["window_ms"] == 10000.0


def test_cut_at_the_edges_of_the_hold_still_counts():
    assert build_record([hold()], [atomic_cut(10.0)], {"v": ["db"]})["verdict"] == "app-consistent"
    assert build_record([hold()], [atomic_cut(20.0)], {"v": ["db"]})["verdict"] == "app-consistent"


def test_cut_after_the_release_is_crash_consistent_with_the_reason():
    rec = build_record([hold()], [atomic_cut(20.5)], {"v": ["db"]})
    assert rec["verdict"] == "crash-consistent"
    assert "outside the hold" in rec["reasons"][0]


def test_cut_before_the_quiesce_is_crash_consistent():
    assert build_record([hold()], [atomic_cut(9.9)], {"v": ["db"]})["verdict"] == "crash-consistent"


def test_one_late_volume_among_several_spoils_the_backup():
    rec = build_record([hold()], [atomic_cut(15, "a"), atomic_cut(25, "b")], {"a": ["db"], "b": ["db"]})
    assert rec["verdict"] == "crash-consistent"
    assert [v["verdict"] for v in rec["timeline"]["volumes"]] == ["app-consistent", "crash-consistent"]


def test_every_replica_must_be_held_at_the_cut():
    holds = [hold("db-0", 10, 20), hold("db-1", 16, 20)]
    rec = build_record(holds, [atomic_cut(15)], {"v": ["db-0", "db-1"]})
    assert rec["verdict"] == "crash-consistent" and "db-1" in rec["reasons"][0]


def test_hold_ended_by_the_deadline_or_lost_is_not_app_consistent():
    assert (
        build_record([hold(by="deadline")], [atomic_cut(15)], {"v": ["db"]})["verdict"] == "crash-consistent"
    )
    rec = build_record([hold(lost="session ended")], [atomic_cut(15)], {"v": ["db"]})
    assert rec["verdict"] == "crash-consistent" and "session ended" in rec["reasons"][0]


def test_no_hook_gives_crash_consistent_for_atomic_and_inconsistent_for_copies():
    h = hold(hook="none", method="none")
    assert build_record([h], [atomic_cut(15)], {"v": ["db"]})["verdict"] == "crash-consistent"
    assert build_record([h], [copy_cut(11, 12)], {"v": ["db"]})["verdict"] == "inconsistent"


def test_copy_under_a_lock_that_does_not_make_it_consistent_is_inconsistent():
    h = hold(hook="mariadb", method="ftwrl", non_atomic_ok=False)
    rec = build_record([h], [copy_cut(11, 12)], {"v": ["db"]})
    assert rec["verdict"] == "inconsistent" and "file-by-file" in rec["reasons"][0]


def test_copy_in_backup_mode_needs_the_label_and_wal_copied_after_the_stop():
    ok = hold(
        method="backup", recovery="backup_label", non_atomic_ok=True, info={"backup_label": "START ..."}
    )
    cut = copy_cut(11, 19, deferred=["pg_wal"], deferred_copied=20.5)
    assert build_record([ok], [cut], {"v": ["db"]})["verdict"] == "app-consistent"

    no_label = hold(method="backup", recovery="backup_label", non_atomic_ok=True)
    assert build_record([no_label], [cut], {"v": ["db"]})["verdict"] == "inconsistent"

    wal_too_early = copy_cut(11, 19, deferred=["pg_wal"], deferred_copied=19.5)
    assert build_record([ok], [wal_too_early], {"v": ["db"]})["verdict"] == "inconsistent"

    copy_outlived_hold = copy_cut(11, 21, deferred=["pg_wal"], deferred_copied=22)
    assert build_record([ok], [copy_outlived_hold], {"v": ["db"]})["verdict"] == "inconsistent"
