"""``snapflow report`` on a repository filled by real local runs, looked at in headless Chromium."""

from __future__ import annotations

import os
import shutil
import signal
from collections import Counter

import pytest

from tests.fixtures.chromium import png_pixels
from tests.fixtures.local_runs import recording_hook
from workflows.demo.sample import make_sample_data
from workflows.local.local_policy import load_local_policy
from workflows.local.runner import run_local
from workflows.local.step_runs import RUNNING, StepRun, View

pytestmark = pytest.mark.slow


class KillCopy(View):
    def event(self, run: StepRun, what: str) -> None:
        if run.name == "copy-data" and run.status == RUNNING and run.proc is not None:
            os.killpg(run.proc.pid, signal.SIGKILL)


def test_report_shows_backups_consistency_rpo_and_step_timelines_in_a_browser(
    tmp_path, local_policy, run_settings, snapflow, s3_repo, s3_server, chromium
):
    # GIVEN a repository with two committed backups of an app and one run whose copy was killed
    data = tmp_path / "data"
    make_sample_data(data)
    policy_file = local_policy(data, quiesce=[recording_hook(tmp_path / "hook.log")], schedule="* * * * *")
    policy = load_local_policy(policy_file)
    assert run_local(policy, "init", run_settings).ok
    first = run_local(policy, "backup", run_settings)
    failed = run_local(policy, "backup", run_settings, KillCopy())
    (data / "docs" / "note-05.txt").write_text("changed\n")
    second = run_local(policy, "backup", run_settings)
    assert first.committed and second.committed and not failed.committed

    # WHEN the report is written
    out = tmp_path / "report.html"
    res = snapflow(
        "report",
        "--repo",
        s3_repo,
        "--endpoint",
        s3_server.endpoint,
        "-o",
        str(out),
        "--policy",
        str(policy_file),
    )

    # THEN the command succeeds and the page is self-contained (no script, nothing fetched)
    assert res.returncode == 0, res.stderr
    html = out.read_text()
    assert "<script" not in html and "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in html

    # WHEN a browser opens it
    visit = chromium(
        out.as_uri(),
        {
            "title": "document.title",
            "apps": "[...document.querySelectorAll('section.app')].map(s => s.dataset.app)",
            "charts": "document.querySelectorAll('section.app svg.chart').length",
            "chart_bars": "document.querySelectorAll('svg.chart g.backup').length",
            "verdicts": "[...document.querySelectorAll('table.runs tbody tr')].map(r => r.children[3].innerText)",
            "statuses": "[...document.querySelectorAll('table.runs tbody tr')].map(r => r.children[2].innerText)",
            "timelines": "document.querySelectorAll('svg.timeline').length",
            "freeze_marks": "document.querySelectorAll('svg.timeline g.freeze').length",
            "rpo_slots": "document.querySelectorAll('rect[class^=slot-]').length",
            "text": "document.body.innerText",
            "all_text": "document.body.textContent",
            "height": "document.body.scrollHeight",
        },
    )

    # THEN it renders without console errors or requests, with the app, its charts and its runs
    assert visit.errors == []
    assert visit.values["apps"] == ["files"]
    assert visit.values["charts"] >= 4
    assert visit.values["chart_bars"] == 3  # two backups and the run that was not committed
    assert visit.values["verdicts"][0] == "app-consistent"  # newest first
    assert sorted(visit.values["statuses"]) == ["committed", "committed", "failed"]
    assert visit.values["timelines"] == 3 and visit.values["freeze_marks"] >= 2
    text = visit.values["text"]
    for expected in (
        "files",
        "Backups over time",
        "Consistency level",
        "RPO",
        "Dedup ratio",
        second.backup_id,
    ):
        assert expected in text
    assert "Failed in copy-data: killed by signal SIGKILL" in visit.values["all_text"]
    # ... and the screenshot shows a page, not a blank one
    width, height, pixels = png_pixels(visit.screenshot)
    assert (width, height) == (1280, 1800)
    colours = Counter(pixels)
    assert len(colours) > 200
    _background, count = colours.most_common(1)[0]
    assert count < 0.9 * len(pixels)
    (tmp_path / "report.png").write_bytes(visit.screenshot)
    keep = os.environ.get("SNAPFLOW_KEEP_SCREENSHOT")
    if keep:
        shutil.copy(tmp_path / "report.png", keep)


