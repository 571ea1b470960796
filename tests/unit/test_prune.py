"""Prune on an in-memory store: forget order, two-phase deletion, grace period, writers' side, repack."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest

from steps.errors import IntegrityError, PermanentError, TemporaryError, UsageError
from steps.repository.archiver import CopyOptions, copy_source
from steps.repository.crypto import storage_id
from steps.repository.pruner import PruneOptions, prune
from steps.repository.retention import Rules
from tests.fixtures.prune import (
    assert_valid,
    backup,
    commit_backup,
    make_repo,
    open_repo,
    restored_equal,
    store_state,
    write_files,
)

GRACE = timedelta(hours=1)


def opts(**kw) -> PruneOptions:
    kw.setdefault("rules", Rules(last=1))
    kw.setdefault("grace", GRACE)
    return PruneOptions(**kw)


def packs(repo) -> set[str]:
    return {i.key.rsplit("/", 1)[-1] for i in repo.store.list("data/")}


def two_backups(clock, tmp_path) -> tuple:
    """A repository with backups b1 (of the returned data) and, a minute later, b2 of other data: a prune
    keeping the last one forgets b1 and marks the packs only b1's data uses."""
    repo = make_repo(clock)
    data = write_files(tmp_path / "data", 1)
    backup(repo, data, "b1")
    clock.advance(minutes=1)
    backup(repo, write_files(tmp_path / "other", 2), "b2")
    return repo, data


def test_forget_removes_the_backup_record_before_its_snapshots_and_runs(clock, tmp_path):
    # GIVEN two committed backups of one app, the older with a run record
    repo = make_repo(clock)
    src = write_files(tmp_path / "src", 1)
    backup(repo, src, "b1")
    repo.save_record("runs", {"name": "verify", "ok": True}, key="b1")
    clock.advance(hours=1)
    backup(repo, src, "b2")
    deletes: list[str] = []
    repo.store.hook = lambda op, key: deletes.append(key) if op == "delete" else None
    # WHEN prune keeps the last one
    report = prune(repo, opts())
    # THEN b1's restore point went first, then its snapshot, then its run record
    assert report.forgotten_backups == ["b1"]
    kinds = [k.split("/")[0] for k in deletes]
    assert kinds[:3] == ["backups", "snapshots", "runs"]
    assert [s.backup_id for s in repo.list_snapshots()] == ["b2"]
    assert restored_equal(repo, "latest", src)


def test_dry_run_changes_nothing_and_says_why_each_backup_is_kept(clock, tmp_path):
    # GIVEN backups on four days, an uncommitted old snapshot, and candidates due for the sweep
    repo = make_repo(clock, versioned=True)
    for day in range(4):
        backup(repo, write_files(tmp_path / f"d{day}", day), f"b{day}")
        clock.advance(days=1)
    backup(repo, write_files(tmp_path / "x", 99), "never-committed", commit=False)
    prune(repo, opts(rules=Rules(last=3)))  # forgets b0, marks its data
    clock.advance(hours=2)
    before = store_state(repo.store)
    # WHEN a dry run of stricter rules runs
    report = prune(repo, opts(rules=Rules(last=1, daily=2), dry_run=True))
    # THEN the store is byte for byte the same
    assert store_state(repo.store) == before
    # AND the report lists what would go and why each kept backup is kept
    decisions = {d.point.id: d for d in report.decisions}
    assert decisions["b3"].keep and decisions["b3"].reasons[0] == "last 1/1"
    assert decisions["b2"].keep and decisions["b2"].reasons == ["daily 2/2 (2026-03-03)"]
    assert not decisions["b1"].keep and report.forgotten_backups == ["b1"]
    assert report.sweep["packs_deleted"] > 0
    assert report.mark["snapshots_uncommitted"] == 1


