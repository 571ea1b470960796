"""etcd's keyspace backed up through the JSON gateway and restored into a new data directory, against a
real etcd from Debian with client certificates made in the test."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def steps(*args: str, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "steps", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert not check or proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture
def repo(tmp_path):
    env = {**os.environ, "SNAPFLOW_PASSWORD": "etcd-test-pw", "SNAPFLOW_KDF_TEST_N": "1024"}
    url = f"file://{tmp_path / 'repo'}"
    steps("init", "--repo", url, env=env)
    return url, env


def tls_args(pki) -> list[str]:
    return ["--cacert", str(pki.ca), "--cert", str(pki.client_cert), "--key", str(pki.client_key)]


class WriteLoad:
    """Writes ``load/N`` keys one by one in a thread until stopped; ``revisions`` are the writes'."""

    def __init__(self, server):
        self.server, self.revisions, self.stop_event = server, [], threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def _run(self):
        n = 0
        try:
            while not self.stop_event.is_set():
                self.revisions.append(self.server.put(f"load/{n:06d}", f"written under load {n}"))
                n += 1
        except BaseException as err:
            self.error = err

    def __enter__(self):
        self.thread.start()
        while len(self.revisions) < 20 and self.thread.is_alive():
            self.stop_event.wait(0.01)
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        self.thread.join(timeout=30)


@pytest.mark.slow
def test_a_snapshot_taken_under_load_restores_every_key_as_of_its_revision(
    etcd_server, etcd_servers, repo, tmp_path
):
    # GIVEN an etcd with many small keys, large values, keys rewritten many times and deleted keys
    rnd = random.Random(15)
    etcd_server.put_many({f"registry/pods/ns-{i % 17}/pod-{i:05d}": f"spec {i} " * 20 for i in range(1500)})
    large = {f"large/{i}": rnd.randbytes(1024 * 1024) for i in range(4)}
    for key, value in large.items():
        etcd_server.put(key, value)
    for i in range(150):
        etcd_server.put("leases/leader", f"term {i}")
    etcd_server.delete("registry/pods/ns-3/pod-00003")
    url, env = repo
    # WHEN it is backed up while another client keeps writing
    with WriteLoad(etcd_server) as load:
        out = steps("etcd-snapshot", "--repo", url, "--etcd", etcd_server.url, *tls_args(etcd_server.pki),
                    "--cluster", "test", "--json", env=env)  # fmt: skip
    assert load.error is None
    record = json.loads(out.stdout)
    revision = record["revision"]
    # THEN the record names the version, the revision (read from the file, as etcdctl's snapshot status
    # reads it), the member list,
    # and the load wrote both before and after the snapshot's revision
    assert record["etcd_version"] == "3.4.23" and record["status"]["revision"] == revision
    assert record["revision_source"] == "snapshot file" and record["status_tool"] == "etcdctl 3.4.23"
    assert [m["name"] for m in record["members"]] == ["default"]
    assert record["members"][0]["client_urls"] == [etcd_server.url]
    assert min(load.revisions) < revision < max(load.revisions)
    listed = json.loads(steps("snapshots", "--repo", url, "--json", env=env).stdout)
    assert [s["tags"] for s in listed] == [{"kind": "etcd", "etcd-cluster-id": record["cluster_id"]}]

    # WHEN it is restored into a new data directory and an etcd starts on it
    restored = etcd_servers(name="restored-1", data_dir=tmp_path / "restored", token="restored-token")
    out = steps("etcd-restore", "--repo", url, "--snapshot", record["snapshot"][:12],
                "--data-dir", str(restored.data_dir), "--name", "restored-1",
                "--initial-advertise-peer-urls", restored.peer_url,
                "--initial-cluster-token", "restored-token", "--json", env=env)  # fmt: skip
    summary = json.loads(out.stdout)
    assert summary["written"] == ["member"] and summary["revision"] == revision
    restored.start()
    # THEN every key and value equals a read of the source at the recorded revision, history included
    _, expected = etcd_server.read_all(revision)
    restored_rev, got = restored.read_all()
    assert restored_rev == revision
    assert got == expected
    assert all(got[k.encode()] == v for k, v in large.items())
    assert b"registry/pods/ns-3/pod-00003" not in got
    written_by_then = sum(r <= revision for r in load.revisions)
    assert {k for k in got if k.startswith(b"load/")} == {
        f"load/{n:06d}".encode() for n in range(written_by_then)
    }
    assert restored.read_all(revision - 10)[1] == etcd_server.read_all(revision - 10)[1]
    # and the restored member is a new cluster of its own
    members = restored.request("POST", "/v3/cluster/member/list", {})
    assert [m["name"] for m in members["members"]] == ["restored-1"]
    assert members["header"]["cluster_id"] != str(int(record["cluster_id"], 16))


