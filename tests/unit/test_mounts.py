"""The mount table: mounts parsed from mountinfo text, and the devices whose open may wait on a server."""

import os

import pytest

from steps.drivers import mounts as mounts_mod
from steps.drivers.mounts import (
    Mount,
    creates_in_parallel,
    devices_open_may_wait,
    open_may_wait,
    parse_mountinfo,
)

TABLE = (
    "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
    "23 22 0:21 / /proc rw,nosuid - proc proc rw\n"
    "40 22 0:45 / /mnt/with\\040space rw shared:7 master:3 - nfs4 srv:/export rw,vers=4.2\n"
    "41 22 0:46 / /home/u/remote rw - fuse.sshfs u@host:/ rw,user_id=0\n"
    "42 22 0:47 /vol /var/lib/kubelet/pods/x/volumes/kubernetes.io~csi/pvc/mount rw - ceph 10.0.0.1:/ rw\n"
    "43 22 8:17 / /data rw - xfs /dev/sdb1 rw\n"
    "this line is not a mount\n"
    "44 22 0:48 / /no-separator rw\n"
)


def test_mountinfo_lines_give_point_device_and_type():
    got = parse_mountinfo(TABLE)
    assert got[0] == Mount("/", "8:1", "ext4")
    assert Mount("/mnt/with space", "0:45", "nfs4") in got  # optional fields skipped, octal unescaped
    assert [m.fstype for m in got] == ["ext4", "proc", "nfs4", "fuse.sshfs", "ceph", "xfs"]


def test_network_and_fuse_file_systems_are_the_ones_whose_open_may_wait(tmp_path, monkeypatch):
    assert all(open_may_wait(t) for t in ("nfs", "nfs4", "cifs", "ceph", "fuse", "fuseblk", "fuse.sshfs"))
    assert not any(open_may_wait(t) for t in ("ext4", "xfs", "btrfs", "tmpfs", "overlay", "fusectl"))
    table = tmp_path / "mountinfo"
    table.write_text(TABLE)
    monkeypatch.setattr(mounts_mod, "MOUNTINFO", str(table))
    assert devices_open_may_wait() == {os.makedev(0, 45), os.makedev(0, 46), os.makedev(0, 47)}


def test_the_real_table_holds_this_file_system_and_no_table_means_no_device(tmp_path, monkeypatch):
    # the file system of a scratch folder (ext4, xfs or tmpfs here) is mounted, and its open never waits
    dev = os.stat(tmp_path).st_dev
    assert dev not in devices_open_may_wait()
    assert mounts_mod.mounts()
    monkeypatch.setattr(mounts_mod, "MOUNTINFO", str(tmp_path / "missing"))
    assert mounts_mod.mounts() == [] and devices_open_may_wait() == frozenset()


def test_a_line_ends_only_at_a_newline():
    # the kernel escapes space, tab, newline and backslash in a mount point, and nothing else
    got = parse_mountinfo("40 22 0:45 / /mnt/a\x0cb\x1cc\u2028d rw - nfs4 srv:/e rw\n")
    assert got == [Mount("/mnt/a\x0cb\x1cc\u2028d", "0:45", "nfs4")]


def test_a_device_met_during_the_copy_is_looked_up_in_the_table_as_it_is_then(tmp_path, monkeypatch):
    # GIVEN the file readers of a copy, and a mount table that changes while the copy runs (an
    # automount appears)
    import threading

    from steps.repository.file_reading import FileReading

    class Readers(FileReading):
        _lock = threading.Lock()

    table = tmp_path / "mountinfo"
    table.write_text("22 1 8:1 / / rw - ext4 /dev/sda1 rw\n")
    monkeypatch.setattr(mounts_mod, "MOUNTINFO", str(table))
    readers = Readers()
    readers._devices_seen = set()  # as the archiver sets it when a copy starts
    local, auto = os.makedev(8, 1), os.makedev(0, 77)
    assert not readers._open_waits(local)
    table.write_text(table.read_text() + "50 22 0:77 / /data/auto rw - nfs4 srv:/export rw\n")
    # THEN the new device is found to be NFS, and a device already met keeps its answer
    assert readers._open_waits(auto)
    assert not readers._open_waits(local)


def _jbd2(tmp_path, journals: list[str], devices: dict[str, str]) -> tuple[str, str]:
    """A jbd2 listing holding ``journals`` and a /sys/dev/block whose MAJOR:MINOR links end in the names
    of ``devices``."""
    jbd2, block = tmp_path / "jbd2", tmp_path / "block"
    jbd2.mkdir()
    block.mkdir()
    for name in journals:
        (jbd2 / name).mkdir()
    for number, name in devices.items():
        (block / number).symlink_to(f"../../devices/virtual/block/{name}")
    return str(jbd2), str(block)


@pytest.mark.parametrize(
    ("fstype", "journals", "parallel"),
    [
        ("ext4", ["dm-0-8"], True),  # a journal on this device (a name with a dash of its own)
        ("ext4", ["dm-1-8", "vda-8"], False),  # journals of other devices only: none of its own
        ("ext4", [], False),
        ("xfs", [], True),
        ("tmpfs", [], True),
        ("btrfs", [], False),  # not measured
        ("nfs4", [], False),
    ],
)
def test_files_are_created_in_parallel_only_where_that_was_measured_faster(
    tmp_path, fstype, journals, parallel
):
    # GIVEN a target on the device 253:0 (dm-0) of type ``fstype``, and the journals the kernel lists
    jbd2, block = _jbd2(tmp_path, journals, {"253:0": "dm-0", "253:1": "dm-1", "254:0": "vda"})
    table = [Mount("/", "254:0", "ext4"), Mount("/restore", "253:0", fstype)]
    # THEN several processes create its files only on ext4 with a journal, xfs and tmpfs
    assert creates_in_parallel(os.makedev(253, 0), table, jbd2, block) is parallel


def test_an_unknown_or_ambiguous_device_gets_one_creating_process(tmp_path):
    jbd2, block = _jbd2(tmp_path, ["dm-0-8"], {"253:0": "dm-0"})
    dev = os.makedev(253, 0)
    # not in the mount table
    assert not creates_in_parallel(dev, [Mount("/", "254:0", "xfs")], jbd2, block)
    # mounted twice with two types (cannot be, but the table is read, not trusted)
    assert not creates_in_parallel(
        dev, [Mount("/a", "253:0", "xfs"), Mount("/b", "253:0", "nfs")], jbd2, block
    )
    # the same file system mounted twice
    assert creates_in_parallel(dev, [Mount("/a", "253:0", "xfs"), Mount("/b", "253:0", "xfs")], jbd2, block)
    # ext4 whose device or journal listing cannot be read
    table = [Mount("/a", "253:0", "ext4")]
    assert not creates_in_parallel(dev, table, str(tmp_path / "none"), block)
    assert not creates_in_parallel(dev, table, jbd2, str(tmp_path / "none"))
