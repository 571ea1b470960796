"""finalize's commit rule: a backup record only when every volume has a snapshot and verify passed."""

from __future__ import annotations

import pytest

from steps.plan import plan_from_dict
from steps.repository.records import Record, Snapshot, backup_record

BACKUP = "backup-db-x7k2"


def plan():
    return plan_from_dict(
        {
            "app": {"namespace": "shop", "name": "db", "cluster": "eu", "policy": "db"},
            "repository": {"url": "s3://b/p"},
            "snapshot": {"driver": "csi"},
            "targets": [{"name": "db-0", "hook": "none", "pod": "db-0"}],
            "volumes": [
                {"name": "data", "pvc": "data-db-0"},
                {"name": "wal", "pvc": "wal-db-0", "role": "wal"},
            ],
        }
    )


def snap(sid, volume, backup=BACKUP, kind=None, time="2024-01-01T00:00:00Z"):
    tags = {"backup": backup, **({"kind": kind} if kind else {})}
    return Snapshot(
        sid,
        {
            "backup_id": backup,
            "volume": volume,
            "tags": tags,
            "time": time,
            "summary": {"files": 3, "bytes_total": 100},
        },
    )


def run(name, ok=True, **data):
    return Record("runs", f"r-{name}", {"name": name, "ok": ok, **data})


GOOD_SNAPS = [snap("s-data", "data"), snap("s-wal", "wal"), snap("s-man", None, kind="manifests")]


def verified(snaps=GOOD_SNAPS, ok=True, **data):
    """A verify run record that checked ``snaps``."""
    return run("verify", ok=ok, snapshots=[s.id for s in snaps], **data)


CP = run(
    "consistent-point",
    verdict="app-consistent",
    reasons=[],
    recovery={"db-0": "crash"},
    freeze_window_ms=12.5,
    timeline={"targets": []},
)


def test_record_lists_volumes_snapshots_manifests_and_verdict():
    record, problems = backup_record(plan(), BACKUP, GOOD_SNAPS, [CP, verified(read_data_percent=10)])
    assert problems == []
    assert [(v["name"], v["pvc"], v["snapshot"]) for v in record["volumes"]] == [
        ("data", "data-db-0", "s-data"),
        ("wal", "wal-db-0", "s-wal"),
    ]
    assert record["manifests"] == "s-man"
    assert record["consistency"]["verdict"] == "app-consistent"
    assert record["verify"]["ok"] is True and record["verify"]["read_data_percent"] == 10
    assert record["app"] == {"cluster": "eu", "namespace": "shop", "name": "db", "policy": "db"}


@pytest.mark.parametrize(
    ("snaps", "runs", "problem"),
    [
        (GOOD_SNAPS[:1] + GOOD_SNAPS[2:], [CP, verified()], "volume wal: no snapshot of backup"),
        (
            [snap("s-data", "data", backup="other"), GOOD_SNAPS[1]],
            [CP, verified()],
            "volume data: no snapshot",
        ),
        (GOOD_SNAPS, [CP], "no verify run record"),
        (
            GOOD_SNAPS,
            [CP, verified(ok=False, problems=["pack abc missing"])],
            "verify failed (pack abc missing)",
        ),
        (GOOD_SNAPS, [CP, verified(), verified(ok=False, problems=[])], "verify failed"),
    ],
)
def test_no_record_without_every_volume_and_a_passing_verify(snaps, runs, problem):
    record, problems = backup_record(plan(), BACKUP, snaps, runs)
    assert record is None
    assert any(problem in p for p in problems), problems


def test_the_newest_snapshot_of_a_retried_copy_is_recorded():
    snaps = [*GOOD_SNAPS, snap("s-data-2", "data", time="2024-01-01T00:05:00Z")]
    record, _ = backup_record(plan(), BACKUP, snaps, [CP, verified(snaps)])
    assert record["volumes"][0]["snapshot"] == "s-data-2"


