"""The audit trail and the compliance evidence page over real local runs on a real S3 server: the
actions append their records, ``snapflow audit`` lists and verifies them, the evidence page opens in
headless Chromium, prints to PDF with the facts in its text, and a deleted record fails it by name."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from steps.drivers.objectstore import open_store
from tests.fixtures.chromium import CHROMIUM
from tests.fixtures.local_runs import recording_hook
from tests.fixtures.prune import run_steps
from workflows.demo.sample import make_sample_data
from workflows.local.local_policy import load_local_policy
from workflows.local.runner import run_local

pytestmark = pytest.mark.slow


def _print_to_pdf(html: Path, pdf: Path, profile: Path) -> str:
    """The page printed by headless Chromium, as the text pdftotext finds in the PDF."""
    if shutil.which("pdftotext") is None:
        pytest.fail("pdftotext is not installed (scripts/system-deps.sh installs poppler-utils)")
    subprocess.run(
        [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={profile}", "--no-pdf-header-footer", f"--print-to-pdf={pdf}", html.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )  # fmt: skip
    assert pdf.read_bytes().startswith(b"%PDF")
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True)
    return text.stdout


def test_actions_are_audited_and_the_evidence_page_prints_and_names_a_deleted_record(
    tmp_path, local_policy, run_settings, snapflow, s3_repo, s3_server, chromium
):
    # GIVEN a policy with a yearly schedule and a restore test, its repository, and one committed backup
    data = tmp_path / "data"
    make_sample_data(data)
    policy_file = local_policy(data, quiesce=[recording_hook(tmp_path / "hook.log")], schedule="0 0 1 1 *")
    doc = yaml.safe_load(policy_file.read_text())
    doc["spec"]["verify"]["restoreTest"] = {"enabled": True, "scratchSize": "1Gi"}
    policy_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    policy = load_local_policy(policy_file)
    run_settings.scratch_dir = str(tmp_path / "scratch")
    assert run_local(policy, "init", run_settings).ok
    backup = run_local(policy, "backup", run_settings)
    assert backup.committed
    # AND a restore test (the check pipeline) and a restore of the backup's volume
    assert run_local(policy, "check", run_settings).ok
    ep = ("--repo", s3_repo, "--endpoint", s3_server.endpoint)
    run_steps("restore", *ep, "--snapshot", "latest", "--volume", "data", "--target", str(tmp_path / "out"))

    # WHEN the audit trail is listed as CSV
    res = snapflow("audit", *ep, "--format", "csv")
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader(io.StringIO(res.stdout)))

    # THEN every action is there, in order, each with who did it and its result
    actions = [r["action"] for r in rows]
    assert actions[0] == "repository.init"
    for expected in ("backup.commit", "check", "restore"):
        assert expected in actions
    assert actions.index("backup.commit") < actions.index("check") < actions.index("restore")
    commit = next(r for r in rows if r["action"] == "backup.commit")
    assert commit["result"] == "ok" and commit["app"] == "local/files" and backup.backup_id in commit["what"]
    assert all(r["who"] and r["result"] == "ok" for r in rows)
    assert [int(r["seq"]) for r in rows] == list(range(1, len(rows) + 1))
    # ... and the backup record names the head of the trail its commit saw
    res = snapflow("audit", *ep, "verify", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    assert '"ok": true' in res.stdout and f'"backup_id": "{backup.backup_id}"' in res.stdout

    # WHEN the evidence page of the last day is written
    page = tmp_path / "evidence.html"
    res = snapflow(
        "report", *ep, "--policy", str(policy_file), "--evidence", "--since", "1d", "-o", str(page)
    )

    # THEN it succeeds, is self-contained, and opens in a browser without errors
    assert res.returncode == 0, res.stderr
    html = page.read_text()
    assert "<script" not in html and "https://" not in html and "http://" not in html
    visit = chromium(
        page.as_uri(),
        {
            "apps": "[...document.querySelectorAll('table.apps tbody tr')].map(r => r.dataset.app)",
            "audit_rows": "document.querySelectorAll('table.audit tbody tr').length",
            "title": "document.title",
            "findings": "[...document.querySelectorAll('table.apps tbody tr')].map(r => r.lastElementChild.innerText)",
        },
    )
    assert visit.errors == []
    assert visit.values["apps"] == ["local/files"]
    assert visit.values["audit_rows"] == len(rows)
    # (backed up in the period, RPO met, restore test passed: only the plain bucket is a finding)
    assert visit.values["findings"] == ["not immutable"]
    assert "Backup compliance evidence" in visit.values["title"]
    # ... and printed to PDF it states the facts an auditor asks for
    text = _print_to_pdf(page, tmp_path / "evidence.pdf", tmp_path / "profile")
    flat = " ".join(text.split())
    for expected in (
        "Backup compliance evidence",
        "Protected applications",
        "files",
        "keep last 7",  # the policy's retention
        "target 365.0 days",  # the RPO of its yearly schedule
        "1 of 1",  # restore tests passed
        "AES-256-GCM",
        "chain verified",
        "backup.commit",
        "repository.init",
        "no: the bucket keeps no object versions",  # a plain bucket is not immutable, and says so
    ):
        assert expected in flat, expected

    # WHEN the audit record of the commit is deleted from the bucket
    store = open_store(s3_repo, s3_server.endpoint)
    res = snapflow("audit", *ep, "--format", "jsonl")
    commit_id = next(line for line in res.stdout.splitlines() if '"backup.commit"' in line).split('"id": "')[
        1
    ][:64]
    store.delete(f"audit/{commit_id}")

    # THEN verify and the evidence page fail with one line naming the object, its seq and its time
    res = snapflow("audit", *ep, "verify")
    assert res.returncode == 3
    assert f"missing: audit/{commit_id} seq {commit['seq']}" in res.stdout
    res = snapflow("report", *ep, "--evidence", "-o", str(page))
    assert res.returncode == 3
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert errors[0].startswith(
        f"error: audit trail broken: missing record audit/{commit_id} (seq {commit['seq']}, {commit['time']}):"
    )
    assert "named as parent by audit/" in errors[0]
    assert "Traceback" not in res.stderr
    # ... and the page, written anyway, shows the break
    assert "chain broken" in " ".join(
        _print_to_pdf(page, tmp_path / "broken.pdf", tmp_path / "profile").split()
    )


def test_audit_records_are_locked_extended_by_prune_and_a_deleted_one_is_named_with_its_kept_version(
    locked_s3_server, s3_env, tmp_path, snapflow
):
    from datetime import UTC, datetime, timedelta

    from tests.fixtures.prune import minio_client, write_files

    server = locked_s3_server
    bucket = f"lk-{uuid.uuid4().hex[:12]}"
    repo = f"s3://{bucket}/repo"
    admin = server.admin_env()
    # GIVEN a repository in a bucket with Object Lock (one day by default) and append-only backup
    # credentials, a copy and a key added
    run_steps(
        "init", "--repo", repo, "--object-lock-mode", "governance", "--object-lock-days", "1", env=admin
    )
    server.deny_version_deletes(bucket)
    run_steps("copy", "--repo", repo, "--source", write_files(tmp_path / "src", 1), env=server.writer_env())
    run_steps("key", "add", "--repo", repo, env={**admin, "SNAPFLOW_NEW_PASSWORD": "second password"})
    client = minio_client(server)
    audit_keys = [o.object_name for o in client.list_objects(bucket, prefix="repo/audit/", recursive=True)]
    assert len(audit_keys) == 2  # init, key add
    for key in audit_keys:  # THEN each record is locked from its first write
        left = client.get_object_retention(bucket, key).retain_until_date - datetime.now(UTC)
        assert timedelta(hours=23) < left <= timedelta(days=1), key

    # WHEN prune keeps everything and keeps it locked for 3 days
    run_steps(
        "prune", "--repo", repo, "--keep-last", "3", "--lock-mode", "governance", "--lock-days", "3", env=admin
    )  # fmt: skip

    # THEN the audit records' retention was extended with the rest, and prune and the extension are
    # recorded, in records locked as long
    audit_keys = [o.object_name for o in client.list_objects(bucket, prefix="repo/audit/", recursive=True)]
    assert len(audit_keys) == 4
    for key in audit_keys:
        left = client.get_object_retention(bucket, key).retain_until_date - datetime.now(UTC)
        assert timedelta(days=2, hours=23) < left < timedelta(days=3, hours=1), key
    res = snapflow("audit", "--repo", repo, "--format", "csv", env=admin)
    assert res.returncode == 0, res.stderr
    actions = [line.split(",")[2] for line in res.stdout.splitlines()[1:]]
    assert actions == ["repository.init", "key.add", "prune", "object-lock.extend"]

    # WHEN the backup credentials delete the record of the key's addition (a delete marker: its versions stay)
    res = snapflow("audit", "--repo", repo, "--format", "jsonl", env=admin)
    key_add = next(line for line in res.stdout.splitlines() if '"key.add"' in line).split('"id": "')[1][:64]
    minio_client(server, server.writer_env()).remove_object(bucket, f"repo/audit/{key_add}")

    # THEN verify names it, seq 2, as deleted with its intact version kept
    res = snapflow("audit", "verify", "--repo", repo, env=admin)
    assert res.returncode == 3
    assert f"missing: audit/{key_add} seq 2" in res.stdout
    assert "deleted, its intact old version is kept by the bucket" in res.stdout
    assert (
        res.stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: audit trail broken: missing record audit/{key_add}")
    )
