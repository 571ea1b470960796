"""PostgreSQL under pgbench (TPC-B-like): the consistent point must restore to a database that
recovers and keeps the TPC-B invariant (sum of account = teller = branch balances = history deltas)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from steps.drivers.snapshot_local import LocalSnapshotDriver
from steps.plan import plan_from_dict
from steps.quiesce.cut import run_consistent_point
from steps.quiesce.postgresql import write_backup_label
from tests.fixtures.databases import PostgresServer, make_workdir, prepare_restored_pgdata
from tests.fixtures.quiesce import local_plan, run_step
from workflows.demo.sandbox import tpcb_invariant_holds

pytestmark = pytest.mark.slow


def _pg_target(server: PostgresServer, **params) -> dict:
    return {"name": "pg-0", "hook": "postgresql", "params": {**server.conn_params, **params}}


def _restore_and_check(datadir: Path, label: dict | None = None) -> tuple[bool, str, dict | None]:
    prepare_restored_pgdata(datadir)
    if label is not None:
        write_backup_label(datadir, label)
    restored = PostgresServer(datadir, initialise=False)
    try:
        ok, log = restored.try_start()
        if not ok:
            return False, log, None
        return True, "", restored.tpcb_sums()
    finally:
        restored.cleanup()


@pytest.mark.root
def test_atomic_btrfs_snapshot_of_postgresql_under_load_recovers_consistent(btrfs_mount, tmp_path):
    # GIVEN a PostgreSQL whose data directory (data and WAL) is a btrfs subvolume, under pgbench
    pgdata = btrfs_mount.subvolume("pgdata")
    server = PostgresServer(pgdata)
    try:
        server.start()
        server.pgbench("-i", "-s", "1", "-q")
        load = server.pgbench_start("-c", "4", "-T", "6", "-n")
        time.sleep(1.5)
        plan = local_plan(
            [_pg_target(server)],
            [{"name": "pgdata", "path": str(pgdata)}],
            local_dir=str(btrfs_mount.mountpoint / "snaps"),
        )
        (tmp_path / "plan.json").write_text(json.dumps(plan))

        # WHEN the consistent point runs (the step CLI, one process)
        res = run_step(
            "consistent-point",
            "--plan",
            str(tmp_path / "plan.json"),
            "--backup-id",
            "bk-a",
            "--out",
            str(tmp_path / "cp.json"),
        )
        _load_out, load_err = load.communicate(timeout=60)

        # THEN the verdict is app-consistent, by checkpoint + atomic cut, with crash recovery
        assert res.returncode == 0, res.stderr
        record = json.loads(res.stdout)
        assert record == json.loads((tmp_path / "cp.json").read_text())
        assert record["verdict"] == "app-consistent", record["reasons"]
        target = record["timeline"]["targets"][0]
        assert target["method"] == "checkpoint" and target["recovery"] == "crash"
        assert "backup_label" not in target
        snap = record["snapshots"][0]
        assert snap["atomic"] is True
        assert target["quiesced"] <= record["timeline"]["volumes"][0]["cut"] <= target["released"]
        assert load.returncode == 0, load_err
        assert int(server.sql("SELECT count(*) FROM pgbench_history")) > 0

        # AND a fresh PostgreSQL on the snapshot recovers, with the TPC-B invariant intact
        restored = btrfs_mount.mountpoint / "restored"
        subprocess.run(
            ["btrfs", "subvolume", "snapshot", snap["snapshot"], str(restored)],
            check=True,
            capture_output=True,
        )
        assert not (restored / "backup_label").exists()
        started, log, sums = _restore_and_check(restored)
        assert started, log
        assert sums["transactions"] > 0
        assert tpcb_invariant_holds(sums), sums
    finally:
        server.cleanup()


def test_copy_in_backup_mode_needs_the_label_when_a_checkpoint_runs_during_the_copy(tmp_path):
    # GIVEN a PostgreSQL on a plain directory (the local driver copies file by file), under pgbench
    base = make_workdir("snapflow-pgb-", "postgres")
    server = PostgresServer(base / "data")
    snaps = make_workdir("snapflow-pgb-snaps-", "postgres")
    load = None
    try:
        server.start()
        server.pgbench("-i", "-s", "1", "-q")
        load = server.pgbench_start("-c", "4", "-T", "20", "-n")
        time.sleep(1.0)
        checkpoints = []

        def checkpoint_in_the_middle(volume, entry):
            # `base` (the tables) is copied before `global` (pg_control): force a checkpoint between them
            if entry == "base":
                time.sleep(1.0)
                server.sql("CHECKPOINT")
                checkpoints.append(server.sql("SELECT checkpoint_lsn FROM pg_control_checkpoint()"))
                time.sleep(0.5)

        driver = LocalSnapshotDriver(local_dir=snaps, copy_hook=checkpoint_in_the_middle)
        plan = plan_from_dict(
            local_plan([_pg_target(server)], [{"name": "pgdata", "path": str(server.datadir)}])
        )

        # WHEN the consistent point copies the data directory
        record = run_consistent_point(plan, "bk-b", driver)
        print(json.dumps(record["timeline"], indent=1))
        load.terminate()
        load.wait(timeout=30)

        # THEN backup mode was used: label returned, pg_wal copied after the stop, app-consistent
        assert checkpoints, "the copy hook did not run"
        assert record["verdict"] == "app-consistent", record["reasons"]
        target = record["timeline"]["targets"][0]
        assert target["method"] == "backup" and target["recovery"] == "backup_label"
        assert "START WAL LOCATION" in target["backup_label"]
        snap = record["snapshots"][0]
        assert snap["atomic"] is False and snap["deferred"] == ["pg_wal"]
        assert snap["deferred_copied"] >= snap["finished"]
        # the temporary slot went away with the release
        assert server.sql("SELECT count(*) FROM pg_replication_slots") == "0"

        # AND restored WITH the label: recovers and keeps the invariant
        with_label = snaps / "with-label"
        shutil.copytree(snap["snapshot"], with_label, symlinks=True)
        started, log, sums = _restore_and_check(with_label, label=target)
        assert started, log
        assert sums["transactions"] > 0
        assert tpcb_invariant_holds(sums), sums

        # AND restored WITHOUT the label: it fails to recover or serves inconsistent data
        without = snaps / "without-label"
        shutil.copytree(snap["snapshot"], without, symlinks=True)
        started, log, sums = _restore_and_check(without)
        print(
            "restore without backup_label:", "started" if started else "failed to start", sums or log[-300:]
        )
        assert not started or not tpcb_invariant_holds(sums), (
            f"expected a broken restore without backup_label, got a consistent one: {sums}"
        )
    finally:
        if load is not None and load.poll() is None:
            load.kill()
        server.cleanup()
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(snaps, ignore_errors=True)
