"""A bucket backed up twice by the real bucket-backup step with the example bucket policy's identity,
verified and committed by finalize, then once more without a commit: each snapshot records what changed
(objects as files: added, changed, deleted, renamed; new bytes before and after compression) and the new
blob bytes the report's dedup ratio divides by; the run records name the app and the snapshot's time; the
exporter takes the snapshot's time as the point in time and counts the run that never committed."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from steps.api import open_repository, parse_time
from tests.fixtures.bucket_source import key_args, unique_bucket
from workflows.fleet.exporter import Exporter
from workflows.report import collect

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "examples" / "sources" / "bucket.yaml"
APP = {"cluster": "prod-eu", "namespace": "shop", "name": "shop-uploads", "policy": "shop-uploads"}


def steps(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "steps", *args], cwd=ROOT, env=dict(os.environ), capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, f"steps {args[0]} failed ({proc.returncode}): {proc.stderr}"
    return proc.stdout


def put(client, key: str, data: bytes) -> None:
    client.write(key, io.BytesIO(data), len(data), "application/octet-stream", {})


def test_bucket_snapshots_record_changes_identity_and_time(
    s3_repo, bucket_source_server, source_client, tmp_path
):
    from workflows.pipelines import plan_for
    from workflows.policy import load_policies

    (policy,) = [item.policy for item in load_policies([str(POLICY)])]
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({**plan_for(policy).to_dict(), "repository": {"url": s3_repo}}))
    bucket = unique_bucket("uploads")
    client = source_client(bucket)
    for i in range(6):
        put(client, f"photos/{i}.jpg", bytes([i]) * (50_000 + i))
    steps("init", "--repo", s3_repo)

    def backup(backup_id: str, commit: bool = True) -> dict:
        out = steps(
            "bucket-backup", "--repo", s3_repo, "--source-endpoint", bucket_source_server.endpoint,
            "--source", f"s3://{bucket}", *key_args("source"), "--backup-id", backup_id,
            "--cluster", APP["cluster"], "--namespace", APP["namespace"], "--app", APP["name"],
            "--policy", APP["policy"], "--json",
        )  # fmt: skip
        steps("verify", "--repo", s3_repo, "--backup-id", backup_id, "--read-data", "100")
        if commit:
            steps("finalize", "--plan", str(plan), "--backup-id", backup_id, "--workflow-status", "Succeeded")
        return json.loads(out)

    # GIVEN a first backup, then one after an object changed, one was deleted, one renamed (its bytes
    # under a new key) and two were added
    first = backup("backup-shop-uploads-1")
    put(client, "photos/0.jpg", b"edited" * 20_000)
    client.delete("photos/1.jpg")
    put(client, "renamed/2.jpg", bytes([2]) * 50_002)
    client.delete("photos/2.jpg")
    put(client, "photos/new-a.jpg", b"a" * 30_000)
    put(client, "photos/new-b.jpg", b"b" * 30_000)
    second = backup("backup-shop-uploads-2")
    # AND a third run that was verified but never committed
    third = backup("backup-shop-uploads-3", commit=False)

    repo = open_repository(s3_repo)
    snaps = {s.id: s.data for s in repo.list_snapshots()}

    # THEN the first snapshot counts every object as added, the second what changed since it
    c1 = snaps[first["snapshot"]]["changes"]
    assert (c1["parent"], c1["files_total"], c1["files_added"], c1["files_changed"]) == (False, 6, 6, 0)
    c2 = snaps[second["snapshot"]]["changes"]
    assert c2["parent"] is True and c2["files_total"] == 7
    assert (c2["files_added"], c2["files_changed"], c2["files_deleted"], c2["files_renamed"]) == (2, 1, 1, 1)
    # (the renamed object's bytes were stored before: only the edited and added ones are new)
    assert 0 < c2["new_bytes"] < c1["new_bytes"] and 0 < c2["new_bytes_stored"] <= c2["new_bytes"]
    summary = snaps[second["snapshot"]]["summary"]
    assert (
        summary["blob_bytes_new"] >= c2["new_bytes"] and second["blob_bytes_new"] == summary["blob_bytes_new"]
    )

    # AND the committed record sums them as changes and judged them (too little history to flag)
    (record,) = [r.data for r in repo.list_records("backups", key="backup-shop-uploads-2")]
    assert (record["changes"]["filesAdded"], record["changes"]["filesDeleted"]) == (2, 1)
    assert record["changes"]["newBytes"] == c2["new_bytes"] and record["anomaly"]["flagged"] is False

    # AND each run record names the app and the snapshot's time
    runs = [
        r.data for r in repo.list_records("runs", key="backup-shop-uploads-3") if r.data["name"] == "bucket"
    ]
    (run,) = runs
    assert run["app"] == APP and run["time"] == snaps[third["snapshot"]]["time"] == third["time"]
    assert (
        snaps[third["snapshot"]]["namespace"] == "shop" and snaps[third["snapshot"]]["app"] == "shop-uploads"
    )

    # WHEN the exporter reads the repository and the report is collected
    exporter = Exporter([s3_repo])
    exporter.refresh()
    served = {(s.name, s.labels.get("app")): s.value for f in exporter.collect() for s in f.samples}
    report = collect(s3_repo, policies=[str(POLICY)])

    # THEN the newest committed backup's point in time is its snapshot's time, not its commit's
    taken = parse_time(snaps[second["snapshot"]]["time"]).timestamp()
    assert served[("snapflow_backup_last_committed_timestamp_seconds", "shop-uploads")] == pytest.approx(
        taken
    )
    committed = parse_time(record["time"]).timestamp()
    assert committed > taken
    # AND the run that never committed is counted, at its snapshot's time, and its verify is the app's
    assert served[("snapflow_backup_uncommitted_runs", "shop-uploads")] == 1
    assert served[
        ("snapflow_backup_last_uncommitted_run_timestamp_seconds", "shop-uploads")
    ] == pytest.approx(parse_time(third["time"]).timestamp())
    assert served[("snapflow_verify_last_ok", "shop-uploads")] == 1
    # AND the report shows the same point in time, and a dedup ratio from the new blob bytes
    (app,) = report.apps
    last = app.last_backup
    assert last.backup_id == "backup-shop-uploads-2" and last.point_in_time == pytest.approx(taken)
    assert last.blob_bytes_new == summary["blob_bytes_new"]
    assert last.dedup_ratio == pytest.approx(summary["bytes_total"] / summary["blob_bytes_new"])
    assert [r.status for r in app.runs][-1] == "not committed"
