"""The shipped alerts: promtool checks the rule file taken from the rendered PrometheusRule, and unit-tests
every alert with synthetic series (firing when it must, silent when it must not); every alert has a
runbook in docs/runbooks/."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

from workflows.fleet import objects, rules

ROOT = Path(__file__).resolve().parents[2]
PROMTOOL = shutil.which("promtool")
LATE = {
    "cluster": "east",
    "namespace": "shop",
    "app": "orders-db",
    "source": "app",
    "repository": "s3://backups/shop",
}
FINE = {**LATE, "app": "carts-db"}
ETCD = {**LATE, "namespace": "snapflow-etcd", "app": "cluster-etcd", "source": "etcd"}


def series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


def expected(alert: rules.Alert, labels: dict[str, str], value: str) -> dict:
    """The alert as promtool reports it: its labels and its annotations with the templates expanded."""

    def expand(text: str) -> str:
        text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], text)
        return text.replace("{{ $value }}", value)

    group = rules.rule_groups()[0]["rules"]
    rule = next(r for r in group if r["alert"] == alert.name)
    return {
        "exp_labels": {**labels, "severity": alert.severity},
        "exp_annotations": {k: expand(v) for k, v in rule["annotations"].items()},
    }


ALERT = {a.name: a for a in rules.ALERTS}


def case(alert: str, input_series: list[dict], quiet_at: str, firing_at: str, firing: list[tuple[dict, str]]):
    return {
        "interval": "1m",
        "input_series": input_series,
        "alert_rule_test": [
            {"eval_time": quiet_at, "alertname": alert, "exp_alerts": []},
            {
                "eval_time": firing_at,
                "alertname": alert,
                "exp_alerts": [expected(ALERT[alert], labels, value) for labels, value in firing],
            },
        ],
    }


CASES = [
    # the newest backup was cut at 0 with a 1 h RPO; the other app commits every minute; a third has none
    case(
        "SnapflowRPOMissed",
        [
            series("snapflow_backup_last_committed_timestamp_seconds", LATE, "0x200"),
            series("snapflow_backup_committed", LATE, "3x200"),
            series("snapflow_backup_rpo_target_seconds", LATE, "3600x200"),
            series("snapflow_backup_last_committed_timestamp_seconds", FINE, "0+60x200"),
            series("snapflow_backup_committed", FINE, "3+1x200"),
            series("snapflow_backup_rpo_target_seconds", FINE, "3600x200"),
        ],
        "50m",
        "2h",
        [(LATE, "7200")],
    ),
    case(
        "SnapflowRPOMissed",
        [
            series("snapflow_backup_committed", {**LATE, "app": "never"}, "0x200"),
            series("snapflow_backup_rpo_target_seconds", {**LATE, "app": "never"}, "3600x200"),
        ],
        "10m",
        "20m",
        [({**LATE, "app": "never"}, "0")],
    ),
    # a run cut at 0 is still uncommitted after its 1 h deadline; the other app has none pending
    case(
        "SnapflowBackupNotCommitted",
        [
            series("snapflow_backup_uncommitted_runs", LATE, "1x200"),
            series("snapflow_backup_last_uncommitted_run_timestamp_seconds", LATE, "0x200"),
            series("snapflow_backup_commit_deadline_seconds", LATE, "3600x200"),
            series("snapflow_backup_uncommitted_runs", FINE, "0x200"),
            series("snapflow_backup_commit_deadline_seconds", FINE, "3600x200"),
        ],
        "50m",
        "2h",
        [(LATE, "1")],
    ),
    case(
        "SnapflowFreezeWindowOverBudget",
        [
            series("snapflow_freeze_window_seconds", LATE, "0.04x5 45x30"),
            series("snapflow_freeze_budget_seconds", LATE, "30x40"),
            series("snapflow_freeze_window_seconds", FINE, "0.04x40"),
            series("snapflow_freeze_budget_seconds", FINE, "30x40"),
        ],
        "3m",
        "10m",
        [(LATE, "45")],
    ),
    case(
        "SnapflowVerifyFailed",
        [
            series("snapflow_verify_last_ok", LATE, "1x5 0x30"),
            series("snapflow_verify_last_ok", FINE, "1x40"),
        ],
        "3m",
        "10m",
        [(LATE, "0")],
    ),
    # the last passing restore test was at 0, the allowed age a day; the other app tests hourly
    case(
        "SnapflowRestoreTestStale",
        [
            series("snapflow_restore_test_last_success_timestamp_seconds", LATE, "0x1600"),
            series("snapflow_restore_test_max_age_seconds", LATE, "86400x1600"),
            series("snapflow_restore_test_last_success_timestamp_seconds", FINE, "0+60x1600"),
            series("snapflow_restore_test_max_age_seconds", FINE, "86400x1600"),
        ],
        "23h",
        "25h",
        [(LATE, "3600")],
    ),
    case(
        "SnapflowRepositoryUnreachable",
        [
            series("snapflow_repository_up", {"repository": "s3://backups/shop"}, "0x40"),
            series("snapflow_repository_up", {"repository": "s3://backups/erp"}, "1x40"),
        ],
        "5m",
        "15m",
        [({"repository": "s3://backups/shop"}, "0")],
    ),
    # an app's newest backup is flagged from 5m on (score 7.5); the etcd backup scores 2.1, not flagged,
    # and a third app's record carries no anomaly at all (older records)
    case(
        "SnapflowBackupAnomaly",
        [
            series("snapflow_backup_anomaly_score", LATE, "0.4x5 7.5x30"),
            series("snapflow_backup_anomaly_flagged", LATE, "0x5 1x30"),
            series("snapflow_backup_anomaly_score", ETCD, "2.1x40"),
            series("snapflow_backup_anomaly_flagged", ETCD, "0x40"),
            series("snapflow_backup_committed", FINE, "3x40"),
        ],
        "3m",
        "10m",
        [(LATE, "7.5")],
    ),
]


def rule_file_from_the_rendered_object(tmp_path: Path) -> Path:
    rendered = objects.render_objects(
        objects.DeploySettings(namespace="monitoring", repos=("s3://backups/shop",))
    )
    rule = next(o for o in rendered if o["kind"] == "PrometheusRule")
    path = tmp_path / "snapflow-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    return path


def test_promtool_checks_the_rules_of_the_rendered_prometheus_rule(tmp_path):
    assert PROMTOOL, "promtool is missing: scripts/system-deps.sh installs Debian's prometheus package"
    path = rule_file_from_the_rendered_object(tmp_path)
    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules.ALERTS)} rules found" in result.stdout


def test_every_alert_fires_on_its_synthetic_series_and_only_then(tmp_path):
    assert PROMTOOL, "promtool is missing: scripts/system-deps.sh installs Debian's prometheus package"
    # GIVEN the rule file and a test of each alert (a case that must fire, one that must stay silent)
    path = rule_file_from_the_rendered_object(tmp_path)
    assert {c["alert_rule_test"][0]["alertname"] for c in CASES} == set(ALERT)
    tests = tmp_path / "tests.yaml"
    tests.write_text(
        yaml.safe_dump(
            {"rule_files": [path.name], "evaluation_interval": "1m", "tests": CASES}, sort_keys=False
        )
    )
    # WHEN promtool runs them, THEN they pass
    result = subprocess.run(
        [PROMTOOL, "test", "rules", str(tests)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_fails_a_case_whose_alert_does_not_fire(tmp_path):
    # (the test above can fail: expecting an alert on healthy series is reported)
    path = rule_file_from_the_rendered_object(tmp_path)
    wrong = case(
        "SnapflowVerifyFailed",
        [series("snapflow_verify_last_ok", FINE, "1x40")],
        "3m",
        "10m",
        [(FINE, "0")],
    )
    tests = tmp_path / "tests.yaml"
    tests.write_text(yaml.safe_dump({"rule_files": [path.name], "tests": [wrong]}, sort_keys=False))
    result = subprocess.run(
        [PROMTOOL, "test", "rules", str(tests)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert result.returncode != 0


def test_every_alert_has_a_summary_and_a_runbook_in_docs():
    for group in rules.rule_groups():
        for rule in group["rules"]:
            assert rule["annotations"]["summary"], rule["alert"]
            link = rule["annotations"]["runbook_url"]
            assert link.startswith("docs/runbooks/"), link
            runbook = ROOT / link
            assert runbook.is_file(), f"{rule['alert']}: {link} is missing"
            assert rule["alert"] in runbook.read_text(), f"{link} does not name {rule['alert']}"


def test_the_runbook_base_is_where_the_links_point():
    rule = rules.prometheus_rule("monitoring", runbook_base="https://docs.example.org/snapflow/runbooks/")
    links = [r["annotations"]["runbook_url"] for r in rule["spec"]["groups"][0]["rules"]]
    assert links[0] == "https://docs.example.org/snapflow/runbooks/rpo-missed.md"
