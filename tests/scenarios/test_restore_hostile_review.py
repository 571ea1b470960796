"""Restoring crafted snapshots and records along paths the other hostile suites do not walk: the
single-file target, the backup_label writer, the progress display fed from the record's summary, and a
target holding only an empty lost+found. Each restore runs as root in the sandbox of
tests/fixtures/hostile.py; each test states the guarantee of docs/design.md's threat model it checks."""

from __future__ import annotations

import json
import sys

import pytest

from tests.fixtures.hostile import TARGET, assert_untouched

GOOD = b"good data\n"
PRECIOUS = "precious data that must survive\n"


def _label_record(backup_id: str, snap_id: str, pgdata: str, **target) -> dict:
    """A backup record whose one PostgreSQL target was copied in backup mode, its data directory at
    ``pgdata`` inside the volume held by ``snap_id``."""
    return {
        "backup_id": backup_id,
        "volumes": [{"name": "data", "snapshot": snap_id, "role": "data"}],
        "targets": [{"name": "pg", "pgdata": pgdata}],
        "consistency": {
            "timeline": {
                "targets": [
                    {
                        "name": "pg",
                        "recovery": "backup_label",
                        "backup_label": "START WAL LOCATION: 0/0\n",
                        **target,
                    }
                ]
            }
        },
    }


@pytest.fixture(scope="module")
def crafted(hostile_repo):
    out = {}
    with hostile_repo.crafter() as c:
        good = [c.file("good.txt", GOOD)]
        out["huge-summary"] = c.snapshot(good, "huge-summary", summary={"bytes_total": 10**400})
        out["lost-found-file"] = c.snapshot([c.file("lost+found", GOOD)], "lost-found-file")
        # a file snapshot whose one file says 4 bytes but whose blob holds 10 (damage --skip-damaged skips)
        out["file-size-lies"] = c.snapshot(
            [c.file("disk.img", b"0123456789", size=4)], "file-size-lies", source_type="file"
        )
        out["file-blob-missing"] = c.snapshot(
            [c.file("disk.img", b"", size=10, content=["ab" * 32])], "file-blob-missing", source_type="file"
        )
        pg = [c.file("PG_VERSION", b"16\n")]
        for case in ("label-list", "tablespace-map-list", "sub-newline"):
            entries = [*good, c.dir("pgdata", pg), c.dir("x\nerror: forged by the repository", pg)]
            out[case] = c.snapshot(entries, case, backup_id=f"backup-{case}")
    repo = hostile_repo.repo
    for case, target, pgdata in (
        ("label-list", {"backup_label": ["not", "text"]}, "pgdata"),
        ("tablespace-map-list", {"tablespace_map": {"16384": "/outside"}}, "pgdata"),
        ("sub-newline", {}, "x\nerror: forged by the repository"),
    ):
        backup = f"backup-{case}"
        repo.save_record("backups", _label_record(backup, out[case].id, pgdata, **target), key=backup)
    return out


# -- the progress display ----------------------------------------------------------------------
def test_a_crafted_summary_total_does_not_fail_a_restore_that_succeeded(hostile_repo, crafted):
    # GIVEN a snapshot whose record claims an absurd total size, WHEN it is restored
    report = hostile_repo.sandbox.run(["--snapshot", crafted["huge-summary"]])

    # THEN the restore succeeds as the data did (the summary only feeds the progress display)
    run = report.last
    assert not report.outside_changes(run)
    assert report.target_entries(run)["good.txt"]["size"] == len(GOOD), run.show()
    assert run.rc == 0 and "error:" not in run.stderr, run.show()


def test_a_crafted_summary_total_prints_no_traceback_from_the_progress_thread(hostile_repo, crafted):
    # GIVEN a snapshot whose record claims an absurd total size
    # WHEN it is restored with progress reported every millisecond
    run_spec = {
        "args": ["--snapshot", str(crafted["huge-summary"])],
        "env": {"SNAPFLOW_PROGRESS_INTERVAL": "0.001"},
    }
    report = hostile_repo.sandbox.drive([run_spec])

    # THEN no traceback reaches the output
    run = report.last
    assert not report.outside_changes(run)
    assert "Traceback" not in run.output, run.show()


