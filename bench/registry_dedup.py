"""Benchmark: images that share base layers, backed up from a registry — bytes the repository stores
against the sum of the images' sizes, and the backup's time.

    .venv/bin/python bench/registry_dedup.py                       # 8 images: under a minute here
    .venv/bin/python bench/registry_dedup.py --images 32 --base-mib 128 --top-mib 8

A throw-away registry (Debian's docker-registry, TLS with a CA made for the run, the test suite's
:mod:`tests.fixtures.registry`) gets ``--images`` images, each in a repository of its own
(``bench/app-00``, ...) and each made of the same ``--base-layers`` base layers (``--base-mib`` MiB
together), one layer of its own (``--top-mib`` MiB) and a config. Layers are random bytes
(incompressible), so whatever the repository saves is deduplication. Then ``python -m steps
registry-backup --repository 'bench/*'`` runs twice into a repository in a local directory: a first
backup, and a second with nothing changed (incremental: it takes the blobs the first holds from it). Reports the sum of the images' sizes (config and layers of
each image, as a per-image listing adds them up), the bytes the registry itself stores (each blob once),
the bytes of the repository directory, wall seconds, MB/s (sum of image sizes / wall seconds, 10^6
bytes; "distinct": the registry's blob bytes / wall seconds), the peak RSS of the step and the bytes
of blobs each backup downloaded. Prints a table and writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.backup_vs_restic import run_measured  # noqa: E402
from tests.fixtures.etcd import make_pki  # noqa: E402
from tests.fixtures.registry import OCI_MANIFEST, RegistryServer, Seeder  # noqa: E402

PASSWORD = "benchmark password"
MiB = 1 << 20
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG = "application/vnd.oci.image.config.v1+json"


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def push_images(seeder: Seeder, images: int, base_layers: int, base_bytes: int, top_bytes: int) -> int:
    """Push the images; returns the sum of their sizes (config + layers of each)."""
    rnd = random.Random(2026)
    bases = [rnd.randbytes(base_bytes // base_layers) for _ in range(base_layers)]
    total = 0
    for n in range(images):
        repo = f"bench/app-{n:02d}"
        layers = [seeder.blob(repo, data) for data in bases]  # the registry keeps one copy of each
        layers.append(seeder.blob(repo, rnd.randbytes(top_bytes)))
        config = seeder.blob(repo, json.dumps({"architecture": "amd64", "os": "linux", "image": n}).encode())
        doc = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": CONFIG, **config},
            "layers": [{"mediaType": LAYER, **layer} for layer in layers],
        }
        seeder.manifest(repo, "v1", doc, OCI_MANIFEST)
        total += config["size"] + sum(layer["size"] for layer in layers)
    return total


def backup(server: RegistryServer, url: str, repo_dir: Path, env: dict[str, str], scratch: Path) -> dict:
    before = dir_bytes(repo_dir)
    cmd = [sys.executable, "-m", "steps", "registry-backup", "--repo", url, "--registry", server.url,
           "--ca", str(server.pki.ca), "--repository", "bench/*", "--scratch", str(scratch), "--json"]  # fmt: skip
    measured = run_measured(cmd, env, cwd=str(ROOT))
    summary = json.loads(measured["stdout"].strip().splitlines()[-1])
    return {
        "wall_s": round(measured["wall_s"], 2),
        "cpu_s": round(measured["cpu_s"], 2),
        "repository_growth": dir_bytes(repo_dir) - before,
        "peak_rss_mib": round(measured["peak_rss"] / MiB, 1),
        "summary": {k: v for k, v in summary.items() if isinstance(v, int | float | str)},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=8, help="images, each in its own repository (default 8)")
    ap.add_argument("--base-layers", type=int, default=3, help="base layers every image shares (default 3)")
    ap.add_argument("--base-mib", type=int, default=48, help="MiB of the base layers together (default 48)")
    ap.add_argument("--top-mib", type=int, default=4, help="MiB of each image's own layer (default 4)")
    ap.add_argument("--workdir", default=None, help="where the registry's storage and the repository go")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args()
    if shutil.which("docker-registry") is None:
        sys.exit("docker-registry is not installed (scripts/system-deps.sh installs it)")

    work = Path(tempfile.mkdtemp(prefix="bench-registry-", dir=args.workdir))
    env = {**os.environ, "SNAPFLOW_PASSWORD": PASSWORD}
    env.pop("SNAPFLOW_PASSWORD_FILE", None)
    repo_dir = work / "repo"
    url = f"file://{repo_dir}"
    (work / "registry").mkdir()
    server = RegistryServer(work / "registry", make_pki(work / "pki"))
    try:
        subprocess.run([sys.executable, "-m", "steps", "init", "--repo", url], env=env, cwd=ROOT, check=True,
                       capture_output=True)  # fmt: skip
        server.start()
        t0 = time.monotonic()
        images_bytes = push_images(Seeder(server), args.images, args.base_layers, args.base_mib * MiB,
                                   args.top_mib * MiB)  # fmt: skip
        print(f"registry filled: {args.images} images in {time.monotonic() - t0:.0f} s", file=sys.stderr)
        registry_bytes = dir_bytes(server.storage / "docker" / "registry" / "v2" / "blobs")
        scratch = work / "scratch"
        scratch.mkdir()
        runs = [backup(server, url, repo_dir, env, scratch) for _ in range(2)]
        stored = dir_bytes(repo_dir)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)

    result = {
        "bench": "registry_dedup",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "images": args.images,
        "base_layers": args.base_layers,
        "base_mib": args.base_mib,
        "top_mib": args.top_mib,
        "images_bytes": images_bytes,
        "registry_blob_bytes": registry_bytes,
        "repository_bytes": stored,
        "stored_over_images": round(stored / images_bytes, 3),
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 1),
        **{
            name: {
                **run,
                "mb_per_s": round(images_bytes / 1e6 / run["wall_s"], 1),
                "distinct_mb_per_s": round(registry_bytes / 1e6 / run["wall_s"], 1),
            }
            for name, run in zip(("first", "second"), runs, strict=True)
        },
    }
    print(f"sum of image sizes {images_bytes / 1e6:.1f} MB; registry blobs {registry_bytes / 1e6:.1f} MB; "
          f"repository {stored / 1e6:.1f} MB ({100 * stored / images_bytes:.1f}% of the images)")  # fmt: skip
    print(
        f"{'backup':<8} {'wall s':>8} {'MB/s':>7} {'distinct MB/s':>14} {'repo growth MB':>15} {'peak RSS MiB':>13}"
        f" {'downloaded MB':>14} {'blobs reused':>13}"
    )
    for name in ("first", "second"):
        r = result[name]
        print(f"{name:<8} {r['wall_s']:>8.2f} {r['mb_per_s']:>7.1f} {r['distinct_mb_per_s']:>14.1f} "
              f"{r['repository_growth'] / 1e6:>15.1f} "
              f"{r['peak_rss_mib']:>13.1f} {r['summary'].get('bytes_downloaded', 0) / 1e6:>14.1f} "
              f"{r['summary'].get('blobs_reused', 0):>13}")  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"registry_dedup-{args.images}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
