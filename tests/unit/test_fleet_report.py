"""The fleet report's rows and record cache: one row per cluster x app from the repositories' records
(newest committed backup, RPO met / late / missing / unknown, verify, restore test, immutability,
anomaly), a repository that cannot be read on its own rows only, JSON and CSV exports, and a local
record cache that is read instead of the records, never trusted when it does not authenticate."""

from __future__ import annotations

import csv
import io
import json
import shutil
import socket
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from steps.api import Repository, open_repository, open_store
from tests.fixtures import policies
from tests.fixtures.s3 import set_test_client_settings
from workflows.cli import main
from workflows.fleetdef.model import load_fleet
from workflows.fleetdef.status import fleet_status
from workflows.report.fleet import fleet_report
from workflows.report.fleet_model import COLUMNS
from workflows.report.record_cache import RecordTable

NOW = time.time()
PASSWORD = "correct horse battery staple"
KDF = {"n": 1024, "r": 8, "p": 1}


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def commit(repo, app: dict, backup_id: str, t: float, *, verdict="app-consistent", anomaly=None, verify=True):
    """The records of one committed backup, written as finalize writes them: verify run, backup record."""
    repo.save_record(
        "runs", {"name": "verify", "backup_id": backup_id, "time": iso(t + 50), "ok": verify}, key=backup_id
    )
    record = {
        "version": 1,
        "backup_id": backup_id,
        "time": iso(t + 60),
        "workflow_status": "Succeeded",
        "app": app,
        "volumes": [{"name": "data", "files": 3, "bytes": 4096}],
        "consistency": {"verdict": verdict, "timeline": {"volumes": [{"name": "data", "cut": iso(t)}]}},
        "verify": {"ok": verify, "time": iso(t + 50)},
    }
    if anomaly is not None:
        record["anomaly"] = anomaly
    repo.save_record("backups", record, key=backup_id)


def new_repo(name: str) -> Repository:
    return Repository.init(open_store(f"mem://{name}-{time.monotonic_ns()}"), PASSWORD, kdf_params=KDF)


