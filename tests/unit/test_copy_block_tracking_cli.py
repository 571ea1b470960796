"""``copy --cbt-driver``: the step asks the SnapshotMetadata service (over TLS gRPC, with a token from
TokenRequest) and reads only the changed ranges of a block volume; bad flags are one line."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes.snapshot_metadata import FakeSnapshotMetadata

ROOT = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024
DRIVER = "hostpath.csi.k8s.io"


def _run(args, env, check=True):
    proc = subprocess.run(
        [sys.executable, "-m", "steps", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert not check or proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture
def env(tmp_path):
    env = {**os.environ, "SNAPFLOW_PASSWORD": "pw", "SNAPFLOW_KDF_TEST_N": "1024"}
    _run(["init", "--repo", f"file://{tmp_path / 'repo'}"], env)
    return env


def test_copy_reads_only_the_changed_ranges_of_a_block_volume(tmp_path, env, kube_server):
    # GIVEN a volume image, its snapshots known to the service, and the mover's ServiceAccount
    kube_server.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "app"}})
    kube_server.create(
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "mover", "namespace": "app"}}
    )
    kubeconfig = kube_server.write_kubeconfig(tmp_path / "kubeconfig")
    device = tmp_path / "pgdata.img"
    device.write_bytes(random.Random(4).randbytes(16 * MiB))
    repo = f"file://{tmp_path / 'repo'}"
    with FakeSnapshotMetadata(kube_server, DRIVER) as sms:

        def copy(n: int, *parent: str) -> dict:
            image = tmp_path / f"snap-{n}.img"
            image.write_bytes(device.read_bytes())
            sms.add_snapshot("app", f"snap-{n}", f"handle-{n}", image)
            args = [
                "copy",
                "--repo",
                repo,
                "--source",
                str(device),
                "--json",
                "--kubeconfig",
                str(kubeconfig),
            ]
            args += [
                "--cbt-driver",
                DRIVER,
                "--cbt-snapshot",
                f"app/snap-{n}",
                "--cbt-snapshot-handle",
                f"handle-{n}",
            ]
            args += ["--cbt-service-account", "app/mover", *parent]
            proc = _run(args, env)
            assert "block device read by" in proc.stderr
            return json.loads(proc.stdout)

        first = copy(1, "--no-parent")
        with open(device, "r+b") as f:
            f.seek(9 * MiB)
            f.write(b"changed")
        # WHEN the next copy names the first as its parent
        second = copy(2, "--parent", first["id"])
    # THEN the first read the allocated ranges, the second only around the change
    assert first["block"]["method"] == "cbt-allocated"
    assert second["block"]["method"] == "cbt-delta" and second["block"]["changed_bytes"] == 64 * 1024
    assert second["block"]["bytes_read"] < 8 * MiB
    assert [c[0] for c in sms.calls] == ["allocated", "delta"]
    assert sms.calls[1][1].base_snapshot_id == "handle-1"


def _snapshot_objects(kube_server, namespace, claim, snapshot, content, handle, bound_to=None):
    """A clone claim made from a VolumeSnapshot bound to its content (as prepare-clone leaves them)."""
    kube_server.create(
        {
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshotContent",
            "metadata": {"name": content},
            "spec": {
                "driver": DRIVER,
                "deletionPolicy": "Retain",
                "source": {"snapshotHandle": handle},
                "volumeSnapshotRef": {"namespace": namespace, "name": bound_to or snapshot},
            },
            "status": {"snapshotHandle": handle, "readyToUse": True},
        }
    )
    kube_server.create(
        {
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshot",
            "metadata": {"name": snapshot, "namespace": namespace},
            "spec": {"source": {"volumeSnapshotContentName": content}},
            "status": {"boundVolumeSnapshotContentName": content, "readyToUse": True},
        }
    )
    kube_server.create(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": claim, "namespace": namespace},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "volumeMode": "Block",
                "resources": {"requests": {"storage": "16Mi"}},
                "dataSource": {
                    "apiGroup": "snapshot.storage.k8s.io",
                    "kind": "VolumeSnapshot",
                    "name": snapshot,
                },
            },
        }
    )


def test_the_rendered_flags_find_snapshot_driver_and_handle_through_the_clone(tmp_path, env, kube_server):
    """The workflow passes only the namespace and 'auto': the copy finds the snapshot its clone was made
    from, and the driver and handle in the snapshot's content; a content bound elsewhere is not used."""
    from steps.drivers.kube_objects import clone_claim_name

    kube_server.create(
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "mover", "namespace": "movers"}}
    )
    kubeconfig = kube_server.write_kubeconfig(tmp_path / "kubeconfig")
    device = tmp_path / "dev.img"
    # (large enough that re-chunking around one change never costs more than a sequential read, wherever
    # the repository's random chunker key puts the cuts)
    device.write_bytes(random.Random(5).randbytes(32 * MiB))
    repo = f"file://{tmp_path / 'repo'}"
    with FakeSnapshotMetadata(kube_server, DRIVER) as sms:

        def copy(backup: str, *parent: str) -> dict:
            image = tmp_path / f"{backup}.img"
            image.write_bytes(device.read_bytes())
            sms.add_snapshot("movers", f"snap-{backup}", f"handle-{backup}", image)
            args = [
                "copy",
                "--repo",
                repo,
                "--source",
                str(device),
                "--json",
                "--kubeconfig",
                str(kubeconfig),
            ]
            args += ["--backup-id", backup, "--volume", "data", "--cbt-driver", "auto"]
            args += ["--cbt-snapshot", "movers", "--cbt-service-account", "mover", *parent]
            return json.loads(_run(args, env).stdout)

        _snapshot_objects(
            kube_server, "movers", clone_claim_name("b1", "data"), "snap-b1", "vsc-b1", "handle-b1"
        )
        first = copy("b1", "--no-parent")
        with open(device, "r+b") as f:
            f.seek(5 * MiB)
            f.write(b"changed")
        _snapshot_objects(
            kube_server, "movers", clone_claim_name("b2", "data"), "snap-b2", "vsc-b2", "handle-b2"
        )
        second = copy("b2", "--parent", first["id"])
        # a content that names another snapshot: never trusted, the copy reads in full
        _snapshot_objects(
            kube_server, "movers", clone_claim_name("b3", "data"), "snap-b3", "vsc-b3", "handle-b3", "other"
        )
        third = copy("b3", "--parent", second["id"])
    assert first["block"]["method"] == "cbt-allocated", first["block"]
    assert second["block"]["method"] == "cbt-delta" and second["block"]["bytes_read"] < 8 * MiB, second[
        "block"
    ]
    assert sms.calls[1][1].base_snapshot_id == "handle-b1"
    assert third["block"]["method"] == "full-read" and third["block"]["bytes_read"] == 32 * MiB
    assert "vsc-b3 is bound to movers/other" in third["block"]["reason"]


