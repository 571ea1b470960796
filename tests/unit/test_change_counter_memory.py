"""The change telemetry's rename matching: the same counts as a multiset intersection of contents, at a
few bytes per added or deleted file."""

import random
import tracemalloc
from collections import Counter

from steps.repository.change_telemetry import ChangeCounter, content_key, shared_count


def _content(rng: random.Random, pool: int) -> list[str]:
    return [f"{rng.randrange(pool):064x}"]


def test_renames_are_the_contents_both_added_and_deleted_counted_with_repeats():
    rng = random.Random(5)
    for _ in range(20):
        counter = ChangeCounter(load_tree=lambda _tree: [], has_parent=True)
        added = [_content(rng, 40) for _ in range(rng.randrange(0, 60))]
        deleted = [_content(rng, 40) for _ in range(rng.randrange(0, 60))]
        for c in added:
            counter.file_done({"type": "file", "content": c}, None)
        counter.walked({f"d{i}": {"type": "file", "content": c} for i, c in enumerate(deleted)}, {})
        expected = sum(
            (Counter(content_key(c) for c in added) & Counter(content_key(c) for c in deleted)).values()
        )
        got = counter.finish()
        assert got["files_renamed"] == expected
        assert got["files_added"] == len(added) - expected and got["files_deleted"] == len(deleted) - expected


def test_empty_files_and_a_missing_side_rename_nothing():
    counter = ChangeCounter(load_tree=lambda _tree: [], has_parent=True)
    counter.file_done({"type": "file", "content": []}, None)
    counter.walked({"a": {"type": "file", "content": []}}, {})
    assert counter.finish() == {"files_added": 1, "files_changed": 0, "files_deleted": 1, "files_renamed": 0}
    assert shared_count(counter._added_contents, counter._deleted_contents) == 0


def test_an_added_or_deleted_file_costs_a_few_bytes_while_the_copy_runs():
    # GIVEN 100 000 added and 100 000 deleted files, none of them alike
    counter = ChangeCounter(load_tree=lambda _tree: [], has_parent=True)
    nodes = [{"type": "file", "content": [f"{i:064x}"]} for i in range(200_000)]
    gone = {f"f{i}": nodes[100_000 + i] for i in range(100_000)}
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for node in nodes[:100_000]:
        counter.file_done(node, None)
    counter.walked(gone, {})
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    # THEN each costs about 8 bytes (a Counter entry per file cost about 88)
    assert held / 200_000 < 12, held / 200_000
    assert counter.finish()["files_renamed"] == 0
