"""The sandbox of the hostile-restore tests sees what a regression would do, and lets it do nothing to the
machine: a command that writes outside the target is reported, one that writes to an absolute path of the
machine fails with EROFS, and the tmpfs is gone afterwards. Needs root (CI runs as root); without it the
sandbox makes itself root in a user namespace."""

from __future__ import annotations

import os
import uuid

from tests.fixtures.hostile import TARGET


def test_a_write_outside_the_target_is_reported_and_the_machine_stays_read_only(hostile_repo, tmp_path):
    sandbox = hostile_repo.sandbox
    marker = tmp_path / f"written-{uuid.uuid4().hex}"
    script = (
        f"echo pwned > {sandbox.victim}; touch {sandbox.root}/parent/escape; chmod 777 {sandbox.outside};"
        f" echo inside > {sandbox.target}/inside;"
        f" if echo x > {marker}; then echo MACHINE-WRITABLE; else echo machine-read-only; fi"
    )

    # GIVEN a command that writes through the sandbox, inside and outside the target, and to the machine
    report = sandbox.drive([{"argv": ["sh", "-c", script]}], setup=[["file", "kept", "before"]])

    # THEN every change outside the target is listed, the target's entries are seen, and the write to
    # the machine failed (read-only file system) without a trace afterwards
    run = report.last
    assert run.rc == 0, run.show()
    assert "machine-read-only" in run.stdout and "Read-only file system" in run.stderr, run.show()
    found = report.outside_changes()
    assert any(c.startswith("changed 'outside/victim'") and "sha256" in c for c in found), found
    assert any(c.startswith("added 'parent/escape'") for c in found), found
    assert any(c.startswith("changed 'outside'") and "mode" in c for c in found), found
    assert len(found) == 4, found  # victim, escape, outside's mode, and parent's mtime (a new entry)
    assert set(report.target_before) == {".", "kept"}
    assert set(run.target) == {".", "kept", "inside"}
    assert not marker.exists()
    assert os.listdir(sandbox.root) == []  # the tmpfs lived only in the namespace
    assert TARGET == "parent/target"


def test_a_forked_restore_behaves_as_a_fresh_interpreter_and_shows_a_traceback(hostile_repo):
    # GIVEN a snapshot with a damaged tree and one that is valid
    with hostile_repo.crafter() as c:
        damaged = c.snapshot([c.file("../escape", b"x")], "sandbox-damaged")
        valid = c.snapshot([c.file("data", b"valid\n"), c.symlink("link", "data")], "sandbox-valid")
    sandbox = hostile_repo.sandbox

    # WHEN each is restored by a fork of the loaded interpreter and by a new one (each into an empty
    # target), and the damaged one with SNAPFLOW_DEBUG=1 (the CLI lets the error through: a traceback)
    def both(snap, extra=()):
        return [{"args": ["--snapshot", str(snap)], "fresh": fresh, **dict(extra)} for fresh in (False, True)]

    bad = sandbox.drive(
        [*both(damaged), {"args": ["--snapshot", str(damaged)], "env": {"SNAPFLOW_DEBUG": "1"}}]
    )
    forked_bad, fresh_bad, traced = bad.runs
    forked_ok = sandbox.drive(both(valid)[:1]).last
    fresh_ok = sandbox.drive(both(valid)[1:]).last

    # THEN both ways give the same exit code, error line and restored entries; the traceback shows
    assert (forked_bad.rc, forked_bad.error_lines) == (fresh_bad.rc, fresh_bad.error_lines), forked_bad.show()
    assert forked_bad.rc != 0 and len(forked_bad.error_lines) == 1
    assert traced.rc == 1 and "Traceback (most recent call last)" in traced.stderr, traced.show()
    assert forked_ok.rc == fresh_ok.rc == 0, forked_ok.show() + fresh_ok.show()
    assert forked_ok.target.keys() == {".", "data", "link"}

    def no_inodes(target):
        return {rel: {k: v for k, v in e.items() if k != "ino"} for rel, e in target.items()}

    assert no_inodes(forked_ok.target) == no_inodes(fresh_ok.target)
    assert not bad.outside_changes()
