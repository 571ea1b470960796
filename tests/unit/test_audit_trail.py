"""The audit trail in the repository: appended lock-free as a hash-linked DAG, verified by name."""

from __future__ import annotations

import itertools
import threading

from steps.commands import audit_trail
from steps.repository import audit
from steps.repository.records import commit_backup
from tests.unit.test_repository_records import BACKUP, plan, store_backup_run

LOCAL = {"kind": "local", "user": "ops", "uid": 1000, "host": "vm"}


def _append(repo, n, action="restore"):
    return [audit.append(repo, action, who=LOCAL, what={"n": i}) for i in range(n)]


def test_appends_form_a_chain_each_naming_the_head_it_saw(mem_repo):
    # WHEN three actions are recorded one after the other
    a, b, c = _append(mem_repo, 3)

    # THEN each names the one before (by the hash of its stored bytes) and counts one further
    assert [a.seq, b.seq, c.seq] == [1, 2, 3]
    assert a.parents == [] and b.parents == [a.ref()] and c.parents == [b.ref()]
    trail = audit.read_trail(mem_repo)
    assert [e.id for e in trail.ordered()] == [a.id, b.id, c.id]
    assert [e.id for e in trail.heads] == [c.id]
    assert trail.entries[c.id].who == LOCAL and trail.entries[c.id].what == {"n": 2}
    # ... and the objects are encrypted: nothing readable in the stored bytes
    raw = mem_repo.store.get(f"audit/{c.id}")
    assert b"restore" not in raw and b"ops" not in raw
    report = audit.verify_trail(mem_repo)
    assert report.ok and report.records == 3 and report.heads == [c.ref()]


