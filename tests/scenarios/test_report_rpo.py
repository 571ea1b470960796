"""The report judges RPO against the schedule: late and missing backups are flagged, the rest is ok.

These tests build the report from record contents shaped like the ones finalize, consistent-point and
the copy write (the end-to-end report test reads real ones from a real repository)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from steps.errors import UsageError
from workflows.report import ScheduleInfo, build_report, render_html
from workflows.schedule import CronSchedule

HOUR = 3600.0
T0 = datetime(2025, 1, 6, 0, 0, tzinfo=UTC).timestamp()  # a Monday, midnight UTC


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def records(bid: str, start: float, *, app: str = "orders", committed: bool = True, reason: str = ""):
    identity = {"cluster": "prod", "namespace": "shop", "name": app, "policy": app}
    timeline = {
        "targets": [
            {"name": "db", "quiesced": iso(start + 1), "released": iso(start + 1.012), "recovery": "crash"}
        ],
        "volumes": [{"volume": "data", "cut": iso(start + 1.005), "targets": ["db"]}],
    }
    cp = {
        "name": "consistent-point", "backup_id": bid, "app": identity, "started": iso(start),
        "finished": iso(start + 2), "verdict": "app-consistent", "reasons": [reason] if reason else [],
        "freeze_window_ms": 12.0, "timeline": timeline, "recovery": {"db": "crash"},
    }  # fmt: skip
    snap = {
        "id": f"5{bid[-6:]:0>7}", "backup_id": bid, "volume": "data", "time": iso(start + 3),
        "end_time": iso(start + 60), "tags": {"backup": bid},
        "summary": {"bytes_total": 10_000_000, "bytes_read": 2_000_000, "bytes_added": 300_000,
                    "blob_bytes_new": 900_000, "files": 12},
    }  # fmt: skip
    verify = {"name": "verify", "backup_id": bid, "ok": True, "time": iso(start + 70), "duration_s": 9.0,
              "read_data_percent": 10, "problems": []}  # fmt: skip
    backup = None
    if committed:
        backup = {
            "backup_id": bid, "app": identity, "time": iso(start + 75),
            "volumes": [{"name": "data", "snapshot": snap["id"]}],
            "consistency": {k: cp[k] for k in ("verdict", "reasons", "recovery", "freeze_window_ms", "timeline")},
            "verify": {"ok": True, "read_data_percent": 10},
        }  # fmt: skip
    return backup, [cp, verify], [snap]


def report_of(runs: list[tuple[str, float, bool]], now: float, schedule: str | None = "0 * * * *", **kw):
    backups, run_records, snaps = [], [], []
    for bid, start, committed in runs:
        b, r, s = records(bid, start, committed=committed, **kw)
        if b:
            backups.append(b)
        run_records += r
        snaps += s
    schedules = (
        {("prod", "shop", "orders"): ScheduleInfo(schedule, "UTC", 600.0, "policy.yaml")} if schedule else {}
    )
    return build_report("s3://bucket/shop", backups, run_records, snaps, schedules=schedules, now=now)


def test_cron_schedules_list_their_fire_times():
    every_15 = CronSchedule.parse("*/15 * * * *")
    assert len(every_15.fire_times(T0, T0 + HOUR - 1)) == 4
    weekdays_at_2 = CronSchedule.parse("0 2 * * 1-5")
    week = weekdays_at_2.fire_times(T0, T0 + 7 * 24 * HOUR)
    assert [datetime.fromtimestamp(t, UTC).strftime("%a %H:%M") for t in week] == [
        "Mon 02:00", "Tue 02:00", "Wed 02:00", "Thu 02:00", "Fri 02:00",
    ]  # fmt: skip
    berlin = CronSchedule.parse("@daily", "Europe/Berlin").fire_times(T0, T0 + 24 * HOUR)
    assert [datetime.fromtimestamp(t, UTC).strftime("%H:%M") for t in berlin] == ["23:00"]  # CET = UTC+1
    # both day fields restricted: either matches (the 1st of the month, and Mondays)
    either = CronSchedule.parse("0 0 1 * mon").fire_times(T0, T0 + 31 * 24 * HOUR)
    days = [datetime.fromtimestamp(t, UTC).strftime("%d %a") for t in either]
    assert days == ["06 Mon", "13 Mon", "20 Mon", "27 Mon", "01 Sat", "03 Mon"]
    assert CronSchedule.parse("@every 30m").interval_s(T0) == 1800
    assert CronSchedule.parse("0 2 * * *").interval_s(T0) == 24 * HOUR


@pytest.mark.parametrize("bad", ["* * *", "61 * * * *", "*/0 * * * *", "0 0 * * funday"])
def test_a_bad_schedule_is_refused_naming_it(bad):
    with pytest.raises(UsageError, match=re.escape(repr(bad))):
        CronSchedule.parse(bad)


def test_late_and_missing_hourly_backups_are_flagged():
    # GIVEN an hourly schedule; backups a minute after 00:00, 01:00 and 02:00, none in the 03:00 hour,
    # one at 04:30 (after the 10 min grace), one at 05:01, and a failed run at 06:01
    runs = [
        ("backup-orders-a0", T0 + 60, True),
        ("backup-orders-a1", T0 + HOUR + 60, True),
        ("backup-orders-a2", T0 + 2 * HOUR + 60, True),
        ("backup-orders-a4", T0 + 4 * HOUR + 1800, True),
        ("backup-orders-a5", T0 + 5 * HOUR + 60, True),
        ("backup-orders-a6", T0 + 6 * HOUR + 60, False),
    ]

    # WHEN the report is built at 06:05
    report = report_of(runs, now=T0 + 6 * HOUR + 300)

    # THEN the 03:00 slot is missing, the 04:00 slot late, 06:00 still pending, the others ok
    app = report.apps[0]
    statuses = [(datetime.fromtimestamp(s.time, UTC).strftime("%H:%M"), s.status) for s in app.rpo.slots]
    assert statuses == [
        ("00:00", "ok"), ("01:00", "ok"), ("02:00", "ok"), ("03:00", "missing"),
        ("04:00", "late"), ("05:00", "ok"), ("06:00", "pending"),
    ]  # fmt: skip
    assert app.rpo.ok is False
    assert "1 scheduled backup(s) missing" in app.problems
    assert "1 scheduled backup(s) late" in app.problems
    assert any("latest run backup-orders-a6 was not committed" in p for p in app.problems)
    assert app.rpo.target_s == HOUR + 600
    assert app.totals["backups"] == 5 and app.totals["failed"] == 1
    # ... and the page draws every slot, coloured by status
    html = render_html(report)
    assert html.count('class="slot-missing"') == 1 and html.count('class="slot-late"') == 1
    assert html.count('class="slot-ok"') == 4


def test_rpo_is_exceeded_when_the_newest_backup_is_too_old():
    # GIVEN a daily schedule and one backup three days ago
    report = report_of(
        [("backup-orders-b0", T0 + 2 * HOUR + 60, True)], now=T0 + 3 * 24 * HOUR, schedule="0 2 * * *"
    )
    app = report.apps[0]

    # THEN the RPO is exceeded and the days without a backup are missing
    assert app.rpo.current_s > app.rpo.target_s
    assert any("RPO exceeded" in p for p in app.problems)
    assert app.rpo.counts["missing"] == 2


def test_sizes_ratios_and_reconstructed_timelines_without_a_local_run_record():
    # GIVEN records of two cluster backups (no step timeline recorded by a local runner)
    report = report_of(
        [("backup-orders-c0", T0 + 60, True), ("backup-orders-c1", T0 + HOUR + 60, True)], now=T0 + HOUR + 600
    )
    app = report.apps[0]
    run = app.runs[-1]

    # THEN sizes add up over volumes, ratios follow from them, and the steps come from the records
    assert (run.bytes_total, run.bytes_read, run.bytes_added) == (10_000_000, 2_000_000, 300_000)
    assert run.compression_ratio == pytest.approx(3.0)
    assert app.totals["dedup_ratio"] == pytest.approx(20_000_000 / 1_800_000)
    assert [s.name for s in run.steps] == ["consistent-point", "copy-data", "verify", "finalize"]
    assert "reconstructed" in run.steps_from
    assert run.freeze_window_ms == 12.0 and run.freeze is not None


def test_text_from_records_is_escaped_in_the_page():
    # GIVEN a reason text that looks like markup
    report = report_of(
        [("backup-orders-d0", T0 + 60, True)], now=T0 + 600, reason="<script>alert(1)</script>"
    )

    # WHEN the page is rendered
    html = render_html(report)

    # THEN the text is shown, not executed
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_an_app_without_schedule_or_backup_is_reported_honestly():
    _, runs, snaps = records("backup-orders-e0", T0, committed=False)
    report = build_report("s3://b/p", [], runs, snaps, now=T0 + HOUR)
    app = report.apps[0]
    assert app.rpo.schedule is None and app.rpo.slots == []
    assert "no committed backup" in app.problems
    assert "No schedule known" in render_html(report)


@pytest.mark.parametrize(
    "cron",
    ["0 * * * *", "@daily", "*/15 * * * 1-5", "@every 30m", "61 25 * * *", "99 99 * * *", "0 0 31 2 *"],
)
def test_the_report_judges_every_schedule_a_policy_accepts_and_refuses_the_others_alike(cron):
    from pydantic import ValidationError

    from workflows.policy import Schedule

    # GIVEN a schedule as the policy's validation sees it
    try:
        Schedule(cron=cron)
        refusal = None
    except ValidationError as err:
        refusal = str(err)
    runs = [("backup-orders-aaaaa", T0 + 2, True)]
    if refusal is None:
        # THEN a schedule that lints clean is one the report judges
        report = report_of(runs, now=T0 + 2 * HOUR, schedule=cron)
        assert report.apps[0].rpo.schedule == cron and report.apps[0].rpo.slots
    else:
        # THEN one the policy refuses, the report refuses with the same message (one cron parser)
        with pytest.raises(UsageError) as err:
            report_of(runs, now=T0 + 2 * HOUR, schedule=cron)
        assert str(err.value) in refusal
