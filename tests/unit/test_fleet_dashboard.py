"""The Grafana dashboard: an overview and a drill-down, every panel query parses (promtool, each query
wrapped as a recording rule), and its variables filter the drill-down. That a running exporter serves
every metric the panels use is checked in test_fleet_exporter.py."""

from __future__ import annotations

import json
import shutil
import subprocess

import yaml

from workflows.fleet import dashboard

PROMTOOL = shutil.which("promtool")


def test_the_dashboard_has_an_overview_and_a_drill_down_filtered_by_its_variables():
    model = dashboard.build()
    rows = [p["title"] for p in model["panels"] if p["type"] == "row"]
    assert rows == ["Fleet overview", "App: $cluster / $namespace / $app"]
    assert model["uid"] == dashboard.UID
    assert [v["name"] for v in model["templating"]["list"]] == ["datasource", "cluster", "namespace", "app"]
    drill = [p for p in model["panels"] if p["type"] == "timeseries"]
    app_queries = [t["expr"] for p in drill for t in p["targets"] if "snapflow_repository" not in t["expr"]]
    assert app_queries and all(dashboard.APP in q for q in app_queries)
    json.dumps(model)  # (plain JSON)


def test_every_panel_query_parses(tmp_path):
    assert PROMTOOL, "promtool is missing: scripts/system-deps.sh installs Debian's prometheus package"
    # GIVEN every panel query, the variables replaced by what 'All' selects
    queries = [
        q.replace("$cluster", ".*").replace("$namespace", ".*").replace("$app", ".*")
        for q in dashboard.queries(dashboard.build())
    ]
    assert len(queries) >= 15
    rules = [{"record": f"snapflow:dashboard_query_{i}", "expr": q} for i, q in enumerate(queries)]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    # WHEN promtool checks them as recording rules, THEN they parse
    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # (and a broken query would not)
    path.write_text(
        yaml.safe_dump({"groups": [{"name": "d", "rules": [{"record": "x:y", "expr": queries[0] + ")"}]}]})
    )
    assert (
        subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, timeout=60).returncode
        != 0
    )
