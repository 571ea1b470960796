"""Schedules: the one cron module (parsing, fire times, daylight-saving checks) and the CronWorkflows of
a scheduled policy (backup, and optionally prune and check).

Cron expressions follow what Argo's CronWorkflow controller accepts (the standard five fields of
robfig/cron: minute 0-59, hour 0-23, day of month 1-31, month 1-12 or jan-dec, day of week 0-6 or
sun-sat; ``*``, ``?``, lists, ranges and steps; the macros ``@daily`` and friends, and
``@every 30m``). :meth:`CronSchedule.parse` refuses what Argo would refuse or never fire — a field out
of range (``61 25 * * *``) or a date that does not exist (``0 0 31 2 *``) — with one line naming the
field. In a time zone with daylight saving time, Argo skips a run whose local time does not exist (the
clocks jump over it) and runs twice one whose local time happens twice (the clocks go back);
:func:`dst_warnings` says so and suggests a safe time, and :meth:`CronSchedule.fire_times` lists fire
times the same way. Callers: :mod:`workflows.policy` (validation), :mod:`workflows.render` (warnings
of ``snapflow lint``/``render``), and the report's RPO (fire times).

Each CronWorkflow only references its WorkflowTemplate (``workflowTemplateRef``), so a scheduled run
and one started from the Argo UI or ``argo submit --from workflowtemplate/NAME`` are the same. A run
is never started while the previous one is still going (``concurrencyPolicy: Forbid``; the app mutex
guards against manual runs), and a run missed by more than ``startingDeadlineSeconds`` (controller
down, cluster upgrade) is skipped rather than started late in business hours. The schedule is written
as ``schedules`` (a list): Argo 4.0 removed the singular ``schedule`` (Argo Workflows
docs/upgrading.md, v4.0).
"""

from __future__ import annotations

import itertools
import math
import re
import zoneinfo
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

from steps.errors import UsageError

if TYPE_CHECKING:
    from hera.workflows import CronWorkflow

    from workflows.policy import Policy

HISTORY_LIMIT = 3

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
FIELDS = ("minute", "hour", "day of month", "month", "day of week")
RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6))
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
NAMES = {3: {m: i + 1 for i, m in enumerate(MONTHS)}, 4: {d: i for i, d in enumerate(WEEKDAYS)}}
# The longest each month can be (February in a leap year).
MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
MAX_FIRE_TIMES = 4000
_EVERY = re.compile(r"@every\s+([0-9]+)([smh])")


class CronError(UsageError):
    """A cron expression Argo would refuse, or that would never fire."""


def _field(text: str, index: int) -> tuple[frozenset[int], bool]:
    """The values of one field, and whether it is unrestricted (``*`` or ``?``)."""
    lo, hi = RANGES[index]
    names = NAMES.get(index, {})
    what = FIELDS[index]

    def number(token: str) -> int:
        token = token.lower()
        if token in names:
            return names[token]
        if not token.isdigit():
            raise CronError(f"{what} {text!r}: unexpected {token!r}")
        return int(token)

    values: set[int] = set()
    for part in text.split(","):
        base, slash, step_text = part.partition("/")
        if slash and not step_text.isdigit():
            raise CronError(f"{what} {text!r}: expected a step like */5")
        step = int(step_text) if slash else 1
        if step < 1:
            raise CronError(f"{what} {text!r}: a step must be at least 1")
        if base in ("*", "?"):
            a, b = lo, hi
        elif "-" in base:
            a_text, b_text = base.split("-", 1)
            a, b = number(a_text), number(b_text)
        else:
            a = number(base)
            b = hi if slash else a
        for value in (a, b):
            if not lo <= value <= hi:
                hint = " (Sunday is 0)" if index == 4 and value == 7 else ""
                raise CronError(f"{what} {text!r}: {value} is out of range {lo}-{hi}{hint}")
        if a > b:
            raise CronError(f"{what} {text!r}: range {a}-{b} runs backwards")
        values.update(range(a, b + 1, step))
    return frozenset(values), text in ("*", "?")