def test_a_restore_refuses_a_data_directory_that_is_not_empty(etcd_server, repo, tmp_path):
    # GIVEN an etcd snapshot in the repository and a data directory that holds an old member
    url, env = repo
    etcd_server.put("k", "v")
    steps("etcd-snapshot", "--repo", url, "--etcd", etcd_server.url, *tls_args(etcd_server.pki), env=env)
    target = tmp_path / "old-data"
    (target / "member" / "wal").mkdir(parents=True)
    # WHEN it is restored there
    proc = steps("etcd-restore", "--repo", url, "--data-dir", str(target), "--name", "a",
                 "--initial-advertise-peer-urls", "http://127.0.0.1:2380", env=env, check=False)  # fmt: skip
    # THEN the restore is refused with one line naming the directory, and the old member stays as it was
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: --data-dir: '{target}' is not empty (it holds member); etcd's data directory is restored only"
        " into an empty one: move the old one aside first"
    ]
    assert sorted(os.listdir(target)) == ["member"] and os.listdir(target / "member") == ["wal"]


def test_a_restore_refuses_a_snapshot_that_is_not_of_etcd(repo, tmp_path):
    # GIVEN a repository holding only a plain copy of a directory
    url, env = repo
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a").write_text("a")
    sid = steps("copy", "--repo", url, "--source", str(tmp_path / "src"), env=env).stdout.split()[-1]
    # WHEN latest or that snapshot is restored as etcd
    latest = steps("etcd-restore", "--repo", url, "--data-dir", str(tmp_path / "d1"), "--name", "a",
                   "--initial-advertise-peer-urls", "http://127.0.0.1:2380", env=env, check=False)  # fmt: skip
    by_id = steps("etcd-restore", "--repo", url, "--snapshot", sid[:8], "--data-dir", str(tmp_path / "d2"),
                  "--name", "a", "--initial-advertise-peer-urls", "http://127.0.0.1:2380", env=env, check=False)  # fmt: skip
    # THEN both are refused, naming the reason
    assert latest.returncode == 2 and "holds no snapshot of kind etcd" in latest.stderr
    assert by_id.returncode == 2 and f"snapshot {sid[:8]} is not an etcd snapshot" in by_id.stderr


def test_a_kubeadm_pki_directory_and_a_backup_id_record_the_snapshot_in_the_run(etcd_server, repo, tmp_path):
    # GIVEN etcd's certificates laid out as on a kubeadm control-plane node (/etc/kubernetes/pki/etcd)
    pki = etcd_server.pki
    kubeadm = tmp_path / "pki-etcd"
    kubeadm.mkdir()
    for src, name in ((pki.ca, "ca.crt"), (pki.client_cert, "healthcheck-client.crt"),
                      (pki.client_key, "healthcheck-client.key")):  # fmt: skip
        (kubeadm / name).write_bytes(src.read_bytes())
    revision = etcd_server.put_many({f"k/{i}": f"v{i}" for i in range(50)})
    url, env = repo
    # WHEN it is backed up as part of a backup run
    out = steps("etcd-snapshot", "--repo", url, "--etcd", etcd_server.url, "--tls-dir", str(kubeadm),
                "--backup-id", "etcd-backup-x1", "--json", env=env)  # fmt: skip
    record = json.loads(out.stdout)
    # THEN the backup's verify reads back every pack it wrote
    verified = json.loads(
        steps("verify", "--repo", url, "--backup-id", "etcd-backup-x1", "--json", env=env).stdout
    )
    assert verified["ok"] is True
    # and the run's record names the snapshot, the revision and the members
    from steps.repository.opener import open_repository

    opened = open_repository(url, password="etcd-test-pw")
    runs = sorted((r.data for r in opened.list_records("runs")), key=lambda r: r["name"])
    assert [(r["name"], r["backup_id"], r.get("snapshot")) for r in runs] == [
        ("etcd", "etcd-backup-x1", record["snapshot"]),
        ("verify", "etcd-backup-x1", None),
    ]
    assert runs[0]["revision"] == revision and runs[0]["members"] == record["members"]
    # and, the backup not being committed, a restore refuses its snapshot unless told otherwise
    target = [
        "--data-dir",
        str(tmp_path / "d"),
        "--name",
        "a",
        "--initial-advertise-peer-urls",
        "http://127.0.0.1:2380",
    ]
    refused = steps(
        "etcd-restore", "--repo", url, "--snapshot", record["snapshot"][:8], *target, env=env, check=False
    )
    assert refused.returncode == 2
    assert "belongs to backup etcd-backup-x1, which was never committed" in refused.stderr
    steps(
        "etcd-restore",
        "--repo",
        url,
        "--snapshot",
        record["snapshot"][:8],
        *target,
        "--allow-uncommitted",
        env=env,
    )
    assert os.listdir(tmp_path / "d") == ["member"]


