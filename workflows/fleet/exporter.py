"""The metrics exporter: repositories' committed backup records as Prometheus metrics.

:class:`Exporter` reads each repository on an interval in a background thread (records only, through
a :class:`~workflows.fleet.records.RecordCache` per repository, so a refresh opens only new records) and
keeps the metric families of the last refresh; a scrape serves them and never touches a repository.
App metrics carry ``cluster``, ``namespace``, ``app``, ``source`` (what the backups protect: ``app``,
``etcd``, ``registry`` or ``bucket``) and ``repository`` (the repository's URL); repository metrics
carry ``repository``. An unreachable repository is ``snapflow_repository_up 0`` plus one more
``snapflow_repository_errors_total``; the apps it held keep their last known values (so an RPO alert
keeps judging the newest backup known). :data:`METRICS` names every metric served (the alert rules and
docs/user/metrics.md use these names). Called by ``snapflow exporter``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from steps.api import Repository, open_repository
from workflows.fleet.model import AppKey, AppState, Targets, app_states
from workflows.fleet.records import RecordCache

log = logging.getLogger("snapflow.exporter")

# ``source``: what the app's backups protect (app, etcd, registry, bucket); ``repository``: its URL
APP_LABELS = ("cluster", "namespace", "app", "source", "repository")
REPO_LABELS = ("repository",)

# name -> (type, help); app metrics carry APP_LABELS, repository metrics REPO_LABELS
APP_METRICS: dict[str, tuple[str, str]] = {
    "snapflow_backup_last_committed_timestamp_seconds": (
        "gauge",
        "Point in time of the newest committed backup (its first volume cut; a source's: its snapshot's time).",
    ),
    "snapflow_backup_committed": ("gauge", "Committed backups the repository holds."),
    "snapflow_backup_rpo_target_seconds": ("gauge", "Recovery point objective: the longest allowed age."),
    "snapflow_backup_size_bytes": ("gauge", "Size of the volumes of the newest committed backup."),
    "snapflow_backup_files": ("gauge", "Files in the volumes of the newest committed backup."),
    "snapflow_backup_uncommitted_runs": (
        "gauge",
        "Runs newer than the newest committed backup that have no committed record.",
    ),
    "snapflow_backup_last_uncommitted_run_timestamp_seconds": (
        "gauge",
        "Consistent point (a source's: snapshot time) of the newest run newer than the newest committed"
        " backup without a committed record.",
    ),
    "snapflow_backup_commit_deadline_seconds": (
        "gauge",
        "How long a run may take before its record should be committed.",
    ),
    "snapflow_freeze_window_seconds": ("gauge", "Freeze window of the newest consistent point."),
    "snapflow_freeze_budget_seconds": ("gauge", "The longest freeze window allowed."),
    "snapflow_verify_last_ok": ("gauge", "1 when the newest verify run record passed, else 0."),
    "snapflow_verify_last_timestamp_seconds": ("gauge", "Time of the newest verify run record."),
    "snapflow_restore_test_last_ok": ("gauge", "1 when the newest restore test passed, else 0."),
    "snapflow_restore_test_last_success_timestamp_seconds": (
        "gauge",
        "Time of the newest restore test that passed (0: none).",
    ),
    "snapflow_restore_test_max_age_seconds": ("gauge", "The longest allowed age of a passing restore test."),
    "snapflow_backup_anomaly_score": (
        "gauge",
        "Anomaly score of the newest committed backup against the app's own history (records that carry one).",
    ),
    "snapflow_backup_anomaly_flagged": (
        "gauge",
        "1 when the newest committed backup was flagged as an anomaly, else 0 (records that carry one).",
    ),
}
REPO_METRICS: dict[str, tuple[str, str]] = {
    "snapflow_repository_up": ("gauge", "1 when the last refresh read the repository, else 0."),
    "snapflow_repository_errors": ("counter", "Refreshes that could not read the repository."),
    "snapflow_repository_refresh_duration_seconds": ("gauge", "Duration of the last refresh."),
    "snapflow_repository_last_refresh_timestamp_seconds": ("gauge", "End of the last successful refresh."),
    "snapflow_repository_records": ("gauge", "Backup and run records the exporter holds in its cache."),
    "snapflow_repository_damaged_records": ("gauge", "Backup and run records that do not open."),
}
# names as a scrape shows them (a counter gets _total)
METRICS = sorted(
    [*APP_METRICS, *(f"{n}_total" if t == "counter" else n for n, (t, _) in REPO_METRICS.items())]
)


@dataclass
class RepositoryState:
    url: str
    cache: RecordCache = field(default_factory=RecordCache)
    repo: Repository | None = None
    up: bool = False
    errors: int = 0
    last_error: str | None = None
    refresh_s: float | None = None
    last_refresh: float | None = None
    apps: dict[AppKey, AppState] = field(default_factory=dict)


def _describe(err: Exception) -> str:
    text = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {text}"[:300]


class Exporter(Collector):
    """Refreshes ``repos`` every ``interval_s`` in a background thread; collects the last refresh."""

    def __init__(
        self,
        repos: Sequence[str],
        *,
        endpoint: str | None = None,
        interval_s: float = 60.0,
        default_targets: Targets | None = None,
        targets: dict[AppKey, Targets] | None = None,
        opener: Callable[[str], Repository] | None = None,
    ):
        self.states = [RepositoryState(url) for url in repos]
        self.interval_s = interval_s
        self.default_targets = default_targets or Targets()
        self.targets = targets or {}
        self._open = opener or (lambda url: open_repository(url, endpoint))
        self._lock = threading.Lock()
        self._families: list = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.refreshes = 0

    # -- refreshing ----------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Read every repository once (new records only) and replace what a scrape serves."""
        for st in self.states:
            t0 = time.monotonic()
            try:
                if st.repo is None:
                    st.repo = self._open(st.url)
                stats = st.cache.refresh(st.repo)
                st.apps = app_states(st.cache.summaries())
                st.up, st.last_error, st.last_refresh = True, None, time.time()
                log.info(
                    "%s: %d record(s) listed, %d read, %.3f s",
                    st.url,
                    stats.listed,
                    stats.read,
                    stats.seconds,
                )
            except Exception as err:  # one repository's failure never stops the others or the scrape
                st.up, st.errors, st.last_error = False, st.errors + 1, _describe(err)
                st.repo = None  # opened again next time (the key or the endpoint may have changed)
                log.warning("%s: cannot read the repository: %s", st.url, st.last_error)
            st.refresh_s = time.monotonic() - t0
        families = self._build()
        with self._lock:
            self._families = families
            self.refreshes += 1

    def start(self) -> None:
        """A first refresh in the background thread, then one every ``interval_s``."""

        def loop() -> None:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    self.refresh()
                except Exception:  # (a bug in building the families must not end the loop)
                    log.exception("refresh failed")
                self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))

        self._thread = threading.Thread(target=loop, name="snapflow-exporter-refresh", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    # -- what a scrape serves ----------------------------------------------------------------------
    def collect(self):
        with self._lock:
            families = list(self._families)
        yield from families

    def describe(self):
        return []  # (families differ between refreshes: no fixed description)

    def targets_of(self, app: AppKey) -> Targets:
        return self.targets.get(app, self.default_targets)

    def _build(self) -> list:
        fam = {}
        for name, (_kind, text) in APP_METRICS.items():
            fam[name] = GaugeMetricFamily(name, text, labels=APP_LABELS)
        for name, (kind, text) in REPO_METRICS.items():
            cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            fam[name] = cls(name, text, labels=REPO_LABELS)

        def put(name: str, labels: list[str], value: float | int | bool | None) -> None:
            if value is not None:
                fam[name].add_metric(labels, float(value))

        for st in self.states:
            src = [st.url]  # (REPO_LABELS)
            put("snapflow_repository_up", src, st.up)
            put("snapflow_repository_errors", src, st.errors)
            put("snapflow_repository_refresh_duration_seconds", src, st.refresh_s)
            put("snapflow_repository_last_refresh_timestamp_seconds", src, st.last_refresh)
            put("snapflow_repository_records", src, len(st.cache.entries))
            put("snapflow_repository_damaged_records", src, st.cache.damaged())
            for (cluster, namespace, app), a in sorted(st.apps.items()):
                labels = [cluster, namespace, app, a.source, st.url]
                t = self.targets_of((cluster, namespace, app))
                put("snapflow_backup_last_committed_timestamp_seconds", labels, a.last_committed)
                put("snapflow_backup_committed", labels, a.backups)
                put("snapflow_backup_rpo_target_seconds", labels, t.rpo_s)
                put("snapflow_backup_size_bytes", labels, a.size_bytes)
                put("snapflow_backup_files", labels, a.files)
                put("snapflow_backup_uncommitted_runs", labels, a.uncommitted_runs)
                put("snapflow_backup_last_uncommitted_run_timestamp_seconds", labels, a.last_uncommitted_run)
                put("snapflow_backup_commit_deadline_seconds", labels, t.commit_deadline_s)
                put("snapflow_freeze_window_seconds", labels, a.freeze_s)
                put("snapflow_freeze_budget_seconds", labels, t.freeze_budget_s)
                put("snapflow_verify_last_ok", labels, a.verify_ok)
                put("snapflow_backup_anomaly_score", labels, a.anomaly_score)
                put("snapflow_backup_anomaly_flagged", labels, a.anomaly_flagged)
                put("snapflow_verify_last_timestamp_seconds", labels, a.verify_time)
                put("snapflow_restore_test_last_ok", labels, a.restore_test_ok)
                if t.restore_test_max_age_s is not None:
                    put("snapflow_restore_test_max_age_seconds", labels, t.restore_test_max_age_s)
                    put(
                        "snapflow_restore_test_last_success_timestamp_seconds",
                        labels,
                        a.restore_test_last_success or 0.0,
                    )
                elif a.restore_test_last_success is not None:
                    put(
                        "snapflow_restore_test_last_success_timestamp_seconds",
                        labels,
                        a.restore_test_last_success,
                    )
        return list(fam.values())


def registry_for(exporter: Exporter) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(exporter)
    return registry


def serve(exporter: Exporter, host: str, port: int):
    """Serve ``/metrics`` of ``exporter`` on ``host:port`` (0: a free port); returns (server, thread)."""
    from prometheus_client import start_http_server

    return start_http_server(port, addr=host, registry=registry_for(exporter))
