"""A bucket backed up by the real bucket-backup step (a second S3 server as the source), verified and
committed by finalize with the example bucket policy's plan, shown by the report and the exporter as the
policy's app of kind bucket: its size, files, RPO against the policy's schedule, consistency "n/a
(source)", and the restore commands of a bucket."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.bucket_source import key_args, unique_bucket
from workflows.fleet.exporter import Exporter
from workflows.report import collect, render_html, restore_commands

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "examples" / "sources" / "bucket.yaml"
BACKUP = "backup-shop-uploads-r4nd0"


def steps(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "steps", *args], cwd=ROOT, env=dict(os.environ), capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, f"steps {args[0]} failed ({proc.returncode}): {proc.stderr}"
    return proc.stdout


def test_a_bucket_backed_up_by_its_step_is_a_bucket_app_in_the_report_and_the_metrics(
    s3_repo, bucket_source_server, source_client, tmp_path
):
    from workflows.pipelines import plan_for
    from workflows.policy import load_policies

    # GIVEN a bucket of three objects, backed up by bucket-backup, verified, and committed by finalize
    # with the plan the example bucket policy renders
    bucket = unique_bucket("uploads")
    client = source_client(bucket)
    for i, size in enumerate((1000, 20_000, 300_000)):
        client.write(f"photos/{i}.jpg", io.BytesIO(bytes([i]) * size), size, "image/jpeg", {})
    (policy,) = [item.policy for item in load_policies([str(POLICY)])]
    plan = tmp_path / "plan.json"
    # (the policy's plan, with the test's repository in place of the example's)
    plan.write_text(json.dumps({**plan_for(policy).to_dict(), "repository": {"url": s3_repo}}))
    steps("init", "--repo", s3_repo)
    steps(
        "bucket-backup", "--repo", s3_repo, "--source-endpoint", bucket_source_server.endpoint,
        "--source", f"s3://{bucket}", *key_args("source"), "--backup-id", BACKUP,
        "--cluster", policy.spec.cluster, "--policy", policy.name, "--json",
    )  # fmt: skip
    steps("verify", "--repo", s3_repo, "--backup-id", BACKUP, "--read-data", "100", "--json")
    steps("finalize", "--plan", str(plan), "--backup-id", BACKUP, "--workflow-status", "Succeeded")

    # WHEN the report is collected with the policy, and the exporter reads the repository
    report = collect(s3_repo, policies=[str(POLICY)])
    exporter = Exporter([s3_repo])
    exporter.refresh()

    # THEN the report shows the policy's app, of kind bucket, with the bucket's size and files, the RPO
    # of the policy's hourly schedule, no verdict, and the bucket's restore commands
    (app,) = report.apps
    assert (app.cluster, app.namespace, app.name, app.source) == ("prod-eu", "shop", "shop-uploads", "bucket")
    last = app.last_backup
    assert last is not None and last.backup_id == BACKUP and last.verdict is None
    assert (last.bytes_total, last.files) == (321_000, 3)
    # (the dedup ratio divides by the new blob bytes bucket-backup's summary counts, trees included, as a
    # copy's does; the record's changes count the new data alone)
    new = (last.changes or {}).get("newBytes")
    assert 321_000 <= new < last.blob_bytes_new and last.dedup_ratio == 321_000 / last.blob_bytes_new
    assert app.rpo.schedule == "0 * * * *" and app.rpo.target_s == 3600 + 600 and app.problems == []
    argo, cli = restore_commands(app, report.repository)
    assert argo[1].startswith(
        f"argo submit -n shop --from workflowtemplate/restore-shop-uploads -p snapshot={last.volumes[0]['snapshot']}"
    )
    assert cli[1].startswith(f"python -m steps bucket-restore --repo {s3_repo} --snapshot ")
    assert "n/a (source)" in render_html(report)

    # AND the exporter serves it labelled source=bucket, with its size and files
    served = {
        (s.name, s.labels.get("app")): (s.value, s.labels) for f in exporter.collect() for s in f.samples
    }
    value, labels = served[("snapflow_backup_committed", "shop-uploads")]
    assert value == 1 and labels["source"] == "bucket" and labels["repository"] == s3_repo
    assert served[("snapflow_backup_size_bytes", "shop-uploads")][0] == 321_000
    assert served[("snapflow_backup_files", "shop-uploads")][0] == 3


def test_a_flagged_source_backup_on_a_locked_repository_shows_the_last_good_backup_locked(
    locked_s3_server, s3_env, tmp_path, monkeypatch
):
    import uuid

    from tests.fixtures.prune import run_steps
    from tests.fixtures.source_backups import SourceRepo

    # GIVEN a repository on S3 with Object Lock, and etcd backed up there: a history, then a backup
    # after three quarters of its files were deleted, committed with --lock-last-good 2d
    url = f"s3://sf-{uuid.uuid4().hex[:12]}/repo"
    run_steps(
        "init", "--repo", url, "--object-lock-mode", "governance", "--object-lock-days", "1",
        env=locked_s3_server.admin_env(),
    )  # fmt: skip
    for k, v in locked_s3_server.admin_env().items():
        monkeypatch.setenv(k, v)
    work = tmp_path / "work"
    work.mkdir()
    etcd = SourceRepo(url, work).mass_deletion(
        "etcd", tmp_path / "etcd", "etcd", 40, "--lock-last-good", "2d"
    )
    lock = etcd[-1]["anomaly"]["lockedLastGood"]
    assert etcd[-1]["anomaly"]["flagged"] and lock["backupId"] == etcd[-2]["backup_id"] and lock["until"]

    # WHEN the report is rendered and the exporter reads the repository
    report = collect(url)
    html = render_html(report)
    exporter = Exporter([url])
    exporter.refresh()

    # THEN the flagged backup's detail says which backup was locked until when, and the exporter flags it
    assert (
        f"last good backup {lock['backupId']} locked until {lock['until']} ({lock['extended']} object(s)"
        in html
    )
    served = {(s.name, s.labels.get("source")): s.value for f in exporter.collect() for s in f.samples}
    assert served[("snapflow_backup_anomaly_flagged", "etcd")] == 1
