"""A failure anywhere in a local run still runs the finalizer, thaws the app and commits nothing;
only exit code 75 is retried, and never the step that holds the freeze."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from steps.drivers.objectstore import open_store
from steps.errors import EXIT_CONSISTENCY, EXIT_USAGE, UsageError
from steps.repository.repo import Repository
from tests.fixtures.local_runs import ROOT, hook_events, recording_hook, snapflow_cmd, write_local_policy
from tests.fixtures.s3 import TEST_PASSWORD
from workflows.demo.sample import make_sample_data
from workflows.local.local_policy import load_local_policy
from workflows.local.runner import run_local
from workflows.local.step_runs import FAILED, OMITTED, RETRYING, RUNNING, SUCCEEDED, StepRun, View


class Trigger(View):
    """Calls ``action(run)`` when a step reaches ``status`` (the test's way to break things mid-run)."""

    def __init__(self, step: str, status: str, action):
        self.step, self.status, self.action = step, status, action
        self.fired = 0

    def event(self, run: StepRun, what: str) -> None:
        if run.name == self.step and run.status == self.status:
            self.fired += 1
            self.action(run)


def _repository(policy) -> Repository:
    spec = policy.spec.repository
    return Repository.open(open_store(spec.url, spec.endpoint), TEST_PASSWORD)


def _snapshot_path(cp_run: StepRun) -> Path:
    record = json.loads((cp_run.dir / "consistent-point.json").read_text())
    return Path(record["snapshots"][0]["snapshot"])


def _remove_snapshot(run: StepRun) -> None:
    shutil.rmtree(_snapshot_path(run))


def _kill(run: StepRun) -> None:
    assert run.proc is not None
    os.killpg(run.proc.pid, signal.SIGKILL)


@pytest.mark.parametrize(
    ("break_at", "how"),
    [
        (("consistent-point", SUCCEEDED), _remove_snapshot),  # the copy finds no snapshot: exit 2
        (("copy-data", RUNNING), _kill),  # the copy process is killed (like an OOM-killed pod)
    ],
    ids=["snapshot-gone", "copy-killed"],
)
def test_app_is_thawed_and_nothing_committed_when_copy_fails(
    tmp_path, local_policy, run_settings, break_at, how
):
    # GIVEN a local policy whose hook records freeze and thaw, and an initialised repository
    data = tmp_path / "data"
    make_sample_data(data)
    hook_log = tmp_path / "hook.log"
    policy = load_local_policy(local_policy(data, quiesce=[recording_hook(hook_log)]))
    assert run_local(policy, "init", run_settings).ok
    trigger = Trigger(*break_at, how)

    # WHEN the copy is broken on purpose during the backup
    result = run_local(policy, "backup", run_settings, trigger)

    # THEN the copy failed, verify never started, and the run failed
    assert trigger.fired == 1
    assert result.status == FAILED and result.graph_status == FAILED
    copy = result.step("copy-data")
    assert copy.status == FAILED and copy.attempts == 1  # exit 2 / killed: never retried
    assert result.step("verify").status == OMITTED
    assert result.exit_code() != 0
    # ... the finalizer ran anyway, told that the workflow failed
    final = result.step("finalize")
    assert final.status == SUCCEEDED
    argv = json.loads((final.dir / "argv.json").read_text())
    assert argv[argv.index("--workflow-status") + 1] == "Failed"
    # ... the app was thawed: released by the holder and thawed again by the finalizer
    events = hook_events(hook_log)
    assert events[0] == "frozen" and events[-1] == "thawed" and events.count("thawed") >= 2
    # ... and no backup record was committed: no restore point exists
    repo = _repository(policy)
    assert repo.list_records("backups", key=result.backup_id) == []
    with pytest.raises(UsageError, match="no committed snapshot"):
        repo.find_snapshot("latest")
    # ... while the failed run is still recorded for the report, and the local snapshot is gone
    pipeline = [
        r.data for r in repo.list_records("runs", key=result.backup_id) if r.data["name"] == "pipeline"
    ]
    assert pipeline and pipeline[0]["status"] == FAILED and pipeline[0]["committed"] is False
    assert not (tmp_path / ".snapflow-snapshots").exists()


def test_a_freeze_that_fails_is_not_retried_and_the_finalizer_still_thaws(
    tmp_path, local_policy, run_settings
):
    # GIVEN a hook whose freeze command fails
    data = tmp_path / "data"
    data.mkdir()
    (data / "f").write_text("x")
    hook_log = tmp_path / "hook.log"
    broken = recording_hook(hook_log)
    broken["params"]["freeze"] = [f"echo frozen >> {hook_log}", "exit 1"]
    policy = load_local_policy(local_policy(data, quiesce=[broken]))
    assert run_local(policy, "init", run_settings).ok

    # WHEN the backup runs
    result = run_local(policy, "backup", run_settings)

    # THEN consistent-point failed with a consistency error, once (it holds the freeze: never retried)
    cp = result.step("consistent-point")
    assert cp.status == FAILED and cp.exit_code == EXIT_CONSISTENCY and cp.attempts == 1
    assert result.step("copy-data").status == OMITTED
    # ... the finalizer ran and thawed; nothing was committed
    assert result.step("finalize").status == SUCCEEDED
    assert hook_events(hook_log)[-1] == "thawed"
    assert _repository(policy).list_records("backups", key=result.backup_id) == []
    assert result.exit_code() == EXIT_CONSISTENCY


def test_a_copy_that_exits_75_is_retried_and_the_backup_commits(tmp_path, private_s3_server, run_settings):
    # GIVEN a local policy on an S3 server of this test, and an initialised repository
    data = tmp_path / "data"
    make_sample_data(data)
    policy = load_local_policy(
        write_local_policy(
            tmp_path / "policy.yaml",
            data,
            "s3://retry-test/repo",
            private_s3_server.endpoint,
            quiesce=[recording_hook(tmp_path / "hook.log")],
        )
    )
    assert run_local(policy, "init", run_settings).ok

    # WHEN the object store goes away right after the consistent point, and comes back once the copy
    # has failed with the temporary exit code 75
    stop = Trigger("consistent-point", SUCCEEDED, lambda _r: private_s3_server.stop())

    class Both(View):
        def event(self, run, what):
            stop.event(run, what)
            if run.name == "copy-data" and run.status == RETRYING:
                assert run.exit_code == 75
                private_s3_server.start()

    result = run_local(policy, "backup", run_settings, Both())

    # THEN the copy ran twice, the other steps once, and the backup was committed
    assert result.ok and result.committed, [(s.name, s.status, s.error) for s in result.all_steps()]
    assert result.step("copy-data").attempts == 2
    assert result.step("consistent-point").attempts == 1
    assert "--- attempt 2 ---" in result.step("copy-data").stderr_path.read_text()


def test_ctrl_c_stops_the_run_runs_the_finalizer_and_commits_nothing(tmp_path, local_policy):
    # GIVEN a local policy on a directory big enough for the copy to take a moment
    data = tmp_path / "data"
    data.mkdir()
    with open(data / "big.bin", "wb") as f:
        for _ in range(24):
            f.write(os.urandom(4 * 1024 * 1024))
    hook_log = tmp_path / "hook.log"
    policy = local_policy(data, quiesce=[recording_hook(hook_log)])
    state = tmp_path / "state"
    init = subprocess.run(
        snapflow_cmd("run", str(policy), "--local", "--pipeline", "init", "--state-dir", str(state)),
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert init.returncode == 0, init.stderr

    # WHEN the user presses Ctrl-C while the copy runs
    proc = subprocess.Popen(
        snapflow_cmd("run", str(policy), "--local", "--state-dir", str(state), "--plain", "--json"),
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        # (the copy writes its Argo progress file once it is reading data: then it is surely running)
        while time.monotonic() < deadline and not list(state.glob("runs/backup-*/steps/copy-data/progress")):
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()

    # THEN the run ends with 130 after the finalizer ran (the app is thawed) and nothing is committed
    assert proc.returncode == 130, err
    run_json = json.loads(next(state.glob("runs/backup-*/run.json")).read_text())
    steps = {s["name"]: s["status"] for s in run_json["steps"]}
    assert steps["copy-data"] == FAILED and steps["verify"] == OMITTED and steps["finalize"] == SUCCEEDED
    assert run_json["interrupted"] is True and run_json["committed"] is False
    assert hook_events(hook_log)[-1] == "thawed"
    assert "the finalizer ran" in err


def test_cluster_policy_runs_locally_only_with_every_volume_mapped(tmp_path, monkeypatch, snapflow):
    # GIVEN the PostgreSQL StatefulSet example (PVC volumes, hooks in pods)
    example = ROOT / "examples" / "postgresql-statefulset.yaml"
    monkeypatch.setenv("SNAPFLOW_PASSWORD", "x")

    # WHEN it is run locally without mapping its volumes
    res = snapflow("run", str(example), "--local", "--state-dir", str(tmp_path / "state"))

    # THEN it is refused with one line naming the field and the fix, and nothing ran
    assert res.returncode == EXIT_USAGE
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "spec.volumes" in lines[0] and "--volume" in lines[0]
    assert not (tmp_path / "state" / "runs").exists()

    # WHEN every volume is mapped onto a directory
    docs = load_local_policy  # the same adapter the command uses
    from workflows.policy import load_policies

    original = load_policies([example])[0].policy
    mapping = [f"{v.volume_name}={tmp_path / v.volume_name}" for v in original.spec.volumes]
    for v in original.spec.volumes:
        (tmp_path / v.volume_name).mkdir()
    target = original.spec.quiesce[0].target_name
    policy = docs(example, volumes=mapping, hook_params=[f"{target}.port=5433"])

    # THEN the policy is local: paths as volumes, the hook runs locally, the snapshot driver is local,
    # and the backup pipeline is the cluster one without the cluster-only steps
    from workflows.pipeline import backup_pipeline, plan_for

    assert policy.is_local
    assert all(t.local and t.pod is None for t in policy.spec.quiesce if t.hook != "none")
    assert policy.spec.quiesce[0].params["port"] == 5433
    assert plan_for(policy).snapshot.driver == "local"
    local_steps = [s.name for s in backup_pipeline(policy).order()]
    cluster_steps = [s.name for s in backup_pipeline(original).order()]
    assert local_steps == [s for s in cluster_steps if s != "capture" and not s.startswith("prepare-clone-")]
    assert backup_pipeline(policy).exit_step.name == backup_pipeline(original).exit_step.name == "finalize"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--volume", "nope=/tmp"], "--volume: 'nope' is not a volume"),
        (["--hook-param", "x"], "--hook-param: expected NAME=VALUE"),
        (["--pipeline", "backup", "-p", "read-data-percent=7"], "-p read-data-percent: expected one of"),
        (["-p", "unknown=1"], "-p unknown: not a parameter"),
    ],
)
def test_bad_local_run_options_are_refused_in_one_line(tmp_path, monkeypatch, snapflow, args, expected):
    # GIVEN a valid local policy
    data = tmp_path / "data"
    data.mkdir()
    policy = write_local_policy(tmp_path / "p.yaml", data, "s3://bucket-x/repo", "http://127.0.0.1:1")
    monkeypatch.setenv("SNAPFLOW_PASSWORD", "x")

    # WHEN it is run with a bad option
    res = snapflow("run", str(policy), "--local", "--state-dir", str(tmp_path / "state"), *args)

    # THEN one line says which option and what was expected, exit 2, nothing ran
    assert res.returncode == EXIT_USAGE, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], res.stderr
    assert not (tmp_path / "state" / "runs").exists()


