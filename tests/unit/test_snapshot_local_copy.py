"""The local snapshot driver's copy of a volume keeps every entry's owner and mode, set-id bits included
(the owner is given before the mode: a chown clears set-user-ID and set-group-ID bits)."""

import os
import stat
from pathlib import Path

import pytest

from steps.drivers.snapshot_local import _copy_entry

ROOT = os.geteuid() == 0


def _shape(p: Path) -> dict:
    out = {}
    for dirpath, dirs, files in os.walk(p):
        for name in dirs + files:
            full = Path(dirpath) / name
            st = os.lstat(full)
            out[str(full.relative_to(p))] = (
                stat.S_IFMT(st.st_mode),
                stat.S_IMODE(st.st_mode),
                st.st_uid,
                st.st_gid,
            )
    return out


def test_the_copy_keeps_owners_and_set_id_modes(tmp_path):
    if not ROOT:
        pytest.skip("giving entries another owner needs root")
    # GIVEN a volume with a set-gid directory, a set-uid program, a read-only directory, all owned by
    # another user, and a symlink
    src = tmp_path / "src"
    (src / "shared").mkdir(parents=True)
    (src / "shared" / "run").write_bytes(b"#!/bin/sh\n")
    (src / "ro").mkdir()
    (src / "ro" / "f").write_bytes(b"data")
    os.symlink("shared/run", src / "link")
    for path, mode in (
        (src / "shared" / "run", 0o4755),
        (src / "shared", 0o2775),
        (src / "ro" / "f", 0o444),
        (src / "ro", 0o555),
    ):
        os.chown(path, 1000, 1001)
        os.chmod(path, mode)
    os.lchown(src / "link", 1000, 1001)
    # WHEN it is copied
    _copy_entry(src, tmp_path / "dst")
    # THEN every entry has its type, mode (set-id bits too) and owner
    assert _shape(tmp_path / "dst") == _shape(src)
    assert stat.S_IMODE(os.lstat(tmp_path / "dst" / "shared" / "run").st_mode) == 0o4755
