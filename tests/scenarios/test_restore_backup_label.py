"""``restore --write-backup-label``: the restore itself writes the backup_label (and tablespace_map) a
consistent point recorded for a PostgreSQL copied in backup mode, read from the repository, into the
data directory inside its target — what every restore-app mover runs. Repository on SeaweedFS."""

from __future__ import annotations

import json
import os
import shutil
import stat
import time

import pytest

from tests.fixtures.backup_mode import BACKUP_LABEL, TABLESPACE_MAP, backup_mode_target, commit_backup
from tests.fixtures.k8s_app import run_step, tree_state
from tests.fixtures.quiesce import local_plan


def _pg_volumes(tmp_path):
    """A data volume with the data directory in ``pgdata/`` (as the postgres image's PGDATA sets it up)
    and a WAL volume."""
    data, wal = tmp_path / "vol-data", tmp_path / "vol-wal"
    (data / "pgdata" / "base" / "1").mkdir(parents=True)
    (data / "pgdata" / "PG_VERSION").write_text("16\n")
    (data / "pgdata" / "base" / "1" / "1259").write_bytes(os.urandom(40_000))
    (data / "lost+found").mkdir()
    (wal / "pg_wal").mkdir(parents=True)
    (wal / "pg_wal" / "000000010000000000000002").write_bytes(os.urandom(64_000))
    os.chmod(data / "pgdata", 0o700)
    return data, wal


def _plan(data, wal, pgdata: str = "pgdata") -> dict:
    return local_plan(
        [{"name": "pg-0", "hook": "none", "params": {"pgdata": pgdata}}],
        [{"name": "data", "path": str(data)}, {"name": "wal", "path": str(wal), "role": "wal"}],
    )


def _snapshots(record: dict) -> dict[str, str]:
    return {v["name"]: v["snapshot"] for v in record["volumes"]}


def test_restore_writes_the_recorded_backup_label_into_the_data_directory_of_its_volume(s3_repo, tmp_path):
    # GIVEN a committed backup whose consistent point copied PostgreSQL pg-0 in backup mode
    assert run_step("init", "--repo", s3_repo).rc == 0
    data, wal = _pg_volumes(tmp_path)
    record = commit_backup(
        s3_repo, "bk-label-1", _plan(data, wal), {"data": data, "wal": wal},
        [backup_mode_target("pg-0", "bk-label-1")], tmp_path,
    )  # fmt: skip
    snaps = _snapshots(record)
    out = tmp_path / "restored-data"

    # WHEN its data volume is restored with --write-backup-label
    res = run_step(
        "restore", "--repo", s3_repo, "--snapshot", snaps["data"], "--target", out,
        "--write-backup-label", "--json",
    )  # fmt: skip

    # THEN the label and the tablespace map are in the data directory (not the volume's root), private and
    # owned like the data directory, and everything else is the backed-up volume
    assert res.rc == 0, res.stderr
    summary = json.loads(res.last_line)
    assert summary["backup_label"] == ["pgdata/backup_label", "pgdata/tablespace_map"]
    assert (out / "pgdata" / "backup_label").read_text() == BACKUP_LABEL.format(backup_id="bk-label-1")
    assert (out / "pgdata" / "tablespace_map").read_text() == TABLESPACE_MAP
    assert not (out / "backup_label").exists()
    datadir = os.lstat(out / "pgdata")
    for name in ("backup_label", "tablespace_map"):
        st = os.lstat(out / "pgdata" / name)
        assert stat.S_IMODE(st.st_mode) == 0o600
        assert (st.st_uid, st.st_gid) == (datadir.st_uid, datadir.st_gid)
    restored = tree_state(out)
    for name in ("pgdata/backup_label", "pgdata/tablespace_map"):
        del restored[name]
    assert restored == tree_state(data)

    # WHEN the WAL volume of the same backup is restored with the flag
    wal_out = tmp_path / "restored-wal"
    res = run_step(
        "restore", "--repo", s3_repo, "--snapshot", snaps["wal"], "--target", wal_out, "--write-backup-label"
    )

    # THEN it is refused before anything is written: the label belongs to the data volume
    assert res.rc == 2
    assert res.stderr.strip().splitlines()[-1] == (
        "error: --write-backup-label: backup bk-label-1 recorded no backup_label for volume wal (no "
        "PostgreSQL target of that volume was copied in backup mode); restore without it"
    )
    assert not wal_out.exists()