def test_missing_password_and_memory_repository_are_refused(tmp_path, monkeypatch, snapflow):
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.delenv("SNAPFLOW_PASSWORD", raising=False)
    monkeypatch.delenv("SNAPFLOW_PASSWORD_FILE", raising=False)
    s3_policy = write_local_policy(tmp_path / "a.yaml", data, "s3://bucket-x/repo", "http://127.0.0.1:1")
    mem_policy = write_local_policy(tmp_path / "b.yaml", data, "mem://x", "http://127.0.0.1:1")

    no_password = snapflow("run", str(s3_policy), "--local", "--state-dir", str(tmp_path / "s"))
    memory = snapflow("run", str(mem_policy), "--local", "--state-dir", str(tmp_path / "s"))

    assert no_password.returncode == EXIT_USAGE and "SNAPFLOW_PASSWORD" in no_password.stderr
    assert memory.returncode == EXIT_USAGE and "spec.repository.url" in memory.stderr
    assert "mem://" in memory.stderr


def test_a_backup_whose_verify_fails_is_not_committed_and_cannot_be_restored(
    tmp_path, local_policy, run_settings, snapflow
):
    # GIVEN a local policy and an initialised repository
    data = tmp_path / "data"
    make_sample_data(data)
    policy_file = local_policy(data)
    policy = load_local_policy(policy_file)
    assert run_local(policy, "init", run_settings).ok
    spec = policy.spec.repository
    store = open_store(spec.url, spec.endpoint)

    def lose_a_pack(_run: StepRun) -> None:
        pack = next(info.key for info in store.list("data/"))
        store.delete(pack)

    # WHEN a pack the copy wrote disappears before verify reads it
    result = run_local(policy, "backup", run_settings, Trigger("copy-data", SUCCEEDED, lose_a_pack))

    # THEN verify fails (integrity: not retried), the finalizer runs, and nothing is committed
    verify = result.step("verify")
    assert verify.status == FAILED and verify.exit_code == 3 and verify.attempts == 1
    assert result.step("finalize").status == SUCCEEDED
    assert result.committed is False
    # ... so the copy's snapshot exists but is no restore point
    snapshot_id = result.step("copy-data").result["id"]
    res = snapflow(
        "restore", str(policy_file), "--local", "--snapshot", snapshot_id[:12], "--target", str(tmp_path / "r"),
        "--state-dir", str(tmp_path / "state"),
    )  # fmt: skip
    assert res.returncode == EXIT_USAGE
    assert "never committed" in res.stderr and not (tmp_path / "r").exists()


