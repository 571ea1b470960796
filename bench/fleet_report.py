"""Fleet report and exporter benchmark: a synthetic fleet's records, read cold and warm.

Generates a fleet of ``--clusters`` x ``--apps`` apps with ``--days`` daily committed backups each (a
backup record per day, a restore-test run record per week; some apps late, some crash-consistent, some
with a flagged anomaly), written through the repository's own record-writing path
(:meth:`Repository.save_record`: sealed, named by the hash of the stored bytes) into

- ``--store file`` (default): one local directory per repository (written without an fsync per file,
  which a benchmark's throw-away data does not need; the report reads them through the ordinary
  ``file://`` store), or
- ``--store s3``: buckets of an embedded SeaweedFS (``weed mini``, as the other benchmarks use).

``--layout per-cluster`` (default) gives each cluster its own repository (each tenant its own key);
``--layout shared`` puts the whole fleet into one repository. Then it measures, each in a process of its
own (wall time and peak RSS from ``wait4``):

- ``snapflow report --repo ... -o fleet.html --no-details``: cold (empty record cache) and warm (the
  cache of the cold run; nothing new: no repository is opened);
- the exporter (:class:`workflows.fleet.exporter.Exporter`): its first refresh, a second one, and a
  scrape of what they serve;
- opening the repositories alone (the key derivation every reader pays, cache or not).

Not a timed test. Prints a Markdown table and writes bench/results/fleet_report-STAMP.json.
``--workdir`` keeps the generated repositories for another run (``--reuse``).
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
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PASSWORD = "fleet benchmark password"
DAY = 86400.0


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class _FastDirStore:
    """A local directory store for generating: lists only under the prefix, no fsync per object."""

    def __new__(cls, root: str):
        from steps.drivers.objectstore import LocalStore, ObjectInfo

        class FastDirStore(LocalStore):
            def put(self, key, data):
                path = self._path(key)
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.name}.tmp")
                tmp.write_bytes(data)
                os.replace(tmp, path)

            def list(self, prefix=""):
                base = self.root / prefix.rstrip("/") if prefix.endswith("/") else self.root
                if not base.is_dir():
                    return
                for dirpath, _dirs, files in os.walk(base):
                    for name in files:
                        if not name.startswith("."):
                            key = Path(dirpath, name).relative_to(self.root).as_posix()
                            if key.startswith(prefix):
                                yield ObjectInfo(key, 0, None)

        return FastDirStore(root)


def repo_url(args, index: int, workdir: Path) -> str:
    if args.store == "s3":
        return f"s3://fleet-bench-{index:03d}/repo"
    return f"file://{workdir / 'repos' / f'r{index:03d}'}"


def _open_store(url: str, endpoint: str | None):
    from steps.api import open_store

    if url.startswith("file://"):
        return _FastDirStore(url.removeprefix("file://"))
    return open_store(url, endpoint)


def generate_repository(job: dict) -> dict:
    """Every record of the clusters in ``job`` into one repository (run in a worker process)."""
    from steps.api import Repository

    t0 = time.monotonic()
    store = _open_store(job["url"], job["endpoint"])
    kdf = {"n": job["kdf_n"], "r": 8, "p": 4}
    repo = Repository.init(store, PASSWORD, kdf_params=kdf)
    rnd = random.Random(job["seed"])
    now, days = job["now"], job["days"]
    writes = []
    for cluster in job["clusters"]:
        for a in range(job["apps"]):
            app = {
                "cluster": cluster,
                "namespace": f"team-{a % 5}",
                "name": f"app-{a:02d}",
                "policy": f"app-{a:02d}",
            }
            late = rnd.random() < 0.05  # the last days missed
            crash = rnd.random() < 0.05
            skip = rnd.randint(2, 4) if late else 0
            for d in range(days, skip, -1):
                t = now - d * DAY + 2 * 3600 + rnd.uniform(0, 600)
                writes.append((app, d, t, crash and d <= 3, rnd.random() < 0.002))

    def write(item) -> None:
        app, d, t, crash, anomalous = item
        bid = f"{app['cluster']}-{app['name']}-{int(t)}"
        size = 10 * 2**30 + int(t) % 2**20
        record = {
            "version": 1,
            "backup_id": bid,
            "time": iso(t + 300),
            "workflow_status": "Succeeded",
            "app": app,
            "volumes": [{"name": "data", "pvc": f"data-{app['name']}-0", "files": 12000, "bytes": size}],
            "manifests": None,
            "snapshot_driver": "csi",
            "targets": [{"name": "db", "hook": "postgresql", "pgdata": "/var/lib/postgresql/data"}],
            "consistency": {
                "verdict": "crash-consistent" if crash else "app-consistent",
                "reasons": ["the hold ended before the cut"] if crash else [],
                "recovery": {"data": "crash"},
                "freeze_window_ms": 40.0,
                "timeline": {
                    "volumes": [{"name": "data", "cut": iso(t)}],
                    "targets": [{"name": "db", "quiesced": iso(t - 0.02), "released": iso(t + 0.02)}],
                },
            },
            "verify": {
                "ok": True,
                "read_data_percent": 5,
                "snapshots": [],
                "bytes_read": size // 20,
                "time": iso(t + 250),
            },
            "repository": job["url"],
            "anomaly": {
                "flagged": anomalous,
                "score": 0.97 if anomalous else 0.05,
                "reasons": ["82% of the files changed (baseline 3%)"] if anomalous else [],
                "baseline": 14,
            },
        }
        repo.save_record("backups", record, key=bid)
        if d % 7 == 0:
            repo.save_record(
                "runs",
                {"name": "restore-test", "backup_id": bid, "time": iso(t + 3600), "ok": True, "app": app},
                key=bid,
            )

    with ThreadPoolExecutor(job["threads"]) as pool:
        list(pool.map(write, writes))
    return {"url": job["url"], "backups": len(writes), "seconds": time.monotonic() - t0}


def generate(args, workdir: Path, endpoint: str | None, env: dict) -> list[str]:
    os.environ.update(env)
    clusters = [f"cluster-{c:02d}" for c in range(args.clusters)]
    groups = [clusters] if args.layout == "shared" else [[c] for c in clusters]
    now = time.time()
    jobs = [
        {
            "url": repo_url(args, i, workdir),
            "endpoint": endpoint,
            "clusters": g,
            "apps": args.apps,
            "days": args.days,
            "now": now,
            "seed": i,
            "kdf_n": args.kdf_n,
            "threads": 8 if args.store == "s3" else 2,
        }
        for i, g in enumerate(groups)
    ]
    t0 = time.monotonic()
    total = 0
    with ProcessPoolExecutor(args.processes) as pool:
        for done in pool.map(generate_repository, jobs):
            total += done["backups"]
            print(f"  {done['url']}: {done['backups']} backups in {done['seconds']:.1f} s", file=sys.stderr)
    print(
        f"generated {total} backups in {len(jobs)} repositories in {time.monotonic() - t0:.0f} s",
        file=sys.stderr,
    )
    return [j["url"] for j in jobs]


def run_measured(cmd: list[str], env: dict) -> dict:
    """Wall time, CPU time and peak RSS (from wait4) of one process."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out_f = proc.stdout
    err_f = proc.stderr
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    out, err = out_f.read().decode(), err_f.read().decode()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])}...: exit {proc.returncode}: {err[-3000:]}")
    return {
        "wall_s": wall,
        "peak_rss_mib": usage.ru_maxrss / 1024,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "stdout": out,
        "stderr": err,
    }