def test_restore_refuses_to_write_a_label_that_was_never_recorded(s3_repo, tmp_path):
    # GIVEN a committed backup whose PostgreSQL was cut atomically (crash recovery: no label may be written)
    assert run_step("init", "--repo", s3_repo).rc == 0
    data, wal = _pg_volumes(tmp_path)
    atomic = {"name": "pg-0", "hook": "postgresql", "method": "checkpoint", "recovery": "crash"}
    record = commit_backup(
        s3_repo, "bk-atomic", _plan(data, wal), {"data": data, "wal": wal}, [atomic], tmp_path
    )
    # AND a plain copy that belongs to no backup
    res = run_step("copy", "--repo", s3_repo, "--source", data)
    assert res.rc == 0, res.stderr
    plain = res.last_line
    out = tmp_path / "restored"

    # WHEN either is restored with --write-backup-label
    atomic_res = run_step(
        "restore", "--repo", s3_repo, "--snapshot", _snapshots(record)["data"], "--target", out,
        "--write-backup-label",
    )  # fmt: skip
    plain_res = run_step(
        "restore", "--repo", s3_repo, "--snapshot", plain, "--target", out, "--write-backup-label"
    )

    # THEN both are refused with one line naming the flag, and nothing was restored
    assert atomic_res.rc == 2 and plain_res.rc == 2
    assert atomic_res.stderr.strip().splitlines()[-1] == (
        "error: --write-backup-label: backup bk-atomic recorded no backup_label for volume data (no "
        "PostgreSQL target of that volume was copied in backup mode); restore without it"
    )
    assert plain_res.stderr.strip().splitlines()[-1] == (
        f"error: --write-backup-label: snapshot {plain[:8]} belongs to no backup, so no consistent point "
        "recorded a backup_label for it"
    )
    assert not out.exists()


@pytest.mark.slow
def test_postgresql_copied_in_backup_mode_recovers_consistent_from_a_restore_with_the_label(
    s3_repo, tmp_path
):
    from steps.drivers.snapshot_local import LocalSnapshotDriver
    from steps.plan import plan_from_dict
    from steps.quiesce.cut import run_consistent_point
    from tests.fixtures.databases import PostgresServer, make_workdir
    from tests.scenarios.test_consistent_point_postgresql import _pg_target, _restore_and_check
    from workflows.demo.sandbox import tpcb_invariant_holds

    # GIVEN a PostgreSQL under pgbench, copied file by file in backup mode with a CHECKPOINT forced in the
    # middle of the copy (without its label, such a copy starts and serves inconsistent data)
    assert run_step("init", "--repo", s3_repo).rc == 0
    base = make_workdir("snapflow-pgl-", "postgres")
    snaps = make_workdir("snapflow-pgl-snaps-", "postgres")
    server = PostgresServer(base / "data")
    load = None
    try:
        server.start()
        server.pgbench("-i", "-s", "1", "-q")
        load = server.pgbench_start("-c", "4", "-T", "20", "-n")
        time.sleep(1.0)

        def checkpoint_in_the_middle(volume, entry):
            if entry == "base":
                time.sleep(0.5)
                server.sql("CHECKPOINT")
                time.sleep(0.3)

        driver = LocalSnapshotDriver(local_dir=snaps, copy_hook=checkpoint_in_the_middle)
        plan = local_plan([_pg_target(server)], [{"name": "pgdata", "path": str(server.datadir)}])
        cp = run_consistent_point(plan_from_dict(plan), "bk-pg", driver)
        load.terminate()
        load.wait(timeout=30)
        (target,) = cp["timeline"]["targets"]
        assert target["recovery"] == "backup_label", cp["reasons"]
        # AND that copy committed as a backup (the consistent point's own timeline in its record)
        commit_plan = local_plan(
            [{"name": target["name"], "hook": "none", "params": {"pgdata": ""}}],
            [{"name": "pgdata", "path": cp["snapshots"][0]["snapshot"]}],
        )
        record = commit_backup(
            s3_repo, "bk-pg", commit_plan, {"pgdata": cp["snapshots"][0]["snapshot"]}, [target], tmp_path
        )
        restored = base / "restored"

        # WHEN it is restored with --write-backup-label
        res = run_step(
            "restore", "--repo", s3_repo, "--snapshot", _snapshots(record)["pgdata"], "--target", restored,
            "--write-backup-label", "--json",
        )  # fmt: skip

        # THEN the label is in place, and a PostgreSQL started on the restore recovers consistent
        assert res.rc == 0, res.stderr
        assert json.loads(res.last_line)["backup_label"] == ["backup_label"]
        assert (restored / "backup_label").read_text() == target["backup_label"]
        started, log, sums = _restore_and_check(restored)
        assert started, log
        assert sums["transactions"] > 0
        assert tpcb_invariant_holds(sums), sums
    finally:
        if load is not None and load.poll() is None:
            load.kill()
        server.cleanup()
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(snaps, ignore_errors=True)
