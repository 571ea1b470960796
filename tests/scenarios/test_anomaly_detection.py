"""Ransomware and mass deletion are flagged, a month of normal churn is not: the real copy's change
telemetry, compared with the app's history by the detector finalize uses (thresholds fixed in
steps/repository/anomaly.py). The churn generator and the attacks: tests/scenarios/anomaly_world.py.
Seeds here are few and fixed; bench/anomaly_rates.py measures the rates on other seeds."""

from __future__ import annotations

import os
import random
import shutil

import pytest

from steps.repository import anomaly
from tests.scenarios.anomaly_world import (
    Backups,
    delete_files,
    encrypt_files,
    make_app_data,
    normal_day,
)
from workflows.demo.sample import make_sample_data


@pytest.fixture(autouse=True)
def _low_kdf_cost(monkeypatch):
    monkeypatch.setenv("SNAPFLOW_KDF_TEST_N", "1024")


def test_a_month_of_normal_churn_raises_no_flag_and_the_telemetry_counts_what_changed(tmp_path):
    # GIVEN an app's data, backed up daily through a month of normal churn
    src = tmp_path / "app"
    make_app_data(src, seed=1, files=300)
    rng = random.Random(1)
    backups = Backups(src)
    backups.backup()
    for day in range(30):
        did = normal_day(src, rng)
        out = backups.backup()
        # THEN each backup counts exactly the files the churn changed, added and deleted
        changes = out["changes"]
        assert (changes["filesChanged"], changes["filesAdded"], changes["filesDeleted"]) == (
            did["modified"],
            did["added"],
            did["deleted"],
        ), f"day {day + 1}: {changes} vs {did}"
        assert changes["filesRenamed"] == 0
        assert changes["filesTotal"] == sum(1 for p in src.rglob("*") if p.is_file())
        # AND its new data is about what was rewritten, and compresses like text
        assert 0 < changes["newDataRatio"] < 0.06 and changes["newDataCompressibility"] > 0.5
    # AND no backup of the month is flagged, though the detector had its history from day 5 on
    anomalies = [r["anomaly"] for r in backups.results]
    assert [a for a in anomalies if a["flagged"]] == []
    assert anomalies[-1]["baseline"] == anomaly.HISTORY
    assert max(a["score"] for a in anomalies) < anomaly.THRESHOLD
    assert all(a["baseline"] >= anomaly.MIN_HISTORY for a in anomalies[anomaly.MIN_HISTORY :])


def _demo_with_history(tmp_path, seed: int, days: int = 7):
    src = tmp_path / "demo"
    make_sample_data(src, seed=seed)
    rng = random.Random(seed)
    backups = Backups(src)
    backups.backup()
    for _ in range(days):
        normal_day(src, rng)
        assert not backups.backup()["anomaly"]["flagged"]
    return src, rng, backups


@pytest.mark.parametrize("seed", [3, 4])
def test_encrypting_30_percent_of_the_demo_files_is_flagged(tmp_path, seed):
    # GIVEN the demo dataset backed up through a week of normal churn
    src, rng, backups = _demo_with_history(tmp_path, seed)
    # WHEN 30 % of its files are overwritten in place with random bytes
    encrypted = encrypt_files(src, rng, 0.3)
    out = backups.backup()
    # THEN the backup is flagged, for the files that changed
    assert out["anomaly"]["flagged"], out
    assert out["anomaly"]["score"] >= anomaly.THRESHOLD
    assert any(r.startswith("changedShare:") for r in out["anomaly"]["reasons"])
    assert out["changes"]["filesChanged"] == encrypted
    assert out["changes"]["newDataCompressibility"] < 0.05  # random bytes do not compress


@pytest.mark.parametrize("seed", [3, 4])
def test_deleting_half_of_the_demo_files_is_flagged(tmp_path, seed):
    src, rng, backups = _demo_with_history(tmp_path, seed)
    # WHEN half of the files are deleted
    deleted = delete_files(src, rng, 0.5)
    out = backups.backup()
    # THEN the backup is flagged for the deletions, which it counts
    assert out["anomaly"]["flagged"], out
    assert [r for r in out["anomaly"]["reasons"] if r.startswith("deletedShare:")]
    assert out["changes"]["filesDeleted"] == deleted


def test_a_flagged_backup_does_not_become_the_norm(tmp_path):
    # GIVEN a flagged mass deletion
    src, rng, backups = _demo_with_history(tmp_path, 5)
    before = len(backups.history)
    delete_files(src, rng, 0.5)
    assert backups.backup()["anomaly"]["flagged"]
    # THEN it is left out of the history the next backups are compared with
    assert len(backups.history) == before


def test_renamed_files_and_deleted_directories_are_counted_as_such(tmp_path):
    # GIVEN an app's data and a first backup
    src = tmp_path / "app"
    make_app_data(src, seed=9, files=60)
    backups = Backups(src)
    backups.backup()
    # WHEN 4 files are renamed (one into another directory) and a directory of 10 files is removed
    os.rename(src / "d0" / "rec-00000.txt", src / "d0" / "renamed-a.txt")
    os.rename(src / "d0" / "rec-00006.txt", src / "d0" / "renamed-b.txt")
    os.rename(src / "d1" / "rec-00001.txt", src / "d2" / "moved.txt")
    os.rename(src / "d3" / "rec-00003.txt", src / "d3" / "rec-00003.txt.old")
    gone = sum(1 for _ in (src / "d5").iterdir())
    shutil.rmtree(src / "d5")
    changes = backups.backup()["changes"]
    # THEN renames are neither added nor deleted, the directory's files are deleted, nothing changed
    assert changes["filesRenamed"] == 4
    assert changes["filesDeleted"] == gone == 10
    assert changes["filesAdded"] == 0 and changes["filesChanged"] == 0
    assert changes["newBytes"] == 0 and changes["newDataCompressibility"] is None


def test_the_rates_bench_runs_on_a_fixed_seed(tmp_path):
    # the bench's own path on one seed and a short month (its full run uses held-out seeds 1000+)
    from bench.anomaly_rates import ATTACKS, DEMO_ATTACKS, one_seed, rates

    row = one_seed(tmp_path, seed=8, days=8)
    summary = rates([row])
    assert summary["false_positive_backups"] == 0 and summary["normal_backups_judged"] == 4
    assert set(summary["detection"]) == {*ATTACKS, *(f"demo {n}" for n in DEMO_ATTACKS)}
    assert all(d["rate"] == 1.0 for d in summary["detection"].values()), summary
