"""Snapshot records with fields of the wrong type that the restore command reads before the trees (the
backup a snapshot belongs to, its time, its tags), restored by ID and as ``latest``. A module of its own:
such a record is in the repository for every later restore of it. Restores run as root in the sandbox of
tests/fixtures/hostile.py; each either succeeds or fails on one line naming what is wrong, never with an
unexpected exception."""

from __future__ import annotations

import pytest

GOOD = b"good data\n"

CASES = {
    "backup-id-list": {"backup_id": ["a", "b"]},
    "backup-id-object": {"backup_id": {"a": 1}},
    "backup-id-number": {"backup_id": 7},
    "time-number": {"time": 7},
    "time-garbage": {"time": "not a time"},
    "time-missing": {"time": None},
    "tags-list": {"tags": ["a"]},
}


@pytest.fixture(scope="module")
def crafted(hostile_repo):
    with hostile_repo.crafter() as c:
        return {
            case: c.snapshot([c.file("good.txt", GOOD)], case, **fields) for case, fields in CASES.items()
        }


@pytest.mark.parametrize("case", list(CASES))
def test_a_record_field_of_the_wrong_type_fails_on_one_line_by_id(hostile_repo, crafted, case):
    report = hostile_repo.sandbox.run(["--snapshot", crafted[case], "--allow-uncommitted"])
    run = report.last
    assert not report.outside_changes(run)
    assert "Traceback" not in run.output and "unexpected" not in run.output, run.show()
    assert run.rc == 0 or len(run.error_lines) == 1, run.show()


@pytest.mark.parametrize("extra", [[], ["--allow-uncommitted"]])
def test_latest_with_crafted_records_fails_on_one_line(hostile_repo, crafted, extra):
    report = hostile_repo.sandbox.run(["--snapshot", "latest", *extra])
    run = report.last
    assert not report.outside_changes(run)
    assert "Traceback" not in run.output and "unexpected" not in run.output, run.show()
    assert run.rc == 0 or len(run.error_lines) == 1, run.show()
