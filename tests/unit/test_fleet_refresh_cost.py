"""The exporter's refresh cost on a repository with many records, over a real S3 server: the cold
refresh opens every backup and run record once, a warm one only lists (and opens what is new). The
counts of records opened decide; the times are printed.

Prints the measured times; ``SNAPFLOW_EXPORTER_BENCH_RUNS`` sets how many backup runs are written
(default 300, three records each)."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from steps.api import Repository, open_repository, open_store
from tests.unit.test_fleet_exporter import NOW, write_run
from workflows.fleet.exporter import Exporter

pytestmark = pytest.mark.slow


def test_a_warm_refresh_lists_and_opens_only_new_records(s3_repo):
    runs = int(os.environ.get("SNAPFLOW_EXPORTER_BENCH_RUNS", "300"))
    Repository.init(
        open_store(s3_repo), "correct horse battery staple", kdf_params={"n": 1024, "r": 8, "p": 1}
    )
    repo = open_repository(s3_repo)
    # GIVEN a repository with many committed backups (a consistent point, a verify and a backup record each)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: write_run(repo, f"b-{i}", NOW - 3600 * (runs - i), commit=True), range(runs)))
    exporter = Exporter([s3_repo])

    # WHEN it refreshes cold, then warm, then after one more backup
    t0 = time.monotonic()
    exporter.refresh()
    cold, cold_stats = time.monotonic() - t0, exporter.states[0].cache.last
    t0 = time.monotonic()
    exporter.refresh()
    warm, warm_stats = time.monotonic() - t0, exporter.states[0].cache.last
    write_run(repo, "b-new", NOW - 60, commit=True)
    t0 = time.monotonic()
    exporter.refresh()
    one_new, new_stats = time.monotonic() - t0, exporter.states[0].cache.last

    # THEN the cold refresh opens every record once, a warm one opens none, one more run opens its
    # three records alone; every record is held and the newest backup is served (the times are printed,
    # not asserted: they measure, the counts decide)
    assert (cold_stats.listed, cold_stats.read) == (3 * runs, 3 * runs)
    assert (warm_stats.listed, warm_stats.read) == (3 * runs, 0)
    assert (new_stats.listed, new_stats.read) == (3 * runs + 3, 3)
    state = exporter.states[0]
    assert state.up and len(state.cache.entries) == 3 * runs + 3
    served = {(s.name, s.labels.get("app")): s.value for f in exporter.collect() for s in f.samples}
    assert served[("snapflow_backup_committed", "orders-db")] == runs + 1
    print(
        f"\nexporter refresh, {3 * runs} records: cold {cold:.2f} s, warm {warm:.3f} s, one new run {one_new:.3f} s"
        f" (of the warm one, listing {warm_stats.list_seconds:.3f} s)"
    )
