"""``restore --write-backup-label`` with backup records whose label-related fields have the wrong shape
(a module of its own: the records stay in the repository). Each restore, as root in the sandbox of
tests/fixtures/hostile.py, is refused on one line naming what is wrong, with nothing written."""

from __future__ import annotations

import pytest

from tests.fixtures.hostile import assert_untouched

GOOD = b"good data\n"
TARGET_OK = {"name": "pg", "recovery": "backup_label", "backup_label": "START WAL LOCATION: 0/0\n"}


def _record(case: str, snap_id: str) -> dict:
    volume = {"name": "data", "snapshot": snap_id}
    record = {
        "backup_id": f"backup-{case}",
        "volumes": [volume],
        "targets": [{"name": "pg", "pgdata": "pgdata"}],
        "consistency": {"timeline": {"targets": [TARGET_OK]}},
    }
    if case == "volume-without-name":
        record["volumes"] = [{"snapshot": snap_id}]
    elif case == "consistency-a-list":
        record["consistency"] = ["timeline"]
    elif case == "targets-strings":
        record["targets"] = ["pg"]
    elif case == "volumes-strings":
        record["volumes"] = [snap_id, volume]
    return record


CASES = ["volume-without-name", "consistency-a-list", "targets-strings", "volumes-strings"]


@pytest.fixture(scope="module")
def crafted(hostile_repo):
    with hostile_repo.crafter() as c:
        snaps = {
            case: c.snapshot(
                [c.file("good.txt", GOOD), c.dir("pgdata", [c.file("PG_VERSION", b"16\n")])],
                case,
                backup_id=f"backup-{case}",
            )
            for case in CASES
        }
    for case, snap in snaps.items():
        hostile_repo.repo.save_record("backups", _record(case, snap.id), key=f"backup-{case}")
    return snaps


@pytest.mark.parametrize("case", CASES)
def test_a_misshapen_backup_record_is_refused_on_one_line_naming_it(hostile_repo, crafted, case):
    # GIVEN a backup record whose label fields are misshapen
    # WHEN its snapshot is restored with --write-backup-label
    report = hostile_repo.sandbox.run(
        ["--snapshot", crafted[case], "--allow-uncommitted", "--write-backup-label"]
    )

    # THEN it is refused on one line (no unexpected exception), nothing written
    run = report.last
    assert_untouched(report, run)
    assert run.rc not in (0, None) and len(run.error_lines) == 1, run.show()
    assert "unexpected" not in run.stderr, run.show()
