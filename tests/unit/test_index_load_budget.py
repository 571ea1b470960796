"""Index files are fetched by a byte budget: whatever their sizes, the loader holds at most
INDEX_LOAD_BUDGET of them at once (a larger file alone), and still fetches several small ones at once."""

from __future__ import annotations

import os
import threading
import time

import pytest

from steps.drivers.objectstore import MemoryStore
from steps.repository import repo as repo_mod
from steps.repository.index import IndexPack
from steps.repository.pack import BLOB_DATA, PackEntry
from steps.repository.repo import Repository
from tests.fixtures.repository import TEST_KDF

BLOBS_PER_FILE = 400
FILES = 12


class MeasuringStore(MemoryStore):
    """A memory store whose index reads take a while and are measured: the most stored bytes, and the
    most index files, being read at the same moment."""

    def __post_init__(self):
        super().__post_init__()
        self.mu = threading.Lock()
        self.reading = self.reading_files = 0
        self.peak = self.peak_files = 0
        self.measure = False

    def get(self, key, version_id=None):
        if not (self.measure and key.startswith("index/")):
            return super().get(key, version_id)
        size = len(self.objects[key])
        with self.mu:
            self.reading += size
            self.reading_files += 1
            self.peak = max(self.peak, self.reading)
            self.peak_files = max(self.peak_files, self.reading_files)
        try:
            time.sleep(0.03)
            return super().get(key, version_id)
        finally:
            with self.mu:
                self.reading -= size
                self.reading_files -= 1


@pytest.fixture
def twelve_index_files(monkeypatch):
    monkeypatch.setenv("SNAPFLOW_KDF_TEST_N", "1024")
    store = MeasuringStore()
    repo = Repository.init(store, "test password", kdf_params=TEST_KDF)
    for _ in range(FILES):
        entries = [
            PackEntry(BLOB_DATA, os.urandom(32), 37 + i * 10, 10, 20 + i) for i in range(BLOBS_PER_FILE)
        ]
        repo.save_index_file([IndexPack(os.urandom(32).hex(), os.urandom(32), 5000, entries)])
    sizes = [i.size for i in store.list("index/")]
    assert len(sizes) == FILES
    return store, sizes


@pytest.mark.parametrize("files_in_budget", [2.5, 0.5], ids=["two-files", "less-than-one"])
def test_index_files_in_flight_stay_within_the_budget(twelve_index_files, monkeypatch, files_in_budget):
    # GIVEN twelve index files of about the same size, and a budget of two and a half of them (or of
    # half of one)
    store, sizes = twelve_index_files
    budget = int(files_in_budget * min(sizes))
    monkeypatch.setattr(repo_mod, "INDEX_LOAD_BUDGET", budget)
    # WHEN a fresh opening of the repository loads its index
    store.measure = True
    index = Repository.open(store, "test password").load_index()
    # THEN every blob is there
    assert len(index) == FILES * BLOBS_PER_FILE
    # and the files read at once never passed the budget: two at a time within it, one at a time when
    # each file is larger than the budget
    if files_in_budget >= 1:
        assert store.peak <= budget, (store.peak, budget)
        assert store.peak_files == 2
    else:
        assert store.peak_files == 1
        assert store.peak == max(sizes) > budget
