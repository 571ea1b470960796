"""The mount table: mounts parsed from mountinfo text, and the devices whose open may wait on a server."""

import os

from steps.drivers import mounts as mounts_mod
from steps.drivers.mounts import Mount, devices_open_may_wait, open_may_wait, parse_mountinfo

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
