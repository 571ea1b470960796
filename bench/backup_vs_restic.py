"""Benchmark: Snapflow's data path side by side with restic, on the same data and the same object store.

    make bench                                  # ~1 GiB mixed dataset, 3 rounds, median
    .venv/bin/python bench/backup_vs_restic.py --size-mib 256 --rounds 1
    .venv/bin/python bench/backup_vs_restic.py --files 200000 --rounds 1   # small files of 0-4 KiB

With ``--files N`` the dataset is N files of 0-4 KiB (500 to a directory) and the change between the
backups touches 1% of them (half rewritten, a quarter deleted, as many added).

Each round, on a fresh copy of the dataset and fresh buckets in one embedded SeaweedFS: full backup, ~1%
change, incremental backup, restore of the latest snapshot — with both tools, their order alternating
between rounds. Each restore writes to a new ext4 file system of its own (a loop device, made and
removed around it, as a restore into a new volume gets; a plain folder without root). Measured: wall
time, CPU time (user + system of the command and its children), peak RSS summed over the process tree
(sampled), repository size (bytes stored in the bucket). Page caches are dropped before each command
when run as root. KDF cost: restic calibrates its scrypt parameters at init; the Snapflow repository of
the round gets a key with exactly those parameters (the KDF runs once per command for both). Every
restore is compared with the source, so a fast but wrong result cannot win. Prints the restic version, a
table of medians, the speed-up (restic's time / Snapflow's) and the RSS and size ratios (Snapflow's /
restic's), and a scale table (files/s, MB/s, peak RSS, ratio to restic) in the form docs/performance.md
uses; writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.dataset import dir_size, generate, generate_small, mutate, mutate_small
from workflows.demo.seaweedfs import SeaweedFS

PASSWORD = "benchmark password"


def drop_caches() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def run_measured(cmd: list[str], env: dict[str, str], cwd: str | None = None) -> dict:
    """Run ``cmd``; return wall seconds, peak RSS of the whole process tree, and its stdout."""
    import psutil

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = 0
    stop = threading.Event()

    def sample():
        nonlocal peak
        try:
            root = psutil.Process(proc.pid)
        except psutil.NoSuchProcess:
            return
        while not stop.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
                rss = 0
                for p in procs:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        rss += p.memory_info().rss
                peak = max(peak, rss)
            except psutil.NoSuchProcess:
                return
            stop.wait(0.02)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - started
    stop.set()
    t.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])}... exited {proc.returncode}: {err.decode()[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "peak_rss": peak, "stdout": out.decode()}


def bucket_bytes(server: SeaweedFS, bucket: str) -> int:
    from minio import Minio

    c = Minio(f"127.0.0.1:{server.s3_port}", server.access_key, server.secret_key, secure=False)
    return sum(o.size or 0 for o in c.list_objects(bucket, recursive=True))


def restic_kdf_params(server: SeaweedFS, bucket: str) -> dict:
    from minio import Minio

    c = Minio(f"127.0.0.1:{server.s3_port}", server.access_key, server.secret_key, secure=False)
    for o in c.list_objects(bucket, prefix="keys/", recursive=True):
        resp = c.get_object(bucket, o.object_name)
        try:
            key = json.loads(resp.read())
        finally:
            resp.close()
            resp.release_conn()
        return {"N": key["N"], "r": key["r"], "p": key["p"]}
    raise RuntimeError("restic wrote no key file")


def tree_digest(root: Path) -> str:
    """Digest of relative paths, sizes and contents (modes and times are checked by the test suite)."""
    h = hashlib.blake2b()
    for dirpath, dirs, names in os.walk(root):
        dirs.sort()
        for n in sorted(names):
            p = Path(dirpath, n)
            h.update(str(p.relative_to(root)).encode())
            if p.is_symlink():
                h.update(os.readlink(p).encode())
                continue
            with open(p, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
    return h.hexdigest()


class Snapflow:
    name = "snapflow"

    def __init__(self, server: SeaweedFS, bucket: str):
        self.repo = f"s3://{bucket}/repo"
        self.bucket = bucket
        self.env = {
            **os.environ,
            **server.client_env(),
            "SNAPFLOW_PASSWORD": PASSWORD,
        }
        self.env.pop("SNAPFLOW_KDF_TEST_N", None)  # the full production cost
        self.py = sys.executable

    def init(self, kdf: dict):
        """Create the repository with a key of the given scrypt cost (restic's, for a fair comparison)."""
        code = (
            "import os, sys; from steps.drivers.objectstore import open_store;"
            " from steps.repository.repo import Repository;"
            " Repository.init(open_store(sys.argv[1]), os.environ['SNAPFLOW_PASSWORD'],"
            " kdf_params={'n': int(sys.argv[2]), 'r': int(sys.argv[3]), 'p': int(sys.argv[4])})"
        )
        subprocess.run(
            [self.py, "-c", code, self.repo, str(kdf["N"]), str(kdf["r"]), str(kdf["p"])],
            env=self.env,
            check=True,
            capture_output=True,
            cwd=str(Path(__file__).resolve().parent.parent),
        )

    def backup(self, source: Path) -> dict:
        return run_measured(
            [self.py, "-m", "steps", "copy", "--repo", self.repo, "--source", str(source), "--json"], self.env
        )

    def restore(self, target: Path, source: Path) -> tuple[dict, Path]:
        r = run_measured(
            [
                self.py,
                "-m",
                "steps",
                "restore",
                "--repo",
                self.repo,
                "--snapshot",
                "latest",
                "--target",
                str(target),
            ],
            self.env,
        )
        return r, target


class Restic:
    name = "restic"

    def __init__(self, server: SeaweedFS, bucket: str, cache_dir: Path):
        self.bucket = bucket
        self.repo = f"s3:{server.endpoint}/{bucket}"
        self.env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": server.access_key,
            "AWS_SECRET_ACCESS_KEY": server.secret_key,
            "RESTIC_PASSWORD": PASSWORD,
            "RESTIC_CACHE_DIR": str(cache_dir),
        }

    def init(self):
        subprocess.run(
            ["restic", "-r", self.repo, "init", "--repository-version", "2"],
            env=self.env,
            check=True,
            capture_output=True,
        )

    def backup(self, source: Path) -> dict:
        return run_measured(
            ["restic", "-r", self.repo, "backup", "--quiet", "--compression", "auto", "."],
            self.env,
            cwd=str(source),
        )

    def restore(self, target: Path, source: Path) -> tuple[dict, Path]:
        r = run_measured(["restic", "-r", self.repo, "restore", "latest", "--target", str(target)], self.env)
        return r, target


