"""Benchmark: the copy of a block volume with changed-block tracking against a full read and against restic.

    .venv/bin/python bench/block_cbt.py --size-gib 8 --changed-percent 1

A device of random data (a loop device when run as root, else an image file) is copied in full, then a
share of it is rewritten in extents at random offsets, and the incremental is measured three ways:
Snapflow with the ranges from a SnapshotMetadata service (the test service over TLS gRPC, serving the
known writes, with a token from TokenRequest against the test API server), Snapflow's full read (what a
device copy did before), and restic 0.14 (``backup --stdin`` of the device, its way of reading a device).
Repositories are local directories (the two Snapflow incrementals each start from a copy of the
repository after the full copy, so neither finds the other's new chunks stored); page caches are dropped before each phase when run as root. Bytes
read are the kernel's count (``ru_inblock``); the CBT and full-read incrementals must give the same
content list, which the bench checks. Prints a table and writes JSON when ``--json`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MiB = 1024 * 1024
GiB = 1024 * MiB
DRIVER = "bench.csi.example"


def drop_caches() -> bool:
    if os.geteuid() != 0:
        return False
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def measured(fn):
    drop_caches()
    s0, c0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    out = fn()
    wall = time.monotonic() - t0
    s1, c1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    inblock = (s1.ru_inblock - s0.ru_inblock) + (c1.ru_inblock - c0.ru_inblock)
    cpu = (s1.ru_utime + s1.ru_stime - s0.ru_utime - s0.ru_stime) + (
        c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime
    )
    return out, {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "disk_read_bytes": inblock * 512}


def make_device(work: Path, size: int) -> tuple[Path, Path, str | None]:
    backing = work / "device.img"
    with open(backing, "wb") as f:
        left = size
        while left:
            n = min(left, 64 * MiB)
            f.write(os.urandom(n))
            left -= n
    if os.geteuid() == 0 and shutil.which("losetup"):
        dev = subprocess.run(
            ["losetup", "--find", "--show", str(backing)], check=True, capture_output=True, text=True
        ).stdout.strip()
        return Path(dev), backing, dev
    return backing, backing, None


def rewrite(device: Path, size: int, percent: float, extent: int, seed: int = 1) -> list[tuple[int, int]]:
    rnd = random.Random(seed)
    count = max(1, int(size * percent / 100) // extent)
    slots = rnd.sample(range(size // extent), count)
    writes = sorted((s * extent, extent) for s in slots)
    fd = os.open(device, os.O_WRONLY)
    try:
        for off, n in writes:
            os.pwrite(fd, os.urandom(n), off)
        os.fsync(fd)
    finally:
        os.close(fd)
    return writes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-gib", type=float, default=8.0)
    ap.add_argument("--changed-percent", type=float, default=1.0)
    ap.add_argument("--extent-kib", type=int, default=1024, help="size of each rewritten extent")
    ap.add_argument("--work", help="directory for the device and the repositories (default: a temp dir)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    if not shutil.which("restic"):
        print("error: restic not found (make system-deps installs it)", file=sys.stderr)
        return 2

    from steps.drivers import cbt
    from steps.drivers.kube import KubeClient
    from steps.drivers.objectstore import open_store
    from steps.repository import block_copy
    from steps.repository.archiver import CopyOptions, copy_source
    from steps.repository.repo import Repository
    from tests.fakes.kubeapi import FakeKubeAPI
    from tests.fakes.snapshot_metadata import FakeSnapshotMetadata

    size = int(args.size_gib * GiB) // MiB * MiB
    work = Path(args.work or tempfile.mkdtemp(prefix="snapflow-cbt-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    loop = None
    results: dict = {
        "size_bytes": size,
        "changed_percent": args.changed_percent,
        "extent_bytes": args.extent_kib * 1024,
    }
    try:
        print(f"writing a {size / GiB:.1f} GiB device of random data ...", file=sys.stderr)
        device, _backing, loop = make_device(work, size)
        results["device"] = "loop device" if loop else "image file"
        results["restic"] = subprocess.run(
            ["restic", "version"], capture_output=True, text=True
        ).stdout.strip()
        os.environ["SNAPFLOW_KDF_TEST_N"] = "1024"
        repo = Repository.init(
            open_store(f"file://{work}/snapflow"), "bench", kdf_params={"n": 1024, "r": 8, "p": 1}
        )
        renv = dict(
            os.environ,
            RESTIC_PASSWORD="bench",
            RESTIC_REPOSITORY=str(work / "restic"),
            RESTIC_CACHE_DIR=str(work / "restic-cache"),
        )
        subprocess.run(
            ["restic", "init", "--repository-version", "2"], env=renv, check=True, capture_output=True
        )

        def restic_backup():
            with open(device, "rb") as src:
                subprocess.run(
                    ["restic", "backup", "--quiet", "--stdin", "--stdin-filename", "device.img"],
                    env=renv,
                    stdin=src,
                    check=True,
                    capture_output=True,
                )

        with FakeKubeAPI(work / "kube") as kube_server:
            kube_server.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "db"}})
            kube_server.create(
                {
                    "apiVersion": "v1",
                    "kind": "ServiceAccount",
                    "metadata": {"name": "mover", "namespace": "db"},
                }
            )
            kube = KubeClient(api=kube_server.api_client())
            with FakeSnapshotMetadata(kube_server, DRIVER, block_size=64 * 1024, variable=True) as sms:

                def cbt_copy(n: int, parent: str | None):
                    sms.add_snapshot("db", f"snap-{n}", f"h-{n}", device)

                    def ranges(base):
                        req = cbt.CbtRequest(DRIVER, "db", f"snap-{n}", "mover", base_snapshot_handle=base)
                        return cbt.ranges_for(kube, req, capacity=size)

                    bc = block_copy.BlockCbt(ranges, f"h-{n}", DRIVER, full_read_every=0)
                    return block_copy.copy_block(repo, CopyOptions(source=str(device), parent=parent), bc)

                print("full copies ...", file=sys.stderr)
                full, results["snapflow_full"] = measured(lambda: cbt_copy(1, None))
                _, results["restic_full"] = measured(restic_backup)
                # the full-read incremental gets a copy of the repository as it is now, so that neither
                # incremental finds the other's new chunks already stored
                shutil.copytree(work / "snapflow", work / "snapflow-full-read")
                repo_b = Repository.open(open_store(f"file://{work}/snapflow-full-read"), "bench")
                writes = rewrite(device, size, args.changed_percent, args.extent_kib * 1024)
                results["changed_bytes"] = sum(n for _, n in writes)
                sms.add_known_delta("h-1", "db", "snap-2", writes)
                print("incrementals ...", file=sys.stderr)
                incr, results["snapflow_cbt_incremental"] = measured(lambda: cbt_copy(2, full.snapshot_id))
                plain, results["snapflow_full_read_incremental"] = measured(
                    lambda: copy_source(repo_b, CopyOptions(source=str(device), parent=None))
                )
                _, results["restic_incremental"] = measured(restic_backup)
            kube.close()
        block = repo.find_snapshot(incr.snapshot_id).data["block"]
        results["snapflow_cbt_incremental"].update(method=block["method"], bytes_read=block["bytes_read"])
        results["snapflow_full_read_incremental"]["bytes_read"] = plain.stats.bytes_read
        results["snapflow_full"]["bytes_read"] = full.stats.bytes_read
        a = repo.load_tree(repo.find_snapshot(incr.snapshot_id).data["tree"])[0]["content"]
        b = repo_b.load_tree(repo_b.find_snapshot(plain.snapshot_id).data["tree"])[0]["content"]
        results["cbt_equals_full_read"] = a == b
        results["caches_dropped"] = drop_caches()
    finally:
        if loop:
            subprocess.run(["losetup", "--detach", loop], check=False)
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0 if results["cbt_equals_full_read"] else 1


def print_table(r: dict) -> None:
    size = r["size_bytes"]
    print(
        f"\n{size / GiB:.1f} GiB {r['device']}, {r['changed_bytes'] / MiB:.0f} MiB changed"
        f" ({r['changed_percent']}% in {r['extent_bytes'] // 1024} KiB extents); {r['restic']}"
    )
    print("| phase | wall s | cpu s | disk read MiB | MB/s of volume |")
    print("|---|---|---|---|---|")
    for key, label in (
        ("snapflow_full", "Snapflow full (allocated ranges)"),
        ("restic_full", "restic full (--stdin)"),
        ("snapflow_cbt_incremental", "Snapflow incremental, CBT"),
        ("snapflow_full_read_incremental", "Snapflow incremental, full read"),
        ("restic_incremental", "restic incremental (--stdin)"),
    ):
        m = r[key]
        print(
            f"| {label} | {m['wall_s']} | {m['cpu_s']} | {m['disk_read_bytes'] / MiB:.0f} |"
            f" {size / 1e6 / max(m['wall_s'], 1e-9):.0f} |"
        )
    c, f, ri = r["snapflow_cbt_incremental"], r["snapflow_full_read_incremental"], r["restic_incremental"]
    print(
        f"CBT incremental: {c['wall_s'] and f['wall_s'] / c['wall_s']:.1f}x faster than Snapflow's full read,"
        f" {c['wall_s'] and ri['wall_s'] / c['wall_s']:.1f}x faster than restic; read {c['bytes_read'] / MiB:.0f} MiB"
        f" of {size / MiB:.0f} MiB; content equal to the full read: {r['cbt_equals_full_read']}"
    )


if __name__ == "__main__":
    sys.exit(main())