EXPORTER_SCRIPT = """
import json, sys, time
from workflows.fleet.exporter import Exporter
urls = json.loads(sys.argv[1])
e = Exporter(urls)
t0 = time.monotonic(); e.refresh(); cold = time.monotonic() - t0
t0 = time.monotonic(); e.refresh(); warm = time.monotonic() - t0
from prometheus_client import generate_latest
from workflows.fleet.exporter import registry_for
t0 = time.monotonic(); body = generate_latest(registry_for(e)); scrape = time.monotonic() - t0
apps = sum(len(s.apps) for s in e.states)
records = sum(len(s.cache.entries) for s in e.states)
down = [s.url for s in e.states if not s.up]
print(json.dumps({"cold_s": cold, "warm_s": warm, "scrape_s": scrape, "scrape_bytes": len(body),
                  "apps": apps, "records": records, "down": down}))
"""

OPEN_SCRIPT = """
import json, sys, time
from concurrent.futures import ThreadPoolExecutor
from steps.api import open_repository
urls = json.loads(sys.argv[1])
t0 = time.monotonic()
with ThreadPoolExecutor(4) as pool:
    list(pool.map(open_repository, urls))
print(json.dumps({"open_s": time.monotonic() - t0}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clusters", type=int, default=50)
    parser.add_argument("--apps", type=int, default=20, help="apps per cluster")
    parser.add_argument("--days", type=int, default=365, help="daily backups per app")
    parser.add_argument("--store", choices=("file", "s3"), default="file")
    parser.add_argument("--layout", choices=("per-cluster", "shared"), default="per-cluster")
    parser.add_argument("--kdf-n", type=int, default=2**15, help="scrypt N of the repositories' keys")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 2, help="generator processes")
    parser.add_argument("--workdir", help="keep the repositories here (default: a temporary directory)")
    parser.add_argument("--reuse", action="store_true", help="use the repositories already in --workdir")
    args = parser.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="snapflow-fleet-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    server = None
    env = dict(os.environ, SNAPFLOW_PASSWORD=PASSWORD, PYTHONPATH=str(ROOT))
    env.pop("SNAPFLOW_PASSWORD_FILE", None)
    endpoint = None
    try:
        if args.store == "s3":
            from workflows.demo.seaweedfs import SeaweedFS

            server = SeaweedFS(work / "s3").start()
            env.update(server.client_env())
            endpoint = server.endpoint
        layout_file = work / "layout.json"
        if args.reuse and layout_file.exists():
            urls = json.loads(layout_file.read_text())["urls"]
            gen_s = None
        else:
            shutil.rmtree(work / "repos", ignore_errors=True)
            t0 = time.monotonic()
            urls = generate(args, work, endpoint, env)
            gen_s = time.monotonic() - t0
            layout_file.write_text(json.dumps({"urls": urls, "args": vars(args)}))
        py = sys.executable
        cache = work / "cache"
        shutil.rmtree(cache, ignore_errors=True)
        report = [
            py,
            "-m",
            "workflows",
            "report",
            "--format",
            "html",
            "--no-details",
            "--cache-dir",
            str(cache),
            "-o",
            str(work / "fleet.html"),
        ]
        for url in urls:
            report += ["--repo", url]
        results = {}
        print("fleet report, cold ...", file=sys.stderr)
        results["report_cold"] = run_measured(report, env)
        print("fleet report, warm ...", file=sys.stderr)
        results["report_warm"] = run_measured(report, env)
        results["report_warm_2"] = run_measured(report, env)
        print("exporter, two refreshes ...", file=sys.stderr)
        results["exporter"] = run_measured([py, "-c", EXPORTER_SCRIPT, json.dumps(urls)], env)
        results["open_only"] = run_measured([py, "-c", OPEN_SCRIPT, json.dumps(urls)], env)
        exp = json.loads(results["exporter"]["stdout"].strip().splitlines()[-1])
        opened = json.loads(results["open_only"]["stdout"].strip().splitlines()[-1])
        size = (
            sum(f.stat().st_size for f in (cache / "records").glob("*.cache"))
            if (cache / "records").is_dir()
            else 0
        )
        rows = [
            ("fleet report, cold (empty cache)", results["report_cold"]),
            ("fleet report, warm", results["report_warm"]),
            ("fleet report, warm (again)", results["report_warm_2"]),
            (
                f"exporter: process with two refreshes (cold {exp['cold_s']:.1f} s, warm {exp['warm_s']:.1f} s)"
                f" and a scrape ({exp['scrape_s']:.2f} s, {exp['scrape_bytes'] / 2**20:.1f} MiB)",
                results["exporter"],
            ),
            (f"opening the {len(urls)} repositories only ({opened['open_s']:.1f} s)", results["open_only"]),
        ]
        print()
        print(
            f"{args.clusters} clusters x {args.apps} apps x {args.days} days, {args.layout}, {args.store} store, "
            f"{len(urls)} repositories, scrypt N={args.kdf_n}; {exp['records']} records, {exp['apps']} apps; "
            f"record cache {size / 2**20:.1f} MiB"
        )
        print()
        print("| what | wall (s) | CPU (s) | peak RSS (MiB) |")
        print("| --- | ---: | ---: | ---: |")
        for label, r in rows:
            print(f"| {label} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['peak_rss_mib']:.0f} |")
        for name in ("report_cold", "report_warm"):
            for line in results[name]["stderr"].strip().splitlines()[-2:]:
                print(f"{name}: {line}", file=sys.stderr)
        out = ROOT / "bench" / "results"
        out.mkdir(exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        (out / f"fleet_report-{stamp}.json").write_text(
            json.dumps(
                {
                    "args": vars(args),
                    "generate_s": gen_s,
                    "records": exp["records"],
                    "apps": exp["apps"],
                    "cache_bytes": size,
                    "exporter": exp,
                    "open": opened,
                    "runs": {
                        k: {kk: vv for kk, vv in v.items() if kk not in ("stdout",)}
                        for k, v in results.items()
                    },
                },
                indent=1,
            )
        )
        return 0
    finally:
        if server is not None:
            server.stop()
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
