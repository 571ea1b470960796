"""The copy step reads the files of every owner with the one capability its pod adds (DAC_OVERRIDE,
which Pod Security baseline allows), as root with every other capability gone: files of other users
with mode 0600 and 0000, inside directories of other users with mode 0700. Without it the copy
records nothing and says which directory it could not list."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from workflows.render import render_files

ROOT = Path(__file__).resolve().parents[2]


def _copy_capabilities() -> list[str]:
    """The capabilities the rendered copy step adds (the PostgreSQL example's)."""
    (wt,) = [
        o.obj
        for o in render_files([ROOT / "examples" / "postgresql-statefulset.yaml"]).objects
        if o.kind == "WorkflowTemplate" and o.name == "backup-orders-db"
    ]
    (copy,) = [t for t in wt["spec"]["templates"] if t["name"] == "copy-data"]
    caps = copy["container"]["securityContext"]["capabilities"]
    assert caps["drop"] == ["ALL"]
    return caps["add"]


def _only(caps: list[str]) -> list[str]:
    """A command prefix: root, with no capability but ``caps`` (bounding, permitted, effective), as a
    container with ``drop: [ALL]`` and ``add: caps`` runs."""
    if os.geteuid() != 0:
        raise PermissionError("owning files as other users and dropping capabilities needs root")
    if shutil.which("setpriv") is None:
        raise RuntimeError("setpriv (util-linux) is not installed")
    keep = "".join(f",+{c.lower()}" for c in caps)
    return ["setpriv", "--inh-caps=-all", "--ambient-caps=-all", f"--bounding-set=-all{keep}"]


def _steps(*args: str, prefix: list[str] = ()) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*prefix, sys.executable, "-m", "steps", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env=os.environ,
    )  # fmt: skip


def _tree(src: Path) -> None:
    """src/a (uid 1000, 0700) holding b (uid 1001, 0700) with f (uid 1001, 0600), and g (uid 1000,
    mode 0000)."""
    b = src / "a" / "b"
    b.mkdir(parents=True)
    (b / "f").write_text("only 1001 may read this\n")
    (src / "a" / "g").write_text("nobody may read this\n")
    for path, uid, mode in (
        (b / "f", 1001, 0o600),
        (b, 1001, 0o700),
        (src / "a" / "g", 1000, 0),
        (src / "a", 1000, 0o700),
    ):
        os.chown(path, uid, uid)
        os.chmod(path, mode)


def test_the_copy_reads_every_owners_files_with_dac_override_alone(tmp_path, monkeypatch):
    # GIVEN the capabilities the rendered copy pod adds, a repository, and files of other users
    caps = _copy_capabilities()
    assert caps == ["DAC_OVERRIDE"]
    monkeypatch.setenv("SNAPFLOW_PASSWORD", "correct horse battery staple")
    monkeypatch.setenv("SNAPFLOW_KDF_TEST_N", "1024")
    repo = f"file://{tmp_path / 'repo'}"
    assert _steps("init", "--repo", repo).returncode == 0
    src = tmp_path / "src"
    _tree(src)

    # WHEN the copy runs as root with no capability at all THEN it records nothing and names the directory
    denied = _steps("copy", "--repo", repo, "--source", str(src), "--json", prefix=_only([]))
    assert denied.returncode == 3, denied.stdout + denied.stderr
    assert f"{src / 'a'}: cannot list directory (Permission denied)" in denied.stderr

    # WHEN it runs with the copy pod's capabilities only
    done = _steps("copy", "--repo", repo, "--source", str(src), "--json", prefix=_only(caps))

    # THEN it reads every file, and a restore gives back their contents, owners and modes
    assert done.returncode == 0, done.stdout + done.stderr
    snap = json.loads(done.stdout.strip().splitlines()[-1])
    assert snap["files"] == 2 and snap["bytes_read"] == snap["bytes_total"] > 0
    out = tmp_path / "out"
    restored = _steps("restore", "--repo", repo, "--snapshot", snap["id"], "--target", str(out))
    assert restored.returncode == 0, restored.stderr
    assert (out / "a" / "b" / "f").read_text() == "only 1001 may read this\n"
    assert (out / "a" / "g").read_text() == "nobody may read this\n"
    for rel, uid, mode in (
        ("a/b/f", 1001, 0o600),
        ("a/b", 1001, 0o700),
        ("a/g", 1000, 0),
        ("a", 1000, 0o700),
    ):
        st = (out / rel).lstat()
        assert (st.st_uid, st.st_mode & 0o7777) == (uid, mode), rel


def test_the_capability_is_one_baseline_allows():
    from steps.manifests.podsecurity import BASELINE_CAPABILITIES

    assert set(_copy_capabilities()) <= BASELINE_CAPABILITIES
    assert "DAC_READ_SEARCH" not in BASELINE_CAPABILITIES