def test_unused_packs_are_deleted_only_after_the_grace_period(clock, tmp_path):
    # GIVEN two backups of different data; the older is forgotten
    repo = make_repo(clock)
    backup(repo, write_files(tmp_path / "old", 1), "b1")
    clock.advance(minutes=5)
    new = write_files(tmp_path / "new", 2)
    backup(repo, new, "b2")
    before = packs(repo)
    first = prune(repo, opts())
    marked = first.mark["packs_unused"]
    # THEN marking deletes nothing
    assert marked >= 2 and packs(repo) == before
    # WHEN prune runs again within the grace period THEN still nothing goes
    clock.advance(minutes=30)
    again = prune(repo, opts())
    assert packs(repo) == before and not again.sweep
    # WHEN it runs after the grace period THEN the candidates go, and b2 is intact
    clock.advance(minutes=31)
    last = prune(repo, opts())
    assert last.sweep["packs_deleted"] == marked
    assert len(packs(repo)) == len(before) - marked
    assert restored_equal(repo, "latest", new)
    assert_valid(repo)
    # AND the index was compacted: one live index file supersedes the old ones
    assert len(list(repo.store.list("index/"))) == 1
    assert not repo.prune_candidates()


def test_copies_started_after_marking_do_not_deduplicate_against_candidates(clock, tmp_path):
    # GIVEN data only a forgotten backup used, marked as deletion candidates
    repo, data = two_backups(clock, tmp_path)
    prune(repo, opts())
    candidates = {p for r in repo.prune_candidates() for p in r.data["packs"]}
    # WHEN the same data is backed up again, in a new process
    writer = open_repo(repo.store)
    clock.advance(minutes=1)
    backup(writer, data, "b3", app="other-app")
    # THEN its blobs were written again, outside the candidate packs
    writer.load_index(exclude_packs=candidates)
    (snap,) = [s for s in writer.list_snapshots() if s.backup_id == "b3"]
    blobs = [snap.data["tree"]] + [
        b for n in writer.load_tree(snap.data["tree"]) for b in n.get("content", [])
    ]
    assert len(blobs) > 3
    assert all(writer.index.get(bytes.fromhex(b)) is not None for b in blobs)
    # AND after the sweep b3 restores
    clock.advance(hours=2)
    prune(repo, opts(rules=Rules(last=5)))
    assert not candidates & packs(repo)
    assert restored_equal(writer, next(s for s in writer.list_snapshots() if s.backup_id == "b3"), data)


def test_a_copy_running_past_the_grace_period_of_a_prune_it_did_not_see_refuses_to_commit(clock, tmp_path):
    # GIVEN a forgotten backup whose data a long copy (started before prune marked) deduplicates against
    repo, data = two_backups(clock, tmp_path)
    writer = open_repo(repo.store)

    def meanwhile(_repo, _parent):
        prune(repo, opts())  # forgets b1, marks its packs
        clock.advance(hours=2)  # the copy is now older than the grace period

    # WHEN the copy reaches its commit point THEN it refuses, and writes no snapshot record
    with pytest.raises(TemporaryError, match="refusing to commit"):
        copy_source(writer, CopyOptions(source=data, backup_id="b3"), before_commit=meanwhile)
    assert all(s.backup_id != "b3" for s in repo.list_snapshots())
    # AND a retry (a new copy) succeeds, and survives the sweep
    sid = backup(open_repo(repo.store), data, "b3", app="x")
    prune(repo, opts(rules=Rules(last=5)))
    assert restored_equal(repo, sid, data)
    assert_valid(repo)


def test_a_snapshot_record_landing_after_the_grace_period_is_withdrawn(clock, tmp_path):
    # GIVEN a copy that started before prune marked candidates
    repo, data = two_backups(clock, tmp_path)
    writer = open_repo(repo.store)

    def meanwhile(_repo, _parent):
        prune(repo, opts())

    def stall_before_snapshot_put(op, key):
        if op == "put" and key.startswith("snapshots/"):
            clock.advance(hours=2)  # the process stalls between its check and its write

    # WHEN its snapshot record lands after the grace period
    writer.store.hook = stall_before_snapshot_put
    with pytest.raises(TemporaryError):
        copy_source(writer, CopyOptions(source=data, backup_id="b3"), before_commit=meanwhile)
    writer.store.hook = None
    # THEN the writer withdrew it
    assert all(s.backup_id != "b3" for s in repo.list_snapshots())


