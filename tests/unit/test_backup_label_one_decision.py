"""Where a restored volume gets its ``backup_label`` is decided once, by
:func:`steps.quiesce.postgresql.labels_for_volume`: the steps' ``restore --write-backup-label`` (the
labels of the restored snapshot, written by :func:`steps.manifests.volume_restore.write_labels`) and
the local restore (:func:`workflows.local.local_restore.prepare_restored_volume`) write the same files at
the same place for the same backup record."""

from __future__ import annotations

import pytest

from steps.errors import PermanentError, UsageError
from steps.manifests.volume_restore import write_labels
from steps.quiesce.postgresql import labels_for_snapshot, labels_for_volume
from tests.fixtures.backup_mode import BACKUP_LABEL, TABLESPACE_MAP, backup_mode_target
from workflows.local.local_restore import RestoreChoice, prepare_restored_volume

SNAPS = {"data": "d" * 64, "wal": "e" * 64, "other": "f" * 64}


def _record(pgdata: str, cp_targets: list[dict], volumes: list[dict] | None = None) -> dict:
    """A committed backup record of PostgreSQL pg-0 (data directory ``pgdata`` inside volume data,
    its WAL on volume wal) whose consistent point recorded ``cp_targets``."""
    volumes = volumes or [
        {"name": "data", "role": "data", "target": None, "snapshot": SNAPS["data"]},
        {"name": "wal", "role": "wal", "target": None, "snapshot": SNAPS["wal"]},
    ]
    return {
        "version": 1,
        "backup_id": "bk-1",
        "app": {"cluster": "c", "namespace": "shop", "name": "orders-db", "policy": "orders-db"},
        "volumes": volumes,
        "targets": [{"name": t["name"], "hook": "postgresql", "pgdata": pgdata} for t in cp_targets],
        "consistency": {
            "verdict": "app-consistent",
            "timeline": {
                "targets": cp_targets,
                "volumes": [
                    {"volume": v["name"], "atomic": False, "targets": [t["name"] for t in cp_targets]}
                    for v in volumes
                ],
            },
        },
    }


def _restored(root, sub: str):
    """A restored volume whose data directory is ``sub`` (the restore made it)."""
    (root / sub).mkdir(parents=True, exist_ok=True)
    (root / sub / "PG_VERSION").write_text("16\n")
    return root


def _files(root) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def _both_paths(tmp_path, record: dict, volume: str, sub: str) -> tuple[dict, dict, list[str]]:
    step_root = _restored(tmp_path / "step", sub)
    local_root = _restored(tmp_path / "local", sub)
    try:
        _vol, labels = labels_for_snapshot(record, SNAPS[volume])
    except UsageError:
        labels = []  # the step refuses --write-backup-label for a volume without a label: nothing written
    write_labels(str(step_root), labels)
    notes = prepare_restored_volume(
        RestoreChoice(SNAPS[volume], volume, record["backup_id"], record), str(local_root)
    )
    return _files(step_root), _files(local_root), notes


@pytest.mark.parametrize("sub", ["pgdata", "", "srv/pg/16/main"])
def test_the_step_and_the_local_restore_write_the_label_into_the_same_data_directory(tmp_path, sub):
    # GIVEN a backup record of a PostgreSQL copied in backup mode, its data directory at ``sub``
    record = _record(sub, [backup_mode_target("pg-0", "bk-1")])

    # WHEN its data volume is restored by the step and by the local restore
    step, local, notes = _both_paths(tmp_path, record, "data", sub)

    # THEN both wrote backup_label and tablespace_map into the data directory, nowhere else
    where = f"{sub}/" if sub else ""
    assert (
        step
        == local
        == {
            f"{where}PG_VERSION": "16\n",
            f"{where}backup_label": BACKUP_LABEL.format(backup_id="bk-1"),
            f"{where}tablespace_map": TABLESPACE_MAP,
        }
    )
    assert notes == [
        f"target pg-0: wrote {where}backup_label, {where}tablespace_map (copy in backup mode: recovery"
        " replays WAL from the backup start)"
    ]


def test_neither_path_writes_a_label_into_the_wal_volume(tmp_path):
    # GIVEN the same record; WHEN its WAL volume is restored by both paths
    record = _record("pgdata", [backup_mode_target("pg-0", "bk-1")])
    step, local, _notes = _both_paths(tmp_path, record, "wal", "pgdata")

    # THEN neither wrote a label
    assert step == local == {"pgdata/PG_VERSION": "16\n"}
    assert labels_for_volume(record, "wal") == []


def test_a_volume_of_another_target_gets_none_of_this_targets_label(tmp_path):
    # GIVEN two PostgreSQL targets, each with its own data volume, only pg-0 copied in backup mode
    crash = {"name": "pg-1", "hook": "postgresql", "method": "checkpoint", "recovery": "crash"}
    volumes = [
        {"name": "data", "role": "data", "target": "pg-0", "snapshot": SNAPS["data"]},
        {"name": "other", "role": "data", "target": "pg-1", "snapshot": SNAPS["other"]},
    ]
    record = _record("pgdata", [backup_mode_target("pg-0", "bk-1"), crash], volumes)

    # WHEN pg-1's volume is restored by both paths; THEN nothing is written by either
    step, local, _notes = _both_paths(tmp_path / "other", record, "other", "pgdata")
    assert step == local == {"pgdata/PG_VERSION": "16\n"}
    # and pg-0's volume gets pg-0's label from both
    step, local, _notes = _both_paths(tmp_path / "data", record, "data", "pgdata")
    assert step == local
    assert local["pgdata/backup_label"] == BACKUP_LABEL.format(backup_id="bk-1")


def test_an_atomic_cut_gets_no_label_from_either_path(tmp_path):
    # GIVEN a record whose consistent point cut pg-0 atomically (crash recovery)
    crash = {"name": "pg-0", "hook": "postgresql", "method": "checkpoint", "recovery": "crash"}
    record = _record("pgdata", [crash])
    record["consistency"]["timeline"]["volumes"][0]["atomic"] = True

    # WHEN the data volume is restored by both paths; THEN no label, and the local restore says why
    step, local, notes = _both_paths(tmp_path, record, "data", "pgdata")
    assert step == local == {"pgdata/PG_VERSION": "16\n"}
    assert notes == ["target pg-0: atomic snapshot, crash recovery on first start (no backup_label)"]


def test_the_local_restore_names_a_data_directory_missing_from_the_restored_volume(tmp_path):
    # GIVEN a record whose data directory is pgdata/, and a restored volume without it
    record = _record("pgdata", [backup_mode_target("pg-0", "bk-1")])
    root = _restored(tmp_path / "local", "elsewhere")

    # WHEN the local restore applies the label; THEN one line names the directory, nothing is written
    with pytest.raises(PermanentError, match=r"data directory pgdata of target pg-0 is not a directory"):
        prepare_restored_volume(RestoreChoice(SNAPS["data"], "data", "bk-1", record), str(root))
    assert _files(root) == {"elsewhere/PG_VERSION": "16\n"}