def test_manifests_are_optional():
    record, problems = backup_record(plan(), BACKUP, GOOD_SNAPS[:2], [CP, verified(GOOD_SNAPS[:2])])
    assert problems == [] and record["manifests"] is None
    assert record["consistency"]["verdict"] == "app-consistent"


def test_an_inconsistent_backup_is_no_restore_point():
    # GIVEN a backup whose consistent point was judged inconsistent (a file-by-file copy, no hold)
    cp = run("consistent-point", verdict="inconsistent", reasons=["volume data: no target quiesces it"])
    # WHEN finalize checks it THEN it refuses to commit, saying why
    record, problems = backup_record(plan(), BACKUP, GOOD_SNAPS, [cp, verified()])
    assert record is None
    assert problems == [
        f"backup {BACKUP}: its consistent point is 'inconsistent' (volume data: no target quiesces it),"
        " which is no restore point"
    ]


def test_a_crash_consistent_backup_is_a_restore_point():
    cp = run("consistent-point", verdict="crash-consistent", reasons=["volume data: no target quiesces it"])
    record, problems = backup_record(plan(), BACKUP, GOOD_SNAPS, [cp, verified()])
    assert problems == [] and record["consistency"]["verdict"] == "crash-consistent"


def test_a_backup_without_its_consistent_point_record_is_not_committed():
    record, problems = backup_record(plan(), BACKUP, GOOD_SNAPS, [verified()])
    assert record is None and any("no consistent-point run record" in p for p in problems), problems


def test_a_snapshot_without_a_volume_does_not_stand_in_for_a_volume_without_a_pvc():
    # GIVEN a local plan (volumes without PVCs) and a snapshot of the backup that names no volume
    p = plan_from_dict({**plan().to_dict(), "volumes": [{"name": "data", "path": "/srv/data"}]})
    stray = snap("s-stray", None)
    # WHEN finalize checks it THEN the volume has no snapshot
    record, problems = backup_record(p, BACKUP, [stray], [CP, verified([stray])])
    assert record is None and problems == [f"volume data: no snapshot of backup {BACKUP} in the repository"]


def test_a_snapshot_the_passing_verify_did_not_check_is_not_committed():
    # GIVEN a verify that passed before the last copy of volume wal was written
    snaps = [*GOOD_SNAPS, snap("s-wal-2", "wal", time="2024-01-01T00:05:00Z")]
    record, problems = backup_record(plan(), BACKUP, snaps, [CP, verified(GOOD_SNAPS)])
    # THEN finalize refuses: the snapshot it would commit was never verified
    assert record is None
    assert problems == [
        f"volume wal: snapshot s-wal-2 was not checked by the passing verify of backup {BACKUP}"
    ]


def test_record_says_where_each_targets_data_directory_is():
    p = plan_from_dict(
        {
            **plan().to_dict(),
            "targets": [
                {"name": "db-0", "hook": "postgresql", "pod": "db-0", "params": {"pgdata": "pgdata"}}
            ],
        }
    )
    record, _ = backup_record(p, BACKUP, GOOD_SNAPS, [CP, verified()])
    assert record["targets"] == [{"name": "db-0", "hook": "postgresql", "pgdata": "pgdata"}]
    assert [v["target"] for v in record["volumes"]] == [None, None]


@pytest.mark.parametrize(
    ("recovery", "expected"),
    [
        ("backup_label", {"data": [("pgdata", "LABEL")]}),
        ("crash", {}),  # an atomic cut must not get a label
    ],
)
def test_restore_writes_backup_label_only_for_backup_mode_copies(recovery, expected):
    from steps.manifests.backup_record import backup_labels_needed

    target = {"name": "db-0", "recovery": recovery, "backup_label": "LABEL"}
    record = {
        "consistency": {"timeline": {"targets": [target]}},
        "targets": [{"name": "db-0", "pgdata": "pgdata"}],
        "volumes": [
            {"name": "data", "role": "data", "target": None},
            {"name": "wal", "role": "wal", "target": None},
        ],
    }
    got = {
        v: [(sub, t["backup_label"]) for sub, t in items] for v, items in backup_labels_needed(record).items()
    }
    assert got == expected
