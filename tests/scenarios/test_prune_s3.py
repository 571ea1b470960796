"""Prune on a real S3 server (SeaweedFS), through the step command line: rules, dry run, real
interleavings with copies, and a prune killed (SIGKILL) at random moments."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from steps.drivers.objectstore import open_store
from tests.fixtures.prune import ROOT, last_json, run_steps, write_files


def _state(repo: str) -> list[tuple]:
    return sorted(
        (i.key, i.size, i.version_id, i.is_delete_marker) for i in open_store(repo).list_versions("")
    )


def _copy(repo: str, src, check: bool = True, env: dict | None = None):
    return run_steps("copy", "--repo", repo, "--source", str(src), "--json", check=check, env=env)


def _restore_equals(repo: str, snapshot: str, expected_dir, target) -> bool:
    run_steps("restore", "--repo", repo, "--snapshot", snapshot, "--target", str(target))
    names = sorted(os.listdir(expected_dir))
    return sorted(os.listdir(target)) == names and all(
        (target / n).read_bytes() == (expected_dir / n).read_bytes() for n in names
    )


def test_prune_keeps_what_the_rules_say_and_frees_the_rest(s3_repo, tmp_path):
    # GIVEN five copies of one source, each with new content
    run_steps("init", "--repo", s3_repo)
    src = tmp_path / "src"
    for seed in range(5):
        write_files(src, seed)
        _copy(s3_repo, src)
        time.sleep(1.05)
    size_before = sum(i.size for i in open_store(s3_repo).list("data/"))
    # WHEN prune keeps the last 2 and sweeps at once (no backup runs here)
    report = last_json(
        run_steps("prune", "--repo", s3_repo, "--keep-last", "2", "--grace", "0", "--wait", "--json")
    )
    # THEN three snapshots are forgotten, their data freed, and the newest restores
    assert len(report["forgotten_snapshots"]) == 3 and report["kept"] == 2
    assert report["sweep"]["packs_deleted"] >= 3
    snaps = last_json(run_steps("snapshots", "--repo", s3_repo, "--json"))
    assert len(snaps) == 2
    assert sum(i.size for i in open_store(s3_repo).list("data/")) < size_before * 0.5
    run_steps("verify", "--repo", s3_repo, "--read-data", "100")
    assert _restore_equals(s3_repo, "latest", src, tmp_path / "out")


def test_dry_run_changes_nothing_on_the_store(s3_repo, tmp_path):
    # GIVEN copies, a prune that marked candidates, and an unused pack due for the sweep
    run_steps("init", "--repo", s3_repo)
    src = tmp_path / "src"
    for seed in range(3):
        write_files(src, seed)
        _copy(s3_repo, src)
        time.sleep(1.05)
    run_steps("prune", "--repo", s3_repo, "--keep-last", "2", "--grace", "5s")
    time.sleep(7.5)
    before = _state(s3_repo)
    # WHEN a dry run with stricter rules runs
    out = run_steps("prune", "--repo", s3_repo, "--keep-last", "1", "--grace", "5s", "--dry-run").stdout
    # THEN not one object or version changed, and the listing says what would go and why the rest stays
    assert _state(s3_repo) == before
    assert "keep   " in out and "last 1/1" in out and "no rule keeps it" in out
    assert "would forget 0 backup(s), 1 snapshot(s)" in out


def test_copies_and_prunes_interleaved_on_s3_leave_every_snapshot_restorable(s3_repo, tmp_path, monkeypatch):
    # GIVEN a repository, and copies that write an index file after every pack
    monkeypatch.setenv("SNAPFLOW_INDEX_EVERY_PACKS", "1")
    run_steps("init", "--repo", s3_repo)
    rnd = random.Random(7)
    outcomes = []
    contents: dict[str, int] = {}
    for round_ in range(4):
        src = tmp_path / f"src{round_ % 2}"
        seed = 100 + round_
        write_files(src, seed, names=("a.bin", "b.bin", "c.bin", "d.bin"), size=3_000_000)
        # WHEN a copy and a prune (short grace, sweeping in the same run) start with a random offset
        prune = subprocess.Popen(
            [sys.executable, "-m", "steps", "prune", "--repo", s3_repo, "--keep-last", "1", "--grace", "5s", "--wait"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(rnd.uniform(0, 1.5))
        copy = _copy(s3_repo, src, check=False)
        _, prune_err = prune.communicate(timeout=120)
        # THEN each copy either committed or refused with the retryable code, and prune finished
        assert copy.returncode in (0, 75), copy.stderr
        assert prune.returncode == 0, prune_err
        outcomes.append(copy.returncode)
        if copy.returncode == 0:
            contents[last_json(copy)["id"]] = seed
        time.sleep(1.05)
    # AND verify passes and every remaining snapshot restores byte-identical
    run_steps("verify", "--repo", s3_repo, "--read-data", "100")
    remaining = {s["id"] for s in last_json(run_steps("snapshots", "--repo", s3_repo, "--json"))}
    assert remaining and remaining <= set(contents)
    for sid in remaining:
        expected = write_files(
            tmp_path / f"expected-{sid[:8]}",
            contents[sid],
            names=("a.bin", "b.bin", "c.bin", "d.bin"),
            size=3_000_000,
        )
        assert _restore_equals(s3_repo, sid, tmp_path / f"expected-{sid[:8]}", tmp_path / f"out-{sid[:8]}"), (
            expected
        )
    assert 0 in outcomes


def test_prune_after_an_index_file_was_deleted_keeps_the_packs_the_backup_needs(
    s3_repo, tmp_path, monkeypatch
):
    # GIVEN a copy whose data packs are each named by an index file of their own
    from steps.repository.pack import BLOB_TREE
    from steps.repository.repo import Repository
    from tests.fixtures.prune import TEST_PASSWORD

    monkeypatch.setenv("SNAPFLOW_INDEX_EVERY_PACKS", "1")
    run_steps("init", "--repo", s3_repo)
    src = tmp_path / "src"
    write_files(src, 3, names=("a.bin", "b.bin", "c.bin", "d.bin"), size=3_000_000)
    snap = last_json(_copy(s3_repo, src))["id"]
    store = open_store(s3_repo)
    repo = Repository.open(store, TEST_PASSWORD)
    data_only = []
    for iid in repo.index_ids():
        _, _, index_packs = repo._read_index_file(iid)
        if all(e.type != BLOB_TREE for p in index_packs for e in p.entries):
            data_only.append((iid, [p.id for p in index_packs]))
    assert data_only
    # WHEN one of those index files is deleted from the bucket, and prune runs and sweeps at once
    lost_index, lost_packs = data_only[0]
    store.delete(f"index/{lost_index}")
    time.sleep(1.05)
    report = last_json(
        run_steps("prune", "--repo", s3_repo, "--keep-last", "1", "--grace", "0", "--wait", "--json")
    )
    # THEN the packs that index named are still there, and prune says the index needs a repair
    present = {i.key.rsplit("/", 1)[-1] for i in store.list("data/")}
    assert set(lost_packs) <= present
    assert any("repair index" in w for w in report["warnings"])
    # AND after the repair the snapshot verifies and restores byte for byte
    run_steps("repair", "index", "--repo", s3_repo)
    run_steps("verify", "--repo", s3_repo, "--read-data", "100")
    assert _restore_equals(s3_repo, snap, src, tmp_path / "out")


@pytest.mark.slow
def test_a_prune_killed_at_random_moments_leaves_a_valid_repository(s3_repo, tmp_path):
    # GIVEN a repository that keeps getting new copies of one source
    run_steps("init", "--repo", s3_repo)
    src = tmp_path / "src"
    rnd = random.Random(20261126)
    hits = 0
    seed = 0
    for round_ in range(5):
        for _ in range(2):
            seed += 1
            write_files(src, seed, names=tuple(f"f{i}.bin" for i in range(6)), size=300_000)
            _copy(s3_repo, src)
            time.sleep(1.05)
        # WHEN a prune (forget, sweep of due candidates, repack, mark) is killed at a random moment of
        # its run (a dry run of the same work, timed just before, tells how long the run lasts)
        args = ["prune", "--repo", s3_repo, "--keep-last", "2", "--grace", "5s", "--repack-unused", "10"]
        t0 = time.monotonic()
        run_steps(*args, "--dry-run")
        duration = time.monotonic() - t0
        proc = subprocess.Popen(
            [sys.executable, "-m", "steps", *args],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rnd.uniform(0.5, 1.2) * duration)
        if proc.poll() is None:
            hits += 1
            proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        # THEN verify passes (every snapshot whole, every pack it needs present)
        run_steps("verify", "--repo", s3_repo, "--read-data", "100")
        if round_ % 2 == 0:
            time.sleep(7.2)  # candidates become due: the next kill may land in a sweep
    assert hits >= 3, "the kills should land while prune runs"
    # AND an unkilled prune finishes the work, and the newest snapshot restores
    run_steps("prune", "--repo", s3_repo, "--keep-last", "2", "--grace", "0", "--wait")
    run_steps("verify", "--repo", s3_repo, "--read-data", "100")
    assert len(last_json(run_steps("snapshots", "--repo", s3_repo, "--json"))) == 2
    assert _restore_equals(s3_repo, "latest", src, tmp_path / "out")


def test_two_prunes_of_one_repository_at_once_run_one_after_the_other(s3_repo, tmp_path):
    # GIVEN a repository with data to free, and a prune holding its lease while it waits out a grace
    # period (as a prune from another namespace or cluster would, where no Argo mutex reaches)
    run_steps("init", "--repo", s3_repo)
    src = tmp_path / "src"
    for seed in range(3):
        write_files(src, seed, size=200_000)
        _copy(s3_repo, src)
        time.sleep(1.05)
    first = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "steps",
            "prune",
            "--repo",
            s3_repo,
            "--keep-last",
            "1",
            "--grace",
            "6s",
            "--wait",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(4)
        # WHEN a second prune of the same repository starts
        second = run_steps("prune", "--repo", s3_repo, "--keep-last", "1", "--grace", "0", check=False)
        # THEN it stops at once with the retryable exit code, naming the prune that holds the lease
        assert second.returncode == 75, second.stderr
        assert "is being pruned by a prune on" in second.stderr
        assert first.poll() is None, "the first prune was still waiting"
    finally:
        _out, err = first.communicate(timeout=120)
    # AND the first one finished its work, left no lease behind, and the repository verifies
    assert first.returncode == 0, err
    assert not list(open_store(s3_repo).list("prune-lease/"))
    run_steps("verify", "--repo", s3_repo, "--read-data", "100")
    assert _restore_equals(s3_repo, "latest", src, tmp_path / "out")
