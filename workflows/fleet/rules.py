"""The shipped alerts: a PrometheusRule over the exporter's metrics, one runbook per alert.

:data:`ALERTS` defines each alert (name, expression, ``for``, severity, summary, runbook slug);
:func:`prometheus_rule` renders them as a Prometheus Operator PrometheusRule, :func:`rule_groups` as
the plain rule file promtool reads (``spec.groups``). Every expression uses only metrics
:data:`workflows.fleet.exporter.METRICS` names; tests/unit/test_fleet_rules.py runs them through
``promtool test rules`` and checks the names against a running exporter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

GROUP = "snapflow.alerts"
DEFAULT_RUNBOOK_BASE = "docs/runbooks"
_NAME_RE = re.compile(r"\b(snapflow_[a-z0-9_]+)\b")


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    for_: str
    severity: str
    summary: str
    description: str
    runbook: str  # docs/runbooks/<runbook>.md

    def metrics(self) -> set[str]:
        return set(_NAME_RE.findall(self.expr))


ALERTS: tuple[Alert, ...] = (
    Alert(
        "SnapflowRPOMissed",
        "(time() - snapflow_backup_last_committed_timestamp_seconds > snapflow_backup_rpo_target_seconds)"
        " or (snapflow_backup_committed == 0)",
        "15m",
        "critical",
        "{{ $labels.namespace }}/{{ $labels.app }} ({{ $labels.cluster }}): no committed backup within its RPO",
        "The newest committed backup of {{ $labels.app }} in {{ $labels.repository }} is older than its recovery"
        " point objective (or there is none): a restore now would lose more data than allowed.",
        "rpo-missed",
    ),
    Alert(
        "SnapflowBackupNotCommitted",
        "(snapflow_backup_uncommitted_runs > 0) and (time() -"
        " snapflow_backup_last_uncommitted_run_timestamp_seconds > snapflow_backup_commit_deadline_seconds)",
        "10m",
        "warning",
        "{{ $labels.namespace }}/{{ $labels.app }} ({{ $labels.cluster }}): a backup run was never committed",
        "{{ $value }} run(s) of {{ $labels.app }} newer than its newest committed backup have no committed"
        " record after the run's deadline: they failed, were stopped, or finalize refused the commit.",
        "backup-not-committed",
    ),
    Alert(
        "SnapflowFreezeWindowOverBudget",
        "snapflow_freeze_window_seconds > snapflow_freeze_budget_seconds",
        "0m",
        "warning",
        "{{ $labels.namespace }}/{{ $labels.app }} ({{ $labels.cluster }}): the app stayed frozen {{ $value }} s,"
        " over its budget",
        "The newest consistent point of {{ $labels.app }} held the app quiesced longer than its freeze budget.",
        "freeze-window-over-budget",
    ),
    Alert(
        "SnapflowVerifyFailed",
        "snapflow_verify_last_ok == 0",
        "0m",
        "critical",
        "{{ $labels.namespace }}/{{ $labels.app }} ({{ $labels.cluster }}): the newest verify failed",
        "The newest verify of {{ $labels.app }} in {{ $labels.repository }} did not read back what the backup"
        " wrote; that backup is not committed, and the repository may be damaged.",
        "verify-failed",
    ),
    Alert(
        "SnapflowRestoreTestStale",
        "time() - snapflow_restore_test_last_success_timestamp_seconds > snapflow_restore_test_max_age_seconds",
        "30m",
        "warning",
        "{{ $labels.namespace }}/{{ $labels.app }} ({{ $labels.cluster }}): no passing restore test recently",
        "No restore test of {{ $labels.app }} passed within its allowed age: nobody knows that its backups restore.",
        "restore-test-stale",
    ),
    Alert(
        "SnapflowBackupAnomaly",
        "snapflow_backup_anomaly_score and on (cluster, namespace, app, source, repository)"
        " (snapflow_backup_anomaly_flagged == 1)",
        "0m",
        "warning",
        "{{ $labels.namespace }}/{{ $labels.app }} ({{ $labels.cluster }}): the newest backup is unlike its"
        " history (anomaly score {{ $value }})",
        "The newest committed backup of {{ $labels.app }} ({{ $labels.source }}) in {{ $labels.repository }}"
        " changed far more than its own history predicts (new data, incompressible data, deleted or renamed"
        " files): mass encryption or deletion may be under way. Its record names the reasons; protect the"
        " last good backup before retention removes it.",
        "backup-anomaly",
    ),
    Alert(
        "SnapflowRepositoryUnreachable",
        "snapflow_repository_up == 0",
        "10m",
        "critical",
        "repository {{ $labels.repository }} cannot be read",
        "The exporter could not read {{ $labels.repository }}: its other metrics show the last values read, and"
        " backups writing there may fail too.",
        "repository-unreachable",
    ),
)


def metrics_used() -> set[str]:
    return set().union(*(a.metrics() for a in ALERTS))


def rule_groups(runbook_base: str = DEFAULT_RUNBOOK_BASE) -> list[dict[str, Any]]:
    base = runbook_base.rstrip("/")
    rules = [
        {
            "alert": a.name,
            "expr": a.expr,
            "for": a.for_,
            "labels": {"severity": a.severity},
            "annotations": {
                "summary": a.summary,
                "description": a.description,
                "runbook_url": f"{base}/{a.runbook}.md",
            },
        }
        for a in ALERTS
    ]
    return [{"name": GROUP, "rules": rules}]


def prometheus_rule(
    namespace: str,
    name: str = "snapflow",
    labels: dict[str, str] | None = None,
    runbook_base: str = DEFAULT_RUNBOOK_BASE,
) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {})},
        "spec": {"groups": rule_groups(runbook_base)},
    }
