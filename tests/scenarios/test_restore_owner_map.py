"""``restore --uid-map/--gid-map``: the owners of restored files, directories and symlinks are remapped
by ranges (a namespace's own UID range on OpenShift); IDs outside every range stay as recorded.
Repository on SeaweedFS; setting arbitrary owners needs root (CI runs as root)."""

from __future__ import annotations

import json
import os

import pytest

from tests.fixtures.k8s_app import run_step

# uid 1000..1009 -> 1000650000.., uid 0 -> 1000660000; gid 1000 -> 2000650000, gid 50..51 -> 2000650100..
UID_MAP = ("1000:1000650000:10", "0:1000660000")
GID_MAP = ("1000:2000650000:1", "50:2000650100:2")

# relative path -> (uid, gid) on the source, and what the restore must give it
OWNERS = {
    ".": ((1000, 1000), (1000650000, 2000650000)),
    "pgdata": ((1001, 50), (1000650001, 2000650100)),
    "pgdata/PG_VERSION": ((1001, 51), (1000650001, 2000650101)),  # one blob
    "pgdata/big.bin": ((1002, 1000), (1000650002, 2000650000)),  # written in pieces
    "pgdata/empty": ((1009, 1000), (1000650009, 2000650000)),  # no content at all
    "pgdata/hardlink": ((1002, 1000), (1000650002, 2000650000)),  # the same inode as big.bin
    "pgdata/current": ((1003, 50), (1000650003, 2000650100)),  # a symlink: its own owner (lchown)
    "pgdata/fifo": ((1004, 52), (1000650004, 52)),  # gid outside every range
    "root-owned": ((0, 0), (1000660000, 0)),  # a file the restoring user owns already
    "other": ((4242, 4343), (4242, 4343)),  # outside every range: as recorded
    "other/file": ((1010, 999), (1010, 999)),  # just past the uid range
}


def _make_tree(root):
    (root / "pgdata").mkdir(parents=True)
    (root / "other").mkdir()
    (root / "pgdata" / "PG_VERSION").write_text("16\n")
    (root / "pgdata" / "big.bin").write_bytes(os.urandom(6 * 1024 * 1024))
    (root / "pgdata" / "empty").write_bytes(b"")
    os.link(root / "pgdata" / "big.bin", root / "pgdata" / "hardlink")
    (root / "pgdata" / "current").symlink_to("PG_VERSION")
    os.mkfifo(root / "pgdata" / "fifo")
    (root / "root-owned").write_text("root\n")
    (root / "other" / "file").write_text("x\n")
    for rel, ((uid, gid), _) in OWNERS.items():
        os.chown(root / rel, uid, gid, follow_symlinks=False)


@pytest.mark.root
def test_restore_remaps_the_owners_of_files_directories_and_symlinks(s3_repo, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("setting other users' owners needs root; CI runs as root")
    # GIVEN a tree whose entries belong to several users and groups, copied into the repository
    source = tmp_path / "source"
    _make_tree(source)
    assert {rel: (os.lstat(source / rel).st_uid, os.lstat(source / rel).st_gid) for rel in OWNERS} == {
        rel: before for rel, (before, _) in OWNERS.items()
    }
    assert run_step("init", "--repo", s3_repo).rc == 0
    res = run_step("copy", "--repo", s3_repo, "--source", source)
    assert res.rc == 0, res.stderr
    snapshot = res.last_line
    out = tmp_path / "restored"

    # WHEN it is restored with UID and GID ranges
    maps = [a for m in UID_MAP for a in ("--uid-map", m)] + [a for m in GID_MAP for a in ("--gid-map", m)]
    res = run_step("restore", "--repo", s3_repo, "--snapshot", snapshot, "--target", out, *maps, "--json")

    # THEN every owner inside a range is moved by it, the others are kept, and the content is the same
    assert res.rc == 0, res.stderr
    summary = json.loads(res.last_line)
    assert summary["uid_map"] == ["1000:1000650000:10", "0:1000660000:1"]
    assert summary["gid_map"] == ["1000:2000650000:1", "50:2000650100:2"]
    assert summary["warnings"] == 0
    got = {rel: (os.lstat(out / rel).st_uid, os.lstat(out / rel).st_gid) for rel in OWNERS}
    assert got == {rel: after for rel, (_, after) in OWNERS.items()}
    assert (out / "pgdata" / "big.bin").read_bytes() == (source / "pgdata" / "big.bin").read_bytes()
    assert os.lstat(out / "pgdata" / "big.bin").st_ino == os.lstat(out / "pgdata" / "hardlink").st_ino
    assert os.readlink(out / "pgdata" / "current") == "PG_VERSION"

    # WHEN the same snapshot is restored without maps, THEN the recorded owners come back unchanged
    plain = tmp_path / "plain"
    assert run_step("restore", "--repo", s3_repo, "--snapshot", snapshot, "--target", plain).rc == 0
    got = {rel: (os.lstat(plain / rel).st_uid, os.lstat(plain / rel).st_gid) for rel in OWNERS}
    assert got == {rel: before for rel, (before, _) in OWNERS.items()}


@pytest.mark.parametrize(
    ("flags", "error"),
    [
        (
            ("--uid-map", "1000"),
            "error: --uid-map: expected FROM:TO or FROM:TO:COUNT (integers), got '1000'",
        ),
        (
            ("--gid-map", "1000:x:5"),
            "error: --gid-map: expected FROM:TO or FROM:TO:COUNT (integers), got '1000:x:5'",
        ),
        (
            ("--uid-map", "1000:2000:0"),
            "error: --uid-map: IDs must be >= 0 and COUNT >= 1, got '1000:2000:0'",
        ),
        (
            ("--gid-map", "0:100:10", "--gid-map", "5:300"),
            "error: --gid-map: ranges starting at 0 and 5 overlap",
        ),
    ],
)
def test_restore_refuses_a_bad_id_map_before_writing_anything(s3_repo, tmp_path, flags, error):
    # GIVEN a snapshot
    source = tmp_path / "source"
    source.mkdir()
    (source / "f").write_text("x\n")
    assert run_step("init", "--repo", s3_repo).rc == 0
    res = run_step("copy", "--repo", s3_repo, "--source", source)
    assert res.rc == 0, res.stderr
    out = tmp_path / "restored"

    # WHEN restoring it with a malformed or overlapping map
    res = run_step("restore", "--repo", s3_repo, "--snapshot", res.last_line, "--target", out, *flags)

    # THEN a one-line usage error names the flag, and nothing is written
    assert res.rc == 2
    assert res.stderr.strip().splitlines() == [error]
    assert not out.exists()
