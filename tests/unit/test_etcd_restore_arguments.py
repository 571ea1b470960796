"""``etcd-restore`` checks its member arguments before it reads anything: one line naming the option."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PEER = "https://10.0.0.10:2380"


def restore(tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "steps", "etcd-restore", "--repo", f"file://{tmp_path / 'no-repo'}",
         "--data-dir", str(tmp_path / "data"), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--name", "cp 1", "--initial-advertise-peer-urls", PEER],
         "error: --name: expected a member name of letters, digits, '.', '_', '-', got 'cp 1'"),
        (["--name", "cp1", "--initial-advertise-peer-urls", "10.0.0.10:2380"],
         "error: --initial-advertise-peer-urls: expected http(s)://HOST:PORT, got '10.0.0.10:2380'"),
        (["--name", "cp1", "--initial-advertise-peer-urls", PEER, "--initial-cluster", "cp2=https://10.0.0.11:2380"],
         "error: --initial-cluster: names no member 'cp1' (the --name of this member)"),
        (["--name", "cp1", "--initial-advertise-peer-urls", PEER, "--initial-cluster", "cp1=https://10.0.0.99:2380"],
         "error: --initial-cluster: gives 'cp1' other peer URLs than --initial-advertise-peer-urls"),
        (["--name", "cp1", "--initial-advertise-peer-urls", PEER, "--initial-cluster", "cp1"],
         "error: --initial-cluster: expected NAME=URL,NAME=URL,..., got 'cp1'"),
        (["--name", "cp1", "--initial-advertise-peer-urls", PEER, "--initial-cluster-token", "a token"],
         "error: --initial-cluster-token: expected letters, digits, '.', '_', '-', got 'a token'"),
    ],
)  # fmt: skip
def test_bad_member_arguments_are_named_before_anything_is_read(tmp_path, args, message):
    proc = restore(tmp_path, *args)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [message]
    assert not (tmp_path / "data").exists()
