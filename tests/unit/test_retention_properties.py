"""Property-based checks of the retention rules over random snapshot histories."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steps.repository.retention import UNITS, Point, Rules, apply_rules

ZONES = [UTC, ZoneInfo("Europe/Berlin"), ZoneInfo("America/New_York"), ZoneInfo("Asia/Kolkata")]
START = datetime(2024, 1, 1, tzinfo=UTC)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

histories = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=3 * 365 * 24 * 60),  # minutes after START
        st.sampled_from(["app-a", "app-b", "app-c"]),
    ),
    min_size=0,
    max_size=60,
)
rules_strategy = st.builds(
    Rules,
    last=st.integers(0, 5),
    hourly=st.integers(0, 6),
    daily=st.integers(0, 8),
    weekly=st.integers(0, 5),
    monthly=st.integers(0, 13),
    yearly=st.integers(0, 3),
)


def _points(history) -> list[Point]:
    return [
        Point(f"p{i}", START + timedelta(minutes=minutes), (group,))
        for i, (minutes, group) in enumerate(history)
    ]


def _single(rules: Rules, unit: str) -> Rules:
    return Rules(**{unit: getattr(rules, unit)})


@SETTINGS
@given(history=histories, rules=rules_strategy, zone=st.sampled_from(ZONES))
def test_a_point_any_rule_keeps_is_never_forgotten(history, rules, zone):
    # GIVEN a random history of restore points of three apps and random rules
    pts = _points(history)
    # WHEN all rules apply together, and each rule alone
    decisions = apply_rules(pts, rules, zone)
    together = {d.point.id for d in decisions if d.keep}
    for unit in UNITS:
        alone = {d.point.id for d in apply_rules(pts, _single(rules, unit), zone) if d.keep}
        # THEN whatever one rule keeps is kept
        assert alone <= together, unit
    # AND every kept point says why, every forgotten point has no reason
    for d in decisions:
        assert d.keep == bool(d.reasons)


@SETTINGS
@given(history=histories, rules=rules_strategy, zone=st.sampled_from(ZONES))
def test_no_more_points_are_kept_than_the_rules_ask(history, rules, zone):
    # GIVEN a random history and random rules
    pts = _points(history)
    # WHEN the rules apply
    decisions = apply_rules(pts, rules, zone)
    for group in {p.group for p in pts}:
        mine = [d for d in decisions if d.point.group == group]
        # THEN per group at most the sum of the rule counts is kept
        assert sum(d.keep for d in mine) <= rules.total
        # AND each rule keeps at most its count (keep-last exactly its count when there are enough)
        for unit in UNITS:
            count = getattr(rules, unit)
            by_rule = [d for d in mine if any(r.startswith(f"{unit} ") for r in d.reasons)]
            assert len(by_rule) <= count
            if unit == "last":
                assert len(by_rule) == min(count, len(mine))


@SETTINGS
@given(history=histories, zone=st.sampled_from(ZONES), n=st.integers(1, 10))
def test_a_daily_rule_keeps_the_newest_point_of_each_of_the_most_recent_days(history, zone, n):
    # GIVEN a random history
    pts = _points(history)
    # WHEN keep-daily N applies
    decisions = apply_rules(pts, Rules(daily=n), zone)
    # THEN it keeps what a direct computation gives: the newest point of each of the N newest local days
    for group in {p.group for p in pts}:
        days: dict = {}
        for p in (p for p in pts if p.group == group):
            day = p.time.astimezone(zone).date()
            if day not in days or (p.time, p.id) > (days[day].time, days[day].id):
                days[day] = p
        expected = {days[d].id for d in sorted(days, reverse=True)[:n]}
        assert {d.point.id for d in decisions if d.keep and d.point.group == group} == expected


def test_an_empty_history_keeps_nothing():
    assert apply_rules([], Rules(last=3)) == []
