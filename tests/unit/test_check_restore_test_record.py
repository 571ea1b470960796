"""``check --restore-test`` stores its outcome as the run record ``restore-test`` of the backup it tested,
with the fields ``snapflow exporter`` reads (``backup_id``, ``time``, ``ok``, ``app``), so the
restore-test metrics (and the ``SnapflowRestoreTestStale`` alert built on them) follow real tests.
Repository in a local directory; the check runs in-process through the steps' command line."""

from __future__ import annotations

import json
import time

import pytest

from steps.cli import main
from steps.drivers.objectstore import LocalStore
from steps.repository.records import parse_time
from steps.repository.repo import Repository
from tests.fixtures.prune import backup, write_files
from tests.fixtures.repository import TEST_KDF
from workflows.fleet.exporter import Exporter
from workflows.fleet.model import Targets

PASSWORD = "restore test password"
APP_ARGS = ("--app", "db", "--namespace", "ns", "--cluster", "c1")


@pytest.fixture
def repo_url(tmp_path, monkeypatch):
    monkeypatch.setenv("SNAPFLOW_PASSWORD", PASSWORD)
    monkeypatch.setenv("SNAPFLOW_KDF_TEST_N", "1024")
    path = tmp_path / "repo"
    repo = Repository.init(LocalStore(str(path)), PASSWORD, kdf_params=TEST_KDF)
    backup(repo, write_files(tmp_path / "db", 1, names=("a.bin",), size=20_000), "b-db-1", app="db")
    backup(repo, write_files(tmp_path / "other", 2, names=("z.bin",), size=20_000), "b-other-1", app="other")
    return f"file://{path}"


def _check(capsys, url: str, *extra: str) -> tuple[int, dict]:
    rc = main(["check", "--repo", url, "--restore-test", *APP_ARGS, "--json", *extra])
    return rc, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _restore_tests(url: str, backup_id: str) -> list:
    repo = Repository.open(LocalStore(url.removeprefix("file://")), PASSWORD)
    return [r for r in repo.list_records("runs", key=backup_id) if r.data.get("name") == "restore-test"]


def _metrics(url: str) -> dict[str, float]:
    exporter = Exporter([url], default_targets=Targets(restore_test_max_age_s=3600))
    exporter.refresh()
    return {
        s.name: s.value
        for family in exporter.collect()
        for s in family.samples
        if s.labels.get("app") == "db" and s.name.startswith("snapflow_restore_test_")
    }


def test_a_passing_restore_test_is_stored_under_its_backup_and_served_by_the_exporter(repo_url, capsys):
    # GIVEN committed backups of two apps; WHEN the restore test of app db passes
    before = time.time()
    rc, report = _check(capsys, repo_url, "--restore-check", 'test -s "$SNAPFLOW_RESTORE_DIR/data/a.bin"')

    # THEN one restore-test run record is stored under db's backup, none under the other app's
    assert rc == 0 and report["restore_test"]["ok"]
    (record,) = _restore_tests(repo_url, "b-db-1")
    assert _restore_tests(repo_url, "b-other-1") == []
    assert report["restore_test"]["run_record"] == record.id
    data = record.data
    assert (data["name"], data["backup_id"], data["ok"]) == ("restore-test", "b-db-1", True)
    assert data["app"] == {"cluster": "c1", "namespace": "ns", "name": "db", "policy": "db"}
    assert before - 1 <= parse_time(data["time"]).timestamp() <= time.time() + 1
    assert [(v["name"], v["files"]) for v in data["volumes"]] == [("data", 1)]
    assert data["problems"] == [] and data["check_exit"] == 0

    # AND the exporter serves it: passed, at the record's time, within the allowed age
    m = _metrics(repo_url)
    assert m["snapflow_restore_test_last_ok"] == 1
    assert m["snapflow_restore_test_last_success_timestamp_seconds"] == pytest.approx(
        parse_time(data["time"]).timestamp()
    )
    assert (
        time.time() - m["snapflow_restore_test_last_success_timestamp_seconds"]
        < m["snapflow_restore_test_max_age_seconds"]
    )


def test_a_failing_restore_test_is_stored_as_failed_and_the_last_success_stays(repo_url, capsys):
    # GIVEN a passing restore test, then one whose check command fails
    assert _check(capsys, repo_url)[0] == 0
    passed = parse_time(_restore_tests(repo_url, "b-db-1")[0].data["time"]).timestamp()
    time.sleep(0.01)
    rc, report = _check(capsys, repo_url, "--restore-check", "echo broken >&2; exit 7")

    # THEN the check fails and the newest record says so, with the problem and the command's exit
    assert rc == 3 and not report["restore_test"]["ok"]
    newest = max(_restore_tests(repo_url, "b-db-1"), key=lambda r: r.data["time"]).data
    assert newest["ok"] is False and newest["check_exit"] == 7
    assert newest["problems"] == ["--restore-check failed (exit 7): broken"]

    # AND the exporter reports the failure while keeping the time of the last success
    m = _metrics(repo_url)
    assert m["snapflow_restore_test_last_ok"] == 0
    assert m["snapflow_restore_test_last_success_timestamp_seconds"] == pytest.approx(passed)


def test_a_restore_test_that_found_no_committed_backup_stores_nothing(repo_url, capsys):
    # WHEN the restore test of an app without a committed backup runs
    rc = main(["check", "--repo", repo_url, "--restore-test", "--app", "nobody", "--json"])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    # THEN it fails, and no run record was written anywhere
    assert rc == 3 and report["restore_test"]["run_record"] is None
    store = LocalStore(repo_url.removeprefix("file://"))
    assert [i.key for i in store.list("runs/")] == []
