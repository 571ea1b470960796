"""The report's audit section: the trail's records of the report's window with who did what, the
verification of the whole trail, and a red banner naming each finding when the trail is broken (the
report is still written and ``snapflow report`` exits 0; the evidence page is the one that fails)."""

from __future__ import annotations

import time

import pytest

from steps.drivers.objectstore import LocalStore
from steps.repository import audit
from steps.repository.repo import Repository
from tests.fixtures.prune import backup, write_files
from tests.fixtures.repository import TEST_KDF
from tests.unit.test_report_sources_and_anomalies import Cells
from workflows.report import collect, render_html

PASSWORD = "report audit password"
CRON = {"kind": "cron", "cron_workflow": "backup-db", "workflow": "backup-db-1"}
ALICE = {"kind": "argo", "claimed": True, "username": "alice", "workflow": "restore-db-x"}
APP = {"cluster": "c1", "namespace": "ns", "name": "db"}


@pytest.fixture
def repo(tmp_path, monkeypatch) -> tuple[str, Repository]:
    monkeypatch.setenv("SNAPFLOW_PASSWORD", PASSWORD)
    monkeypatch.setenv("SNAPFLOW_KDF_TEST_N", "1024")
    path = tmp_path / "repo"
    repo = Repository.init(LocalStore(str(path)), PASSWORD, kdf_params=TEST_KDF)
    backup(repo, write_files(tmp_path / "db", 1, names=("a.bin",), size=20_000), "b-db-1", app="db")
    audit.append(repo, "backup.commit", who=CRON, app=APP, what={"backup_id": "b-db-1"})
    audit.append(repo, "restore", who=ALICE, app=APP, what={"snapshot": "s", "target": "/restore"})
    audit.append(repo, "check", who=CRON, what={"ok": True})
    return f"file://{path}", repo


def test_the_report_lists_the_windows_records_with_who_and_a_verified_chain(repo):
    url, _ = repo
    report = collect(url)
    assert report.audit is not None and report.audit["ok"] and not report.audit_broken
    assert [r["action"] for r in report.audit_rows] == ["backup.commit", "restore", "check"]
    assert report.audit_rows_total == 3
    (app,) = report.apps
    assert report.audit_count(app) == 2

    html = render_html(report)
    assert 'id="audit-broken"' not in html and "chain verified" in html
    cells = Cells()
    cells.feed(html)
    rows = cells.rows[("db", "audit")]  # (the section after the last app's)
    assert [(r[2], r[3], r[4], r[5]) for r in rows] == [
        ("backup.commit", "cron backup-db", "ns/db", "ok"),
        ("restore", "alice (claimed) via workflow restore-db-x", "ns/db", "ok"),
        ("check", "cron backup-db", "—", "ok"),
    ]
    assert "2 audit record(s) of this app in the window" in html

    # ... and records older than the window are left out (the verification still covers them)
    later = collect(url, now=time.time() + 10 * 86400, window_days=1)
    assert later.audit_rows == [] and later.audit["records"] == 3
    assert "No audit record in the last 1 days" in render_html(later)


def test_a_broken_trail_is_a_red_banner_naming_each_finding_and_the_report_is_still_written(
    repo, tmp_path, capsys
):
    # GIVEN the middle record of the trail deleted
    url, r = repo
    middle = audit.read_trail(r).ordered()[1]
    r.store.delete(f"audit/{middle.id}")

    # WHEN the report is read and written
    report = collect(url)
    html = render_html(report)

    # THEN the banner names the finding with the record's key, sequence number and time
    assert report.audit_broken
    (finding,) = report.audit["findings"]
    assert finding["key"] == f"audit/{middle.id}" and finding["seq"] == 2
    banner = html.split('id="audit-broken"', 1)[1].split("</section>", 1)[0]
    assert "The audit trail does not verify: 1 finding" in banner
    assert f"audit/{middle.id}" in banner and finding["problem"] in banner and "seq 2" in banner
    assert "chain broken" in html

    # AND snapflow report still writes the page and exits 0
    from workflows.cli import main

    out = tmp_path / "report.html"
    assert main(["report", "--repo", url, "-o", str(out)]) == 0
    assert 'id="audit-broken"' in out.read_text()
    capsys.readouterr()
