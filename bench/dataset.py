"""A reproducible mixed dataset for the benchmarks, and the ~1% change between two backups.

Mix (by bytes, of ``size_mib``): incompressible random 40%, compressible text-like 25%, duplicated
regions 15% (the same blocks repeated within and across files), mostly-zero/sparse 10%, and ~20k small
files (about 10%; scaled with the size). Everything comes from a seeded generator, so two runs build the
same tree.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

MiB = 1024 * 1024
WORDS = [
    "snapshot",
    "volume",
    "backup",
    "restore",
    "namespace",
    "cluster",
    "policy",
    "freeze",
    "thaw",
    "verify",
    "copy",
    "pack",
    "index",
    "blob",
    "tree",
    "postgres",
    "mariadb",
    "mongodb",
    "redis",
    "kubernetes",
    "argo",
    "workflow",
    "template",
    "cron",
    "retention",
    "prune",
    "object",
    "store",
    "select",
    "insert",
    "update",
    "delete",
    "commit",
    "rollback",
    "checkpoint",
    "replication",
    "slot",
    "timeline",
    "recovery",
]


def _text(rng: random.Random, size: int) -> bytes:
    out = []
    n = 0
    while n < size:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 16)))
        line = f"{rng.randint(1, 10**9):>10} {line} id={rng.getrandbits(32):08x}\n"
        out.append(line)
        n += len(line)
    return "".join(out).encode()[:size]


def generate(root: Path, size_mib: int = 1024, seed: int = 42, small_files: int = 20000) -> dict:
    """Build the dataset under ``root`` (which must not exist yet); returns counts for the report."""
    rng = random.Random(seed)
    root.mkdir(parents=True)
    total = size_mib * MiB
    files = 0

    def write(path: Path, data: bytes) -> None:
        nonlocal files
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        files += 1

    # Incompressible: 40%, in files of 8-64 MiB.
    budget = int(total * 0.40)
    i = 0
    while budget > 0:
        size = min(budget, rng.randint(8, 64) * MiB)
        write(root / "media" / f"blob-{i:03d}.bin", rng.randbytes(size))
        budget -= size
        i += 1
    # Compressible text/logs: 25%, 1-16 MiB each.
    budget = int(total * 0.25)
    i = 0
    while budget > 0:
        size = min(budget, rng.randint(1, 16) * MiB)
        write(root / "logs" / f"app-{i:03d}.log", _text(rng, size))
        budget -= size
        i += 1
    # Duplicated regions: 15%; a pool of 1 MiB random blocks reused across files.
    pool = [rng.randbytes(MiB) for _ in range(8)]
    budget = int(total * 0.15)
    i = 0
    while budget > 0:
        blocks = min(budget // MiB or 1, rng.randint(4, 24))
        data = b"".join(rng.choice(pool) for _ in range(blocks))
        write(root / "dup" / f"copy-{i:03d}.img", data)
        budget -= len(data)
        i += 1
    # Mostly zero, with a few random islands: 10% (sparse on disk where the file system allows).
    budget = int(total * 0.10)
    i = 0
    while budget > 0:
        size = min(budget, 32 * MiB)
        path = root / "sparse" / f"disk-{i:02d}.raw"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            f.truncate(size)
            for _ in range(4):
                f.seek(rng.randrange(0, size - 65536))
                f.write(rng.randbytes(65536))
        files += 1
        budget -= size
        i += 1
    # Many small files: ~10%, scaled so a 1 GiB set has ~20k of them.
    count = max(100, int(small_files * size_mib / 1024))
    avg = max(512, int(total * 0.10 / count))
    for j in range(count):
        d = root / "small" / f"d{j // 500:03d}"
        size = rng.randint(avg // 4, avg * 7 // 4)
        data = _text(rng, size) if j % 2 else rng.randbytes(size)
        write(d / f"f{j:05d}.dat", data)
    return {"files": files, "bytes": dir_size(root)}


def mutate(root: Path, fraction: float = 0.01, seed: int = 7) -> dict:
    """Change about ``fraction`` of the bytes: rewrite regions in some files, add and delete small files."""
    rng = random.Random(seed)
    all_files = sorted(p for p in root.rglob("*") if p.is_file())
    total = sum(p.stat().st_size for p in all_files)
    budget = int(total * fraction)
    changed = 0
    big = [p for p in all_files if p.stat().st_size > MiB]
    while budget > 0 and big:
        p = rng.choice(big)
        size = p.stat().st_size
        n = min(budget, rng.randint(64 * 1024, MiB))
        with open(p, "r+b") as f:
            f.seek(rng.randrange(0, max(1, size - n)))
            f.write(rng.randbytes(n))
        budget -= n
        changed += 1
    small = [p for p in all_files if "small" in p.parts]
    for p in rng.sample(small, min(len(small), 100)):
        p.unlink()
    for j in range(200):
        write_to = root / "small" / "new" / f"n{j:04d}.dat"
        write_to.parent.mkdir(parents=True, exist_ok=True)
        write_to.write_bytes(rng.randbytes(rng.randint(100, 8000)))
    return {"files_rewritten": changed, "small_deleted": 100, "small_added": 200}


def dir_size(root: Path) -> int:
    total = 0
    for dirpath, _dirs, names in os.walk(root):
        for n in names:
            total += os.lstat(os.path.join(dirpath, n)).st_size
    return total


def generate_small(root: Path, files: int, seed: int = 42, per_dir: int = 500) -> dict:
    """``files`` files of 0-4 KiB under ``root`` (which must not exist yet), ``per_dir`` to a directory
    and 100 directories to a parent: half text-like (compressible), half random. Returns counts."""
    rng = random.Random(seed)
    root.mkdir(parents=True)
    total = 0
    d = None
    for j in range(files):
        if j % per_dir == 0:
            n = j // per_dir
            d = root / f"g{n // 100:04d}" / f"d{n % 100:02d}"
            d.mkdir(parents=True)
        size = rng.randint(0, 4096)
        data = _text(rng, size) if j % 2 else rng.randbytes(size)
        with open(os.path.join(d, f"f{j:07d}.dat"), "wb") as f:
            f.write(data)
        total += size
    return {"files": files, "bytes": total}


def mutate_small(root: Path, fraction: float = 0.01, seed: int = 7) -> dict:
    """Touch about ``fraction`` of the files of a :func:`generate_small` tree: rewrite half of them, delete
    a quarter, and add as many new files as were deleted."""
    rng = random.Random(seed)
    paths = sorted(os.path.join(dp, n) for dp, _ds, ns in os.walk(root) for n in ns)
    picked = rng.sample(paths, max(1, int(len(paths) * fraction)))
    rewrite, delete = picked[: len(picked) // 2], picked[len(picked) // 2 : len(picked) * 3 // 4]
    for p in rewrite:
        with open(p, "wb") as f:
            f.write(rng.randbytes(rng.randint(0, 4096)))
    for p in delete:
        os.unlink(p)
    new = root / "new"
    new.mkdir(exist_ok=True)
    for j in range(len(delete)):
        (new / f"n{j:07d}.dat").write_bytes(rng.randbytes(rng.randint(0, 4096)))
    return {"files_rewritten": len(rewrite), "files_deleted": len(delete), "files_added": len(delete)}
