"""The Grafana dashboard of the exporter's metrics: a fleet overview and a per-app drill-down.

Built with grafana-foundation-sdk (the Grafana 11 build, pinned in pyproject.toml). The overview
counts what the alerts count (apps past their RPO, runs not committed, verify failures, stale restore
tests, backups flagged as anomalies, unreadable repositories) and lists every app (its ``source``:
app, etcd, registry, bucket) with the age of its newest committed backup; the
drill-down shows one app (variables ``cluster``, ``namespace``, ``app``) over time. :func:`queries`
lists every panel query, so the tests can parse them with promtool and check their metrics against a
running exporter. Called by ``snapflow exporter --dashboard`` and ``--render`` (a ConfigMap for
Grafana's dashboard sidecar).
"""

from __future__ import annotations

import json
import re
from typing import Any

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as models
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

UID = "snapflow-fleet"
TITLE = "Snapflow: backups across the fleet"
DATASOURCE = models.DataSourceRef(type_val="prometheus", uid="${datasource}")
APP = 'cluster=~"$cluster", namespace=~"$namespace", app=~"$app"'
_NAME_RE = re.compile(r"\b(snapflow_[a-z0-9_]+)\b")

# (title, query, unit, description) of the overview's counters
OVERVIEW = [
    (
        "Apps past their RPO",
        "count((time() - snapflow_backup_last_committed_timestamp_seconds > snapflow_backup_rpo_target_seconds)"
        " or (snapflow_backup_committed == 0)) or vector(0)",
        "none",
        "Apps whose newest committed backup is older than their RPO target, or that have none.",
    ),
    (
        "Runs not committed",
        "sum(snapflow_backup_uncommitted_runs) or vector(0)",
        "none",
        "Runs newer than their app's newest committed backup without a committed record.",
    ),
    (
        "Verify failed",
        "count(snapflow_verify_last_ok == 0) or vector(0)",
        "none",
        "Apps whose newest verify failed.",
    ),
    (
        "Restore tests stale",
        "count(time() - snapflow_restore_test_last_success_timestamp_seconds"
        " > snapflow_restore_test_max_age_seconds) or vector(0)",
        "none",
        "Apps without a passing restore test within its allowed age.",
    ),
    (
        "Backups flagged as anomalies",
        "count(snapflow_backup_anomaly_flagged == 1) or vector(0)",
        "none",
        "Apps whose newest committed backup changed far more than their history predicts (possible"
        " ransomware or mass deletion).",
    ),
    (
        "Repositories unreadable",
        "count(snapflow_repository_up == 0) or vector(0)",
        "none",
        "Repositories the exporter could not read at its last refresh.",
    ),
]

# (reference, query, column) of the overview's table: one row per app
TABLE = [
    ("A", "time() - snapflow_backup_last_committed_timestamp_seconds", "Newest backup age"),
    ("B", "snapflow_backup_rpo_target_seconds", "RPO target"),
    ("C", "snapflow_backup_size_bytes", "Size"),
    ("D", "snapflow_freeze_window_seconds", "Freeze window"),
    ("E", "snapflow_verify_last_ok", "Verify ok"),
    ("F", "snapflow_backup_anomaly_score", "Anomaly score"),
]

# (title, [(query, legend)], unit) of the drill-down's time series
DRILL_DOWN = [
    (
        "Age of the newest committed backup vs RPO",
        [
            (f"time() - snapflow_backup_last_committed_timestamp_seconds{{{APP}}}", "age {{app}}"),
            (f"snapflow_backup_rpo_target_seconds{{{APP}}}", "RPO {{app}}"),
        ],
        "s",
    ),
    (
        "Freeze window vs budget",
        [
            (f"snapflow_freeze_window_seconds{{{APP}}}", "freeze {{app}}"),
            (f"snapflow_freeze_budget_seconds{{{APP}}}", "budget {{app}}"),
        ],
        "s",
    ),
    ("Size of the newest backup", [(f"snapflow_backup_size_bytes{{{APP}}}", "{{app}}")], "bytes"),
    (
        "Committed backups and uncommitted runs",
        [
            (f"snapflow_backup_committed{{{APP}}}", "committed {{app}}"),
            (f"snapflow_backup_uncommitted_runs{{{APP}}}", "uncommitted {{app}}"),
        ],
        "none",
    ),
    (
        "Verify and restore test passed (1) or failed (0)",
        [
            (f"snapflow_verify_last_ok{{{APP}}}", "verify {{app}}"),
            (f"snapflow_restore_test_last_ok{{{APP}}}", "restore test {{app}}"),
        ],
        "none",
    ),
    (
        "Anomaly of the newest backup: score, flagged (1)",
        [
            (f"snapflow_backup_anomaly_score{{{APP}}}", "score {{app}}"),
            (f"snapflow_backup_anomaly_flagged{{{APP}}}", "flagged {{app}}"),
        ],
        "none",
    ),
    (
        "Repository reads",
        [
            ("snapflow_repository_up", "up {{repository}}"),
            ("snapflow_repository_refresh_duration_seconds", "refresh s {{repository}}"),
        ],
        "none",
    ),
]