# -- an empty lost+found ---------------------------------------------------------------------------
def test_an_empty_lost_and_found_is_not_replaced_without_an_overwrite_mode(hostile_repo, crafted):
    # GIVEN a target holding only an empty lost+found (a fresh ext4 volume)
    # WHEN a snapshot holding a file named lost+found is restored without --overwrite
    report = hostile_repo.sandbox.run(
        ["--snapshot", crafted["lost-found-file"]], setup=[["dir", "lost+found"]]
    )

    # THEN the lost+found directory is still there (or the restore is refused): nothing is overwritten
    # without a mode
    run = report.last
    assert not report.outside_changes(run)
    assert report.target_entries(run).get("lost+found", {}).get("type") == "dir", run.show()


# -- the single-file target ----------------------------------------------------------------------
def _file_target_run(hostile_repo, snap, *extra) -> dict:
    sb = hostile_repo.sandbox
    argv = [sys.executable, "-m", "steps", "restore", "--repo", sb.repo_url, "--snapshot", str(snap)]
    argv += ["--target", f"{sb.root}/{TARGET}/disk.img", *extra]
    return {"argv": argv, "timeout": 60}


@pytest.mark.parametrize("case", ["file-size-lies", "file-blob-missing"])
def test_skip_damaged_never_writes_a_damaged_file_onto_an_existing_file(hostile_repo, crafted, case):
    # GIVEN a file snapshot whose one file is damaged, and an existing file as the target
    # WHEN it is restored onto that file with --overwrite always --skip-damaged
    report = hostile_repo.sandbox.drive(
        [_file_target_run(hostile_repo, crafted[case], "--overwrite", "always", "--skip-damaged")],
        setup=[["file", "disk.img", PRECIOUS]],
    )

    # THEN the damaged file is skipped and reported (exit 3): the existing file keeps its content
    run = report.last
    assert not report.outside_changes(run)
    assert "Traceback" not in run.output, run.show()
    assert report.target_entries(run)["disk.img"]["size"] == len(PRECIOUS), run.show()
    assert run.rc == 3, run.show()


# -- the backup_label writer ------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["label-list", "tablespace-map-list"])
def test_a_crafted_label_is_refused_before_the_first_write(hostile_repo, crafted, case):
    # GIVEN a committed-looking backup record whose label fields are not text
    # WHEN its snapshot is restored with --write-backup-label
    report = hostile_repo.sandbox.run(
        ["--snapshot", crafted[case], "--allow-uncommitted", "--write-backup-label"]
    )

    # THEN it fails on one line, naming the field, with nothing written
    run = report.last
    assert not report.outside_changes(run)
    assert "unexpected" not in run.stderr, run.show()
    assert run.rc not in (0, None) and len(run.error_lines) == 1, run.show()
    assert_untouched(report, run)


def test_a_crafted_data_directory_cannot_forge_a_line_of_output(hostile_repo, crafted):
    # GIVEN a record whose data directory holds a newline and a forged error line (a real directory of
    # the snapshot), WHEN its snapshot is restored with --write-backup-label
    report = hostile_repo.sandbox.run(
        ["--snapshot", crafted["sub-newline"], "--allow-uncommitted", "--write-backup-label"]
    )

    # THEN no line of output starts with what the repository wrote
    run = report.last
    assert not report.outside_changes(run)
    assert run.rc == 0, run.show()
    forged = [ln for ln in run.output.splitlines() if ln.startswith("error: forged")]
    assert not forged, run.show()


