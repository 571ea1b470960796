"""Benchmark: false-positive and detection rates of the anomaly check, on seeds the tests do not use.

    .venv/bin/python bench/anomaly_rates.py --seeds 20 --json bench/results/anomaly-rates.json
    .venv/bin/python bench/anomaly_rates.py --cost --size-mib 256   # the telemetry's cost on a copy

Rates: for each held-out seed (1000, 1001, ...), an app's dataset (300 files) goes through a month of
normal churn backed up daily, then, each from the state after the month, ransomware encrypting 30 % or
10 % of the files, a deletion of half or of a fifth of them; and the demo dataset (workflows/demo) gets a
week of churn, then 30 % encrypted or half deleted. The generator, the attacks and the backups (the
real copy into an in-memory repository, the detector finalize uses) are tests/scenarios/anomaly_world.py;
the thresholds are those fixed in steps/repository/anomaly.py. False positives are counted per backup
that had the minimum history, and per month (any flag in it).

Cost (``--cost``): the bench dataset (bench/dataset.py) is copied once, changed by about 1 % with
:func:`bench.dataset.mutate`, and the incremental copy is timed with the change telemetry and with a
counter that counts nothing (swapped in here only), alternating, ``--repeat`` times each.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from steps.repository import anomaly  # noqa: E402
from tests.scenarios.anomaly_world import (  # noqa: E402
    Backups,
    delete_files,
    encrypt_files,
    make_app_data,
    normal_day,
)
from workflows.demo.sample import make_sample_data  # noqa: E402

ATTACKS = {
    "encrypt 30%": (encrypt_files, 0.3),
    "encrypt 10%": (encrypt_files, 0.1),
    "delete 50%": (delete_files, 0.5),
    "delete 20%": (delete_files, 0.2),
}
DEMO_ATTACKS = ("encrypt 30%", "delete 50%")


def attack_trial(backups: Backups, name: str, seed: int) -> dict:
    """Attack the source as it is now, back it up against the pre-attack snapshot with the current
    history, and put the source back as it was; returns the backup's anomaly."""
    attack, share = ATTACKS[name]
    src = backups.source
    saved = src.parent / f"{src.name}.saved"
    shutil.copytree(src, saved, symlinks=True)
    before, history = backups.last_snapshot, list(backups.history)
    try:
        attack(src, random.Random(seed * 31 + list(ATTACKS).index(name)), share)
        found = backups.backup(parent=before)["anomaly"]
    finally:
        backups.history = history
        shutil.rmtree(src)
        saved.rename(src)
        backups.last_snapshot = before
    return {"flagged": found["flagged"], "score": found["score"]}


def one_seed(work: Path, seed: int, days: int) -> dict:
    out: dict = {"seed": seed}
    src = work / f"app-{seed}"
    make_app_data(src, seed, 300)
    rng = random.Random(seed * 7919 + 1)
    backups = Backups(src)
    backups.backup()
    for _ in range(days):
        normal_day(src, rng)
        backups.backup()
    judged = [r["anomaly"] for r in backups.results if r["anomaly"]["baseline"] >= anomaly.MIN_HISTORY]
    out["normal_backups"] = len(judged)
    out["false_positives"] = sum(a["flagged"] for a in judged)
    out["max_normal_score"] = max((a["score"] for a in judged), default=0.0)
    for name in ATTACKS:
        out[name] = attack_trial(backups, name, seed)
    demo = work / f"demo-{seed}"
    make_sample_data(demo, seed=seed)
    drng = random.Random(seed)
    db = Backups(demo)
    db.backup()
    for _ in range(7):
        normal_day(demo, drng)
        db.backup()
    out["demo_false_positives"] = sum(r["anomaly"]["flagged"] for r in db.results)
    for name in DEMO_ATTACKS:
        out[f"demo {name}"] = attack_trial(db, name, seed)
    shutil.rmtree(src)
    shutil.rmtree(demo)
    return out


def rates(rows: list[dict]) -> dict:
    normal = sum(r["normal_backups"] for r in rows)
    fp = sum(r["false_positives"] for r in rows)
    summary = {
        "seeds": len(rows),
        "normal_backups_judged": normal,
        "false_positive_backups": fp,
        "false_positive_rate_per_backup": fp / normal if normal else None,
        "months_with_a_false_positive": sum(1 for r in rows if r["false_positives"]),
        "demo_weeks_with_a_false_positive": sum(1 for r in rows if r["demo_false_positives"]),
        "max_normal_score": max(r["max_normal_score"] for r in rows),
        "detection": {},
    }
    for name in [*ATTACKS, *(f"demo {n}" for n in DEMO_ATTACKS)]:
        hits = sum(1 for r in rows if r[name]["flagged"])
        summary["detection"][name] = {
            "detected": hits,
            "of": len(rows),
            "rate": hits / len(rows),
            "min_score": min(r[name]["score"] for r in rows),
        }
    return summary


