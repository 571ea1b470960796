"""Source runs as the exporter reads them: a source step's run record names its app and when its snapshot
was taken, so a committed source backup's point in time is its snapshot's (not its commit's), a run that
never committed counts as uncommitted and its failed verify as the app's; the change counts of a source
made of named entries (a bucket's object versions); ``snapflow exporter --policy`` with a directory."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from steps.repository.change_telemetry import entry_changes
from workflows.fleet.model import app_states
from workflows.fleet.records import summarize

T = 1_800_000_000.0
APP = {"cluster": "prod-eu", "namespace": "shop", "name": "shop-uploads", "policy": "shop-uploads"}
KEY = ("prod-eu", "shop", "shop-uploads")


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def backup_record(bid: str, committed: float, source_time: float | None = None) -> dict:
    source = {"kind": "bucket", "snapshot": "ab" * 32, "summary": {"bytes_total": 10, "files": 1}}
    if source_time is not None:
        source["time"] = iso(source_time)
    return {"backup_id": bid, "time": iso(committed), "app": APP, "source": source, "verify": {"ok": True}}


def bucket_run(bid: str, taken: float, app: dict | None = APP) -> dict:
    run = {"name": "bucket", "backup_id": bid, "snapshot": "cd" * 32, "time": iso(taken)}
    return {**run, "app": app} if app else run


def states(*records: tuple[str, str, dict]):
    return app_states(s for kind, group, data in records if (s := summarize(kind, group, data)) is not None)


def test_a_source_backups_point_in_time_is_its_snapshots_time():
    # a record without source.time: its step's run record says when the snapshot was taken
    st = states(("backups", "g1", backup_record("b1", T + 300)), ("runs", "g1", bucket_run("b1", T)))[KEY]
    assert (st.last_committed, st.last_commit_written, st.source) == (T, T + 300, "bucket")
    # a record with source.time: that time, whatever the run record says
    st = states(
        ("backups", "g1", backup_record("b1", T + 300, source_time=T + 5)),
        ("runs", "g1", bucket_run("b1", T)),
    )[KEY]
    assert st.last_committed == T + 5
    # an older record, and no run record: the commit's time, as before
    assert states(("backups", "g1", backup_record("b1", T + 300)))[KEY].last_committed == T + 300


def test_a_source_run_that_never_committed_is_its_apps_uncommitted_run_and_failed_verify():
    verify = {"name": "verify", "backup_id": "b2", "time": iso(T + 4000), "ok": False}
    st = states(
        ("backups", "g1", backup_record("b1", T + 300)),
        ("runs", "g1", bucket_run("b1", T)),
        ("runs", "g2", bucket_run("b2", T + 3600)),
        ("runs", "g2", verify),
    )[KEY]
    assert (st.backups, st.uncommitted_runs, st.last_uncommitted_run) == (1, 1, T + 3600)
    assert (st.verify_ok, st.verify_time) == (False, T + 4000)
    # a source with no committed backup at all is still its app, of its kind
    only = states(("runs", "g2", bucket_run("b2", T + 3600)), ("runs", "g2", verify))[KEY]
    assert (only.backups, only.uncommitted_runs, only.source, only.verify_ok) == (0, 1, "bucket", False)
    # a run record of an older step names no app: nothing links it
    assert states(("runs", "g3", bucket_run("b3", T, app=None))) == {}


def test_entry_changes_count_added_changed_deleted_and_renamed_entries():
    assert entry_changes(None, [(("a", None), ["1"]), (("b", None), ["2"])]) == {
        "files_added": 2, "files_changed": 0, "files_deleted": 0, "files_renamed": 0,
    }  # fmt: skip
    parent = {("a", None): ["1"], ("b", None): ["2"], ("c", None): ["3"], ("gone", None): ["4"]}
    now = [
        (("a", None), ["1"]),
        (("b", None), ["2", "9"]),
        (("moved/c", None), ["3"]),
        (("new", None), ["5"]),
    ]
    assert entry_changes(parent, now) == {
        "files_added": 1, "files_changed": 1, "files_deleted": 1, "files_renamed": 1,
    }  # fmt: skip
    # (versions are entries of their own; an empty object or a delete marker renames nothing)
    versions = {("k", "v1"): ["1"], ("e", None): []}
    assert entry_changes(versions, [(("k", "v1"), ["1"]), (("k", "v2"), []), (("f", None), [])]) == {
        "files_added": 2, "files_changed": 0, "files_deleted": 1, "files_renamed": 0,
    }  # fmt: skip


def test_exporter_policy_directory_reads_its_yaml_files_and_refuses_an_empty_one(tmp_path, capsys):
    from tests.fixtures.policies import ROOT
    from workflows.cli import main
    from workflows.fleet.command import _policy_files
    from workflows.fleet.model import Targets, targets_from_policies

    found = _policy_files([str(ROOT / "examples" / "sources")])
    assert sorted(p.rsplit("/", 1)[1] for p in found) == ["bucket.yaml", "etcd.yaml", "registry.yaml"]
    targets = targets_from_policies(found, Targets())
    assert targets[KEY].rpo_s == 3600 + 600  # (the bucket example's hourly schedule)
    # a mounted ConfigMap: each key a link through ..data to a hidden, timestamped directory
    mounted = tmp_path / "mounted"
    (mounted / "..2026_12_06_00_00_00.1").mkdir(parents=True)
    (mounted / "..2026_12_06_00_00_00.1" / "bucket.yaml").write_text(
        (ROOT / "examples" / "sources" / "bucket.yaml").read_text()
    )
    (mounted / "..data").symlink_to("..2026_12_06_00_00_00.1")
    (mounted / "bucket.yaml").symlink_to("..data/bucket.yaml")
    assert _policy_files([str(mounted)]) == [str(mounted / "bucket.yaml")]
    assert targets_from_policies(_policy_files([str(mounted)]), Targets())[KEY].rpo_s == 3600 + 600
    empty = tmp_path / "policies"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a policy")
    assert main(["exporter", "--repo", f"file://{tmp_path}/repo", "--policy", str(empty), "--once"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"error: --policy {empty}: expected policy files (*.yaml, *.yml) in the directory, found none"
    ]


def test_exporter_help_names_every_label(capsys):
    from workflows.cli import main

    with pytest.raises(SystemExit):
        main(["exporter", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(labels cluster, namespace, app, source, repository)" in text
