"""``snapflow run --local`` end to end: the backup pipeline as local processes against a real S3 server,
committed only when everything passed, restorable byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

from steps.drivers.objectstore import open_store
from steps.repository.repo import Repository
from tests.fixtures.local_runs import hook_events, recording_hook
from tests.fixtures.s3 import TEST_PASSWORD
from workflows.demo.sample import make_sample_data, tree_digest


def _repository(policy_path: Path) -> Repository:
    import yaml

    repo = yaml.safe_load(policy_path.read_text())["spec"]["repository"]
    return Repository.open(open_store(repo["url"], repo["endpoint"]), TEST_PASSWORD)


def test_backup_run_locally_is_committed_verified_and_restores_byte_identical(
    tmp_path, local_policy, snapflow
):
    # GIVEN a data directory (text, binary, sparse file, symlink, empty dir, modes) and a local policy
    # whose hook records when the app is frozen and thawed
    data = tmp_path / "data"
    make_sample_data(data)
    hook_log = tmp_path / "hook.log"
    policy = local_policy(data, quiesce=[recording_hook(hook_log)])
    state = str(tmp_path / "state")

    # WHEN the repository is created and the backup pipeline runs locally
    init = snapflow("run", str(policy), "--local", "--pipeline", "init", "--state-dir", state, "--plain")
    assert init.returncode == 0, init.stderr + init.stdout
    run = snapflow("run", str(policy), "--local", "--state-dir", state, "--plain", "--json")

    # THEN every step of the pipeline ran in dependency order, and the backup was committed
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["status"] == "Succeeded"
    assert summary["committed"] is True
    steps = {s["name"]: s for s in summary["steps"]}
    assert list(steps) == ["consistent-point", "copy-data", "verify", "finalize"]
    assert all(s["status"] == "Succeeded" and s["attempts"] == 1 for s in steps.values())
    assert steps["consistent-point"]["finished"] <= steps["copy-data"]["started"]
    assert steps["copy-data"]["finished"] <= steps["verify"]["started"]
    assert steps["verify"]["finished"] <= steps["finalize"]["started"]
    assert summary["verdict"] == "app-consistent"
    assert summary["freeze"]["window_ms"] is not None
    # ... the live view ended with a timeline marking the freeze window
    assert "Timeline" in run.stderr and "freeze window" in run.stderr
    assert "copy-data: succeeded" in run.stderr
    # ... the app was frozen once and thawed (released by the holder, then the finalizer's thaw)
    events = hook_events(hook_log)
    assert events[0] == "frozen" and events.count("frozen") == 1
    assert events[-1] == "thawed" and events.count("thawed") >= 1
    # ... the repository holds the committed record, a passing verify that read everything, the timeline
    repo = _repository(policy)
    backup_id = summary["backup_id"]
    backups = repo.list_records("backups", key=backup_id)
    assert len(backups) == 1
    assert backups[0].data["consistency"]["verdict"] == "app-consistent"
    runs = {r.data["name"]: r.data for r in repo.list_records("runs", key=backup_id)}
    assert runs["verify"]["ok"] is True and runs["verify"]["read_data_percent"] == 100
    assert [s["status"] for s in runs["pipeline"]["steps"]] == ["Succeeded"] * 4
    # ... and the local snapshot of the volume was removed after the copy (deleteAfterCopy)
    assert not (tmp_path / ".snapflow-snapshots").exists()

    # WHEN the latest backup is restored into a new directory
    target = tmp_path / "restored"
    restore = snapflow(
        "restore", str(policy), "--local", "--snapshot", "latest", "--target", str(target),
        "--state-dir", state, "--plain",
    )  # fmt: skip

    # THEN it is byte- and metadata-identical to the data
    assert restore.returncode == 0, restore.stderr + restore.stdout
    assert tree_digest(target) == tree_digest(data)
    assert (target / "docs" / "latest").is_symlink()


def test_second_local_backup_finds_its_parent_and_adds_little(tmp_path, local_policy, run_settings):
    # GIVEN a committed local backup of a directory
    from workflows.local.local_policy import load_local_policy
    from workflows.local.runner import run_local

    data = tmp_path / "data"
    make_sample_data(data)
    policy = load_local_policy(local_policy(data, quiesce=[recording_hook(tmp_path / "hook.log")]))
    assert run_local(policy, "init", run_settings).ok
    first = run_local(policy, "backup", run_settings)
    assert first.ok and first.committed

    # WHEN one file changes and the policy is backed up again
    (data / "docs" / "note-03.txt").write_text("changed\n")
    second = run_local(policy, "backup", run_settings)

    # THEN the second copy has the first as parent (the copy reads through a stable path) and adds
    # far less than the first one did
    assert second.ok and second.committed
    copy1 = first.step("copy-data").result
    copy2 = second.step("copy-data").result
    assert copy2["parent"] == copy1["id"]
    assert copy2["bytes_added"] < copy1["bytes_added"] / 10