def test_report_of_an_empty_repository_says_so(
    tmp_path, local_policy, run_settings, snapflow, s3_repo, s3_server
):
    # GIVEN a repository without any backup
    data = tmp_path / "data"
    data.mkdir()
    assert run_local(load_local_policy(local_policy(data)), "init", run_settings).ok

    # WHEN the report is written
    out = tmp_path / "report.html"
    res = snapflow("report", "--repo", s3_repo, "--endpoint", s3_server.endpoint, "-o", str(out))

    # THEN it is a valid page that says there is nothing yet
    assert res.returncode == 0, res.stderr
    assert "holds no backup runs yet" in out.read_text()
    # ... and its audit section lists the repository's creation on a verified chain
    audit_section = out.read_text().split('id="audit"', 1)[1]
    assert "chain verified" in audit_section and "repository.init" in audit_section


def test_report_refuses_a_bad_window_without_writing(tmp_path, snapflow, s3_repo):
    out = tmp_path / "report.html"
    res = snapflow("report", "--repo", s3_repo, "-o", str(out), "--days", "0")
    assert res.returncode == 2 and "--days" in res.stderr
    assert not out.exists()


def test_report_of_sources_shows_their_kind_restore_commands_and_a_flagged_anomaly_in_a_browser(
    tmp_path, source_repo, chromium
):
    from workflows.report import collect, write_report

    # GIVEN a repository with a bucket's backup and etcd's: a history, then one after three quarters of
    # its files were deleted, which finalize flagged (all through copy, verify and finalize)
    bucket = tmp_path / "uploads"
    bucket.mkdir()
    (bucket / "photo.jpg").write_bytes(b"jpeg\n" * 2000)
    source_repo.backup("bucket", "bucket-1", bucket)
    etcd = source_repo.mass_deletion("etcd", tmp_path / "etcd", "etcd")

    # WHEN the report is written and a browser opens it
    out = tmp_path / "sources.html"
    write_report(collect(source_repo.url), str(out))
    visit = chromium(
        out.as_uri(),
        {
            "apps": "[...document.querySelectorAll('section.app')].map(s => s.dataset.app)",
            "sources": "[...document.querySelectorAll('table.summary tbody tr')].map(r => r.children[3].innerText)",
            "consistency": "[...document.querySelectorAll('section[data-app=cluster-etcd] table.runs tbody tr')]"
            ".map(r => r.children[3].innerText)",
            "anomalies": "[...document.querySelectorAll('section[data-app=cluster-etcd] table.runs tbody tr')]"
            ".map(r => r.children[5].innerText)",
            "flags": "[...document.querySelectorAll('section[data-app=cluster-etcd] ul.flags li')].map(l => l.innerText)",
            "restore": "[...document.querySelectorAll('dl.restore')].map(d => d.dataset.source + ': ' + d.innerText)",
            "detail": "document.querySelector('section[data-app=cluster-etcd] details.run p.anomaly').innerText",
        },
    )

    # THEN it renders without console errors, each source with its kind, etcd's runs without a verdict,
    # the newest flagged with its score and reason, and the restore commands of each kind
    assert visit.errors == []
    assert visit.values["apps"] == ["shop-uploads", "cluster-etcd"]  # (by cluster, namespace, app)
    assert visit.values["sources"] == ["bucket", "etcd"]
    assert visit.values["consistency"] == ["n/a (source)"] * len(etcd)
    score = etcd[-1]["anomaly"]["score"]
    assert visit.values["anomalies"][0] == f"flagged · {score:.1f}"
    assert set(visit.values["anomalies"][1:]) == {"normal · 0.0"}
    assert visit.values["flags"][0].startswith("newest backup flagged as an anomaly: deletedShare")
    assert "deletedShare: 75.0% of the files deleted" in visit.values["detail"]
    bucket_restore, etcd_restore = visit.values["restore"]
    assert etcd_restore.startswith("etcd: ") and "workflowtemplate/restore-cluster-etcd" in etcd_restore
    assert f"python -m steps etcd-restore --repo {source_repo.url}" in etcd_restore
    assert bucket_restore.startswith("bucket: ") and "python -m steps bucket-restore" in bucket_restore
    _width, _height, pixels = png_pixels(visit.screenshot)
    assert len(Counter(pixels)) > 100
    (tmp_path / "sources.png").write_bytes(visit.screenshot)
