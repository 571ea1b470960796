"""Freeze window benchmark: consistent points of a PostgreSQL under pgbench load.

Runs ``--runs`` consistent points (the same code as the ``consistent-point`` step, in-process) against
a throw-away PostgreSQL 15 under pgbench (TPC-B-like, per-transaction log), and reports:

- the freeze window (quiesced → released) p50 / p95 / max, and quiesce → cut;
- pgbench latency p50 / p95 / max of transactions that overlapped a window vs those that did not.

As root the data directory is a btrfs subvolume on a loop device (atomic cut: CHECKPOINT, snapshot);
otherwise (or with ``--mode copy``) a copy in backup mode, whose window spans the whole copy.
Not a timed test; ``make bench-freeze`` runs it. Prints a JSON summary as the last line.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from steps.drivers.snapshot_local import LocalSnapshotDriver
from steps.plan import plan_from_dict
from steps.quiesce.cut import run_consistent_point
from steps.quiesce.verdict import iso
from tests.fixtures.btrfs import create_btrfs, destroy_btrfs
from tests.fixtures.databases import PostgresServer, make_workdir


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return round(s[k], 3)


def summary(values: list[float]) -> dict:
    return {
        "n": len(values),
        "p50": pct(values, 50),
        "p95": pct(values, 95),
        "max": round(max(values), 3) if values else None,
        "mean": round(statistics.fmean(values), 3) if values else None,
    }


def parse_iso(s: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between consistent points")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--scale", type=int, default=2)
    ap.add_argument("--mode", choices=("auto", "atomic", "copy"), default="auto")
    args = ap.parse_args()
    atomic = args.mode == "atomic" or (args.mode == "auto" and os.geteuid() == 0)
    if atomic and os.geteuid() != 0:
        print("error: --mode atomic needs root (loop-mounted btrfs)", file=sys.stderr)
        return 2

    fs = create_btrfs(2048) if atomic else None
    work = make_workdir("snapflow-bench-", "postgres")
    snaps = (fs.mountpoint / "snaps") if fs else (work / "snaps")
    snaps.mkdir()
    datadir = fs.subvolume("pgdata") if fs else work / "pgdata"
    server = PostgresServer(datadir)
    records = []
    try:
        server.start()
        server.pgbench("-i", "-s", str(args.scale), "-q")
        logdir = work / "pgbench-log"
        logdir.mkdir()
        os.chmod(logdir, 0o777)
        duration = int(args.runs * (args.interval + (0.5 if atomic else 4.0)) + 6)
        load = server.pgbench_start(
            "-c",
            str(args.clients),
            "-j",
            "2",
            "-T",
            str(duration),
            "-n",
            "-l",
            "--log-prefix",
            str(logdir / "tx"),
            cwd=str(logdir),
        )
        time.sleep(2)
        plan = plan_from_dict(
            {
                "version": 1,
                "app": {"namespace": "bench", "name": "pg"},
                "snapshot": {"driver": "local"},
                "freeze": {"deadline_s": 30, "keepalive_s": 5},
                "targets": [
                    {"name": "pg-0", "hook": "postgresql", "local": True, "params": server.conn_params}
                ],
                "volumes": [{"name": "pgdata", "path": str(datadir)}],
            }
        )
        driver = LocalSnapshotDriver(local_dir=snaps)
        for i in range(args.runs):
            if load.poll() is not None:
                break
            t0 = time.time()
            rec = run_consistent_point(plan, f"bench-{i}", driver)
            rec["_total_s"] = time.time() - t0
            records.append(rec)
            for s in rec["snapshots"]:
                driver.delete(type("R", (), {"snapshot": s["snapshot"], "handle": s.get("handle", {})})())
            time.sleep(args.interval)
        load.wait(timeout=duration + 60)
        windows = []
        for rec in records:
            t = rec["timeline"]["targets"][0]
            windows.append((parse_iso(t["quiesced"]), parse_iso(t["released"])))
        inside, outside = [], []
        for path in glob.glob(str(logdir / "tx*")):
            with open(path) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) < 6:
                        continue
                    latency_ms = int(parts[2]) / 1000
                    end = int(parts[4]) + int(parts[5]) / 1e6
                    start = end - latency_ms / 1000
                    if any(start <= r and end >= q for q, r in windows):
                        inside.append(latency_ms)
                    else:
                        outside.append(latency_ms)
    finally:
        server.cleanup()
        if fs:
            destroy_btrfs(fs)
        shutil.rmtree(work, ignore_errors=True)

    result = {
        "mode": "atomic btrfs snapshot + CHECKPOINT" if atomic else "copy in backup mode",
        "runs": len(records),
        "verdicts": sorted({r["verdict"] for r in records}),
        "freeze_window_ms": summary([r["freeze_window_ms"] for r in records]),
        "quiesce_to_cut_ms": summary(
            [v["cut_after_quiesce_ms"] for r in records for v in r["timeline"]["volumes"]]
        ),
        "consistent_point_total_ms": summary([r["_total_s"] * 1000 for r in records]),
        "pgbench_latency_ms_inside_window": summary(inside),
        "pgbench_latency_ms_outside_window": summary(outside),
        "generated": iso(time.time()),
    }
    fw, li, lo = (
        result["freeze_window_ms"],
        result["pgbench_latency_ms_inside_window"],
        result["pgbench_latency_ms_outside_window"],
    )
    print(f"{result['mode']}: {result['runs']} runs, verdicts {result['verdicts']}")
    print(f"freeze window ms: p50 {fw['p50']}  p95 {fw['p95']}  max {fw['max']}")
    print(
        f"pgbench latency ms inside windows ({li['n']} tx): p50 {li['p50']}  p95 {li['p95']}  max {li['max']}"
    )
    print(f"pgbench latency ms outside ({lo['n']} tx): p50 {lo['p50']}  p95 {lo['p95']}  max {lo['max']}")
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