def test_a_tool_of_another_etcd_version_is_refused_unless_allowed(etcd_server, repo, tmp_path):
    # GIVEN an etcd 3.4 snapshot and an etcdctl that reports version 3.5
    url, env = repo
    etcd_server.put("k", "v")
    steps("etcd-snapshot", "--repo", url, "--etcd", etcd_server.url, *tls_args(etcd_server.pki), env=env)
    tool = tmp_path / "etcdctl-3.5"
    tool.write_text(
        '#!/bin/sh\nif [ "$1" = version ]; then echo "etcdctl version: 3.5.9"; echo "API version: 3.5"; exit 0; fi\n'
        'exec etcdctl "$@"\n'
    )
    tool.chmod(0o755)
    target = [
        "--data-dir",
        str(tmp_path / "d"),
        "--name",
        "a",
        "--initial-advertise-peer-urls",
        "http://127.0.0.1:2380",
    ]
    # WHEN it is restored with that tool
    refused = steps("etcd-restore", "--repo", url, *target, "--etcd-tool", str(tool), env=env, check=False)
    allowed = steps("etcd-restore", "--repo", url, *target, "--etcd-tool", str(tool), "--allow-version-mismatch",
                    "--json", env=env)  # fmt: skip
    # THEN it is refused naming both versions, and allowed when asked
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "error: --etcd-tool: the snapshot was taken by etcd 3.4.23 but the tool is etcdctl 3.5.9; use the tool"
        " of etcd 3.4 (--etcd-tool) or give --allow-version-mismatch"
    ]
    assert json.loads(allowed.stdout)["tool"] == "etcdctl 3.5.9"
    assert os.listdir(tmp_path / "d") == ["member"]


def test_successive_snapshots_of_a_cluster_form_one_retention_group(etcd_server, repo, tmp_path):
    # GIVEN two snapshots of the same etcd, the second after a run that was interrupted while staging
    url, env = repo
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    snapshot = ["etcd-snapshot", "--repo", url, "--etcd", etcd_server.url, *tls_args(etcd_server.pki),
                "--scratch", str(scratch), "--cluster", "prod", "--json"]  # fmt: skip
    etcd_server.put("k", "1")
    first = json.loads(steps(*snapshot, env=env).stdout)
    leftover = scratch / f"etcd-{first['cluster_id']}"
    leftover.mkdir()
    (leftover / "snapshot.db").write_bytes(b"half a snapshot")
    etcd_server.put("k", "2")
    second = json.loads(steps(*snapshot, env=env).stdout)
    # THEN the leftover and the lock are gone, the second has the newer revision, and retention sees one group
    assert list(scratch.iterdir()) == []
    assert second["revision"] == first["revision"] + 1
    plan = json.loads(
        steps(
            "forget", "--repo", url, "--keep-last", "1", "--cluster", "prod", "--dry-run", "--json", env=env
        ).stdout
    )
    decided = {d["id"]: d["keep"] for d in plan["decisions"]}
    assert decided == {first["snapshot"]: False, second["snapshot"]: True}
