"""The check pipeline with the policy's restore test, run by the local runner against a real S3 server:
the same pipeline the check WorkflowTemplate runs, with a temporary directory as the scratch volume."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.fixtures.local_runs import recording_hook
from workflows.demo.sample import make_sample_data
from workflows.local.local_policy import load_local_policy
from workflows.local.runner import run_local


def _with_restore_test(policy_path: Path, **restore_test) -> Path:
    doc = yaml.safe_load(policy_path.read_text())
    doc["spec"]["verify"]["restoreTest"] = restore_test
    policy_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return policy_path


def _regular_files(root: Path) -> int:
    return sum(1 for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def _backed_up_policy(tmp_path, local_policy, run_settings, **restore_test):
    """A local policy with a restore test, its repository created and one committed backup."""
    data = tmp_path / "data"
    make_sample_data(data)
    path = _with_restore_test(
        local_policy(data, quiesce=[recording_hook(tmp_path / "hook.log")]), **restore_test
    )
    policy = load_local_policy(path)
    assert run_local(policy, "init", run_settings).ok
    backup = run_local(policy, "backup", run_settings)
    assert backup.ok and backup.committed
    return path, policy, data, backup


def test_the_check_run_restores_the_newest_backup_and_runs_the_check_command(
    tmp_path, local_policy, run_settings, snapflow
):
    # GIVEN a committed backup, and a policy whose restore test compares restored files with the data
    scratch_root = tmp_path / "scratch"
    run_settings.scratch_dir = str(scratch_root)
    data = tmp_path / "data"
    command = (
        f'cmp "$SNAPFLOW_RESTORE_DIR/data/media/blob.bin" {data}/media/blob.bin'
        ' && test "$(readlink "$SNAPFLOW_RESTORE_DIR/data/docs/latest")" = note-39.txt'
    )
    path, policy, data, backup = _backed_up_policy(
        tmp_path, local_policy, run_settings, enabled=True, scratchSize="1Gi", checkCommand=command
    )

    # WHEN the check pipeline runs (the restore-test parameter defaults to the policy's "enabled")
    result = run_local(policy, "check", run_settings)

    # THEN the check with the restore test ran instead of the plain check, and passed
    assert result.ok, [(s.name, s.status, s.error) for s in result.steps]
    steps = {s.name: s for s in result.steps}
    assert steps["check"].status == "Skipped"
    assert steps["check-with-restore-test"].status == "Succeeded"
    report = steps["check-with-restore-test"].result
    assert report["ok"] and report["problems"] == []
    # ... its record shows the restore of this app's newest backup, every file, and the command passing
    test = report["restore_test"]
    assert test["ok"] is True
    assert test["backup_id"] == backup.backup_id
    assert test["app"] == {"name": policy.app, "namespace": policy.namespace, "cluster": "test"}
    assert [v["name"] for v in test["volumes"]] == ["data"]
    assert test["volumes"][0]["files"] == _regular_files(data)
    assert test["check_command"]["exit"] == 0
    # ... in a scratch directory of the run, which is gone afterwards
    assert Path(test["scratch"]["path"]).parent == scratch_root
    assert list(scratch_root.iterdir()) == []
    # ... and the run's summary file carries the same report
    summary = json.loads((result.run_dir / "run.json").read_text())
    (entry,) = [s for s in summary["steps"] if s["name"] == "check-with-restore-test"]
    assert entry["report"]["restore_test"]["ok"] is True

    # WHEN the restore test is switched off for one run, from the command line
    off = snapflow(
        "run", str(path), "--local", "--pipeline", "check", "-p", "restore-test=false",
        "--state-dir", str(run_settings.state_dir), "--plain", "--json",
    )  # fmt: skip

    # THEN only the plain check ran, without a restore
    assert off.returncode == 0, off.stderr
    steps_off = {s["name"]: s for s in json.loads(off.stdout.strip().splitlines()[-1])["steps"]}
    assert steps_off["check-with-restore-test"]["status"] == "Skipped"
    assert steps_off["check"]["status"] == "Succeeded"
    assert steps_off["check"]["report"]["ok"] is True
    assert steps_off["check"]["report"]["restore_test"] is None


def test_a_failing_check_command_fails_the_check_run_and_names_the_problem(
    tmp_path, local_policy, run_settings, snapflow
):
    # GIVEN a committed backup and a restore test whose check command finds the restored data wanting
    command = (
        'test -e "$SNAPFLOW_RESTORE_DIR/data/global/pg_control" || { echo "no pg_control" >&2; exit 4; }'
    )
    path, _policy, data, _backup = _backed_up_policy(
        tmp_path, local_policy, run_settings, enabled=True, checkCommand=command
    )

    # WHEN the check pipeline runs
    run = snapflow(
        "run", str(path), "--local", "--pipeline", "check",
        "--state-dir", str(run_settings.state_dir), "--plain", "--json",
    )  # fmt: skip

    # THEN the run fails with the integrity exit code, and the failed step names the command's verdict
    assert run.returncode == 3, run.stderr
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["status"] == "Failed"
    (step,) = [s for s in summary["steps"] if s["name"] == "check-with-restore-test"]
    assert step["status"] == "Failed" and step["exit_code"] == 3
    assert "restore test: --restore-check failed (exit 4): no pg_control" in step["error"]
    test = step["report"]["restore_test"]
    assert test["ok"] is False and test["check_command"]["exit"] == 4
    # ... the restore itself worked: only the command failed
    assert test["volumes"][0]["files"] == _regular_files(data)


def test_the_restore_test_of_a_shared_repository_restores_this_apps_backup(
    tmp_path, local_policy, run_settings
):
    # GIVEN two apps backing up into one repository, the other app's backup being the newest
    _path, policy, _data, backup = _backed_up_policy(tmp_path, local_policy, run_settings, enabled=True)
    other_data = tmp_path / "other"
    make_sample_data(other_data, seed=3)
    other_path = local_policy(
        other_data, filename="other.yaml", name="other", quiesce=[recording_hook(tmp_path / "o.log")]
    )
    other = run_local(load_local_policy(other_path), "backup", run_settings)
    assert other.ok and other.committed

    # WHEN the first app's check runs its restore test
    result = run_local(policy, "check", run_settings)

    # THEN it restored the first app's backup, not the newer one of the other app
    assert result.ok, [(s.name, s.status, s.error) for s in result.steps]
    test = result.step("check-with-restore-test").result["restore_test"]
    assert test["backup_id"] == backup.backup_id != other.backup_id