@dataclass(frozen=True)
class CronSchedule:
    """A parsed schedule in a time zone; :meth:`fire_times` lists when Argo starts it."""

    expression: str
    timezone: str = "UTC"
    every_s: float | None = None
    minutes: frozenset[int] = frozenset()
    hours: frozenset[int] = frozenset()
    days: frozenset[int] = frozenset()
    months: frozenset[int] = frozenset()
    weekdays: frozenset[int] = frozenset()
    any_day: bool = True
    any_weekday: bool = True

    @classmethod
    def parse(cls, expression: str, timezone: str = "UTC") -> CronSchedule:
        """The schedule, or :class:`CronError` naming what is wrong (out of range, impossible date)."""
        text = expression.strip()
        try:
            zoneinfo.ZoneInfo(timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise CronError(
                f"expected an IANA time zone like UTC or Europe/Berlin, got {timezone!r}"
            ) from None
        every = _EVERY.fullmatch(text)
        if every:
            seconds = int(every.group(1)) * {"s": 1, "m": 60, "h": 3600}[every.group(2)]
            if seconds <= 0:
                raise CronError(f"{expression!r}: expected a positive interval")
            return cls(text, timezone, every_s=float(seconds))
        if text.startswith("@") and text not in MACROS:
            raise CronError(f"{expression!r}: expected one of {', '.join(MACROS)} or @every 30m")
        fields = MACROS.get(text, text).split()
        if len(fields) != 5:
            raise CronError(
                "expected a cron expression of 5 fields (minute hour day month weekday) or @daily, "
                f"got {expression!r}"
            )
        try:
            parsed = [_field(f, i) for i, f in enumerate(fields)]
        except CronError as err:
            raise CronError(f"{expression!r}: {err}") from None
        schedule = cls(
            text,
            timezone,
            minutes=parsed[0][0],
            hours=parsed[1][0],
            days=parsed[2][0],
            months=parsed[3][0],
            weekdays=parsed[4][0],
            any_day=parsed[2][1],
            any_weekday=parsed[4][1],
        )
        if schedule.never_fires():
            raise CronError(
                f"{expression!r}: never fires: day of month {fields[2]} does not exist in month {fields[3]}"
            )
        return schedule

    def never_fires(self) -> bool:
        """True when no date matches: days of month that no chosen month has (``31 2``), with any weekday."""
        if self.every_s or self.any_day or not self.any_weekday:
            return False  # a restricted weekday alone, or either field (both restricted), always matches
        return not any(d <= MONTH_DAYS[m - 1] for m in self.months for d in self.days)

    def day_matches(self, d: date) -> bool:
        if d.month not in self.months:
            return False
        dom = d.day in self.days
        dow = (d.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return dom and dow  # an unrestricted field matches every day
        return dom or dow  # both restricted: either matches (robfig/cron, vixie cron)

    def local_times(self) -> list[tuple[int, int]]:
        return [(h, m) for h in sorted(self.hours) for m in sorted(self.minutes)]

    def fire_times(self, start: float, end: float, limit: int = MAX_FIRE_TIMES) -> list[float]:
        """Fire times t with start <= t <= end (epoch seconds), at most ``limit`` (the latest ones), as
        Argo fires them: a local time the clocks skip never fires, one that happens twice fires twice."""
        if end < start:
            return []
        if self.every_s:
            first = math.ceil(start / self.every_s) * self.every_s
            count = int((end - first) // self.every_s) + 1 if end >= first else 0
            skip = max(0, count - limit)
            return [first + (skip + i) * self.every_s for i in range(count - skip)]
        tz = zoneinfo.ZoneInfo(self.timezone)
        day = datetime.fromtimestamp(start, tz).date() - timedelta(days=1)
        last = datetime.fromtimestamp(end, tz).date()
        out: list[float] = []
        times = self.local_times()
        while day <= last:
            if self.day_matches(day):
                for h, mi in times:
                    out += [
                        t
                        for t in _instants(datetime(day.year, day.month, day.day, h, mi), tz)
                        if start <= t <= end
                    ]
            day += timedelta(days=1)
        return sorted(out)[-limit:]

    def interval_s(self, around: float) -> float:
        """The longest gap between two fire times over the week after ``around`` (the RPO target)."""
        if self.every_s:
            return self.every_s
        times = self.fire_times(around, around + 8 * 86400)
        if len(times) < 2:
            times = self.fire_times(around, around + 400 * 86400)
        if len(times) < 2:
            return 366 * 86400.0
        return max(b - a for a, b in itertools.pairwise(times))


def _instants(local: datetime, tz: zoneinfo.ZoneInfo) -> list[float]:
    """The instants a naive local time names in ``tz``: none in a gap, two in an overlap."""
    first, second = local.replace(tzinfo=tz, fold=0), local.replace(tzinfo=tz, fold=1)
    if first.astimezone(UTC).astimezone(tz).replace(tzinfo=None) != local:
        return []  # the clocks jump over it
    if first.utcoffset() != second.utcoffset():
        return sorted({first.timestamp(), second.timestamp()})
    return [first.timestamp()]


@dataclass(frozen=True)
class DstEffect:
    day: date
    local: tuple[int, int]
    kind: str  # "skipped" or "twice"


def dst_effects(schedule: CronSchedule, years: tuple[int, ...]) -> list[DstEffect]:
    """The fire times of ``years`` that daylight saving time skips or doubles."""
    if schedule.every_s:
        return []  # intervals do not follow the wall clock
    tz = zoneinfo.ZoneInfo(schedule.timezone)
    effects: list[DstEffect] = []
    for year in years:
        day = date(year, 1, 1)
        while day.year == year:
            start = datetime(day.year, day.month, day.day, tzinfo=tz)
            end = datetime(day.year, day.month, day.day, 23, 59, tzinfo=tz)
            if start.utcoffset() != end.utcoffset() and schedule.day_matches(day):
                for h, mi in schedule.local_times():
                    instants = _instants(datetime(day.year, day.month, day.day, h, mi), tz)
                    if len(instants) != 1:
                        effects.append(DstEffect(day, (h, mi), "skipped" if not instants else "twice"))
            day += timedelta(days=1)
    return effects


def _safe_hour(schedule: CronSchedule, years: tuple[int, ...]) -> int | None:
    """The hour nearest to the affected ones at which the schedule's minutes are never skipped or doubled."""
    affected = sorted({e.local[0] for e in dst_effects(schedule, years)})
    if not affected:
        return None
    for distance in range(1, 24):
        for hour in (affected[-1] + distance, affected[0] - distance):
            if 0 <= hour <= 23 and hour not in affected:
                trial = replace(schedule, hours=frozenset({hour}))
                if not dst_effects(trial, years):
                    return hour
    return None


def dst_warnings(expression: str, timezone: str, years: tuple[int, ...], where: str) -> list[str]:
    """One warning line when daylight saving time skips or doubles runs of the schedule in ``years``,
    with a safe time to use instead (or UTC). A schedule firing every hour gets none: it keeps its
    pace through the change."""
    try:
        schedule = CronSchedule.parse(expression, timezone)
    except CronError:
        return []  # refused by the policy's validation already
    if len(schedule.hours) == 24:
        return []  # every hour: the clocks skip or repeat one of them, no run is lost or doubled
    effects = dst_effects(schedule, years)
    if not effects:
        return []
    examples = []
    for kind, what in (
        ("skipped", "does not exist (that run is skipped)"),
        ("twice", "happens twice (it runs twice)"),
    ):
        first = next((e for e in effects if e.kind == kind), None)
        if first:
            examples.append(f"{first.day.isoformat()} {first.local[0]:02d}:{first.local[1]:02d} {what}")
    hours = sorted({e.local[0] for e in effects})
    fields = MACROS.get(schedule.expression, schedule.expression).split()
    advice = f"use timezone UTC, or a time outside {hours[0]:02d}:00-{hours[-1] + 1:02d}:00"
    hour = _safe_hour(schedule, years) if len(schedule.hours) == 1 else None
    if hour is not None:
        advice += f", e.g. '{' '.join([fields[0], str(hour), *fields[2:]])}'"
    return [
        f"warning: {where}: {expression!r} in {timezone}: daylight saving time: {'; '.join(examples)}; {advice}"
    ]


# --------------------------------------------------------------------------------------------------
# CronWorkflows.


def _cron(policy: Policy, pipeline: str, cron: str, title: str, description: str) -> CronWorkflow:
    from hera.workflows import CronWorkflow
    from hera.workflows import models as m

    from workflows.hera_builder import DESCRIPTION_ANNOTATION, TITLE_ANNOTATION
    from workflows.names import Names

    names = Names.of(policy)
    schedule = policy.spec.schedule
    assert schedule is not None
    labels = names.labels(pipeline)
    annotations = {TITLE_ANNOTATION: title, DESCRIPTION_ANNOTATION: description}
    return CronWorkflow(
        name=names.template(pipeline),
        namespace=policy.workflow_namespace,  # beside its WorkflowTemplate (the mover namespace, if any)
        labels=labels,
        annotations=annotations,
        schedules=[cron],
        timezone=schedule.timezone,
        concurrency_policy="Forbid",
        starting_deadline_seconds=schedule.starting_deadline_seconds,
        cron_suspend=schedule.suspend or None,
        successful_jobs_history_limit=HISTORY_LIMIT,
        failed_jobs_history_limit=HISTORY_LIMIT,
        workflow_template_ref=m.WorkflowTemplateRef(name=names.template(pipeline)),
        workflow_metadata=m.WorkflowMetadata(labels=labels, annotations=annotations),
    )


def cron_workflows(policy: Policy) -> list[CronWorkflow]:
    """The CronWorkflows of a policy (none without ``spec.schedule``)."""
    schedule = policy.spec.schedule
    if schedule is None:
        return []
    where = f"{policy.app} ({policy.namespace})"
    out = [
        _cron(
            policy,
            "backup",
            schedule.cron,
            f"Scheduled backup of {where}",
            f"Runs backup-{policy.name} at '{schedule.cron}' ({schedule.timezone}).",
        )
    ]
    if schedule.prune:
        out.append(
            _cron(
                policy,
                "prune",
                schedule.prune,
                f"Scheduled prune of {where}",
                f"Runs prune-{policy.name} at '{schedule.prune}' ({schedule.timezone}).",
            )
        )
    if schedule.check:
        # The restore test follows the template's restore-test parameter, whose default is
        # verify.restoreTest.enabled: a scheduled run and a run started by hand do the same.
        test = policy.spec.verify.restore_test
        with_test = (
            f", with a restore test into a {test.scratch_size} scratch volume"
            if test and test.enabled
            else ""
        )
        out.append(
            _cron(
                policy,
                "check",
                schedule.check,
                f"Scheduled repository check of {where}",
                f"Runs check-{policy.name} at '{schedule.check}' ({schedule.timezone}){with_test}.",
            )
        )
    return out
