"""How many processes create a restore's small files follows the target's file system, read from the
running kernel: several on ext4 with a journal, one on ext4 without (where two were five to eight times
slower once files had been deleted on it)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess

import pytest

from steps import runtime
from steps.drivers.cpus import default_threads
from steps.drivers.mounts import creates_in_parallel
from steps.repository.archiver import CopyOptions, copy_source
from steps.repository.restore_content import creators_wanted
from steps.repository.restorer import Restorer
from tests.fixtures.repository import describe_tree


@contextlib.contextmanager
def _ext4(tmp_path, journal: bool):
    """A fresh ext4 of 64 MiB on a loop device, mounted; unmounted, detached and deleted afterwards."""
    if os.geteuid() != 0 or not shutil.which("losetup") or not shutil.which("mkfs.ext4"):
        pytest.skip("needs root, losetup and mkfs.ext4 (loop devices); CI runs as root")
    image, point = tmp_path / f"ext4-{journal}.img", tmp_path / f"mnt-{journal}"
    point.mkdir()
    with open(image, "wb") as f:
        f.truncate(64 << 20)
    features = [] if journal else ["-O", "^has_journal"]
    subprocess.run(["mkfs.ext4", "-q", "-F", *features, str(image)], check=True, capture_output=True)
    loop = subprocess.run(
        ["losetup", "--find", "--show", str(image)], check=True, capture_output=True, text=True
    ).stdout.strip()
    mounted = False
    try:
        subprocess.run(["mount", loop, str(point)], check=True, capture_output=True)
        mounted = True
        yield point
    finally:
        if mounted:
            subprocess.run(["umount", str(point)], check=False, capture_output=True)
        subprocess.run(["losetup", "--detach", loop], check=False, capture_output=True)
        image.unlink()


@pytest.mark.slow
@pytest.mark.parametrize("journal", [True, False], ids=["journal", "no-journal"])
def test_the_creating_processes_follow_the_targets_ext4_journal(tmp_path, mem_repo, monkeypatch, journal):
    # GIVEN a snapshot of 300 small files and a fresh ext4 with or without a journal
    monkeypatch.delenv(runtime.RESTORE_CREATORS, raising=False)
    monkeypatch.setenv(runtime.HELPER_PROCESSES, "1")
    src = tmp_path / "src"
    for d in range(3):
        (src / f"d{d}").mkdir(parents=True)
        for i in range(100):
            (src / f"d{d}" / f"f{i}").write_bytes(os.urandom(100 + i))
    sid = copy_source(mem_repo, CopyOptions(str(src))).snapshot_id
    with _ext4(tmp_path, journal) as point:
        dev = os.stat(point).st_dev
        # THEN the kernel's journal listing decides: several processes only where it lists a journal
        assert creates_in_parallel(dev) is journal
        assert creators_wanted(dev) == (default_threads("restore_creators") if journal else 1)
        # AND a restore into it is the source's, made by at most the processes allowed
        restorer = Restorer(mem_repo, mem_repo.find_snapshot(sid), str(point / "out"))
        restorer.run()
        assert describe_tree(point / "out") == describe_tree(src)
        assert 1 <= len(restorer._children) <= creators_wanted(dev)
