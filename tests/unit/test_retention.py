"""Retention rules as tables: which restore points each rule keeps, and why."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from steps.errors import UsageError
from steps.repository.retention import (
    Point,
    Rules,
    apply_rules,
    backup_identity,
    restore_points,
    timezone,
)


def points(*times: str, group=("app",)) -> list[Point]:
    return [
        Point(f"b{i}-{t}", datetime.fromisoformat(t).replace(tzinfo=UTC), group) for i, t in enumerate(times)
    ]


def kept(decisions) -> list[str]:
    return sorted(d.point.id.split("-", 1)[1] for d in decisions if d.keep)


def test_keep_last_keeps_the_n_newest():
    # GIVEN five daily backups
    pts = points(
        "2026-01-01T10:00", "2026-01-02T10:00", "2026-01-03T10:00", "2026-01-04T10:00", "2026-01-05T10:00"
    )
    # WHEN the last 2 are kept
    decisions = apply_rules(pts, Rules(last=2))
    # THEN exactly the two newest stay, with their rank as the reason
    assert kept(decisions) == ["2026-01-04T10:00", "2026-01-05T10:00"]
    reasons = {d.point.id.split("-", 1)[1]: d.reasons for d in decisions}
    assert reasons["2026-01-05T10:00"] == ["last 1/2"]
    assert reasons["2026-01-01T10:00"] == []


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        # several backups a day: daily keeps the newest of each day
        (Rules(daily=2), ["2026-03-02T23:00", "2026-03-03T12:00"]),
        # hourly: the newest in each of the 3 most recent hours that have one
        (Rules(hourly=3), ["2026-03-03T06:30", "2026-03-03T11:00", "2026-03-03T12:00"]),
        # weekly (ISO weeks: 2026-02-23 is a Monday)
        (Rules(weekly=2), ["2026-02-22T08:00", "2026-03-03T12:00"]),
        (Rules(monthly=2), ["2026-02-22T08:00", "2026-03-03T12:00"]),
        (Rules(yearly=3), ["2025-12-31T23:59", "2026-03-03T12:00"]),
        # a rule asking for more periods than exist keeps one per period
        (Rules(monthly=10), ["2025-12-31T23:59", "2026-01-15T00:00", "2026-02-22T08:00", "2026-03-03T12:00"]),
    ],
)
def test_periodic_rules_keep_the_newest_point_of_each_period(rules, expected):
    # GIVEN backups spread over hours, days, weeks and months
    pts = points(
        "2025-12-31T23:59",
        "2026-01-15T00:00",
        "2026-02-21T08:00",
        "2026-02-22T08:00",
        "2026-03-02T10:00",
        "2026-03-02T23:00",
        "2026-03-03T06:00",
        "2026-03-03T06:30",
        "2026-03-03T11:00",
        "2026-03-03T12:00",
    )
    # WHEN the rule applies THEN it keeps the newest point of each of the N most recent periods
    assert kept(apply_rules(pts, rules)) == expected


def test_rules_are_united_and_every_reason_is_listed():
    # GIVEN 10 days with one backup each
    pts = points(*[f"2026-05-{d:02d}T03:00" for d in range(1, 11)])
    # WHEN keep-last 2 and keep-daily 4 apply
    decisions = apply_rules(pts, Rules(last=2, daily=4))
    # THEN the union (4 newest days) is kept, the newest for both reasons
    assert kept(decisions) == [f"2026-05-{d:02d}T03:00" for d in (7, 8, 9, 10)]
    newest = next(d for d in decisions if d.point.id.endswith("2026-05-10T03:00"))
    assert newest.reasons == ["last 1/2", "daily 1/4 (2026-05-10)"]


def test_days_are_counted_in_the_policys_time_zone():
    # GIVEN two backups 2 hours apart around midnight UTC: the same day in UTC, two days in Tokyo
    pts = points("2026-06-01T14:00", "2026-06-01T16:00")
    # WHEN keep-daily 2 is evaluated in UTC and in Asia/Tokyo
    in_utc = apply_rules(pts, Rules(daily=2), UTC)
    in_tokyo = apply_rules(pts, Rules(daily=2), ZoneInfo("Asia/Tokyo"))
    # THEN UTC keeps one (one day), Tokyo keeps both (2026-06-01 23:00 and 2026-06-02 01:00 local)
    assert kept(in_utc) == ["2026-06-01T16:00"]
    assert kept(in_tokyo) == ["2026-06-01T14:00", "2026-06-01T16:00"]
    assert any("2026-06-02" in r for d in in_tokyo for r in d.reasons)


def test_the_repeated_hour_of_a_daylight_saving_change_counts_as_two_hours():
    # GIVEN backups at 00:30 and 01:30 UTC on 2026-10-25: both 02:30 local in Berlin (CEST, then CET)
    pts = points("2026-10-25T00:30", "2026-10-25T01:30")
    # WHEN keep-hourly 2 is evaluated in Europe/Berlin
    decisions = apply_rules(pts, Rules(hourly=2), ZoneInfo("Europe/Berlin"))
    # THEN both are kept: they are two elapsed hours
    assert kept(decisions) == ["2026-10-25T00:30", "2026-10-25T01:30"]


def test_each_group_is_evaluated_on_its_own():
    # GIVEN two apps with three backups each
    a = points("2026-01-01T00:00", "2026-01-02T00:00", "2026-01-03T00:00", group=("a",))
    b = [Point(f"B{i}", p.time, ("b",)) for i, p in enumerate(a)]
    # WHEN keep-last 1 applies
    decisions = apply_rules(a + b, Rules(last=1))
    # THEN the newest of each app stays
    assert sorted(d.point.id for d in decisions if d.keep) == ["B2", "b2-2026-01-03T00:00"]


def test_bad_rules_and_zones_are_usage_errors():
    with pytest.raises(UsageError, match="--keep-daily"):
        Rules(daily=-1)
    with pytest.raises(UsageError, match="--timezone"):
        timezone("Mars/Olympus")
    assert Rules().empty and not Rules(yearly=1).empty


class _Rec:
    def __init__(self, data, rid="r"):
        self.data = data
        self.id = rid
        self.modified = None


class _Snap:
    def __init__(self, sid, data):
        self.id = sid
        self.data = data


def test_restore_points_are_backups_per_app_and_plain_snapshots_per_source_and_tags():
    # GIVEN two backups of one app, one of another, their snapshots, and plain copies of two sources
    t = "2026-01-0{}T00:00:00Z"
    backups = [
        _Rec(
            {
                "backup_id": "b1",
                "time": t.format(1),
                "app": {"cluster": "c", "namespace": "n", "name": "db", "policy": "db"},
            }
        ),
        _Rec(
            {
                "backup_id": "b2",
                "time": t.format(2),
                "app": {"cluster": "c", "namespace": "n", "name": "db", "policy": "db"},
            }
        ),
        _Rec(
            {
                "backup_id": "w1",
                "time": t.format(3),
                "cluster": "c",
                "namespace": "n",
                "app": "web",
                "policy": "web",
            }
        ),
    ]
    snaps = [
        _Snap("s-b1", {"backup_id": "b1", "time": t.format(1)}),
        _Snap("s-w1", {"backup_id": "w1", "time": t.format(3)}),
        _Snap("p1", {"source": "/x", "tags": {"k": "1"}, "time": t.format(1), "host": "h"}),
        _Snap("p2", {"source": "/x", "tags": {"k": "1"}, "time": t.format(2), "host": "h"}),
        _Snap("p3", {"source": "/x", "tags": {"k": "2"}, "time": t.format(3), "host": "h"}),
    ]
    # WHEN they become restore points, and keep-last 1 applies
    rp = restore_points(backups, snaps)
    decisions = apply_rules(rp.points, Rules(last=1))
    # THEN each app and each source+tags set keeps its newest point
    assert sorted(d.point.id for d in decisions if d.keep) == ["b2", "p2", "p3", "w1"]
    assert rp.backup_snapshots == {"b1": ["s-b1"], "w1": ["s-w1"]}
    # AND filters restrict the points to one app
    only_db = restore_points(backups, snaps, {"app": "db"})
    assert sorted(p.id for p in only_db.points) == ["b1", "b2"]
    assert backup_identity(backups[0].data)["app"] == "db"


def test_points_without_a_zone_are_refused():
    with pytest.raises(ValueError):
        apply_rules([Point("x", datetime(2026, 1, 1))], Rules(last=1))
