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
