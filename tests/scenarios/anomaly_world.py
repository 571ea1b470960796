"""An app's data over days of normal churn, two attacks on it, and its backups through the real copy.

Shared by tests/scenarios/test_anomaly_*.py and bench/anomaly_rates.py, so that the rates measured there
are those of the generator the tests specify.

The normal-churn generator (:func:`normal_day`), seeded, per day:

* modified: a share of the files drawn uniformly from 1-3 %, each rewritten whole with new
  compressible content (lines of words and numbers, like an app's own records) of about its size;
* added: 0.5 % of the files (new compressible files);
* deleted: 0.2 % of the files;

with fractional counts rounded at random (0.6 files: one file 60 % of the days). The app's dataset
(:func:`make_app_data`): text files (1-16 KiB) in a few directories, plus a tenth of already
compressed, incompressible files (media, archives) that normal churn never touches.

The attacks: :func:`encrypt_files` overwrites a share of the files in place with random bytes of the
same size (what ransomware leaves), :func:`delete_files` deletes a share of them.

:class:`Backups` copies a directory into an in-memory repository with the real archiver, and compares
each copy's change telemetry with the earlier unflagged ones using the detector finalize uses.
"""

from __future__ import annotations

import random
from pathlib import Path

WORDS = ("order", "invoice", "customer", "shipped", "paid", "refund", "stock", "item", "user", "login")


def text(rng: random.Random, size: int) -> bytes:
    out, n = [], 0
    while n < size:
        line = f"{rng.randint(1, 10**9)} {' '.join(rng.choice(WORDS) for _ in range(rng.randint(4, 12)))}\n"
        out.append(line)
        n += len(line)
    return "".join(out).encode()[:size]


def make_app_data(root: Path, seed: int, files: int = 300) -> None:
    """The app's dataset: ``files`` files in 6 directories, nine tenths text, one tenth incompressible."""
    rng = random.Random(seed)
    for i in range(files):
        d = root / f"d{i % 6}"
        d.mkdir(parents=True, exist_ok=True)
        if i % 10 == 9:
            (d / f"media-{i:05d}.bin").write_bytes(rng.randbytes(rng.randint(4, 32) * 1024))
        else:
            (d / f"rec-{i:05d}.txt").write_bytes(text(rng, rng.randint(1, 16) * 1024))


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def _count(rng: random.Random, x: float) -> int:
    """``x`` rounded at random (up with probability of its fraction)."""
    whole = int(x)
    return whole + (1 if rng.random() < x - whole else 0)


def normal_day(root: Path, rng: random.Random) -> dict[str, int]:
    """One day of the app's normal churn (module docstring); returns what it did."""
    files = all_files(root)
    texts = [p for p in files if p.suffix == ".txt"]
    n = len(files)
    modified = rng.sample(texts, min(len(texts), _count(rng, n * rng.uniform(0.01, 0.03))))
    for p in modified:
        p.write_bytes(text(rng, max(1024, int(p.stat().st_size * rng.uniform(0.8, 1.2)))))
    rest = [p for p in texts if p not in set(modified)]
    deleted = rng.sample(rest, min(len(rest), _count(rng, n * 0.002)))
    for p in deleted:
        p.unlink()
    added = _count(rng, n * 0.005)
    dirs = sorted({p.parent for p in files}) or [root]
    for _ in range(added):
        d = rng.choice(dirs)
        (d / f"new-{rng.getrandbits(40):010x}.txt").write_bytes(text(rng, rng.randint(1, 16) * 1024))
    return {"modified": len(modified), "added": added, "deleted": len(deleted)}


def encrypt_files(root: Path, rng: random.Random, share: float = 0.3) -> int:
    """Overwrite ``share`` of the files in place with random bytes of the same size."""
    files = all_files(root)
    chosen = rng.sample(files, round(len(files) * share))
    for p in chosen:
        size = p.stat().st_size
        with open(p, "r+b") as f:
            f.write(rng.randbytes(size))
    return len(chosen)


def delete_files(root: Path, rng: random.Random, share: float = 0.5) -> int:
    files = all_files(root)
    chosen = rng.sample(files, round(len(files) * share))
    for p in chosen:
        p.unlink()
    return len(chosen)


class Backups:
    """Daily copies of ``source`` into one in-memory repository, each checked against the earlier ones
    (the telemetry the copy recorded in its snapshot, summed and compared as finalize does)."""

    def __init__(self, source: Path):
        from steps.drivers.objectstore import MemoryStore
        from steps.repository.repo import Repository

        self.source = source
        self.repo = Repository.init(MemoryStore(), "test password", kdf_params={"n": 1024, "r": 8, "p": 1})
        self.history: list[dict] = []  # the changes of unflagged backups, oldest first
        self.results: list[dict] = []
        self.last_snapshot: str | None = None

    def backup(self, parent: str | None = None) -> dict:
        """Copy the source (against ``parent``, by default the newest snapshot of it); returns
        ``{"changes", "anomaly"}`` of this backup."""
        from steps.repository import anomaly
        from steps.repository.archiver import CopyOptions, copy_source

        opts = CopyOptions(
            source=str(self.source), identity={"app": "shop", "volume": "data"}, parent=parent or "auto"
        )
        result = copy_source(self.repo, opts)
        self.last_snapshot = result.snapshot_id
        telemetry = self.repo.find_snapshot(result.snapshot_id).data.get("changes")
        changes = anomaly.backup_changes([telemetry])
        found = anomaly.detect(changes, self.history[-anomaly.HISTORY :])
        if not found["flagged"]:
            self.history.append(changes)
        out = {"changes": changes, "anomaly": found}
        self.results.append(out)
        return out


def run_month(workdir: Path, seed: int, days: int = 30, files: int = 300) -> list[dict]:
    """A month of normal churn on a fresh dataset, backed up daily (day 0 is the first full copy)."""
    src = workdir / f"app-{seed}"
    make_app_data(src, seed, files)
    rng = random.Random(seed * 7919 + 1)
    backups = Backups(src)
    backups.backup()
    for _ in range(days):
        normal_day(src, rng)
        backups.backup()
    return backups.results
