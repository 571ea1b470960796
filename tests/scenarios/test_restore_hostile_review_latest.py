"""``restore --snapshot latest`` in a repository where one snapshot record's time is a number, not a
time string (a module of its own: ``latest`` weighs every record of the repository). Runs as root in the
sandbox of tests/fixtures/hostile.py."""

from __future__ import annotations

import pytest

GOOD = b"good data\n"


@pytest.fixture(scope="module")
def crafted(hostile_repo):
    with hostile_repo.crafter() as c:
        return [
            c.snapshot([c.file("good.txt", GOOD)], name, **fields)
            for name, fields in (("plain", {}), ("time-number", {"time": 7}))
        ]


def test_latest_with_a_record_whose_time_is_a_number_fails_on_one_line_or_restores(hostile_repo, crafted):
    # GIVEN a repository holding a snapshot whose record's time is a number
    # WHEN the latest snapshot is restored
    report = hostile_repo.sandbox.run(["--snapshot", "latest"])

    # THEN it is refused on one line naming the record, or a snapshot is restored; never an unexpected error
    run = report.last
    assert not report.outside_changes(run)
    assert "unexpected" not in run.output, run.show()
    assert run.rc == 0 or len(run.error_lines) == 1, run.show()
