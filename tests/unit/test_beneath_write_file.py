"""``beneath.write_file``: a file written below a root gets the owner of its directory and then its mode,
so that a set-id mode survives the change of owner."""

import os
import stat

import pytest

from steps.drivers import beneath

ROOT = os.geteuid() == 0


@pytest.mark.parametrize("mode", [0o600, 0o644, 0o2640, 0o6750])
def test_a_written_file_gets_its_directory_owner_then_its_mode(tmp_path, mode):
    if not ROOT:
        pytest.skip("giving a file another owner needs root")
    # GIVEN a directory owned by another user, holding an entry of the same name already
    sub = tmp_path / "conf"
    sub.mkdir()
    os.chown(sub, 1000, 1001)
    (sub / "f").write_text("old")
    root_fd = beneath.open_root(str(tmp_path))
    try:
        # WHEN a file is written there
        beneath.write_file(root_fd, [b"conf"], b"f", b"new text", mode)
    finally:
        os.close(root_fd)
    # THEN it holds the new text, the directory's owner, and exactly the mode asked for
    st = os.lstat(sub / "f")
    assert (sub / "f").read_bytes() == b"new text"
    assert (st.st_uid, st.st_gid) == (1000, 1001)
    assert stat.S_IMODE(st.st_mode) == mode
