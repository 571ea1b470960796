"""The exporter on the records a real backup run writes: a local run of the pipeline against the test S3
server is served as a committed backup with its freeze window, verify result and policy targets."""

from __future__ import annotations

from tests.fixtures.local_runs import recording_hook
from workflows.demo.sample import make_sample_data
from workflows.fleet.exporter import Exporter
from workflows.fleet.model import Targets, targets_from_policies


def test_a_committed_local_backup_is_served_with_its_freeze_window_verify_and_targets(
    tmp_path, local_policy, run_settings
):
    from workflows.local.local_policy import load_local_policy
    from workflows.local.runner import run_local

    # GIVEN one committed backup of a directory, run by the local runner with a recording hook
    data = tmp_path / "data"
    make_sample_data(data)
    path = local_policy(data, quiesce=[recording_hook(tmp_path / "hook.log")], schedule="0 * * * *")
    policy = load_local_policy(path)
    assert run_local(policy, "init", run_settings).ok
    run = run_local(policy, "backup", run_settings)
    assert run.ok and run.committed

    # WHEN the exporter reads the repository, with the policy for its targets
    url = policy.spec.repository.url
    exporter = Exporter(
        [url], endpoint=policy.spec.repository.endpoint, targets=targets_from_policies([str(path)], Targets())
    )
    exporter.refresh()
    m = {
        (s.name, s.labels.get("app")): (s.value, s.labels)
        for family in exporter.collect()
        for s in family.samples
    }

    # THEN the app is served under its cluster, namespace and name with one committed backup, a passed
    # verify, the hook's freeze window, and the RPO of an hourly schedule
    value, labels = m[("snapflow_backup_committed", "files")]
    assert value == 1 and labels == {
        "cluster": "test",
        "namespace": "local",
        "app": "files",
        "source": "app",
        "repository": url,
    }
    assert m[("snapflow_verify_last_ok", "files")][0] == 1
    assert m[("snapflow_backup_uncommitted_runs", "files")][0] == 0
    assert 0 <= m[("snapflow_freeze_window_seconds", "files")][0] < 20
    assert m[("snapflow_freeze_budget_seconds", "files")][0] == 20
    assert m[("snapflow_backup_rpo_target_seconds", "files")][0] == 3600 + 600
    assert m[("snapflow_backup_size_bytes", "files")][0] > 0
    assert m[("snapflow_backup_last_committed_timestamp_seconds", "files")][0] > 0