def restic_version() -> str:
    out = subprocess.run(["restic", "version"], capture_output=True, text=True, check=True).stdout
    return out.strip()


@contextlib.contextmanager
def fresh_volume(image: Path, mountpoint: Path, data_bytes: int, files: int):
    """A new, empty ext4 file system (journal on, inode tables initialised up front) mounted at
    ``mountpoint`` for one restore, as a restore into a new volume gets; yields what the restore was
    written to. Removed afterwards, also on failure. Without root or loop devices it yields the plain
    folder instead, on whatever file system the work folder is on (say so in the results).

    Why: creating files on a file system where many were deleted shortly before costs the kernel more
    (ext4 without a journal, as on the machine this was measured on, skips inodes freed in the last
    minutes when it allocates), and the bench deleted one tool's restored tree just before the other
    restored; a fresh file system per restore makes the two restores start from the same state."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or not shutil.which("mkfs.ext4") or not shutil.which("losetup"):
        yield "folder (no root or no mkfs.ext4/losetup: not a fresh file system)"
        return
    size = max(2 << 30, 2 * data_bytes + files * 8192 + (1 << 30))
    inodes = int(files * 1.3) + 100_000
    loop = None
    mounted = False
    try:
        with open(image, "wb") as f:
            f.truncate(size)
        subprocess.run(
            [
                "mkfs.ext4",
                "-q",
                "-F",
                "-N",
                str(inodes),
                "-E",
                "lazy_itable_init=0,lazy_journal_init=0",
                str(image),
            ],
            check=True,
            capture_output=True,
        )
        loop = subprocess.run(
            ["losetup", "--find", "--show", "--direct-io=on", str(image)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        subprocess.run(["mount", loop, str(mountpoint)], check=True, capture_output=True)
        mounted = True
        os.rmdir(mountpoint / "lost+found")
    except (OSError, subprocess.CalledProcessError) as err:
        detail = getattr(err, "stderr", None) or err
        print(
            f"note: no fresh file system for the restore ({str(detail).strip()[:200]}); a folder instead",
            file=sys.stderr,
        )
        _release_volume(image, mountpoint, loop, mounted)
        yield "folder (a fresh file system could not be made)"
        return
    try:
        yield "fresh ext4 on a loop device"
    finally:
        _release_volume(image, mountpoint, loop, mounted)


def _release_volume(image: Path, mountpoint: Path, loop: str | None, mounted: bool) -> None:
    if mounted:
        subprocess.run(["umount", str(mountpoint)], check=False, capture_output=True)
    if loop:
        subprocess.run(["losetup", "--detach", loop], check=False, capture_output=True)
    with contextlib.suppress(OSError):
        image.unlink()


def file_count(root: Path) -> int:
    return sum(len(names) for _dp, _ds, names in os.walk(root))


def one_round(
    server: SeaweedFS, pristine: Path, work: Path, rnd: int, order: list[str], small: bool = False
) -> dict:
    results: dict[str, dict] = {}
    data = work / "data"
    if data.exists():
        shutil.rmtree(data)
    subprocess.run(["cp", "-a", str(pristine), str(data)], check=True)
    restic = Restic(server, f"restic-{rnd}", work / f"restic-cache-{rnd}")
    restic.init()
    kdf = restic_kdf_params(server, restic.bucket)
    tools = {"restic": restic, "snapflow": Snapflow(server, f"snapflow-{rnd}")}
    tools["snapflow"].init(kdf)
    for name in order:
        drop_caches()
        results.setdefault(name, {})["full"] = tools[name].backup(data)
    (mutate_small if small else mutate)(data)
    for name in order:
        drop_caches()
        results[name]["incremental"] = tools[name].backup(data)
    expected = tree_digest(data)
    data_bytes, files = dir_size(data), file_count(data)
    for name in order:
        target = work / f"restore-{name}"
        if target.exists():
            shutil.rmtree(target)
        with fresh_volume(work / f"volume-{name}.img", target, data_bytes, files) as where:
            drop_caches()
            r, restored = tools[name].restore(target, data)
            r["target"] = where
            results[name]["restore"] = r
            got = tree_digest(restored)
            if got != expected:
                raise RuntimeError(f"{name} restored a tree that differs from the source")
        if target.exists():
            shutil.rmtree(target)
    for name in order:
        results[name]["repo_bytes"] = bucket_bytes(server, tools[name].bucket)
    results["kdf"] = kdf
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=1024, help="dataset size (default 1024)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds; medians are reported (default 3)")
    ap.add_argument(
        "--files", type=int, default=0, metavar="N", help="small-files mode: N files of 0-4 KiB instead"
    )
    ap.add_argument(
        "--workdir", default=None, help="scratch folder (default: a temp dir, removed afterwards)"
    )
    args = ap.parse_args(argv)
    if args.files < 0:
        print(f"error: --files: expected a file count of 0 or more, got {args.files}", file=sys.stderr)
        return 2
    if not shutil.which("restic"):
        print("error: restic not found (make system-deps installs it)", file=sys.stderr)
        return 2
    version = restic_version()
    print(f"compared with: {version}")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="snapflow-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    pristine = work / "pristine"
    try:
        if not pristine.exists():
            if args.files:
                print(f"generating {args.files} small files in {pristine} ...", file=sys.stderr)
                info = generate_small(pristine, args.files)
            else:
                print(f"generating {args.size_mib} MiB dataset in {pristine} ...", file=sys.stderr)
                info = generate(pristine, args.size_mib)
            print(f"  {info['files']} files, {info['bytes'] / 2**20:.0f} MiB", file=sys.stderr)
        rounds = []
        shutil.rmtree(work / "s3", ignore_errors=True)  # fresh buckets, also when --workdir is reused
        with SeaweedFS(work / "s3") as server:
            for rnd in range(args.rounds):
                order = ["snapflow", "restic"] if rnd % 2 == 0 else ["restic", "snapflow"]
                print(f"round {rnd + 1}/{args.rounds} ({' then '.join(order)}) ...", file=sys.stderr)
                rounds.append(one_round(server, pristine, work, rnd, order, small=bool(args.files)))
        data_bytes, files = dir_size(pristine), file_count(pristine)
        report = summarize(rounds, data_bytes, caches_dropped=drop_caches())
        scale = scale_table(report["summary"], files, data_bytes, len(rounds), version)
        print(report["table"])
        print()
        print(scale)
        out = Path(__file__).parent / "results"
        out.mkdir(exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        (out / f"backup_vs_restic-{stamp}.json").write_text(
            json.dumps(
                {
                    "size_mib": args.size_mib,
                    "files": files,
                    "data_bytes": data_bytes,
                    "restic_version": version,
                    "rounds": args.rounds,
                    "summary": report["summary"],
                    "scale_table": scale,
                    "raw": [
                        {
                            t: {
                                k: (
                                    {kk: vv for kk, vv in v.items() if kk != "stdout"}
                                    if isinstance(v, dict)
                                    else v
                                )
                                for k, v in r[t].items()
                            }
                            for t in ("snapflow", "restic")
                        }
                        for r in rounds
                    ],
                },
                indent=2,
            )
        )
        return 0
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


def summarize(rounds: list[dict], data_bytes: int, caches_dropped: bool) -> dict:
    def med(tool, phase, key):
        return statistics.median(r[tool][phase][key] for r in rounds)

    rows = []
    summary = {}
    for phase in ("full", "incremental", "restore"):
        s_t, r_t = med("snapflow", phase, "wall_s"), med("restic", phase, "wall_s")
        s_c, r_c = med("snapflow", phase, "cpu_s"), med("restic", phase, "cpu_s")
        s_m, r_m = med("snapflow", phase, "peak_rss"), med("restic", phase, "peak_rss")
        summary[phase] = {
            "snapflow_s": s_t,
            "restic_s": r_t,
            "speedup": r_t / s_t,
            "snapflow_cpu_s": s_c,
            "restic_cpu_s": r_c,
            "snapflow_rss": s_m,
            "restic_rss": r_m,
            "rss_ratio": s_m / r_m,
        }
        rows.append(
            f"| {phase:<11} | {s_t:8.2f} s | {r_t:8.2f} s | {r_t / s_t:5.2f}x   | "
            f"{s_c:6.2f} s | {r_c:6.2f} s | "
            f"{s_m / 2**20:8.0f} MiB | {r_m / 2**20:6.0f} MiB | {s_m / r_m:5.2f}     |"
        )
    s_b = statistics.median(r["snapflow"]["repo_bytes"] for r in rounds)
    r_b = statistics.median(r["restic"]["repo_bytes"] for r in rounds)
    summary["repo"] = {"snapflow_bytes": s_b, "restic_bytes": r_b, "ratio": s_b / r_b}
    kdf = rounds[0]["kdf"]
    table = "\n".join(
        [
            f"dataset {data_bytes / 2**20:.0f} MiB, {len(rounds)} round(s), median; scrypt N={kdf['N']} r={kdf['r']}"
            f" p={kdf['p']} for both (restic's calibration); page caches"
            f" {'dropped' if caches_dropped else 'NOT dropped (not root)'}; restored into:"
            f" {', '.join(sorted({str(r[t]['restore'].get('target')) for r in rounds for t in ('snapflow', 'restic')}))}",
            "| phase       | snapflow   | restic     | speed-up | sf CPU   | restic CPU | snapflow RSS | restic RSS | RSS ratio |",
            "|-------------|------------|------------|----------|----------|------------|--------------|------------|-----------|",
            *rows,
            f"| repository  | {s_b / 2**20:7.0f} MiB | {r_b / 2**20:7.0f} MiB | size ratio {s_b / r_b:.3f} |",
        ]
    )
    return {"table": table, "summary": summary}


def scale_table(summary: dict, files: int, data_bytes: int, rounds: int, version: str) -> str:
    """The scale table: per phase, files and MB per second of each tool (over the whole dataset: an
    incremental also looks at every file), the speed-up, and the peak RSS of each with their ratio."""
    mb = data_bytes / 1e6
    rows = [
        f"{files} files, {data_bytes / 2**30:.2f} GiB; {rounds} round(s), median; compared with {version}",
        "| phase | snapflow / restic time | speed-up | files/s snapflow / restic | MB/s snapflow / restic"
        " | peak RSS snapflow / restic | RSS ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for phase in ("full", "incremental", "restore"):
        p = summary[phase]
        s_t, r_t = p["snapflow_s"], p["restic_s"]
        rows.append(
            f"| {phase} | {s_t:.1f} / {r_t:.1f} s | {r_t / s_t:.2f}x | {files / s_t:,.0f} / {files / r_t:,.0f}"
            f" | {mb / s_t:.1f} / {mb / r_t:.1f} | {p['snapflow_rss'] / 2**20:.0f} / {p['restic_rss'] / 2**20:.0f}"
            f" MiB | {p['rss_ratio']:.2f} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