def test_without_a_cluster_the_copy_reads_in_full_and_says_why(tmp_path, env):
    device = tmp_path / "dev.img"
    device.write_bytes(b"x" * MiB)
    proc = _run(
        [
            "copy",
            "--repo",
            f"file://{tmp_path / 'repo'}",
            "--source",
            str(device),
            "--json",
            "--kubeconfig",
            str(tmp_path / "missing"),
            "--cbt-driver",
            DRIVER,
            "--cbt-snapshot",
            "app/s",
            "--cbt-service-account",
            "mover",
        ],
        env,
    )
    block = json.loads(proc.stdout)["block"]
    assert block["method"] == "full-read" and block["bytes_read"] == MiB
    assert "changed-block tracking unavailable" in block["reason"]


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--cbt-snapshot", "app/s"], "--cbt-snapshot: only with --cbt-driver"),
        (
            ["--cbt-driver", "d", "--cbt-snapshot", "s", "--cbt-service-account", "m"],
            "--cbt-snapshot: NAMESPACE alone ('s') needs --backup-id and --volume",
        ),
        (
            ["--cbt-driver", "d", "--cbt-snapshot", "a/b/c", "--cbt-service-account", "m"],
            "--cbt-snapshot: expected NAMESPACE/NAME",
        ),
        (["--cbt-driver", "d", "--cbt-snapshot", "a/s"], "--cbt-service-account: expected [NAMESPACE/]NAME"),
        (
            [
                "--cbt-driver",
                "d",
                "--cbt-snapshot",
                "a/s",
                "--cbt-service-account",
                "m",
                "--full-read-every",
                "-1",
            ],
            "--full-read-every: expected",
        ),
    ],
)
def test_bad_block_tracking_flags_are_one_line(tmp_path, env, flags, expected):
    device = tmp_path / "dev.img"
    device.write_bytes(b"x" * 4096)
    proc = _run(
        ["copy", "--repo", f"file://{tmp_path / 'repo'}", "--source", str(device), *flags], env, check=False
    )
    assert proc.returncode != 0
    assert expected in proc.stderr and "Traceback" not in proc.stderr