# -- --overwrite never keeps existing entries as they are -----------------------------------------
@pytest.fixture(scope="module")
def crafted_more(hostile_repo):
    out = {}
    with hostile_repo.crafter() as c:
        out["dir-meta"] = c.snapshot(
            [c.dir("kept", [c.file("f", GOOD)], mode=0o777, uid=4321, gid=4321, mtime_ns=10**9)], "dir-meta"
        )
        out["esc-backup-id"] = c.snapshot(
            [c.file("good.txt", GOOD)],
            "esc-backup-id",
            backup_id="b\x1b[1A\x1b[2Kall backups verified\x1b[8m",
        )
        out["esc-pgdata"] = c.snapshot(
            [c.file("good.txt", GOOD)], "esc-pgdata", backup_id="backup-esc-pgdata"
        )
    hostile_repo.repo.save_record(
        "backups",
        _label_record("backup-esc-pgdata", out["esc-pgdata"].id, "gone\x1b[1A\x1b[2Kall good\x1b[8m"),
        key="backup-esc-pgdata",
    )
    return out


def test_overwrite_never_keeps_the_owner_mode_and_times_of_an_existing_directory(hostile_repo, crafted_more):
    # GIVEN a target holding a directory, WHEN a snapshot holding a directory of that name (another
    # owner, mode 0777) is restored with --overwrite never
    report = hostile_repo.sandbox.run(
        ["--snapshot", crafted_more["dir-meta"], "--overwrite", "never"], setup=[["dir", "kept"]]
    )

    # THEN the existing directory keeps its owner, mode and times
    run = report.last
    assert run.rc == 0 and not report.outside_changes(run), run.show()
    before, after = report.target_before["kept"], report.target_entries(run)["kept"]
    assert {k: after[k] for k in ("mode", "uid", "gid", "mtime_ns")} == {
        k: before[k] for k in ("mode", "uid", "gid", "mtime_ns")
    }, (before, after)


# -- terminal escapes from the repository ---------------------------------------------------------
@pytest.mark.parametrize(
    ("case", "extra"),
    [("esc-backup-id", []), ("esc-pgdata", ["--allow-uncommitted", "--write-backup-label"])],
)
def test_repository_text_in_an_error_carries_no_terminal_escape(hostile_repo, crafted_more, case, extra):
    # GIVEN a snapshot or backup record whose text holds terminal escape sequences
    # WHEN a restore fails on it
    report = hostile_repo.sandbox.run(["--snapshot", crafted_more[case], *extra])

    # THEN the one error line holds no escape character (the terminal shows what it says)
    run = report.last
    assert run.rc not in (0, None) and len(run.error_lines) == 1, run.show()
    assert "\x1b" not in run.stderr, repr(run.stderr)


# -- memory -----------------------------------------------------------------------------------------
DEEP = 300  # directories of 255-byte names: the deepest path is about 77 KB long
EMPTY_FILES = 20_000

_MEASURE = """
import json, resource, shutil, subprocess, sys
target = sys.argv[1]
limit = 4 << 30  # a safety net for the machine; the measure is the peak resident size
proc = subprocess.run(
    [sys.executable, "-m", "steps", "restore", *sys.argv[2:], "--target", target],
    preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)),
    capture_output=True,
)
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
subprocess.run(["rm", "-rf", target], check=False)  # too deep for the sandbox's own description
print(json.dumps({"rc": proc.returncode, "rss_mib": rss // 1024, "stderr": proc.stderr.decode()[-800:]}))
"""


@pytest.fixture(scope="module")
def crafted_deep(hostile_repo):
    with hostile_repo.crafter() as c:
        bottom = c.tree([c.file(f"f{i:05d}", b"") for i in range(EMPTY_FILES)])
        sub = bottom
        for _ in range(DEEP):
            sub = c.tree([c.dir("d" * 255, sub)])
        return c.snapshot(sub, "deep-empty-files")


