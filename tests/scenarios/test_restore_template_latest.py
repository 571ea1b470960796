"""The single-volume restore template's ``snapshot=latest`` (its default), run by the local runner with
the same :class:`Pipeline` as the ``restore-NAME`` WorkflowTemplate: the chosen volume's snapshot in
the newest committed backup of the app, never an uncommitted backup's, another volume's or another
app's. Repository on SeaweedFS."""

from __future__ import annotations

import dataclasses
import json
import os
import signal

import pytest
import yaml

from tests.fixtures.k8s_app import run_step, tree_state
from tests.fixtures.local_runs import recording_hook


def _policy_file(tmp_path, s3_repo, endpoint, name: str = "files") -> tuple:
    """A local policy of two directories, volumes ``data`` and ``wal``."""
    data, wal = tmp_path / f"{name}-data", tmp_path / f"{name}-wal"
    data.mkdir()
    wal.mkdir()
    doc = {
        "apiVersion": "snapflow.io/v1alpha1",
        "kind": "ProtectionPolicy",
        "metadata": {"name": name, "namespace": "local"},
        "spec": {
            "cluster": "test",
            "volumes": [{"path": str(data), "name": "data"}, {"path": str(wal), "name": "wal"}],
            # nothing writes to the directories during a backup: a file-by-file copy under the hook's
            # hold is consistent, so the backup commits
            "quiesce": [recording_hook(tmp_path / f"{name}-hook.log")],
            "repository": {"url": s3_repo, "endpoint": endpoint, "passwordSecret": {"name": "unused"}},
            "verify": {"readDataPercent": 100},
        },
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path, data, wal


def _restore(policy, run_settings, target, **params: str):
    from workflows.local.runner import run_local

    settings = dataclasses.replace(run_settings, params={"target-pvc": str(target), **params})
    return run_local(policy, "restore", settings, restore_target=str(target))


@pytest.mark.slow
def test_latest_restores_the_chosen_volume_of_the_newest_committed_backup(
    tmp_path, s3_repo, s3_server, run_settings
):
    from workflows.local.local_policy import load_local_policy
    from workflows.local.runner import run_local
    from workflows.local.step_runs import RUNNING, View

    # GIVEN two committed backups of an app with volumes data and wal, and a newer one never committed
    path, data, wal = _policy_file(tmp_path, s3_repo, s3_server.endpoint)
    policy = load_local_policy(path)
    assert run_local(policy, "init", run_settings).ok
    states = []
    for n in (1, 2):
        (data / "file").write_text(f"data {n}")
        (wal / "file").write_text(f"wal {n}")
        (wal / f"segment-{n}").write_text("x" * n)
        assert run_local(policy, "backup", run_settings).ok
        states.append({"data": tree_state(data), "wal": tree_state(wal)})

    class KillCopyOfData(View):
        def event(self, run, what: str) -> None:
            if run.name == "copy-data" and run.status == RUNNING and run.proc is not None:
                os.killpg(run.proc.pid, signal.SIGKILL)

    (data / "file").write_text("data 3")
    (wal / "file").write_text("wal 3, never committed")
    killed = run_local(policy, "backup", run_settings, KillCopyOfData())
    assert not killed.ok and not killed.committed
    res = run_step("snapshots", "--repo", s3_repo, "--json")
    assert res.rc == 0, res.stderr
    assert [s for s in json.loads(res.stdout) if s.get("backup_id") == killed.backup_id], (
        "the uncommitted backup copied wal"
    )

    # WHEN the restore template runs with its default snapshot (latest) for each volume
    restored = {}
    for volume in ("wal", "data"):
        target = tmp_path / f"restored-{volume}"
        params = {"volume": volume} if volume != "data" else {}  # data is the default volume
        result = _restore(policy, run_settings, target, **params)
        assert result.ok, result.steps[0].error
        restored[volume] = tree_state(target)

    # THEN each holds its own volume as the second (newest committed) backup copied it
    assert restored == states[1]


def test_latest_without_a_committed_backup_of_the_app_is_one_line(tmp_path, s3_repo, s3_server, run_settings):
    from workflows.local.local_policy import load_local_policy
    from workflows.local.runner import run_local

    # GIVEN a repository with a committed backup of another app only
    other_path, other_data, _ = _policy_file(tmp_path, s3_repo, s3_server.endpoint, name="other")
    other = load_local_policy(other_path)
    assert run_local(other, "init", run_settings).ok
    (other_data / "file").write_text("another app")
    assert run_local(other, "backup", run_settings).ok
    path, _, _ = _policy_file(tmp_path, s3_repo, s3_server.endpoint)
    policy = load_local_policy(path)

    # WHEN the restore template runs with snapshot=latest
    target = tmp_path / "restored"
    result = _restore(policy, run_settings, target, volume="wal")

    # THEN the step fails in one line naming the app, its namespace and the volume; nothing is written
    assert not result.ok
    error = result.steps[0].error
    assert error == (
        f"error: --snapshot latest: no committed backup of app files in namespace local holds volume wal "
        f"in {s3_repo}"
    ), error
    assert "\n" not in error.strip() and not (target.exists() and any(target.iterdir()))
    # AND an ID still restores whatever volume it names, whatever the volume parameter says
    res = run_step("snapshots", "--repo", s3_repo, "--json")
    assert res.rc == 0, res.stderr
    (snap,) = [
        s
        for s in json.loads(res.stdout)
        if (s.get("tags") or {}).get("volume") == "data" or s.get("volume") == "data"
    ]
    result = _restore(policy, run_settings, target, snapshot=snap["id"], volume="wal")
    assert result.ok, result.steps[0].error
    assert (target / "file").read_text() == "another app"