def test_uncommitted_snapshots_are_garbage_after_the_grace_period(clock, tmp_path):
    # GIVEN a backup whose copy finished but which was never committed, with its run record
    repo = make_repo(clock)
    backup(repo, write_files(tmp_path / "kept", 1), "good")
    sid = backup(repo, write_files(tmp_path / "failed", 2), "failed", commit=False)
    repo.save_record("runs", {"name": "verify", "ok": False}, key="failed")
    # WHEN prune runs within the grace period THEN the snapshot stays (the backup may still commit)
    prune(repo, opts(rules=Rules(last=5)))
    assert sid in {s.id for s in repo.list_snapshots()}
    # WHEN prune runs twice more, each after the grace period
    clock.advance(hours=2)
    marked = prune(repo, opts(rules=Rules(last=5)))
    assert marked.mark["snapshots_uncommitted"] == 1 and marked.mark["runs_uncommitted"] == 1
    clock.advance(hours=2)
    swept = prune(repo, opts(rules=Rules(last=5)))
    # THEN the snapshot, its run records and then its data are gone
    assert swept.sweep["snapshots_deleted"] == 1 and swept.sweep["runs_deleted"] == 1
    assert sid not in {s.id for s in repo.list_snapshots()}
    assert not list(repo.store.list(f"runs/{repo.key_group('failed')}/"))
    clock.advance(hours=2)
    prune(repo, opts(rules=Rules(last=5)))
    clock.advance(hours=2)
    prune(repo, opts(rules=Rules(last=5)))
    assert_valid(repo)
    assert len(repo.list_snapshots()) == 1


def test_committing_a_backup_whose_snapshots_are_marked_as_garbage_is_refused(clock, tmp_path):
    # GIVEN a backup that stayed uncommitted past the grace period and was marked
    repo = make_repo(clock)
    sid = backup(repo, write_files(tmp_path / "slow", 1), "slow", commit=False)
    clock.advance(hours=2)
    prune(repo, opts(rules=Rules(last=5)))
    # WHEN finalize tries to commit it THEN the commit is refused
    with pytest.raises(PermanentError, match="marked as garbage"):
        commit_backup(repo, "slow", [sid])
    assert not repo.list_records("backups", key="slow")


def test_a_commit_racing_the_sweep_keeps_its_snapshots(clock, tmp_path):
    # GIVEN an old uncommitted backup marked as garbage, due for the sweep
    repo = make_repo(clock)
    src = write_files(tmp_path / "slow", 1)
    sid = backup(repo, src, "slow", commit=False)
    clock.advance(hours=2)
    prune(repo, opts(rules=Rules(last=5)))
    clock.advance(hours=2)

    # WHEN the backup record appears right after the sweep deleted the snapshot record
    def commit_after_delete(op, key):
        if op == "delete" and key == f"snapshots/{sid}":
            repo.store.hook = None
            # written directly, as if finalize's check had passed a moment earlier
            from steps.repository.crypto import seal_object

            group = repo.key_group("slow")
            body = (
                b'{"backup_id":"slow","volumes":[{"snapshot":"%s"}],"time":"2026-03-01T12:00:00Z"}'
                % sid.encode()
            )
            repo.put_named(
                f"backups/{group}", seal_object(repo.keys, "backups", body, context=group.encode())
            )

    repo.store.hook = commit_after_delete
    report = prune(repo, opts(rules=Rules(last=5)))
    # THEN prune put the snapshot record back, and the backup restores
    assert report.sweep["snapshots_restored"] == 1
    assert restored_equal(repo, sid, src)
    assert_valid(repo)


