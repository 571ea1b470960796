"""A real block device (a loop device, root only): the CBT incremental of the device, built from the
changed ranges the SnapshotMetadata service reports over TLS gRPC, equals the copy engine's full read of
the same device and restores it byte for byte."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from steps.drivers import cbt
from steps.drivers.kube import KubeClient
from steps.repository import block_copy
from steps.repository.archiver import CopyOptions, copy_source
from steps.repository.snapshot_read import load_files
from tests.fakes.snapshot_metadata import FakeSnapshotMetadata

pytestmark = [pytest.mark.root, pytest.mark.slow]

MiB = 1024 * 1024
DRIVER = "loop.csi.example"


@pytest.fixture
def loop_device(tmp_path):
    if os.geteuid() != 0 or not shutil.which("losetup"):
        pytest.skip("needs root and losetup (loop devices); CI runs as root")
    backing = tmp_path / "backing.img"
    backing.write_bytes(random.Random(5).randbytes(48 * MiB))
    dev = subprocess.run(
        ["losetup", "--find", "--show", str(backing)], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        yield Path(dev)
    finally:
        subprocess.run(["losetup", "--detach", dev], check=False, capture_output=True)


def _cut(device: Path, image: Path) -> None:
    with open(device, "rb") as src, open(image, "wb") as dst:
        shutil.copyfileobj(src, dst, 8 * MiB)


def test_cbt_incremental_of_a_loop_device_matches_its_full_read(tmp_path, kube_server, mem_repo, loop_device):
    # GIVEN a loop device, a SnapshotMetadata service that knows its snapshots, and a first copy
    kube_server.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "db"}})
    kube_server.create(
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "mover", "namespace": "db"}}
    )
    kube = KubeClient(api=kube_server.api_client())
    size = 48 * MiB
    with FakeSnapshotMetadata(kube_server, DRIVER, block_size=4096) as sms:

        def copy(n: int, parent: str | None):
            image = tmp_path / f"snap-{n}.img"
            _cut(loop_device, image)
            sms.add_snapshot("db", f"snap-{n}", f"h-{n}", image)

            def ranges(base):
                req = cbt.CbtRequest(DRIVER, "db", f"snap-{n}", "mover", base_snapshot_handle=base)
                return cbt.ranges_for(kube, req, capacity=size, timeout=10)

            opts = CopyOptions(source=str(loop_device), parent=parent)
            return block_copy.copy_block(mem_repo, opts, block_copy.BlockCbt(ranges, f"h-{n}", DRIVER))

        try:
            first = copy(1, None)
            # WHEN the device is written (through the device) and copied again
            fd = os.open(loop_device, os.O_WRONLY)
            try:
                os.pwrite(fd, b"w" * 8192, 20 * MiB + 4096)
                os.pwrite(fd, b"v" * 4096, 47 * MiB)
                os.fsync(fd)
            finally:
                os.close(fd)
            second = copy(2, first.snapshot_id)
        finally:
            kube.close()
    # THEN the incremental read about the changes only, and equals the copy engine's full read of the device
    block = mem_repo.find_snapshot(second.snapshot_id).data["block"]
    assert block["method"] == "cbt-delta" and block["changed_bytes"] == 3 * 4096
    assert block["bytes_read"] < 12 * MiB
    full = copy_source(mem_repo, CopyOptions(source=str(loop_device), parent=None))
    tree = mem_repo.find_snapshot(full.snapshot_id).data["tree"]
    cbt_tree = mem_repo.find_snapshot(second.snapshot_id).data["tree"]
    assert mem_repo.load_tree(tree)[0]["content"] == mem_repo.load_tree(cbt_tree)[0]["content"]
    with open(loop_device, "rb") as f:
        assert next(iter(load_files(mem_repo, second.snapshot_id).values())) == f.read()
