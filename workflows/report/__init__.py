"""The HTML report of a repository: per app, backups over time, consistency, verify status, sizes,
dedup and compression, freeze windows, durations and RPO against the schedule; per run, the steps.

:func:`collect` reads what the repository holds (committed ``backups`` records, the ``runs`` records
of each backup — ``consistent-point``, ``verify``, and ``pipeline`` from the local runner — and the
snapshot records) into a :class:`Report`; :func:`render_html` turns it into one self-contained page
(templates/reports/, Jinja2 with StrictUndefined and autoescape; charts are inline SVG, no script,
nothing fetched at view time). Called by ``snapflow report`` and the demo.

Backups of sources (etcd, registry, bucket: a policy with ``spec.source``) are apps of their kind
(:attr:`AppReport.source`, :attr:`Run.source`): no consistent point, sizes from their one snapshot,
restore commands of their kind (:func:`restore_commands`). A backup record's ``changes`` and
``anomaly`` (judged at commit against the app's history) are :attr:`Run.changes` and
:attr:`Run.anomaly`; records written before them have neither.

Terms: a *run* is one backup attempt (one backup ID); a *backup* is a run whose record was committed
(a restore point). The *point in time* of a backup is its consistent point (first cut). RPO is judged
against the schedule's fire times (cron, from ``--policy`` files or the schedule a local run
recorded): a slot is ``ok`` when a committed backup started within the grace after it, ``late`` when
one started before the next slot, ``missing`` when none did, ``pending`` while it may still come.

The package: :mod:`~workflows.report.model` (the model, built from record contents without I/O),
:mod:`~workflows.report.reading` (the repository and the policies' schedules),
:mod:`~workflows.report.charts` (chart geometry) and :mod:`~workflows.report.page` (the HTML page).
This module is its public face.
"""

from __future__ import annotations

from workflows.report.model import (
    DEFAULT_GRACE_S,
    DEFAULT_WINDOW_DAYS,
    AppReport,
    Report,
    Run,
    ScheduleInfo,
    build_report,
    build_run,
    judge_rpo,
    parse_time,
    restore_commands,
)
from workflows.report.page import render_html, write_report
from workflows.report.reading import collect, schedules_from_policies

__all__ = [
    "DEFAULT_GRACE_S",
    "DEFAULT_WINDOW_DAYS",
    "AppReport",
    "Report",
    "Run",
    "ScheduleInfo",
    "build_report",
    "build_run",
    "collect",
    "judge_rpo",
    "parse_time",
    "render_html",
    "restore_commands",
    "schedules_from_policies",
    "write_report",
]