def test_sweep_keeps_a_candidate_pack_a_late_snapshot_uses(clock, tmp_path):
    # GIVEN a copy that started before prune marked the packs it deduplicates against
    repo, data = two_backups(clock, tmp_path)
    writer = open_repo(repo.store)
    result = copy_source(
        writer,
        CopyOptions(source=data, backup_id="b3"),
        before_commit=lambda *_: prune(repo, opts()),  # forgets b1, marks its packs
    )
    commit_backup(writer, "b3", [result.snapshot_id], app="x")
    # WHEN the sweep runs after the grace period
    clock.advance(hours=2)
    report = prune(repo, opts(rules=Rules(last=5)))
    # THEN the packs b3 uses stay, and b3 restores
    assert report.sweep["packs_rescued"] > 0
    assert restored_equal(repo, result.snapshot_id, data)
    assert_valid(repo)


def test_partly_used_packs_are_repacked(clock, tmp_path, monkeypatch):
    # GIVEN one pack of 200 small files, of which a newer backup keeps 20
    monkeypatch.setenv("SNAPFLOW_FILE_WORKERS", "1")  # one producer: one data pack
    repo = make_repo(clock)
    src = tmp_path / "small"
    src.mkdir()
    for i in range(200):
        (src / f"f{i:03d}").write_bytes(os.urandom(2000))
    backup(repo, src, "b1")
    for i in range(20, 200):
        (src / f"f{i:03d}").unlink()
    clock.advance(minutes=1)
    backup(repo, src, "b2")
    size_before = sum(i.size for i in repo.store.list("data/"))
    # WHEN b1 is forgotten and prune runs twice across the grace period
    first = prune(repo, opts())
    clock.advance(hours=2)
    prune(repo, opts())
    # THEN the mostly unused pack was rewritten with its 20 live files, and the space freed
    assert first.mark["packs_repacked"] == 1 and first.mark["blobs_repacked"] == 20
    assert sum(i.size for i in repo.store.list("data/")) < size_before / 3
    assert restored_equal(repo, "latest", src)
    assert_valid(repo)


def test_unindexed_packs_are_removed_once_older_than_the_grace_period(clock, tmp_path):
    # GIVEN a pack no index names (a writer killed before its index upload)
    repo = make_repo(clock)
    backup(repo, write_files(tmp_path / "d", 1), "b1")
    junk = os.urandom(5000)
    orphan = storage_id(junk)
    repo.store.put(f"data/{orphan[:2]}/{orphan}", junk)
    # WHEN prune runs while it is young THEN it stays (its writer may still index it)
    assert prune(repo, opts()).mark["packs_unindexed"] == 0
    # WHEN it is older than the grace period THEN it is marked, then swept
    clock.advance(hours=2)
    assert prune(repo, opts()).mark["packs_unindexed"] == 1
    clock.advance(hours=2)
    prune(repo, opts())
    assert orphan not in packs(repo)
    assert_valid(repo)


def test_prune_refuses_to_delete_while_liveness_is_unknown(clock, tmp_path):
    # GIVEN a snapshot whose tree pack was lost, and an unused pack due for the sweep
    repo = make_repo(clock)
    backup(repo, write_files(tmp_path / "a", 1), "b1")
    clock.advance(minutes=1)
    sid = backup(repo, write_files(tmp_path / "b", 2), "b2")
    prune(repo, opts())
    clock.advance(hours=2)
    snap = repo.find_snapshot(sid)
    tree_pack = repo.index.get(bytes.fromhex(snap.data["tree"])).pack_id
    repo.store.delete(f"data/{tree_pack[:2]}/{tree_pack}")
    before = packs(repo)
    # WHEN prune runs THEN it stops with an integrity error and deletes no pack
    with pytest.raises(IntegrityError, match="run verify"):
        prune(open_repo(repo.store), opts(rules=Rules(last=5)))
    assert packs(repo) == before


def test_prune_needs_a_rule():
    with pytest.raises(UsageError, match="at least one retention rule"):
        prune(None, PruneOptions(rules=Rules()))  # type: ignore[arg-type]