def test_a_backup_judged_inconsistent_is_not_committed_and_the_run_fails(
    tmp_path, local_policy, run_settings
):
    # GIVEN a local policy whose directory is copied file by file with nothing holding the app
    data = tmp_path / "data"
    make_sample_data(data)
    policy = load_local_policy(local_policy(data))
    assert run_local(policy, "init", run_settings).ok

    # WHEN it is backed up (every step passes)
    result = run_local(policy, "backup", run_settings)

    # THEN the consistent point says inconsistent, and finalize refuses to commit: the run fails
    assert result.verdict is not None and result.verdict["verdict"] == "inconsistent"
    assert result.step("verify").status == SUCCEEDED
    finalize = result.step("finalize")
    assert finalize.status == FAILED and finalize.exit_code == 3
    last = finalize.stderr_path.read_text().strip().splitlines()[-1]
    assert "not committed" in last and "'inconsistent'" in last and "no restore point" in last
    assert result.committed is False and not result.ok and result.exit_code() == 3
    # ... no restore point exists, and the run record says so
    repo = _repository(policy)
    assert repo.list_records("backups", key=result.backup_id) == []
    pipeline = [
        r.data for r in repo.list_records("runs", key=result.backup_id) if r.data["name"] == "pipeline"
    ]
    assert pipeline and pipeline[0]["status"] == FAILED and pipeline[0]["committed"] is False
