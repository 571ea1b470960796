"""The repository steps' command line on a local directory store: imports, progress, output contract."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(args, env, check=True):
    proc = subprocess.run(
        [sys.executable, "-m", "steps", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert not check or proc.returncode == 0, proc.stderr
    return proc


def test_data_steps_import_neither_kubernetes_nor_hera():
    code = (
        "import sys; from steps.cli import build_parser; build_parser();"
        "import steps.repository.archiver, steps.repository.restorer, steps.repository.checker;"
        "print([m for m in sys.modules if m.split('.')[0] in ('kubernetes', 'hera', 'workflows')])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_copy_reports_argo_progress_and_prints_the_snapshot_id_last(tmp_path):
    # GIVEN a local repository and some data
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    progress = tmp_path / "progress"
    env = {
        **os.environ,
        "SNAPFLOW_PASSWORD": "pw",
        "SNAPFLOW_KDF_TEST_N": "1024",
        "ARGO_PROGRESS_FILE": str(progress),
    }
    repo = f"file://{tmp_path / 'repo'}"
    _run(["init", "--repo", repo], env)
    # WHEN it is copied
    proc = _run(["copy", "--repo", repo, "--source", str(src)], env)
    # THEN stdout's last line is the snapshot ID, progress went to stderr and Argo's file says N/N
    sid = proc.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"[0-9a-f]{64}", sid)
    assert "copy:" in proc.stderr
    done, total = map(int, progress.read_text().strip().split("/"))
    assert done == total >= 3
    listed = json.loads(_run(["snapshots", "--repo", repo, "--json"], env).stdout)
    assert [s["id"] for s in listed] == [sid]
    ls = _run(["ls", "--repo", repo, "--snapshot", sid[:8]], env).stdout
    assert "/a.bin" in ls