def test_excluded_packs_still_resolve_through_a_duplicate(clock, tmp_path):
    # GIVEN a blob stored twice (two concurrent writers) and the first copy's pack excluded
    repo = make_repo(clock)
    write_files(tmp_path / "d", 1)
    w1 = open_repo(repo.store)
    w2 = open_repo(repo.store)
    w1.begin_write()
    w2.begin_write()
    from steps.repository.blob_sink import BlobSink

    content = (tmp_path / "d" / "a.bin").read_bytes()
    for w in (w1, w2):
        sink = BlobSink(w, None)
        bid = sink.save_blob(b"d", content)
        sink.finish()
    repo.load_index()
    first = repo.index.get(bid).pack_id
    # WHEN the first pack is excluded THEN the blob is found in the other one
    repo.index.exclude_packs([first])
    assert repo.index.get(bid).pack_id != first
    assert repo.index.duplicates == 1


def test_a_reader_finds_a_blob_whose_duplicate_pack_prune_deleted(clock, tmp_path):
    # GIVEN a blob stored twice, and a reader whose index points at the first copy
    repo = make_repo(clock)
    content = os.urandom(50_000)
    from steps.repository.blob_sink import BlobSink
    from steps.repository.garbage import IndexState

    writers = [open_repo(repo.store) for _ in range(2)]
    for w in writers:
        w.begin_write()  # both start before either stores it (concurrent writers)
    for w in writers:
        sink = BlobSink(w, None)
        bid = sink.save_blob(b"d", content)
        sink.finish()
    reader = open_repo(repo.store)
    first = reader.index.get(bid).pack_id
    # WHEN prune's sweep drops that copy (new index without it, then the pack, then the old index files)
    state = IndexState.load(repo)
    repo.save_index_file([p for pid, p in state.packs.items() if pid != first], supersedes=state.all_ids)
    repo.store.delete(f"data/{first[:2]}/{first}")
    for iid in state.all_ids:
        repo.store.delete(f"index/{iid}")
    # THEN the reader still reads the blob, from the other copy
    assert reader.read_blob(bid) == content
    assert reader.index.get(bid).pack_id != first


def _lose_index_of_data_packs(repo) -> list[str]:
    """Replace the index by one naming only the tree packs, as if the index files naming the data packs
    were lost; returns the data packs, now unindexed."""
    from steps.repository.garbage import IndexState
    from steps.repository.pack import BLOB_TREE

    state = IndexState.load(repo)
    trees = [p for p in state.packs.values() if all(e.type == BLOB_TREE for e in p.entries)]
    data = sorted(pid for pid, p in state.packs.items() if p not in trees)
    repo.save_index_file(trees, supersedes=state.all_ids)
    for iid in state.all_ids:
        repo.store.delete(f"index/{iid}")
    return data


def test_prune_keeps_unindexed_packs_that_hold_blobs_a_committed_backup_needs(clock, tmp_path):
    # GIVEN a committed backup whose data packs no index file names any more (an index file was lost)
    repo = make_repo(clock)
    src = write_files(tmp_path / "d", 1)
    backup(repo, src, "b1")
    unindexed = _lose_index_of_data_packs(repo)
    assert unindexed
    # WHEN prune runs long after the grace period, twice (mark, then sweep)
    clock.advance(hours=2)
    first = prune(open_repo(repo.store), opts())
    clock.advance(hours=2)
    prune(open_repo(repo.store), opts())
    # THEN it read their headers and kept them, and said that the index needs a repair
    assert first.mark["packs_unindexed"] == 0
    assert any("repair index" in w for w in first.warnings)
    assert set(unindexed) <= packs(repo)
    # AND once the index is rebuilt, the backup restores
    from steps.repository.repair_index import rebuild_index

    fresh = open_repo(repo.store)
    rebuild_index(fresh)
    assert restored_equal(fresh, "latest", src)
    assert_valid(repo)