def _query(expr: str, ref: str, legend: str | None = None, *, instant: bool = False) -> prometheus.Dataquery:
    q = prometheus.Dataquery().expr(expr).ref_id(ref).datasource(DATASOURCE)
    if legend:
        q = q.legend_format(legend)
    if instant:
        q = q.instant().format(PromQueryFormat.TABLE)
    return q


def _variable(name: str, query: str) -> dash.QueryVariable:
    return (
        dash.QueryVariable(name)
        .label(name)
        .datasource(DATASOURCE)
        .query({"query": query, "refId": name})
        .refresh(models.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(models.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )


def build() -> dict[str, Any]:
    """The dashboard as Grafana's JSON model (a plain dict)."""
    board = (
        dash.Dashboard(TITLE)
        .uid(UID)
        .tags(["snapflow", "backup"])
        .description(
            "From the exporter's reading of the repositories' committed records (docs/user/metrics.md)."
        )
        .refresh("1m")
        .time("now-7d", "now")
        .timezone("browser")
        .with_variable(dash.DatasourceVariable("datasource").label("Data source").type("prometheus"))
        .with_variable(_variable("cluster", "label_values(snapflow_backup_committed, cluster)"))
        .with_variable(
            _variable("namespace", 'label_values(snapflow_backup_committed{cluster=~"$cluster"}, namespace)')
        )
        .with_variable(
            _variable(
                "app",
                'label_values(snapflow_backup_committed{cluster=~"$cluster", namespace=~"$namespace"}, app)',
            )
        )
        .with_row(dash.Row("Fleet overview"))
    )
    for title, expr, unit, description in OVERVIEW:
        board = board.with_panel(
            stat.Panel()
            .title(title)
            .description(description)
            .with_target(_query(expr, "A", instant=True))
            .unit(unit)
            .height(4)
            .span(24 // len(OVERVIEW))
            .thresholds(
                dash.ThresholdsConfig()
                .mode(models.ThresholdsMode.ABSOLUTE)
                .steps(
                    [
                        models.Threshold(value=None, color="green"),
                        models.Threshold(value=1, color="red"),
                    ]
                )
            )
        )
    apps = table.Panel().title("Apps").description("Every app the exporter reads, newest backup first.")
    for ref, expr, _column in TABLE:
        apps = apps.with_target(_query(expr, ref, instant=True))
    apps = (
        apps.with_transformation(models.DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(
            models.DataTransformerConfig(
                id_val="organize",
                options={
                    "excludeByName": {"Time": True},
                    "renameByName": {f"Value #{ref}": column for ref, _e, column in TABLE},
                },
            )
        )
        .override_by_name("Newest backup age", [models.DynamicConfigValue(id_val="unit", value="s")])
        .override_by_name("RPO target", [models.DynamicConfigValue(id_val="unit", value="s")])
        .override_by_name("Size", [models.DynamicConfigValue(id_val="unit", value="bytes")])
        .override_by_name("Freeze window", [models.DynamicConfigValue(id_val="unit", value="s")])
        .sort_by([common_builders.TableSortByFieldState().display_name("Newest backup age").desc(True)])
        .height(10)
        .span(24)
    )
    board = board.with_panel(apps).with_row(dash.Row("App: $cluster / $namespace / $app"))
    for title, series, unit in DRILL_DOWN:
        panel = timeseries.Panel().title(title).unit(unit).height(8).span(12)
        for n, (expr, legend) in enumerate(series):
            panel = panel.with_target(_query(expr, "ABCDEFGH"[n], legend))
        board = board.with_panel(panel)
    return json.loads(json.dumps(board.build(), cls=JSONEncoder))


def to_json(model: dict[str, Any]) -> str:
    return json.dumps(model, indent=2, sort_keys=True) + "\n"


def queries(model: dict[str, Any]) -> list[str]:
    """Every PromQL expression of the dashboard's panels and variables (variables as written)."""
    out: list[str] = []

    def panels(items):
        for p in items or []:
            yield p
            yield from panels(p.get("panels"))

    for p in panels(model.get("panels")):
        out += [t["expr"] for t in p.get("targets") or [] if t.get("expr")]
    return out


def metrics_used(model: dict[str, Any]) -> set[str]:
    return {m for q in queries(model) for m in _NAME_RE.findall(q)}
