"""Schedules: cron expressions Argo would refuse or never fire are one-line policy errors, and a
schedule that daylight saving time skips or doubles is warned about by lint with a safe time."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workflows.policy import PolicyError, load_policies
from workflows.schedule import CronError, CronSchedule, dst_warnings


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("61 25 * * *", "'61 25 * * *': minute '61': 61 is out of range 0-59"),
        ("99 99 * * *", "'99 99 * * *': minute '99': 99 is out of range 0-59"),
        ("0 25 * * *", "'0 25 * * *': hour '25': 25 is out of range 0-23"),
        ("0 0 31 2 *", "'0 0 31 2 *': never fires: day of month 31 does not exist in month 2"),
        ("0 0 30,31 feb *", "'0 0 30,31 feb *': never fires: day of month 30,31 does not exist in month feb"),
        ("0 0 * * 7", "'0 0 * * 7': day of week '7': 7 is out of range 0-6 (Sunday is 0)"),
        ("0 0 0 * *", "'0 0 0 * *': day of month '0': 0 is out of range 1-31"),
        ("*/0 * * * *", "'*/0 * * * *': minute '*/0': a step must be at least 1"),
        ("0 5-2 * * *", "'0 5-2 * * *': hour '5-2': range 5-2 runs backwards"),
        ("@fortnightly", "'@fortnightly': expected one of @yearly, @annually, @monthly, @weekly, @daily, "
         "@midnight, @hourly or @every 30m"),
    ],
)  # fmt: skip
def test_a_schedule_argo_would_refuse_or_never_fire_is_one_line(write_policy, minimal_policy, cron, message):
    # GIVEN a policy whose backup schedule is out of range or names a date that does not exist
    minimal_policy["spec"]["schedule"] = {"cron": cron}
    path = write_policy(minimal_policy)
    # WHEN it is loaded THEN one line names the file, the field and what is wrong
    with pytest.raises(PolicyError) as err:
        load_policies([path])
    assert err.value.problems == [f"{path}: spec.schedule.cron: {message}"]


@pytest.mark.parametrize(
    "cron",
    [
        "0 0 29 2 *",
        "0 0 31 2 mon",
        "15 3 * * *",
        "@daily",
        "@every 90m",
        "0 0 1-5/2 jan-mar sun",
        "0 */4 * * ?",
    ],
)
def test_valid_schedules_are_accepted(cron):
    assert CronSchedule.parse(cron).expression == cron


def test_lint_warns_about_a_schedule_daylight_saving_time_skips_and_doubles(write_policy, minimal_policy):
    # GIVEN a backup at 02:15 Europe/Berlin (the clocks jump 02:00 -> 03:00 in March and go back in October)
    minimal_policy["spec"]["schedule"] = {"cron": "15 2 * * *", "timezone": "Europe/Berlin"}
    path = write_policy(minimal_policy)
    # WHEN it is linted
    done = subprocess.run(
        [sys.executable, "-m", "workflows", "lint", str(path)], capture_output=True, text=True, timeout=120
    )
    # THEN it passes with one warning naming both effects and a safe time
    assert done.returncode == 0, done.stderr
    (warning,) = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert f"{path}: spec.schedule.cron: '15 2 * * *' in Europe/Berlin" in warning
    year = datetime.now(UTC).year
    assert "02:15 does not exist (that run is skipped)" in warning and "happens twice" in warning
    assert f"{year}-03-" in warning and f"{year}-10-" in warning
    assert "e.g. '15 3 * * *'" in warning


def test_the_suggested_time_is_itself_safe():
    # GIVEN schedules in the change window of several zones
    for cron, tz in (
        ("30 2 * * *", "Europe/Berlin"),
        ("30 1 * * *", "America/New_York"),
        ("0 2 * * 0", "Australia/Sydney"),
    ):
        (warning,) = dst_warnings(cron, tz, (2026, 2027), "p.yaml: spec.schedule.cron")
        suggested = warning.split("e.g. '")[1].split("'")[0]
        # THEN the suggested schedule draws no warning
        assert dst_warnings(suggested, tz, (2026, 2027), "p.yaml") == [], (cron, tz, suggested)


def test_no_warning_in_utc_outside_the_change_or_every_hour():
    assert dst_warnings("15 2 * * *", "UTC", (2026,), "p") == []
    assert dst_warnings("15 3 * * *", "Europe/Berlin", (2026,), "p") == []
    assert dst_warnings("0 * * * *", "Europe/Berlin", (2026,), "p") == []
    assert dst_warnings("@every 1h", "Europe/Berlin", (2026,), "p") == []


def test_fire_times_skip_a_time_the_clocks_jump_over_and_repeat_one_that_happens_twice():
    berlin = CronSchedule.parse("15 2 * * *", "Europe/Berlin")
    spring = datetime(2026, 3, 28, tzinfo=UTC).timestamp()
    times = [
        datetime.fromtimestamp(t, UTC).strftime("%m-%d %H:%M")
        for t in berlin.fire_times(spring, spring + 3 * 86400)
    ]
    assert times == ["03-28 01:15", "03-30 00:15"]  # nothing on 03-29
    autumn = datetime(2026, 10, 24, tzinfo=UTC).timestamp()
    times = [
        datetime.fromtimestamp(t, UTC).strftime("%m-%d %H:%M")
        for t in berlin.fire_times(autumn, autumn + 3 * 86400)
    ]
    assert times == ["10-24 00:15", "10-25 00:15", "10-25 01:15", "10-26 01:15"]  # twice on 10-25


@settings(max_examples=200, derandomize=True, deadline=None)
@given(
    minute=st.integers(0, 59),
    hour=st.integers(0, 23),
    day=st.integers(1, 31),
    month=st.integers(1, 12),
)
def test_a_single_date_is_refused_exactly_when_no_year_has_it(minute, hour, day, month):
    expression = f"{minute} {hour} {day} {month} *"
    exists = any(
        _valid_date(year, month, day)
        for year in (2024, 2025)  # 2024 is a leap year
    )
    try:
        CronSchedule.parse(expression)
        accepted = True
    except CronError:
        accepted = False
    assert accepted is exists


def _valid_date(year: int, month: int, day: int) -> bool:
    try:
        datetime(year, month, day)
    except ValueError:
        return False
    return True
