"""The single-volume restore pipeline (the ``restore-NAME`` WorkflowTemplate, run here by the local
runner with the same :class:`Pipeline`): ``write-backup-label``, ``uid-map`` and ``gid-map`` reach the
restore step only when set. Repository on SeaweedFS."""

from __future__ import annotations

import dataclasses
import os

import pytest

from tests.fixtures.backup_mode import BACKUP_LABEL, TABLESPACE_MAP, backup_mode_target, commit_backup
from tests.fixtures.k8s_app import run_step
from tests.fixtures.quiesce import local_plan


def _backup_mode_backup(tmp_path, s3_repo, backup_id: str) -> str:
    """A committed backup of one volume holding a PostgreSQL data directory in ``pgdata/``, copied in
    backup mode; returns its snapshot ID."""
    assert run_step("init", "--repo", s3_repo).rc == 0
    data = tmp_path / "vol-data"
    (data / "pgdata" / "base" / "1").mkdir(parents=True)
    (data / "pgdata" / "PG_VERSION").write_text("16\n")
    (data / "pgdata" / "base" / "1" / "1259").write_bytes(os.urandom(20_000))
    plan = local_plan(
        [{"name": "pg-0", "hook": "none", "params": {"pgdata": "pgdata"}}],
        [{"name": "data", "path": str(data)}],
    )
    record = commit_backup(
        s3_repo, backup_id, plan, {"data": data}, [backup_mode_target("pg-0", backup_id)], tmp_path
    )
    (volume,) = record["volumes"]
    return volume["snapshot"]


def _restore(tmp_path, local_policy, run_settings, target, **params: str):
    from workflows.local.local_policy import load_local_policy
    from workflows.local.runner import run_local

    policy = load_local_policy(local_policy(tmp_path / "unused-source"))
    given = {"snapshot": params.pop("snapshot"), "target-pvc": str(target), **params}
    settings = dataclasses.replace(run_settings, params=given)
    return run_local(policy, "restore", settings, restore_target=str(target))


def test_restore_pipeline_writes_the_backup_label_only_when_asked(
    tmp_path, s3_repo, local_policy, run_settings
):
    # GIVEN a committed backup of a PostgreSQL data volume copied in backup mode
    (tmp_path / "unused-source").mkdir()
    snapshot = _backup_mode_backup(tmp_path, s3_repo, "bk-tpl-label")

    # WHEN the restore pipeline runs with its defaults, and again with write-backup-label=true
    plain, labelled = tmp_path / "plain", tmp_path / "labelled"
    first = _restore(tmp_path, local_policy, run_settings, plain, snapshot=snapshot)
    second = _restore(
        tmp_path, local_policy, run_settings, labelled, snapshot=snapshot, **{"write-backup-label": "true"}
    )

    # THEN both restore the data, and only the second writes the recorded label and tablespace map
    assert first.ok and second.ok, (first.steps[0].error, second.steps[0].error)
    assert (plain / "pgdata" / "PG_VERSION").read_text() == "16\n"
    assert not (plain / "pgdata" / "backup_label").exists()
    assert (labelled / "pgdata" / "backup_label").read_text() == BACKUP_LABEL.format(backup_id="bk-tpl-label")
    assert (labelled / "pgdata" / "tablespace_map").read_text() == TABLESPACE_MAP
    assert not (labelled / "backup_label").exists()


def test_restore_pipeline_refuses_a_label_the_backup_never_recorded(
    tmp_path, s3_repo, local_policy, run_settings
):
    # GIVEN a snapshot that belongs to no backup (so no consistent point recorded a label for it)
    assert run_step("init", "--repo", s3_repo).rc == 0
    src = tmp_path / "unused-source"
    src.mkdir()
    (src / "file").write_text("x")
    res = run_step("copy", "--repo", s3_repo, "--source", src)
    assert res.rc == 0, res.stderr
    snapshot = res.last_line

    # WHEN the restore pipeline is asked to write the label
    out = tmp_path / "out"
    result = _restore(
        tmp_path, local_policy, run_settings, out, snapshot=snapshot, **{"write-backup-label": "true"}
    )

    # THEN the step fails with one line naming the option, and nothing was restored
    assert not result.ok
    assert result.steps[0].error.startswith("error: --write-backup-label: snapshot "), result.steps[0].error
    assert not out.exists() or not any(out.iterdir())


def test_restore_pipeline_refuses_a_write_backup_label_that_is_not_a_boolean(
    tmp_path, local_policy, run_settings
):
    from steps.errors import UsageError

    # GIVEN a local policy  WHEN its restore pipeline gets write-backup-label=yes
    (tmp_path / "unused-source").mkdir()
    with pytest.raises(UsageError) as err:
        _restore(
            tmp_path,
            local_policy,
            run_settings,
            tmp_path / "out",
            snapshot="x",
            **{"write-backup-label": "yes"},
        )

    # THEN it is refused, naming the parameter, before any step runs
    assert str(err.value) == "-p write-backup-label: expected one of false, true, got 'yes'"
    assert not (tmp_path / "out").exists()
