"""The step image installs from the project's own requirements and every step answers --help.

No Docker engine runs here, so the test does what the Dockerfile does in a fresh virtual environment:
copy the files the Dockerfile copies, ``pip install .``, and run each step's ``--help`` from there.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def dockerfile_copies() -> list[str]:
    text = (ROOT / "Dockerfile").read_text()
    sources = []
    for line in text.splitlines():
        m = re.match(r"COPY\s+(.+?)\s+\S+$", line.strip())
        if m:
            sources.extend(m.group(1).split())
    return sources


def test_dockerfile_copies_the_packages_and_templates_and_runs_the_steps():
    copies = dockerfile_copies()
    for needed in ("pyproject.toml", "steps", "workflows", "templates"):
        assert needed in copies
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"pip install --no-cache-dir \.", text)
    assert '"python", "-m", "steps"' in text
    assert "SNAPFLOW_TEMPLATES" in text


@pytest.mark.slow
def test_every_step_answers_help_in_a_venv_built_like_the_image(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for item in dockerfile_copies():
        path = ROOT / item
        if path.is_dir():
            shutil.copytree(path, src / item, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, src / item)
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(src)],
        check=True,
        timeout=900,
    )

    env = {**os.environ, "SNAPFLOW_TEMPLATES": str(src / "templates")}
    run = subprocess.run(
        [str(py), "-m", "steps", "--help"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120
    )
    assert run.returncode == 0, run.stderr
    listed = subprocess.run(
        [str(py), "-c", "from steps.cli import _command_modules as m; print(' '.join(c.NAME for c in m()))"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=True,
    )
    steps = listed.stdout.split()
    for step in steps:
        assert step in run.stdout  # every step is listed by the top-level help
    assert {"init", "copy", "verify", "restore"} <= set(steps)
    for step in steps:
        r = subprocess.run(
            [str(py), "-m", "steps", step, "--help"],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=120,
        )
        assert r.returncode == 0, f"{step}: {r.stderr}"
        assert "usage:" in r.stdout


DATA_STEP_ARGS = {
    "copy": ["--source", "."],
    "verify": [],
    "restore": ["--snapshot", "latest", "--target", "out"],
    "snapshots": [],
}


@pytest.mark.parametrize("step", sorted(DATA_STEP_ARGS))
def test_data_steps_import_neither_hera_nor_kubernetes(step, tmp_path):
    # GIVEN a repository URL that does not exist, so the step runs until it opens the repository
    repo = f"file://{tmp_path}/no-repo"
    env = {**os.environ, "SNAPFLOW_PASSWORD": "x"}
    # WHEN the step runs with import timing on
    r = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "steps", step, "--repo", repo, *DATA_STEP_ARGS[step]],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
    )
    # THEN it fails with a one-line error, having imported neither hera nor kubernetes
    imported = {
        line.split("|")[-1].strip().split(".")[0] for line in r.stderr.splitlines() if "import time:" in line
    }
    assert r.returncode != 0
    assert "hera" not in imported and "kubernetes" not in imported and "workflows" not in imported
    errors = [line for line in r.stderr.splitlines() if "import time:" not in line]
    assert len(errors) == 1 and errors[0].startswith("error: "), errors
