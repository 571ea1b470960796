"""An etcd snapshot taken by the real etcd-snapshot step with a policy's identity (a real etcd with
client certificates): its snapshot carries the app's identity and change telemetry (new bytes before and
after compression, the new blob bytes the report's dedup divides by), and its run record names the app
and when the snapshot was taken."""

from __future__ import annotations

import json
import os

import pytest

from steps.api import parse_time
from tests.scenarios.test_etcd_backup_restore import steps, tls_args

PASSWORD = "etcd-source-records-pw"
APP = {"cluster": "prod-eu", "namespace": "snapflow-etcd", "name": "cluster-etcd", "policy": "cluster-etcd"}


@pytest.fixture
def repo(tmp_path):
    env = {**os.environ, "SNAPFLOW_PASSWORD": PASSWORD, "SNAPFLOW_KDF_TEST_N": "1024"}
    url = f"file://{tmp_path / 'repo'}"
    steps("init", "--repo", url, env=env)
    return url, env


def test_an_etcd_snapshot_records_its_app_its_time_and_what_it_added(etcd_server, repo):
    from steps.repository.opener import open_repository

    etcd_server.put_many({f"k/{i}": f"value {i} " * 30 for i in range(300)})
    url, env = repo
    identity = ["--cluster", APP["cluster"], "--namespace", APP["namespace"], "--app", APP["name"]]
    out = steps("etcd-snapshot", "--repo", url, "--etcd", etcd_server.url, *tls_args(etcd_server.pki),
                "--backup-id", "backup-cluster-etcd-1", *identity, "--policy", APP["policy"], "--json",
                env=env)  # fmt: skip
    taken = json.loads(out.stdout)

    opened = open_repository(url, password=PASSWORD)
    snap = opened.find_snapshot(taken["snapshot"]).data
    (run,) = [r.data for r in opened.list_records("runs") if r.data["name"] == "etcd"]
    # THEN the snapshot carries the identity and its change telemetry: both files new, their bytes new
    assert [snap[k] for k in ("cluster", "namespace", "app", "policy")] == list(APP.values())
    changes = snap["changes"]
    assert (changes["files_total"], changes["files_added"]) == (2, 2)
    assert 0 < changes["new_bytes_stored"] < changes["new_bytes"] <= snap["summary"]["blob_bytes_new"]
    assert changes["new_bytes"] >= taken["size"]
    # AND the run record names the app, and its time is the snapshot's, before the snapshot was stored
    assert run["app"] == APP and run["snapshot"] == taken["snapshot"]
    assert parse_time(run["time"]) <= parse_time(snap["end_time"])
