"""``restore --snapshot latest --volume`` against damaged and missing records, on the repository of
tests/scenarios/test_records_tampering.py (backups B1 and B2 of app db in namespace shop committed,
B3 copied and verified but never committed; volume ``data``): the newest committed backup holding the
volume is chosen, a damaged backup record that may be it is refused by name, and no such backup is
one line."""

from __future__ import annotations

from tests.scenarios import test_records_tampering as records
from tests.scenarios.test_records_tampering import cli, damage, error_line

# the repository made once by the real steps, and a fresh copy of it per test
template = records.template
world = records.world

LATEST = ("--snapshot", "latest", "--app", "db", "--source-namespace", "shop")


def test_latest_of_a_volume_is_the_newest_committed_backups(world, capsys):
    # WHEN the newest backup's volume data is restored  THEN it is B2's (B3 was never committed)
    target = world.tmp / "r"
    rc, _out, err = cli(
        capsys, "restore", "--repo", world.url, *LATEST, "--volume", "data", "--target", str(target)
    )
    assert rc == 0, err
    assert (target / "data.txt").read_text() == "generation 2\n"


def test_latest_of_a_volume_refuses_a_damaged_backup_record_by_name(world, capsys):
    # GIVEN B2's backup record byte-flipped
    key = damage(world, "backups", "flip")
    # WHEN the newest backup's volume data is restored
    target = world.tmp / "r"
    rc, _out, err = cli(
        capsys, "restore", "--repo", world.url, *LATEST, "--volume", "data", "--target", str(target)
    )
    # THEN it refuses (exit 3) in one line naming the record, rather than restore B1's, and wrote nothing
    assert rc == 3
    line = error_line(err)
    assert line.startswith("error: --snapshot latest: ") and key in line, line
    assert not target.exists()


def test_latest_of_a_volume_no_backup_holds_is_one_line(world, capsys):
    for extra, which in (
        (("--volume", "wal"), "of app db in namespace shop holds volume wal"),
        (
            ("--volume", "data", "--source-namespace", "other"),
            "of app db in namespace other holds volume data",
        ),
    ):
        rc, _out, err = cli(
            capsys, "restore", "--repo", world.url, *LATEST, *extra, "--target", str(world.tmp / "r")
        )
        assert rc == 2, err
        assert error_line(err) == f"error: --snapshot latest: no committed backup {which} in {world.url}"
        assert "Traceback" not in err and not (world.tmp / "r").exists()
