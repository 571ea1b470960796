"""etcd-restore with a tool of another etcd minor version than the snapshot's: refused by default, and
with --allow-version-mismatch a warning naming both versions, then the written database opened with
the tool and its revision checked; a database that does not check out is removed. The other version is
a wrapper around Debian's etcdctl 3.4 that reports 3.5 (no etcd 3.5 here)."""

from __future__ import annotations

import json
import os

import pytest

from tests.scenarios.test_etcd_backup_restore import steps, tls_args


@pytest.fixture
def repo(tmp_path):
    env = {**os.environ, "SNAPFLOW_PASSWORD": "etcd-mismatch-pw", "SNAPFLOW_KDF_TEST_N": "1024"}
    url = f"file://{tmp_path / 'repo'}"
    steps("init", "--repo", url, env=env)
    return url, env


def fake_tool(tmp_path, status_revision: int | None = None):
    """An etcdctl reporting version 3.5.9; with ``status_revision``, its status of a data directory's
    member/snap/db names that revision instead of the real one."""
    tool = tmp_path / "etcdctl-3.5"
    lie = ""
    if status_revision is not None:
        lie = (
            'case "$*" in *status*member/snap/db*) '
            f'echo \'{{"hash":1,"revision":{status_revision},"totalKey":1,"totalSize":1}}\'; exit 0;; esac\n'
        )
    tool.write_text(
        '#!/bin/sh\nif [ "$1" = version ]; then echo "etcdctl version: 3.5.9"; echo "API version: 3.5"; exit 0; fi\n'
        f'{lie}exec etcdctl "$@"\n'
    )
    tool.chmod(0o755)
    return tool


def target(tmp_path) -> list[str]:
    return [
        "--data-dir",
        str(tmp_path / "d"),
        "--name",
        "a",
        "--initial-advertise-peer-urls",
        "http://127.0.0.1:2380",
    ]


def test_an_allowed_mismatch_warns_with_both_versions_and_checks_the_written_database(
    etcd_server, repo, tmp_path
):
    # GIVEN an etcd 3.4 snapshot at a known revision and a tool that reports 3.5
    url, env = repo
    revision = etcd_server.put("k", "v")
    steps("etcd-snapshot", "--repo", url, "--etcd", etcd_server.url, *tls_args(etcd_server.pki), env=env)
    tool = fake_tool(tmp_path)
    # WHEN the mismatch is explicitly not allowed THEN it is refused
    refused = steps("etcd-restore", "--repo", url, *target(tmp_path), "--etcd-tool", str(tool),
                    "--allow-version-mismatch", "false", env=env, check=False)  # fmt: skip
    assert refused.returncode == 2 and "give --allow-version-mismatch" in refused.stderr
    # WHEN it is allowed (as the WorkflowTemplate passes it: with the value true)
    out = steps("etcd-restore", "--repo", url, *target(tmp_path), "--etcd-tool", str(tool),
                "--allow-version-mismatch", "true", "--json", env=env)  # fmt: skip
    # THEN a warning names both versions, and the written database was opened at the snapshot's revision
    (warning,) = [ln for ln in out.stderr.splitlines() if ln.startswith("warning:")]
    assert "etcd 3.4.23" in warning and "etcdctl 3.5.9" in warning
    summary = json.loads(out.stdout)
    assert summary["version_mismatch_checked"]["revision"] == revision
    assert os.listdir(tmp_path / "d") == ["member"]


def test_a_written_database_of_another_revision_is_removed_and_the_restore_fails(etcd_server, repo, tmp_path):
    # GIVEN a tool of another version whose status of the written database names another revision
    url, env = repo
    revision = etcd_server.put("k", "v")
    steps("etcd-snapshot", "--repo", url, "--etcd", etcd_server.url, *tls_args(etcd_server.pki), env=env)
    tool = fake_tool(tmp_path, status_revision=revision + 7)
    # WHEN the mismatch is allowed
    failed = steps("etcd-restore", "--repo", url, *target(tmp_path), "--etcd-tool", str(tool),
                   "--allow-version-mismatch", env=env, check=False)  # fmt: skip
    # THEN the restore fails naming both revisions and leaves the data directory empty
    assert failed.returncode != 0
    assert f"has revision {revision + 7}, the snapshot's is {revision}" in failed.stderr.splitlines()[-1]
    assert "Traceback" not in failed.stderr
    assert os.listdir(tmp_path / "d") == []


def status_tool(tmp_path, version: str, status: str):
    """An etcdctl reporting ``version`` whose ``snapshot status`` prints ``status`` (a failure when it
    starts with Error)."""
    tool = tmp_path / f"etcdctl-{version}"
    fail = "exit 1" if status.startswith("Error") else "exit 0"
    tool.write_text(
        f'#!/bin/sh\nif [ "$1" = version ]; then echo "etcdctl version: {version}"; exit 0; fi\n'
        f"if [ \"$2\" = status ]; then echo '{status}'; {fail}; fi\nexit 1\n"
    )
    tool.chmod(0o755)
    return tool


def test_the_status_cross_check_of_a_tool_of_another_version_only_warns(etcd_server, repo, tmp_path):
    # GIVEN etcd 3.4 and tools that report 3.5 whose status fails or names another revision
    url, env = repo
    revision = etcd_server.put("k", "v")
    snapshot = [
        "etcd-snapshot",
        "--repo",
        url,
        "--etcd",
        etcd_server.url,
        *tls_args(etcd_server.pki),
        "--json",
    ]
    failing = status_tool(tmp_path, "3.5.9", "Error: invalid database")
    # WHEN a snapshot is taken with them THEN it is stored, with a warning naming the tool and the version
    out = steps(*snapshot, "--etcd-tool", str(failing), env=env)
    (warning,) = [ln for ln in out.stderr.splitlines() if ln.startswith("warning:")]
    assert "etcdctl 3.5.9 snapshot status could not read this etcd 3.4.23 snapshot" in warning
    assert json.loads(out.stdout)["snapshot"]
    other = status_tool(
        tmp_path, "3.5.8", f'{{"hash":1,"revision":{revision + 3},"totalKey":1,"totalSize":1}}'
    )
    out = steps(*snapshot, "--etcd-tool", str(other), env=env)
    assert (
        f"reads revision {revision + 3} in this etcd 3.4.23 snapshot, the snapshot's is {revision}"
        in out.stderr
    )
    # AND a tool of the same minor version that disagrees still stops the snapshot
    same = status_tool(
        tmp_path, "3.4.99", f'{{"hash":1,"revision":{revision + 3},"totalKey":1,"totalSize":1}}'
    )
    refused = steps(*snapshot, "--etcd-tool", str(same), env=env, check=False)
    assert refused.returncode == 3 and "nothing was stored" in refused.stderr