def test_memory_does_not_grow_with_files_times_path_length(hostile_repo, crafted_deep):
    # GIVEN a snapshot with many empty files in one very deep directory
    # WHEN it is restored (measured from a wrapper, the deep target removed afterwards)
    sb = hostile_repo.sandbox
    target = f"{sb.root}/{TARGET}/deep"
    argv = [sys.executable, "-c", _MEASURE, target, "--repo", sb.repo_url, "--snapshot", str(crafted_deep)]
    report = sb.drive([{"argv": argv, "timeout": 300}])

    # THEN it succeeds with memory of the order of the trees, not files times path length
    run = report.last
    assert run.rc == 0, run.show()
    result = json.loads(run.stdout)
    assert result["rc"] == 0, result
    assert result["rss_mib"] < 400, result


CONTENT_REFS = 2_000_000


@pytest.fixture(scope="module")
def crafted_long_content(hostile_repo):
    with hostile_repo.crafter() as c:
        one = c.blob(b"x")
        big = c.file("big", b"", size=CONTENT_REFS, content=[one] * CONTENT_REFS)
        return c.snapshot([big, c.file("good.txt", GOOD)], "long-content")


@pytest.mark.xfail(
    strict=True,
    reason="nothing bounds a tree blob's decoded size nor a file's content list (RestoreLimits counts"
    " entries only; repo.load_tree / tree.decode_tree decode whatever the index's raw length says): a file"
    " node listing one 1-byte blob 2 000 000 times (a tree stored in about 12 KB) is decoded (134 MB of"
    " JSON, 2 million strings) and surveyed even though --exclude leaves it out: peak resident size measured"
    " 547 MiB (8 s), exit 0, and it grows linearly with the list",
)
def test_memory_is_bounded_for_a_small_stored_tree(hostile_repo, crafted_long_content):
    # GIVEN a snapshot whose one file lists the same blob two million times (the stored tree is small)
    # WHEN it is restored without that file
    sb = hostile_repo.sandbox
    target = f"{sb.root}/{TARGET}/long"
    argv = [
        sys.executable,
        "-c",
        _MEASURE,
        target,
        "--repo",
        sb.repo_url,
        "--snapshot",
        str(crafted_long_content),
    ]
    report = sb.drive([{"argv": [*argv, "--exclude", "big"], "timeout": 300}])

    # THEN it is refused by a limit, or restored, with memory of the order of what is stored
    run = report.last
    assert run.rc == 0, run.show()
    result = json.loads(run.stdout)
    assert result["rss_mib"] < 250, result


# -- a tree blob named as a file's content -----------------------------------------------------------
@pytest.fixture(scope="module")
def crafted_tree_as_content(hostile_repo):
    from steps.repository.tree import encode_tree

    with hostile_repo.crafter() as c:
        data = encode_tree([c.file("inner", GOOD)])
        tree = c.tree(data)
        entries = [c.file("a-good.txt", GOOD), c.file("b-tree-as-data", b"", size=len(data), content=[tree])]
        return c.snapshot(entries, "tree-as-content")


@pytest.mark.parametrize("extra", [[], ["--skip-damaged"]], ids=["plain", "skip-damaged"])
def test_a_tree_blob_as_file_content_is_damage_found_before_the_first_write(
    hostile_repo, crafted_tree_as_content, extra
):
    # GIVEN a snapshot whose file names a tree blob (of the right length) as its content
    # WHEN it is restored
    report = hostile_repo.sandbox.run(["--snapshot", crafted_tree_as_content, *extra])

    # THEN it fails on one line with nothing written, or (--skip-damaged) restores the rest and exits 3
    run = report.last
    assert not report.outside_changes(run)
    assert "Traceback" not in run.output, run.show()
    if extra:
        assert run.rc == 3, run.show()
        assert "a-good.txt" in report.target_entries(run), run.show()
        assert "skipped damaged /b-tree-as-data" in run.stderr, run.show()
    else:
        assert_untouched(report, run)
        assert run.rc == 1 and len(run.error_lines) == 1, run.show()
