"""The step image installs from the project's own requirements and every step answers --help.

No Docker engine runs here, so the test does what the Dockerfile does in a fresh virtual environment:
copy the files the Dockerfile copies (leaving out what ``.dockerignore`` excludes), ``pip install .``,
and run each step's ``--help`` from there.

The demo's infrastructure (``workflows/demo``: an S3 server launcher, loop-mounted btrfs, PostgreSQL,
a ledger writer) is not shipped: ``.dockerignore`` excludes it, and nothing the image ships imports it.
"""

from __future__ import annotations

import ast
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


def dockerignore_patterns() -> list[str]:
    path = ROOT / ".dockerignore"
    if not path.exists():
        return []
    lines = [line.strip() for line in path.read_text().splitlines()]
    return [line.rstrip("/") for line in lines if line and not line.startswith("#")]


def _pattern_regex(pattern: str) -> re.Pattern:
    """A .dockerignore pattern (Go's filepath.Match plus ``**``) as a regular expression."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def ignored(rel: str, patterns: list[str]) -> bool:
    """Whether the build context leaves out ``rel`` (a path relative to the root): a pattern matches it
    or one of its parent directories."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(_pattern_regex(p).match(prefix) for p in patterns for prefix in prefixes)


def copy_like_the_image(dest: Path) -> None:
    """The files the Dockerfile copies into the image, as the build context gives them."""
    patterns = dockerignore_patterns()

    def leave_out(directory: str, names: list[str]) -> set[str]:
        rel = Path(directory).resolve().relative_to(ROOT).as_posix()
        return {n for n in names if ignored(n if rel == "." else f"{rel}/{n}", patterns)}

    for item in dockerfile_copies():
        path = ROOT / item
        if path.is_dir():
            shutil.copytree(path, dest / item, ignore=leave_out)
        else:
            shutil.copy2(path, dest / item)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def test_the_image_leaves_the_demo_out_and_nothing_it_ships_imports_the_demo():
    # GIVEN the build context's exclusions
    patterns = dockerignore_patterns()
    # THEN the demo's package is left out, and what the image runs is not
    assert ignored("workflows/demo", patterns)
    assert ignored("workflows/demo/seaweedfs.py", patterns)
    assert ignored("workflows/demo/sandbox.py", patterns)
    for shipped in ("steps/cli.py", "steps/api.py", "workflows/local/runner.py", "workflows/cli/cmd_run.py",
                    "workflows/report/__init__.py", "templates", "pyproject.toml"):  # fmt: skip
        assert not ignored(shipped, patterns), shipped
    # AND no module the image ships imports the demo (it would fail there)
    offenders = []
    for package in ("steps", "workflows"):
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if ignored(rel, patterns):
                continue
            if any(name == "workflows.demo" or name.startswith("workflows.demo.") for name in _imports(path)):
                offenders.append(rel)
    assert offenders == []


def test_a_planted_demo_import_would_be_caught(tmp_path):
    # GIVEN a shipped module that imports the demo's S3 server launcher
    planted = tmp_path / "planted.py"
    planted.write_text("from workflows.demo.seaweedfs import SeaweedFS\nimport workflows.demo\n")
    # THEN the import scan sees both imports
    assert {"workflows.demo.seaweedfs", "workflows.demo"} <= _imports(planted)
    assert ignored("workflows/demo/__pycache__/x.pyc", dockerignore_patterns())


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
    copy_like_the_image(src)
    assert (src / "workflows" / "local").is_dir() and not (src / "workflows" / "demo").exists()
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
    # the control plane the image ships imports without the demo, which is not there
    shipped = subprocess.run(
        [str(py), "-c", "import workflows.cli, workflows.local.runner, workflows.local.local_restore, workflows.report"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert shipped.returncode == 0, shipped.stderr
    demo = subprocess.run(
        [str(py), "-c", "import workflows.demo"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert demo.returncode != 0 and "No module named 'workflows.demo'" in demo.stderr
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