def _null_counter():
    from steps.repository import change_telemetry

    class NullCounter(change_telemetry.ChangeCounter):
        def walked(self, prev_children, seen):
            pass

        def file_done(self, node, prev):
            pass

        def linked(self, had_prev):
            pass

    return NullCounter


def cost(size_mib: int, repeat: int, work: Path) -> dict:
    """Incremental copy time with and without the change telemetry, on the mixed bench dataset and on
    20,000 small files: each timed copy follows a full copy and a fresh change of about 1 %."""
    from bench.dataset import generate, generate_small, mutate, mutate_small
    from steps.drivers.objectstore import MemoryStore
    from steps.repository import archiver
    from steps.repository.archiver import CopyOptions, copy_source
    from steps.repository.repo import Repository

    real, null = archiver.ChangeCounter, _null_counter()
    datasets = {
        f"mixed {size_mib} MiB": (lambda root: generate(root, size_mib=size_mib, seed=42), mutate),
        "20000 small files": (lambda root: generate_small(root, 20000, seed=42), mutate_small),
    }
    out: dict = {"repeat": repeat}
    for name, (make, change) in datasets.items():
        src = work / name.replace(" ", "-")
        make(src)
        times: dict[str, list[float]] = {"with telemetry": [], "without": []}
        read: dict[str, list[int]] = {"with telemetry": [], "without": []}
        for i in range(repeat):
            for label, counter in (("with telemetry", real), ("without", null)):
                repo = Repository.init(MemoryStore(), "bench", kdf_params={"n": 1024, "r": 8, "p": 1})
                opts = CopyOptions(source=str(src), identity={"app": "bench"})
                copy_source(repo, opts)
                change(src, 0.01, seed=100 + 2 * i + (label == "without"))
                time.sleep(2.1)  # out of the racy window: the incremental reads only what changed
                archiver.ChangeCounter = counter
                try:
                    t0 = time.perf_counter()
                    result = copy_source(repo, opts)
                    times[label].append(time.perf_counter() - t0)
                finally:
                    archiver.ChangeCounter = real
                read[label].append(result.stats.bytes_read)
        out[name] = {
            "median_s": {k: statistics.median(v) for k, v in times.items()},
            "runs_s": times,
            "bytes_read": read,
            "last_changes": repo.find_snapshot(result.snapshot_id).data.get("changes"),
        }
        shutil.rmtree(src)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20, help="held-out seeds 1000, 1001, ... (default 20)")
    ap.add_argument("--days", type=int, default=30, help="days of normal churn per seed")
    ap.add_argument("--cost", action="store_true", help="measure the telemetry's cost instead")
    ap.add_argument("--size-mib", type=int, default=256, help="bench dataset size for --cost")
    ap.add_argument("--repeat", type=int, default=3, help="timed copies each way for --cost")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    os.environ.setdefault("SNAPFLOW_KDF_TEST_N", "1024")  # throwaway repositories: a low key cost
    with tempfile.TemporaryDirectory(prefix="anomaly-bench-") as tmp:
        work = Path(tmp)
        if args.cost:
            out = cost(args.size_mib, args.repeat, work)
            print(json.dumps({k: v["median_s"] for k, v in out.items() if isinstance(v, dict)}, indent=2))
        else:
            rows = []
            for seed in range(1000, 1000 + args.seeds):
                t0 = time.monotonic()
                rows.append(one_seed(work, seed, args.days))
                print(f"seed {seed}: {time.monotonic() - t0:.1f} s {json.dumps(rows[-1])}", file=sys.stderr)
            out = {"thresholds": _thresholds(), "summary": rates(rows), "seeds": rows}
            print(json.dumps(out["summary"], indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


def _thresholds() -> dict:
    return {
        "history": anomaly.HISTORY,
        "min_history": anomaly.MIN_HISTORY,
        "threshold": anomaly.THRESHOLD,
        "min_files": anomaly.MIN_FILES,
        "min_new_bytes": anomaly.MIN_NEW_BYTES,
        "features": {f.name: {"floor": f.floor, "scale_floor": f.scale_floor} for f in anomaly.FEATURES},
    }


if __name__ == "__main__":
    raise SystemExit(main())
