"""The exporter's model: per app, what its committed backup records and run records say, and its targets.

Pure (no I/O): :func:`app_states` folds record summaries (:mod:`workflows.fleet.records`) into one
:class:`AppState` per app; :class:`Targets` are what the alerts compare with (RPO, freeze budget,
restore-test age, how long a run may stay uncommitted), from the app's policy or the exporter's flags
(:func:`targets_from_policies`).

Terms as in the report: a *run* is one backup attempt (one backup ID, one record group); a *backup* is a
run whose ``backups`` record opens (committed). Run records say which app a group belongs to; a
``verify`` record names no app, its group does. A source's backup (etcd, registry, bucket) is one
more app here, under its policy's namespace and app name, with its ``source`` kind and the size of its
one snapshot (no consistent point: no freeze window). Its point in time is its snapshot's time: the
record's ``source.time``, else the time in the run record of its source step, else (older records)
the record's own time. A source step's run record names its app (``app``), so that a source run that
never committed counts as an uncommitted run and its failed verify as the app's. The anomaly is the
newest committed backup's (``anomaly`` in its record; none in older records).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from workflows.fleet.records import SOURCE_RUN_NAMES, Summary

AppKey = tuple[str, str, str]  # cluster, namespace, app

DEFAULT_RPO_S = 26 * 3600.0  # a daily schedule with two hours of slack
DEFAULT_FREEZE_BUDGET_S = 30.0  # the policy's default freeze deadline
DEFAULT_RESTORE_TEST_MAX_AGE_S = 8 * 86400.0  # a weekly check with a day of slack (policies that test)
DEFAULT_COMMIT_DEADLINE_S = 21600.0  # the policy's default activeDeadlineSeconds of a backup


@dataclass(frozen=True)
class Targets:
    rpo_s: float | None = DEFAULT_RPO_S
    freeze_budget_s: float | None = DEFAULT_FREEZE_BUDGET_S
    restore_test_max_age_s: float | None = None  # None: no restore test expected
    commit_deadline_s: float | None = DEFAULT_COMMIT_DEADLINE_S
    source: str = "flags"  # "flags" or the policy file


@dataclass
class AppState:
    backups: int = 0  # committed
    last_committed: float | None = None  # point in time (first cut) of the newest committed backup
    last_commit_written: float | None = None  # when that record was written
    size_bytes: int | None = None
    files: int | None = None
    freeze_s: float | None = None  # the newest consistent point's freeze window
    last_uncommitted_run: float | None = None  # newest run newer than the newest backup, not committed
    uncommitted_runs: int = 0
    verify_ok: bool | None = None  # the newest verify run record
    verify_time: float | None = None
    restore_test_ok: bool | None = None  # the newest restore-test run record
    restore_test_time: float | None = None
    restore_test_last_success: float | None = None
    source: str = "app"  # what the newest committed backup protects: app, etcd, registry, bucket
    anomaly_score: float | None = None  # the newest committed backup's anomaly (None: not judged)
    anomaly_flagged: bool | None = None


def app_states(summaries: Iterable[Summary]) -> dict[AppKey, AppState]:
    items = list(summaries)
    app_of_group: dict[str, AppKey] = {}
    snapshot_time: dict[str, float] = {}  # group -> when its source step took its snapshot
    for s in items:
        if s.app and s.group and s.kind in ("backups", "consistent-point", *SOURCE_RUN_NAMES):
            app_of_group.setdefault(s.group, s.app)
        if s.kind in SOURCE_RUN_NAMES and s.group and s.time is not None:
            snapshot_time[s.group] = min(s.time, snapshot_time.get(s.group, s.time))
    committed_groups = {s.group for s in items if s.kind == "backups"}
    by_app: dict[AppKey, list[Summary]] = defaultdict(list)
    for s in items:
        app = s.app or (app_of_group.get(s.group) if s.group else None)
        if app is not None:
            by_app[app].append(s)
    out: dict[AppKey, AppState] = {}
    for app, mine in by_app.items():
        st = AppState()
        backups = [
            # (a source's backup record without source.time: its step's run record says when)
            replace(s, point_in_time=snapshot_time[s.group])
            if s.source != "app" and s.source_time is None and s.group in snapshot_time
            else s
            for s in mine
            if s.kind == "backups"
        ]
        st.backups = len(backups)
        if backups:
            newest = max(backups, key=lambda s: (s.point_in_time or 0.0, s.time or 0.0))
            st.last_committed = newest.point_in_time
            st.last_commit_written = newest.time
            st.size_bytes, st.files, st.freeze_s = newest.size_bytes, newest.files, newest.freeze_s
            st.source = newest.source
            st.anomaly_score, st.anomaly_flagged = newest.anomaly_score, newest.anomaly_flagged
        cps = [s for s in mine if s.kind == "consistent-point" and s.time is not None]
        sources = [s for s in mine if s.kind in SOURCE_RUN_NAMES and s.time is not None]
        if not backups and sources:  # only runs that never committed: what they back up
            st.source = max(sources, key=lambda s: s.time or 0.0).source
        if cps:
            newest_cp = max(cps, key=lambda s: s.time or 0.0)
            if newest_cp.freeze_s is not None:
                st.freeze_s = newest_cp.freeze_s
        after = st.last_committed or 0.0
        pending = [
            s.time
            for s in (*cps, *sources)  # (a source's run has no consistent point: its step's record)
            if s.group not in committed_groups and s.time is not None and s.time > after
        ]
        st.uncommitted_runs = len(pending)
        st.last_uncommitted_run = max(pending) if pending else None
        verifies = [s for s in mine if s.kind == "verify" and s.time is not None]
        if verifies:
            v = max(verifies, key=lambda s: s.time or 0.0)
            st.verify_ok, st.verify_time = v.ok, v.time
        tests = [s for s in mine if s.kind == "restore-test" and s.time is not None]
        if tests:
            t = max(tests, key=lambda s: s.time or 0.0)
            st.restore_test_ok, st.restore_test_time = t.ok, t.time
            passed = [s.time for s in tests if s.ok and s.time is not None]
            st.restore_test_last_success = max(passed) if passed else None
        out[app] = st
    return out


def targets_from_policies(paths: Sequence[str], default: Targets) -> dict[AppKey, Targets]:
    """Per app of the policy files: the RPO from its schedule (the longest gap between two fire times
    plus the start deadline, as the report judges it; the default when it has none), the freeze budget
    from its freeze deadline, the restore-test age from its check schedule when it tests restores (none
    when it does not), and its backup's activeDeadlineSeconds. Raises PolicyError listing problems."""
    import time

    from workflows.policy import load_policies
    from workflows.schedule import CronSchedule

    now = time.time()
    out: dict[AppKey, Targets] = {}
    for item in load_policies(paths):
        p, spec = item.policy, item.policy.spec
        rpo = default.rpo_s
        restore_age = None
        if spec.schedule is not None:
            grace = float(spec.schedule.starting_deadline_seconds or 600)
            cron = CronSchedule.parse(spec.schedule.cron, spec.schedule.timezone)
            rpo = cron.interval_s(now - 7 * 86400) + grace
            if spec.verify.restore_test is not None and spec.schedule.check:
                check = CronSchedule.parse(spec.schedule.check, spec.schedule.timezone)
                restore_age = check.interval_s(now - 7 * 86400) + 86400.0
        if spec.verify.restore_test is not None and restore_age is None:
            restore_age = default.restore_test_max_age_s or DEFAULT_RESTORE_TEST_MAX_AGE_S
        out[(spec.cluster, p.namespace, p.app)] = replace(
            default,
            rpo_s=rpo,
            freeze_budget_s=float(spec.freeze.deadline_seconds),
            restore_test_max_age_s=restore_age,
            commit_deadline_s=float(spec.workflow.active_deadline_seconds),
            source=item.source,
        )
    return out
