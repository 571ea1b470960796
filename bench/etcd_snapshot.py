"""Benchmark: an etcd snapshot stored in the repository — time, size, throughput and peak memory — for a
keyspace of a given size.

    .venv/bin/python bench/etcd_snapshot.py                  # 256 MiB of values: a few minutes here
    .venv/bin/python bench/etcd_snapshot.py --size 1GiB      # the size of a large cluster's etcd

A throw-away etcd (Debian's etcd-server, client certificates made for the run, the test suite's
:mod:`tests.fixtures.etcd`) is filled through its JSON gateway with keys of ``--value-size`` random
(incompressible) bytes until the values add up to ``--size``. Then ``python -m steps etcd-snapshot``
runs twice into a repository in a local directory (``--repo URL`` for another; S3 keys from the
environment): a first snapshot, and, after ``--change`` percent of the keys were rewritten, a second one,
which deduplicates against the first. For each: wall seconds, the snapshot's size (etcd's database
file), MB/s (size / wall seconds, 10^6 bytes), bytes the repository grew by, and the peak RSS of the
step's Python process, of the etcd tool it runs for ``snapshot status`` (which maps the whole file, so
its RSS counts the file's cached pages) and of the two together. Prints a table and
writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fixtures.etcd import EtcdServer, make_pki  # noqa: E402

PASSWORD = "benchmark password"
UNITS = {"": 1, "B": 1, "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "K": 1000, "M": 10**6, "G": 10**9}
PUTS_PER_TXN = 100  # etcd refuses requests above 1.5 MiB (--max-request-bytes): 100 x 8 KiB fits


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).upper() not in UNITS:
        raise argparse.ArgumentTypeError(f"expected a size such as 64MiB or 1GiB, got {text!r}")
    return int(float(m.group(1)) * UNITS[m.group(2).upper()])


def fill(
    server: EtcdServer, keys: int, value_size: int, rnd: random.Random, only: list[int] | None = None
) -> None:
    """Write ``keys`` keys (or the indexes in ``only``) of fresh random values, 100 per transaction."""
    indexes = only if only is not None else list(range(keys))
    for start in range(0, len(indexes), PUTS_PER_TXN):
        batch = {
            f"/registry/bench/key-{i:08d}": rnd.randbytes(value_size)
            for i in indexes[start : start + PUTS_PER_TXN]
        }
        server.put_many(batch)


def run_sampled(cmd: list[str], env: dict[str, str]) -> dict:
    """Run ``cmd``; wall seconds, stdout, and the peak RSS of each program in its process tree (the step's
    Python, the etcd tool it runs) and of the whole tree, sampled every 20 ms."""
    import psutil

    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peaks: dict[str, int] = {}
    stop = threading.Event()

    def sample() -> None:
        try:
            root = psutil.Process(proc.pid)
        except psutil.NoSuchProcess:
            return
        while not stop.is_set():
            total = 0
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            for p in procs:
                try:
                    rss, name = p.memory_info().rss, ("step" if p.pid == proc.pid else p.name())
                except psutil.NoSuchProcess:
                    continue
                total += rss
                peaks[name] = max(peaks.get(name, 0), rss)
            peaks["tree"] = max(peaks.get("tree", 0), total)
            stop.wait(0.02)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - started
    stop.set()
    thread.join()
    if proc.returncode != 0:
        sys.exit(f"etcd-snapshot exited {proc.returncode}: {err.decode()[-2000:]}")
    return {"wall_s": wall, "stdout": out.decode(), "peak_rss": peaks}


def repo_bytes(url: str) -> int | None:
    if not url.startswith("file://"):
        return None
    base = Path(url.removeprefix("file://"))
    return sum(p.stat().st_size for p in base.rglob("*") if p.is_file())


def snapshot(server: EtcdServer, url: str, env: dict[str, str], scratch: Path) -> dict:
    pki = server.pki
    before = repo_bytes(url)
    cmd = [sys.executable, "-m", "steps", "etcd-snapshot", "--repo", url, "--etcd", server.url,
           "--cacert", str(pki.ca), "--cert", str(pki.client_cert), "--key", str(pki.client_key),
           "--cluster", "bench", "--scratch", str(scratch), "--json"]  # fmt: skip
    measured = run_sampled(cmd, env)
    summary = json.loads(measured["stdout"].strip().splitlines()[-1])
    after = repo_bytes(url)
    size = int(summary["size"])
    return {
        "wall_s": round(measured["wall_s"], 2),
        "snapshot_bytes": size,
        "mb_per_s": round(size / 1e6 / measured["wall_s"], 1),
        "bytes_added": summary.get("bytes_added"),
        "repository_growth": None if before is None or after is None else after - before,
        "peak_rss_mib": {k: round(v / (1 << 20), 1) for k, v in measured["peak_rss"].items()},
        "revision": summary.get("revision"),
        "status_tool": summary.get("status_tool"),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--size", type=parse_size, default=parse_size("256MiB"), help="values in total (default 256MiB)"
    )
    ap.add_argument(
        "--value-size", type=parse_size, default=parse_size("8KiB"), help="bytes per value (default 8KiB)"
    )
    ap.add_argument(
        "--change", type=float, default=1.0, help="percent of keys rewritten before the second snapshot"
    )
    ap.add_argument("--repo", help="repository URL (default: a new one in a temporary directory)")
    ap.add_argument("--workdir", default=None, help="where etcd's data, the scratch and the repository go")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args()
    if args.value_size * PUTS_PER_TXN > 1_400_000:
        ap.error("--value-size: at most 14KB (etcd refuses a transaction above 1.5 MiB)")
    require_etcd_or_exit()

    work = Path(tempfile.mkdtemp(prefix="bench-etcd-", dir=args.workdir))
    env = {**os.environ, "SNAPFLOW_PASSWORD": PASSWORD}
    env.pop("SNAPFLOW_PASSWORD_FILE", None)
    url = args.repo or f"file://{work / 'repo'}"
    server = EtcdServer(work / "etcd", make_pki(work / "pki"))
    server.base.mkdir(parents=True)
    keys = max(1, args.size // args.value_size)
    rnd = random.Random(2026)
    try:
        subprocess.run([sys.executable, "-m", "steps", "init", "--repo", url], env=env, cwd=ROOT, check=True,
                       capture_output=True)  # fmt: skip
        server.start()
        t0 = time.monotonic()
        fill(server, keys, args.value_size, rnd)
        fill_s = time.monotonic() - t0
        print(f"etcd filled: {keys} keys of {args.value_size} bytes in {fill_s:.0f} s", file=sys.stderr)
        scratch = work / "scratch"
        scratch.mkdir()
        first = snapshot(server, url, env, scratch)
        changed = sorted(rnd.sample(range(keys), max(1, int(keys * args.change / 100))))
        fill(server, keys, args.value_size, rnd, only=changed)
        second = snapshot(server, url, env, scratch)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)

    result = {
        "bench": "etcd_snapshot",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "keys": keys,
        "value_size": args.value_size,
        "values_bytes": keys * args.value_size,
        "changed_keys": len(changed),
        "repository": "local directory" if not args.repo else args.repo.split("://")[0],
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 1),
        "first": first,
        "second": second,
    }
    print(f"{'snapshot':<8} {'size MB':>9} {'wall s':>8} {'MB/s':>7} {'added MB':>9}  peak RSS MiB")
    for name in ("first", "second"):
        r = result[name]
        print(f"{name:<8} {r['snapshot_bytes'] / 1e6:>9.1f} {r['wall_s']:>8.2f} {r['mb_per_s']:>7.1f} "
              f"{(r['bytes_added'] or 0) / 1e6:>9.1f}  "
              + ", ".join(f"{k} {v:.0f}" for k, v in r["peak_rss_mib"].items()))  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"etcd_snapshot-{keys * args.value_size >> 20}MiB-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 0


def require_etcd_or_exit() -> None:
    if shutil.which("etcd") is None or shutil.which("etcdctl") is None:
        sys.exit(
            "etcd and etcdctl are not installed (scripts/system-deps.sh installs etcd-server and etcd-client)"
        )


if __name__ == "__main__":
    sys.exit(main())