def test_concurrent_appends_fork_and_the_next_one_merges_them(mem_repo, monkeypatch):
    # GIVEN one record, then two writers that both saw it as the head
    (first,) = _append(mem_repo, 1)
    barrier = threading.Barrier(2)
    real = audit.read_trail

    def both_read_then_write(repo):
        trail = real(repo)
        barrier.wait(timeout=10)  # neither writes before both read the head
        return trail

    done: list[audit.Entry] = []
    monkeypatch.setattr(audit, "read_trail", both_read_then_write)
    threads = [
        threading.Thread(
            target=lambda i=i: done.append(audit.append(mem_repo, "check", who=LOCAL, what={"w": i}))
        )
        for i in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    monkeypatch.setattr(audit, "read_trail", real)

    # THEN neither record is lost: two heads of the same seq, both naming the first record
    assert len(done) == 2 and {e.seq for e in done} == {2}
    assert all(e.parents == [first.ref()] for e in done)
    assert {e.id for e in audit.read_trail(mem_repo).heads} == {e.id for e in done}
    assert audit.verify_trail(mem_repo).ok  # a fork is normal

    # WHEN the next action is recorded
    merged = audit.append(mem_repo, "prune", who=LOCAL)

    # THEN it merges both heads and the trail has one head again
    assert merged.seq == 3 and sorted(p["id"] for p in merged.parents) == sorted(e.id for e in done)
    report = audit.verify_trail(mem_repo)
    assert report.ok and report.forks == 1 and report.heads == [merged.ref()]


def test_a_deleted_record_is_named_with_its_seq_and_time(mem_repo):
    # GIVEN a trail of four records, the second of which is deleted
    _a, b, c, _d = _append(mem_repo, 4)
    mem_repo.store.delete(f"audit/{b.id}")

    # WHEN the trail is verified
    report = audit.verify_trail(mem_repo)

    # THEN it names the missing object, its seq and time, and the record pointing at it
    assert not report.ok
    assert [(f.problem, f.key, f.seq, f.time) for f in report.findings] == [("missing", b.key, 2, b.time)]
    assert c.key in report.findings[0].message
    line = audit.describe(report.findings)
    assert line.startswith(f"audit trail broken: missing record audit/{b.id} (seq 2, {b.time})")


def test_an_altered_record_is_named_and_told_from_a_deleted_one(mem_repo):
    # GIVEN a trail whose middle record's bytes were changed in place
    _a, b, _c = _append(mem_repo, 3)
    raw = bytearray(mem_repo.store.get(f"audit/{b.id}"))
    raw[-1] ^= 1
    mem_repo.store.put(f"audit/{b.id}", bytes(raw))

    # THEN verify names it as altered, with the seq and time the next record gives
    report = audit.verify_trail(mem_repo)
    assert [(f.problem, f.key, f.seq) for f in report.findings] == [("altered", b.key, 2)]
    assert "do not match its name" in report.findings[0].message


def test_deleted_newest_records_are_found_through_the_backup_that_saw_them(mem_repo):
    # GIVEN two recorded actions, then a backup committed (its record names the head it saw)
    store_backup_run(mem_repo)
    _a, b = _append(mem_repo, 2)
    rid, problems, _ = commit_backup(mem_repo, plan(), BACKUP, lambda _m: None)
    assert rid and not problems
    (backup,) = mem_repo.list_records("backups")
    assert backup.data["audit_heads"] == [b.ref()]
    commit = audit.append(mem_repo, "backup.commit", who=LOCAL, what={"backup_id": BACKUP, "record": rid})
    assert audit.verify_trail(mem_repo).ok

    # WHEN the newest records (the head the backup saw and the commit's) are deleted
    mem_repo.store.delete(f"audit/{b.id}")
    mem_repo.store.delete(f"audit/{commit.id}")

    # THEN the chain alone looks whole, but the backup's reference names the gap, and the commit without
    # its record
    report = audit.verify_trail(mem_repo)
    problems = {(f.problem, f.key) for f in report.findings}
    assert ("missing", b.key) in problems
    assert any(p == "unrecorded" and k.startswith("backups/") for p, k in problems)
    assert "seq 2" in report.cannot_prove


def test_what_cannot_be_proven_is_stated(mem_repo):
    assert "empty" in audit.verify_trail(mem_repo).cannot_prove
    _append(mem_repo, 2)
    report = audit.verify_trail(mem_repo)
    assert report.ok and "could have been deleted without a trace" in report.cannot_prove


def test_select_filters_by_time_and_app(mem_repo):
    audit.append(mem_repo, "restore", who=LOCAL, app={"namespace": "shop", "name": "db"})
    audit.append(mem_repo, "restore", who=LOCAL, app={"namespace": "web", "name": "cache"})
    trail = audit.read_trail(mem_repo)
    assert [e.app["name"] for e in audit.select(trail, app="db")] == ["db"]
    assert [e.app["name"] for e in audit.select(trail, app="web/cache")] == ["cache"]
    last = trail.ordered()[-1]
    assert [e.id for e in audit.select(trail, since=audit.parse_time(last.time))] == [last.id]


def test_identity_from_argo_labels_is_claimed_and_cron_runs_name_their_cron_workflow():
    env = {
        "ARGO_WORKFLOW_NAME": "restore-db-x7k2q",
        "SNAPFLOW_AUDIT_CREATOR": "system-serviceaccount-argo-ui",
        "SNAPFLOW_AUDIT_CREATOR_EMAIL": "alice.at.example.com",
        "SNAPFLOW_AUDIT_CREATOR_USERNAME": "alice",
        "SNAPFLOW_AUDIT_CRON_WORKFLOW": "{{workflow.labels.workflows.argoproj.io/cron-workflow}}",
    }
    who = audit_trail.who(env)
    assert who == {
        "kind": "argo",
        "claimed": True,
        "creator": "system-serviceaccount-argo-ui",
        "email": "alice.at.example.com",
        "username": "alice",
        "workflow": "restore-db-x7k2q",
    }
    cron = audit_trail.who({"ARGO_WORKFLOW_NAME": "backup-db-1", "SNAPFLOW_AUDIT_CRON_WORKFLOW": "backup-db"})
    assert cron == {"kind": "cron", "cron_workflow": "backup-db", "workflow": "backup-db-1"}
    local = audit_trail.who({})
    assert local["kind"] == "local" and local["user"] and local["host"]


def test_a_restore_read_as_of_a_past_time_is_recorded_in_the_repository_as_it_is_now(mem_repo):
    from steps.repository.object_lock import AsOfStore
    from steps.repository.repo import Repository

    # GIVEN the repository opened on a read-only view of the past
    (first,) = _append(mem_repo, 1)
    past = Repository(
        AsOfStore(mem_repo.store, audit.parse_time(first.time)),
        mem_repo.keys,
        mem_repo.config,
        mem_repo.key_id,
    )

    # WHEN a restore through it is recorded
    rid = audit_trail.record(past, "restore", what={"snapshot": "x"})

    # THEN the record is in the repository, after the first
    assert rid is not None
    assert [e.id for e in audit.read_trail(mem_repo).ordered()] == [first.id, rid]


def test_an_append_reads_only_the_newest_records_and_still_continues_the_chain(mem_repo, monkeypatch):
    # GIVEN a trail longer than what an append reads
    monkeypatch.setattr(audit, "RECENT", 8)
    entries = [audit.append(mem_repo, "check", who=LOCAL, what={"n": i}) for i in range(20)]

    # THEN every record names the one before, and the whole trail verifies
    assert [e.seq for e in entries] == list(range(1, 21))
    assert all(b.parents == [a.ref()] for a, b in itertools.pairwise(entries))
    reads: list[str] = []
    real = mem_repo.read_record
    monkeypatch.setattr(
        mem_repo, "read_record", lambda kind, key, *a: reads.append(key) or real(kind, key, *a)
    )
    last = audit.append(mem_repo, "check", who=LOCAL)
    assert last.parents == [entries[-1].ref()] and len(reads) == 8
    assert audit.verify_trail(mem_repo).ok


def test_bad_input_is_one_line_naming_the_option(tmp_path, capsys):
    from workflows.cli import main

    repo = f"file://{tmp_path}/repo"
    cases = [
        (("audit", "--repo", repo, "--since", "last tuesday"), "error: --since: expected an ISO time"),
        (("audit", "verify", "--repo", repo, "--app", "db"), "error: verify: walks the whole trail"),
        (
            ("report", "--repo", repo, "--repo", repo, "--evidence", "-o", str(tmp_path / "e.html")),
            "error: --evidence: expected exactly one --repo, got 2",
        ),
        (
            (
                "report",
                "--repo",
                repo,
                "--evidence",
                "--since",
                "2999-01-01T00:00:00Z",
                "-o",
                str(tmp_path / "e.html"),
            ),
            "error: --since: expected an ISO time before now",
        ),
    ]
    for args, expected in cases:
        code = main(list(args))
        err = capsys.readouterr().err
        assert code == 2, (args, err)
        assert err.strip().splitlines() == [err.strip()] and err.startswith(expected), err
    assert not (tmp_path / "e.html").exists()


def test_many_concurrent_writers_lose_nothing_and_the_next_append_merges_every_head(mem_repo):
    # GIVEN six writers appending four records each at the same time
    def writer(w: int) -> None:
        for i in range(4):
            audit.append(mem_repo, "restore", who=LOCAL, what={"writer": w, "i": i})

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    # WHEN one more record is appended
    last = audit.append(mem_repo, "check", who=LOCAL)

    # THEN every record is there, the trail verifies, and it has one head again
    trail = audit.read_trail(mem_repo)
    assert len(trail.entries) == 25
    assert sorted((e.what["writer"], e.what["i"]) for e in trail.entries.values() if "writer" in e.what) == [
        (w, i) for w in range(6) for i in range(4)
    ]
    report = audit.verify_trail(mem_repo)
    assert report.ok and report.heads == [last.ref()]
    assert last.seq == 1 + max(e.seq for e in trail.entries.values() if e.id != last.id)


def _forged(repo, seq, when, parents, action="restore"):
    """An audit record as a key holder could write it (its own time and parents)."""
    data = {"version": audit.VERSION, "seq": seq, "time": when, "parents": parents, "action": action,
            "result": "ok", "who": LOCAL, "app": None, "what": {}}  # fmt: skip
    rid = repo.save_record(audit.KIND, data)
    return audit.Entry(rid, seq, when, parents, action, "ok", LOCAL, None, {})


def _backup(repo, backup_id, when, heads):
    repo.save_record("backups", {"backup_id": backup_id, "time": when, "audit_heads": heads}, key=backup_id)


def test_records_hidden_by_a_fork_before_a_backup_are_named_unseen(mem_repo):
    # GIVEN a chain a -> b -> c, where c's successors were deleted and the trail forked off b:
    # f1 -> f2 (a copy of the old records re-uploaded makes an append see only them)
    a = _forged(mem_repo, 1, "2026-01-01T00:00:00Z", [])
    b = _forged(mem_repo, 2, "2026-01-01T01:00:00Z", [a.ref()])
    c = _forged(mem_repo, 3, "2026-01-01T02:00:00Z", [b.ref()])
    f1 = _forged(mem_repo, 3, "2026-01-02T00:00:00Z", [b.ref()])
    f2 = _forged(mem_repo, 4, "2026-01-02T01:00:00Z", [f1.ref()])
    # WHEN a backup committed later names only the fork's head
    _backup(mem_repo, "backup-x", "2026-01-02T02:00:00Z", [f2.ref()])
    report = audit.verify_trail(mem_repo)
    # THEN c, stored a day before that commit but not behind what it saw, is named
    unseen = [f for f in report.findings if f.problem == "unseen"]
    assert [(f.key, f.seq) for f in unseen] == [(c.key, 3)]
    assert not report.ok
    # ... while records appended during the commit (within the skew) are not
    _forged(mem_repo, 5, "2026-01-02T01:58:00Z", [f2.ref()])
    assert [f.key for f in audit.verify_trail(mem_repo).findings if f.problem == "unseen"] == [c.key]


def test_crafted_records_are_findings_not_crashes(mem_repo):
    (a,) = _append(mem_repo, 1)
    # a backup record whose audit_heads are not what commits write
    _backup(mem_repo, "backup-y", "2099-01-01T00:00:00Z", [{"id": a.id, "seq": "999"}, "x", {"id": "../z"}])
    # an authentic record nested beyond any JSON a writer produces
    from steps.repository.crypto import seal_object

    deep = b'{"x":' * 100_000 + b"1" + b"}" * 100_000
    mem_repo.put_named(audit.KIND, seal_object(mem_repo.keys, audit.KIND, deep, context=b""))
    report = audit.verify_trail(mem_repo)
    problems = {f.problem for f in report.findings}
    assert {"inconsistent", "altered"} <= problems
    assert any("audit_heads holds 3 entr" in f.message for f in report.findings)
    # ... and appending still works
    assert audit.append(mem_repo, "check", who=LOCAL).seq == 2