@pytest.fixture
def fleet_world(tmp_path, monkeypatch):
    """The example fleet with its repositories moved: prod-eu's two apps in two in-memory repositories,
    prod-us's behind an S3 endpoint nobody answers on. prod-eu's orders-db has Object Lock."""
    set_test_client_settings(monkeypatch)
    fleet_dir = tmp_path / "fleet"
    shutil.copytree(policies.EXAMPLES / "fleet", fleet_dir)
    doc = yaml.safe_load((fleet_dir / "fleet.yaml").read_text())
    down = f"http://127.0.0.1:{closed_port()}"
    doc["spec"]["overrides"] = [
        {
            "cluster": "prod-eu",
            "policies": ["shop/orders-db"],
            "repository": {"url": "s3://fleet-eu/shop", "objectLock": {"mode": "compliance", "days": 30}},
        },
        {"cluster": "prod-eu", "policies": ["wiki/wiki-db"], "repository": {"url": "s3://fleet-eu/wiki"}},
        {"cluster": "prod-us", "repository": {"url": "s3://fleet-us/shop", "endpoint": down}},
    ]
    (fleet_dir / "fleet.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    shop, wiki = new_repo("shop"), new_repo("wiki")
    orders = {"cluster": "prod-eu", "namespace": "shop", "name": "orders-db", "policy": "orders-db"}
    for day in (3, 2, 1):
        commit(shop, orders, f"o-{day}", NOW - day * 86400 + 3600)
    commit(
        shop,
        orders,
        "o-0",
        NOW - 3600,
        anomaly={"flagged": True, "score": 0.93, "reasons": ["82% of the files changed"], "baseline": 14},
    )
    shop.save_record(
        "runs",
        {"name": "restore-test", "backup_id": "o-1", "time": iso(NOW - 7200), "ok": True, "app": orders},
        key="o-1",
    )
    legacy = {"cluster": "prod-eu", "namespace": "shop", "name": "legacy-db", "policy": "legacy-db"}
    commit(shop, legacy, "l-1", NOW - 40 * 86400, verdict="crash-consistent", verify=False)
    wiki_app = {"cluster": "prod-eu", "namespace": "wiki", "name": "wiki-db", "policy": "wiki-db"}
    commit(wiki, wiki_app, "w-1", NOW - 5 * 86400)
    repos = {"s3://fleet-eu/shop": shop, "s3://fleet-eu/wiki": wiki}

    def opener(url, endpoint):
        return repos[url] if url in repos else open_repository(url, endpoint)

    return fleet_dir / "fleet.yaml", repos, opener


def rows_by_app(report) -> dict:
    return {(r.cluster, r.namespace, r.app): r for r in report.rows}


@pytest.mark.slow  # renders the fleet file; one repository behind a closed port
def test_one_row_per_cluster_and_app_with_rpo_verify_restore_test_immutability_and_anomaly(
    fleet_world, tmp_path
):
    fleet_path, _repos, opener = fleet_world
    # WHEN the fleet report is built
    report = fleet_report(fleet_path=str(fleet_path), now=NOW, cache_dir=tmp_path / "cache", opener=opener)
    rows = rows_by_app(report)
    assert report.problems == {}, report.problems

    # THEN orders-db on prod-eu: newest backup an hour old, RPO met against its daily schedule, verify ok,
    # restore test two hours old, Object Lock from its policy, the newest backup's anomaly
    eu = rows[("prod-eu", "shop", "orders-db")]
    assert eu.rpo == "met" and eu.newest_backup == "o-0" and eu.backups == 4
    assert eu.age_s == pytest.approx(3600, abs=2)
    assert 86400 < eu.rpo_target_s < 2 * 86400
    assert eu.consistency == "app-consistent" and eu.verify == "ok"
    assert eu.restore_test_age_s == pytest.approx(7200, abs=2) and eu.restore_test_ok is True
    assert eu.immutability == "compliance, 30 d"
    assert eu.anomaly_flagged is True and eu.anomaly_score == pytest.approx(0.93)
    assert eu.anomaly_reasons == ("82% of the files changed",) and eu.attention
    # ... the wiki's newest backup is five days old: late; no Object Lock in its policy
    wiki = rows[("prod-eu", "wiki", "wiki-db")]
    assert wiki.rpo == "late" and wiki.immutability == "none" and wiki.restore_test_age_s is None
    # ... prod-us's repository does not answer: its row says so, and the others are still there
    us = rows[("prod-us", "shop", "orders-db")]
    assert us.rpo == "unknown" and us.newest_backup is None
    assert "127.0.0.1" in us.error or "StoreUnavailable" in us.error, us.error
    # ... an app the fleet does not place, found in a repository's records, is shown as such
    legacy = rows[("prod-eu", "shop", "legacy-db")]
    assert not legacy.in_fleet and legacy.rpo == "late" and legacy.verify == "failed"
    assert legacy.consistency == "crash-consistent" and legacy.anomaly_flagged is None
    assert set(rows) == {
        ("prod-eu", "shop", "orders-db"),
        ("prod-eu", "wiki", "wiki-db"),
        ("prod-us", "shop", "orders-db"),
        ("prod-eu", "shop", "legacy-db"),
    }


@pytest.mark.slow  # renders the fleet file; one repository behind a closed port
def test_a_placed_app_without_any_backup_is_missing(fleet_world, tmp_path):
    fleet_path, repos, opener = fleet_world
    # GIVEN the wiki's repository holds nothing
    repos["s3://fleet-eu/wiki"] = new_repo("empty")
    report = fleet_report(fleet_path=str(fleet_path), now=NOW, cache_dir=None, opener=opener)
    wiki = rows_by_app(report)[("prod-eu", "wiki", "wiki-db")]
    assert wiki.rpo == "missing" and wiki.backups == 0 and wiki.error is None


def test_a_warm_run_reads_no_record_and_new_or_pruned_records_are_noticed(tmp_path):
    repo = new_repo("warm")
    app = {"cluster": "c1", "namespace": "ns", "name": "db", "policy": "db"}
    for i in range(5):
        commit(repo, app, f"b-{i}", NOW - (5 - i) * 86400)
    cache = tmp_path / "cache"
    cold = fleet_report(repos=["mem://warm"], now=NOW, cache_dir=cache, opener=lambda u, e: repo)
    assert cold.repositories[0].read == 10 and cold.rows[0].backups == 5
    gets = []
    repo.store.hook = lambda op, key: gets.append(key) if op == "get" else None

    # WHEN it runs again: every record comes from the cache
    warm = fleet_report(repos=["mem://warm"], now=NOW, cache_dir=cache, opener=lambda u, e: repo)
    assert warm.repositories[0].read == 0 and warm.repositories[0].cache_used
    assert [k for k in gets if k.startswith(("backups/", "runs/"))] == []
    assert [r.to_dict() for r in warm.rows] == [r.to_dict() for r in cold.rows]

    # WHEN a backup is committed and the oldest one pruned
    commit(repo, app, "b-new", NOW - 60)
    oldest = next(
        i.key
        for i in repo.store.list("backups/")
        if "b-0" in json.dumps(repo.read_record("backups", i.key).data)
    )
    repo.store.delete(oldest)
    gets.clear()
    again = fleet_report(repos=["mem://warm"], now=NOW, cache_dir=cache, opener=lambda u, e: repo)
    # THEN only the two new records are opened, and the pruned one is gone from the counts
    assert again.repositories[0].read == 2
    assert len([k for k in gets if k.startswith(("backups/", "runs/"))]) == 2
    assert again.rows[0].backups == 5 and again.rows[0].newest_backup == "b-new"


def test_the_cache_is_sealed_and_a_tampered_or_foreign_cache_is_not_trusted(tmp_path):
    repo = new_repo("sealed")
    app = {"cluster": "c1", "namespace": "secret-team", "name": "payroll-db", "policy": "payroll-db"}
    commit(repo, app, "b-1", NOW - 3600)
    cache = tmp_path / "cache"
    fleet_report(repos=["mem://sealed"], now=NOW, cache_dir=cache, opener=lambda u, e: repo)
    path = RecordTable.path(cache, repo.config.id)
    raw = path.read_bytes()
    # THEN the cache says nothing in the clear and only its owner may read it
    assert b"payroll" not in raw and b"secret-team" not in raw
    assert path.stat().st_mode & 0o777 == 0o600

    # WHEN one byte of it is changed, a later run does not use it: it reads the records again and warns
    tampered = bytearray(raw)
    tampered[-5] ^= 0x01
    path.write_bytes(bytes(tampered))
    report = fleet_report(repos=["mem://sealed"], now=NOW, cache_dir=cache, opener=lambda u, e: repo)
    assert report.repositories[0].read == 2 and not report.repositories[0].cache_used
    assert any("not used" in w and str(path) in w for w in report.warnings), report.warnings
    assert report.rows[0].newest_backup == "b-1"

    # WHEN another repository's cache (a valid one, sealed under another key) is put in its place
    other = new_repo("other")
    commit(other, {**app, "name": "forged-db"}, "f-1", NOW - 60)
    fleet_report(repos=["mem://other"], now=NOW, cache_dir=cache, opener=lambda u, e: other)
    shutil.copy(RecordTable.path(cache, other.config.id), path)
    report = fleet_report(repos=["mem://sealed"], now=NOW, cache_dir=cache, opener=lambda u, e: repo)
    assert [r.app for r in report.rows] == ["payroll-db"] and report.repositories[0].read == 2


def test_json_and_csv_exports_carry_the_same_rows(tmp_path, monkeypatch):
    monkeypatch.setenv("SNAPFLOW_PASSWORD", PASSWORD)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    names = [f"exp-a-{time.monotonic_ns()}", f"exp-b-{time.monotonic_ns()}"]
    for i, name in enumerate(names):
        repo = Repository.init(open_store(f"mem://{name}"), PASSWORD, kdf_params=KDF)
        commit(
            repo,
            {"cluster": f"c{i}", "namespace": "shop", "name": "db", "policy": "db"},
            f"b{i}",
            NOW - 3600 * (1 + 40 * i),
        )
    argv = ["report", "--repo", f"mem://{names[0]}", "--repo", f"mem://{names[1]}"]

    # WHEN the rows are written as JSON (by the file's suffix) and as CSV (by --format)
    assert main([*argv, "-o", str(tmp_path / "fleet.json")]) == 0
    assert main([*argv, "-o", str(tmp_path / "rows.txt"), "--format", "csv"]) == 0

    doc = json.loads((tmp_path / "fleet.json").read_text())
    assert [(r["cluster"], r["rpo"]) for r in doc["rows"]] == [("c0", "met"), ("c1", "late")]
    assert doc["counts"]["met"] == 1 and doc["counts"]["late"] == 1
    assert doc["rows"][0]["newestBackup"] == "b0" and doc["rows"][0]["verify"] == "ok"
    table = list(csv.DictReader(io.StringIO((tmp_path / "rows.txt").read_text())))
    assert list(table[0]) == list(COLUMNS)
    assert [(r["cluster"], r["rpo"], r["newestBackup"]) for r in table] == [
        ("c0", "met", "b0"),
        ("c1", "late", "b1"),
    ]
    # ... and the record cache went where XDG_CACHE_HOME says
    assert len(list((tmp_path / "xdg" / "snapflow" / "records").glob("*.cache"))) == 2


def test_the_page_links_each_row_to_the_per_app_report(tmp_path, monkeypatch):
    monkeypatch.setenv("SNAPFLOW_PASSWORD", PASSWORD)
    name = f"page-{time.monotonic_ns()}"
    repo = Repository.init(open_store(f"mem://{name}"), PASSWORD, kdf_params=KDF)
    commit(repo, {"cluster": "c1", "namespace": "shop", "name": "orders-db", "policy": "o"}, "b1", NOW - 60)
    out = tmp_path / "fleet.html"
    assert (
        main(["report", "--repo", f"mem://{name}", "--repo", f"mem://{name}", "-o", str(out), "--no-cache"])
        == 0
    )
    html = out.read_text()
    detail = next((tmp_path / "fleet-detail").glob("*.html"))
    assert f'href="fleet-detail/{detail.name}#app-c1-shop-orders-db"' in html
    assert 'id="app-c1-shop-orders-db"' in detail.read_text() or "app-c1-shop-orders-db" in detail.read_text()
    assert not (tmp_path / "xdg").exists()


def test_bad_arguments_are_one_line_and_exit_status_2(tmp_path, capsys):
    assert main(["report", "-o", str(tmp_path / "x.html")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: --repo: expected a repository URL (or --fleet FLEET)"
    ]
    assert main(["report", "--fleet", str(tmp_path / "none.yaml"), "-o", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "none.yaml" in err[0]
    assert not (tmp_path / "x.html").exists() and not (tmp_path / "x.json").exists()


@pytest.mark.slow  # renders the fleet file; one repository behind a closed port
def test_fleet_status_with_backups_shows_each_apps_rpo_and_an_unreadable_repository_on_its_rows(
    fleet_world, tmp_path
):
    fleet_path, _repos, opener = fleet_world
    fleet = load_fleet(str(fleet_path))
    # WHEN the status is read (no kube context reachable: the clusters cannot be compared)
    statuses = fleet_status(
        fleet,
        str(tmp_path / "no-kubeconfig"),
        backups=True,
        cache_dir=tmp_path / "cache",
        opener=opener,
        now=NOW,
    )
    by_name = {s.name: s for s in statuses}
    # THEN each cluster lists its placed apps' rows (not the unplaced app's), the same rows as the report
    assert [(r.namespace, r.app, r.rpo) for r in by_name["prod-eu"].apps] == [
        ("shop", "orders-db", "met"),
        ("wiki", "wiki-db", "late"),
    ]
    assert [(r.app, r.rpo) for r in by_name["prod-us"].apps] == [("orders-db", "unknown")]
    eu_lines = by_name["prod-eu"].lines()
    assert any("shop/orders-db: newest" in line and "RPO met" in line for line in eu_lines), eu_lines
    us_lines = by_name["prod-us"].lines()
    assert any("shop/orders-db: RPO unknown: s3://fleet-us/shop:" in line for line in us_lines), us_lines
    assert not by_name["prod-eu"].backups_ok
    d = by_name["prod-eu"].to_dict()
    assert [a["rpo"] for a in d["apps"]] == ["met", "late"]


@pytest.mark.slow  # renders the fleet file; one repository behind a closed port
def test_fleet_status_cli_with_backups_exits_1_when_a_repository_cannot_be_read(
    fleet_world, tmp_path, capsys
):
    fleet_path, _repos, _opener = fleet_world
    doc = yaml.safe_load(fleet_path.read_text())
    down = f"http://127.0.0.1:{closed_port()}"
    for o in doc["spec"]["overrides"]:
        o["repository"]["endpoint"] = down
    fleet_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    code = main(
        ["fleet", "status", str(fleet_path), "--kubeconfig", str(tmp_path / "none"), "--backups", "--output", "json",
         "--cache-dir", str(tmp_path / "cache")]
    )  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert code == 1
    apps = [(c["cluster"], a["app"], a["rpo"]) for c in out["clusters"] for a in c["apps"]]
    assert sorted(apps) == [
        ("prod-eu", "orders-db", "unknown"),
        ("prod-eu", "wiki-db", "unknown"),
        ("prod-us", "orders-db", "unknown"),
    ]
    assert all(a["error"] for c in out["clusters"] for a in c["apps"])


@pytest.mark.slow  # renders the fleet file; one repository behind a closed port
def test_fleet_status_without_backups_reads_no_repository(fleet_world, tmp_path, capsys):
    fleet_path, _repos, _opener = fleet_world
    main(["fleet", "status", str(fleet_path), "--kubeconfig", str(tmp_path / "none"), "--output", "json"])
    out = json.loads(capsys.readouterr().out)
    assert all("apps" not in c for c in out["clusters"])


def test_record_cache_path_is_per_repository(tmp_path):
    assert RecordTable.path(Path("/c"), "abc") == Path("/c/records/abc.cache")


@pytest.mark.slow  # renders and checks every manifest of two clusters
def test_lint_fleet_checks_the_fleet_file_and_every_clusters_rendering(tmp_path, capsys):
    # GIVEN the example fleet: it passes
    assert main(["lint", "--fleet", str(policies.EXAMPLES / "fleet" / "fleet.yaml")]) == 0
    assert capsys.readouterr().out.startswith("ok: 2 clusters, 3 policies, ")

    # WHEN an override makes one cluster's policy invalid: one line naming the cluster and the field
    fleet_dir = tmp_path / "fleet"
    shutil.copytree(policies.EXAMPLES / "fleet", fleet_dir)
    doc = yaml.safe_load((fleet_dir / "fleet.yaml").read_text())
    doc["spec"]["overrides"][0]["schedule"] = {"cron": "every night"}
    (fleet_dir / "fleet.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    assert main(["lint", "--fleet", str(fleet_dir / "fleet.yaml")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "warning" not in line]
    assert len(err) == 1 and "cluster prod-us" in err[0] and "spec.schedule.cron" in err[0], err

    # WHEN policy files are given besides --fleet, or nothing at all
    assert main(["lint", "--fleet", str(fleet_dir / "fleet.yaml"), "x.yaml"]) == 2
    assert main(["lint"]) == 2
    assert "expected at least one policy file (or --fleet FLEET)" in capsys.readouterr().err


def test_the_page_escapes_what_records_say_and_lists_clusters_that_could_not_be_placed():
    from workflows.report.fleet_model import FleetRow
    from workflows.report.fleet_page import render_html

    row = FleetRow("c1", "ns", "<img src=x onerror=alert(1)>", "s3://b/r", True, "late", 3600.0)
    row.anomaly_flagged, row.anomaly_reasons = True, ("</td><script>alert(2)</script>",)
    html = render_html(
        [row],
        title="shop",
        generated=NOW,
        repositories=[],
        problems={"prod-us": ["fleet.yaml: bad override"]},
    )
    assert "<img src=x" not in html and "&lt;img src=x" in html
    assert "<script>alert(2)" not in html
    assert html.count("<script>") == 1  # the page's own sorting and filtering
    assert "prod-us" in html and "fleet.yaml: bad override" in html


def test_one_repository_gives_its_rows_with_format_and_the_per_app_report_without(tmp_path, monkeypatch):
    monkeypatch.setenv("SNAPFLOW_PASSWORD", PASSWORD)
    name = f"one-{time.monotonic_ns()}"
    repo = Repository.init(open_store(f"mem://{name}"), PASSWORD, kdf_params=KDF)
    commit(repo, {"cluster": "c1", "namespace": "shop", "name": "orders-db", "policy": "o"}, "b1", NOW - 60)
    argv = ["report", "--repo", f"mem://{name}", "--no-cache"]
    assert main([*argv, "-o", str(tmp_path / "rows.html"), "--format", "html", "--no-details"]) == 0
    assert 'id="fleet"' in (tmp_path / "rows.html").read_text()
    assert main(["report", "--repo", f"mem://{name}", "-o", str(tmp_path / "app.html")]) == 0
    page = (tmp_path / "app.html").read_text()
    assert 'id="fleet"' not in page and 'id="app-c1-shop-orders-db"' in page


def test_the_csv_export_quotes_formula_like_cells_from_records():
    from workflows.report.fleet_model import FleetRow
    from workflows.report.fleet_page import render_csv

    row = FleetRow("c1", "ns", '=HYPERLINK("http://x")', "s3://b/r", True, "late", 3600.0)
    row.anomaly_reasons, row.age_s = ("@SUM(A1)",), 7200.0
    table = list(csv.DictReader(io.StringIO(render_csv([row]))))
    assert table[0]["app"] == '\'=HYPERLINK("http://x")' and table[0]["anomalyReasons"] == "'@SUM(A1)"
    assert table[0]["ageSeconds"] == "7200" and table[0]["rpoTargetSeconds"] == "3600"