def test_prune_refuses_when_a_needed_blob_is_neither_indexed_nor_in_a_readable_pack(clock, tmp_path):
    # GIVEN a committed backup whose data packs are unindexed, one of them unreadable
    repo = make_repo(clock)
    backup(repo, write_files(tmp_path / "d", 1), "b1")
    unindexed = _lose_index_of_data_packs(repo)
    broken = f"data/{unindexed[0][:2]}/{unindexed[0]}"

    def unreadable(op, key):
        if op == "get" and key == broken:
            raise PermissionError(13, "Permission denied", key)

    repo.store.hook = unreadable
    clock.advance(hours=2)
    before = packs(repo)
    # WHEN prune runs THEN it stops, naming how many blobs are missing and what to run, and deletes no pack
    with pytest.raises(
        IntegrityError, match=r"\d+ blob\(s\) that snapshots need are not in the index.*repair index"
    ):
        prune(open_repo(repo.store), opts())
    assert packs(repo) == before
    assert repo.prune_candidates() == []


def test_the_sweep_keeps_a_marked_unindexed_pack_that_turns_out_to_be_needed(clock, tmp_path):
    # GIVEN a committed backup, and a candidates record naming its data packs as unindexed (marked
    # while an index file was missing, by a prune that did not check)
    repo = make_repo(clock)
    src = write_files(tmp_path / "d", 1)
    backup(repo, src, "b1")
    unindexed = _lose_index_of_data_packs(repo)
    from steps.repository.writer import CANDIDATES, PRUNE_KIND

    repo.save_record(
        PRUNE_KIND,
        {"type": CANDIDATES, "version": 1, "grace_s": GRACE.total_seconds(), "packs": unindexed,
         "snapshots": [], "runs": []},
    )  # fmt: skip
    clock.advance(hours=2)
    # WHEN the sweep runs
    report = prune(open_repo(repo.store), opts())
    # THEN the packs stay
    assert report.sweep["packs_deleted"] == 0 and report.sweep["packs_rescued"] == len(unindexed)
    assert set(unindexed) <= packs(repo)


def test_a_restore_reads_blobs_whose_duplicate_pack_prune_deleted_meanwhile(clock, tmp_path):
    # GIVEN a backup whose every blob a second, concurrent writer stored again in packs of its own
    from steps.repository.blob_sink import BlobSink
    from steps.repository.garbage import IndexState
    from steps.repository.restorer import restore_snapshot

    repo = make_repo(clock)
    src = tmp_path / "d"
    write_files(src, 3)
    late = open_repo(repo.store)
    late.begin_write()  # began before the backup stored anything: it cannot deduplicate against it
    sid = backup(repo, src, "b1")
    sink = BlobSink(late, None)
    for f in sorted(src.iterdir()):
        sink.save_blob(b"d", f.read_bytes())
    sink.finish()
    # AND a restore that planned its reads from an index pointing at packs of one copy
    reader = open_repo(repo.store)
    snap = reader.find_snapshot(sid)
    blob_ids = [bytes.fromhex(h) for rel, node in _file_nodes(reader, snap) for h in node["content"]]
    gone = {reader.index.get(b).pack_id for b in blob_ids}
    assert reader.index.duplicates >= len(blob_ids), "the blobs must be stored twice"
    # WHEN prune's sweep drops those packs (new index without them, then the packs, then old indexes)
    state = IndexState.load(repo)
    repo.save_index_file([p for pid, p in state.packs.items() if pid not in gone], supersedes=state.all_ids)
    for pid in gone:
        repo.store.delete(f"data/{pid[:2]}/{pid}")
    for iid in state.all_ids:
        repo.store.delete(f"index/{iid}")
    # THEN the restore still writes every file byte for byte, from the other copies
    stats = restore_snapshot(reader, snap, str(tmp_path / "out"))
    assert stats.relocated_packs == len(gone)
    for f in src.iterdir():
        assert (tmp_path / "out" / f.name).read_bytes() == f.read_bytes()


def _file_nodes(repo, snap):
    from steps.repository.snapshot_read import iter_nodes

    return [(rel, n) for rel, n in iter_nodes(repo, snap.data["tree"]) if n["type"] == "file"]
