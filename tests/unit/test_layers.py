"""The import contract of ``steps`` and ``workflows``, checked on the source with ``ast`` (no import runs).

Layers of ``steps``, top to bottom; a module may import its own layer or a lower one, never a higher one:

    top         steps.cli, steps.__main__, steps.api (the public face, above everything it re-exports)
    commands    steps.commands.*          argument plumbing over the engines below
    engines     steps.quiesce.*, steps.manifests.*   (one layer: each may read the other)
    repository  steps.repository.*        the repository format
    drivers     steps.drivers.*, steps.progress, steps.secrets, steps.resources
    leaf        steps.errors, steps.runtime, steps.plan, steps.idmap, steps (the package itself)

``progress`` (the terminal and Argo's progress file), ``secrets`` (the password from the environment or
a mounted file) and ``resources`` (the templates folder) read and write outside the process, so they
sit with the drivers: the repository may use them, and nothing in the leaf layer may.

The leaf layer imports only the standard library and ``steps.errors``: ``steps.runtime`` is the
step-runtime contract (environment variable names, pod paths, capabilities), ``steps.plan`` the plan a
step reads, pure data any layer may read, and ``steps.idmap`` the owner ID maps (pure data too: the
transforms remap security contexts with them, the restorer the owners of restored files). ``steps`` never imports ``workflows`` or ``hera``.

``workflows`` imports from ``steps`` only ``steps.api`` and the two leaf contracts it shares with the
steps, ``steps.errors`` (the exit codes its retry strategy keys on) and ``steps.runtime`` (the names and
paths its builders give a step pod).

I/O (files, processes, sockets) happens only in ``drivers`` and ``repository`` (and the drivers-level
modules above): a call of ``open()``, of an ``os`` file function, of a ``pathlib`` read or write, or
of ``shutil`` (but ``which``) or ``tempfile``, or an import of ``subprocess`` or ``socket`` in ``cli``, ``commands``, ``quiesce``, ``manifests``,
``plan``, ``runtime`` or ``errors`` is a violation.

A violation in a file whose owner has not yet fixed it is listed in ``KNOWN_*`` below with the file and
the import or call; the lists must shrink to empty, and an entry that is no longer a violation fails
the test, so that it cannot stay behind.
"""

from __future__ import annotations

import ast
import functools
import textwrap
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

LAYERS = {  # module prefix -> rank (higher may import lower or equal)
    "steps.cli": 6,
    "steps.__main__": 6,
    "steps.api": 6,
    "steps.commands": 5,
    "steps.quiesce": 4,
    "steps.manifests": 4,
    "steps.repository": 3,
    "steps.drivers": 2,
    "steps.progress": 2,
    "steps.secrets": 2,
    "steps.resources": 2,
    "steps.errors": 1,
    "steps.runtime": 1,
    "steps.plan": 1,
    "steps.idmap": 1,
    "steps": 1,
}
LEAF = ("steps.errors", "steps.runtime", "steps.plan", "steps.idmap")
LEAF_MAY_IMPORT = ("steps.errors",)
FORBIDDEN_IN_STEPS = ("workflows", "hera")
WORKFLOWS_MAY_IMPORT = ("steps.api", "steps.errors", "steps.runtime")
NO_IO = (
    "steps.cli",
    "steps.commands",
    "steps.quiesce",
    "steps.manifests",
    "steps.plan",
    "steps.runtime",
    "steps.errors",
)

OS_FILE_CALLS = {
    "open", "fdopen", "read", "write", "remove", "unlink", "rename", "replace", "mkdir", "makedirs", "rmdir",
    "removedirs", "listdir", "scandir", "walk", "stat", "lstat", "chmod", "chown", "lchown", "utime",
    "fsync", "link", "symlink", "readlink", "truncate", "access", "mkfifo", "mknod", "statvfs", "close",
}  # fmt: skip
OS_PATH_CALLS = {"exists", "lexists", "isfile", "isdir", "islink", "ismount", "getsize", "getmtime"}
PATHLIB_CALLS = {"read_text", "write_text", "read_bytes", "write_bytes", "iterdir", "touch", "symlink_to"}
IO_MODULES = ("subprocess", "socket")
# what a Path(...) made on the spot is asked (the name of a Path held in a variable is not followed)
PATH_METHODS = PATHLIB_CALLS | {"exists", "is_file", "is_dir", "mkdir", "unlink", "open", "stat", "resolve"}

# -- Known violations in files still to be converted (file, what) ---------------------------------
KNOWN_IMPORTS: set[tuple[str, str]] = {
    # the restorer's owner ID maps: IdRange is steps.idmap's now (a type-only import to switch)
    ("steps/repository/restorer.py", "steps.manifests.transforms"),
}
KNOWN_WORKFLOWS_IMPORTS: set[tuple[str, str]] = set()
KNOWN_IO: set[tuple[str, str]] = set()


@dataclass(frozen=True, order=True)
class Violation:
    kind: str  # "layer", "leaf", "forbidden", "public", "io"
    file: str  # relative to the root scanned
    what: str  # the module imported, or the call

    @property
    def key(self) -> tuple[str, str]:
        return (self.file, self.what)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def rank(module: str) -> int | None:
    best = None
    for prefix, r in LAYERS.items():
        inside = module == prefix or module.startswith(prefix + ".")
        if inside and (best is None or len(prefix) > len(best[0])):
            best = (prefix, r)
    return best[1] if best else None


def _within(module: str, prefixes) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def imported_modules(tree: ast.AST, this: str) -> list[str]:
    """Every name ``this`` imports, anywhere in the file, as ``module`` or ``module.name``."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = this.split(".")[: -node.level]
                base = ".".join(pkg + ([base] if base else []))
            out += [f"{base}.{a.name}" for a in node.names]
    return out


def _submodule_or_package(module: str, root: Path) -> str:
    """``steps.x.y`` if it is a module or package under ``root``, else its parent (``from m import name``)."""
    path = root.joinpath(*module.split("."))
    if path.with_suffix(".py").is_file() or (path / "__init__.py").is_file():
        return module
    return module.rpartition(".")[0] or module


def io_calls(tree: ast.AST) -> list[str]:
    """The I/O calls and imports of a file. A call on a name the file imports (``files.read_text``:
    a driver's function) is the driver's business, not the file's."""
    imported = {
        (a.asname or a.name).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for a in node.names
    }
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            out += [f"import {n}" for n in names if n.split(".")[0] in IO_MODULES]
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Name) and f.id == "open":
            out.append("open()")
        elif isinstance(f, ast.Attribute):
            v = f.value
            if isinstance(v, ast.Name) and v.id == "os" and f.attr in OS_FILE_CALLS:
                out.append(f"os.{f.attr}()")
            elif isinstance(v, ast.Name) and (v.id == "tempfile" or (v.id == "shutil" and f.attr != "which")):
                out.append(f"{v.id}.{f.attr}()")
            elif (
                isinstance(v, ast.Attribute)
                and v.attr == "path"
                and isinstance(v.value, ast.Name)
                and v.value.id == "os"
                and f.attr in OS_PATH_CALLS
            ):
                out.append(f"os.path.{f.attr}()")
            elif (
                isinstance(v, ast.Call)
                and isinstance(v.func, ast.Name)
                and v.func.id == "Path"
                and f.attr in PATH_METHODS
            ):
                out.append(f"Path().{f.attr}()")
            elif f.attr in PATHLIB_CALLS and not (isinstance(v, ast.Name) and v.id in imported):
                out.append(f".{f.attr}()")
    return out


def check_steps(root: Path) -> list[Violation]:
    """The violations of the layer, leaf and I/O rules in the package ``steps`` under ``root``."""
    found: set[Violation] = set()
    for path in sorted((root / "steps").rglob("*.py")):
        this = module_name(path, root)
        rel = path.relative_to(root).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"), rel)
        mine = rank(this)
        for imported in imported_modules(tree, this):
            top = imported.split(".")[0]
            if top in FORBIDDEN_IN_STEPS:
                found.add(Violation("forbidden", rel, top))
                continue
            if top != "steps":
                continue
            target = _submodule_or_package(imported, root)
            theirs = rank(target)
            if _within(this, LEAF) and not _within(target, (this, *LEAF_MAY_IMPORT)) and target != "steps":
                found.add(Violation("leaf", rel, target))
            elif mine is not None and theirs is not None and theirs > mine:
                found.add(Violation("layer", rel, target))
        if _within(this, NO_IO):
            for call in io_calls(tree):
                found.add(Violation("io", rel, call))
    return sorted(found)


def check_workflows(root: Path) -> list[Violation]:
    found: set[Violation] = set()
    for path in sorted((root / "workflows").rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"), rel)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                if name.split(".")[0] == "steps" and not _within(name, WORKFLOWS_MAY_IMPORT):
                    found.add(Violation("public", rel, name))
    return sorted(found)


def _unexpected(found: list[Violation], known: set[tuple[str, str]]) -> tuple[list[str], list[str]]:
    keys = {v.key for v in found}
    new = [f"{v.file}: {v.kind}: {v.what}" for v in found if v.key not in known]
    stale = [f"{f}: {w}" for f, w in sorted(known - keys)]
    return new, stale


@functools.cache
def _steps_violations() -> tuple[Violation, ...]:
    return tuple(check_steps(ROOT))


def test_steps_layers_hold():
    found = [v for v in _steps_violations() if v.kind != "io"]
    new, stale = _unexpected(found, KNOWN_IMPORTS)
    assert not new, "imports against the layers of steps (see this file's docstring):\n" + "\n".join(new)
    assert not stale, "KNOWN_IMPORTS entries that are fixed now; remove them:\n" + "\n".join(stale)


def test_io_only_in_drivers_and_repository():
    found = [v for v in _steps_violations() if v.kind == "io"]
    new, stale = _unexpected(found, KNOWN_IO)
    assert not new, "I/O outside drivers and repository:\n" + "\n".join(new)
    assert not stale, "KNOWN_IO entries that are fixed now; remove them:\n" + "\n".join(stale)


def test_workflows_use_only_the_public_face_of_steps():
    new, stale = _unexpected(check_workflows(ROOT), KNOWN_WORKFLOWS_IMPORTS)
    assert not new, "workflows imports private modules of steps (use steps.api):\n" + "\n".join(new)
    assert not stale, "KNOWN_WORKFLOWS_IMPORTS entries that are fixed now; remove them:\n" + "\n".join(stale)


def test_api_re_exports_resolve():
    import steps.api

    missing = [n for n in steps.api.__all__ if not hasattr(steps.api, n)]
    assert not missing
    wanted = set()
    for path in (ROOT / "workflows").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "steps.api":
                wanted |= {a.name for a in node.names}
    assert wanted - set(steps.api.__all__) == set(), "names workflows imports that steps.api does not list"


# -- The checker itself, on a planted violation -------------------------------------------------


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return tmp_path


CLEAN = {
    "steps/__init__.py": "",
    "steps/errors.py": "class SnapflowError(Exception): pass\n",
    "steps/runtime.py": "import os\nfrom steps.errors import SnapflowError\nPASSWORD = 'X'\n",
    "steps/plan.py": "import json\nfrom steps import errors\n",
    "steps/drivers/__init__.py": "",
    "steps/drivers/store.py": "import subprocess\nfrom steps import runtime\n\ndef get(p):\n    return open(p).read()\n",
    "steps/repository/__init__.py": "",
    "steps/repository/repo.py": "from steps.drivers.store import get\nfrom steps.plan import Plan\n",
    "steps/manifests/__init__.py": "",
    "steps/manifests/a.py": "from steps.quiesce import b\nfrom steps.repository.repo import get\n",
    "steps/quiesce/__init__.py": "",
    "steps/quiesce/b.py": "import json\n",
    "steps/commands/__init__.py": "",
    "steps/commands/run.py": "from steps.manifests.a import x\nfrom steps.commands import _helpers\n",
    "steps/commands/_helpers.py": "",
    "steps/cli.py": "from steps.commands import run\n",
    "workflows/__init__.py": "",
    "workflows/x.py": "from steps.api import open_repository\nfrom steps.errors import UsageError\n",
}


def test_the_checker_passes_a_clean_package(tmp_path):
    root = _package(tmp_path, CLEAN)
    assert check_steps(root) == []
    assert check_workflows(root) == []


def test_the_checker_reports_each_planted_violation(tmp_path):
    root = _package(
        tmp_path,
        {
            **CLEAN,
            # a command reaching up into the CLI layer
            "steps/commands/run.py": "def f():\n    from steps.cli import switch_option\n",
            # a driver reaching up into an engine
            "steps/drivers/store.py": "from steps.manifests import a\n",
            # the leaf contract importing a driver
            "steps/runtime.py": "from steps.drivers import store\n",
            # steps reaching into the control plane, and hera
            "steps/repository/repo.py": "import hera.workflows\nfrom workflows import x\n",
            # I/O in an engine and in a command
            "steps/quiesce/b.py": "import subprocess\nfrom pathlib import Path\nPath('x').write_text('')\nPath('y').exists()\n",
            "steps/commands/_helpers.py": "import os\nos.unlink('x')\nopen('y')\nos.path.exists('z')\nshutil.rmtree('w')\n",
            # the control plane importing a private module
            "workflows/x.py": "from steps.drivers.store import get\n",
        },
    )
    got = {(v.kind, v.file, v.what) for v in check_steps(root)}
    assert got == {
        ("layer", "steps/commands/run.py", "steps.cli"),
        ("layer", "steps/drivers/store.py", "steps.manifests.a"),
        ("leaf", "steps/runtime.py", "steps.drivers.store"),
        ("forbidden", "steps/repository/repo.py", "hera"),
        ("forbidden", "steps/repository/repo.py", "workflows"),
        ("io", "steps/quiesce/b.py", "import subprocess"),
        ("io", "steps/quiesce/b.py", "Path().write_text()"),
        ("io", "steps/quiesce/b.py", "Path().exists()"),
        ("io", "steps/commands/_helpers.py", "os.unlink()"),
        ("io", "steps/commands/_helpers.py", "open()"),
        ("io", "steps/commands/_helpers.py", "os.path.exists()"),
        ("io", "steps/commands/_helpers.py", "shutil.rmtree()"),
    }
    assert [(v.kind, v.what) for v in check_workflows(root)] == [("public", "steps.drivers.store")]


def test_a_fixed_known_violation_fails_the_check():
    found = [Violation("layer", "steps/commands/a.py", "steps.cli")]
    new, stale = _unexpected(
        found, {("steps/commands/a.py", "steps.cli"), ("steps/commands/b.py", "steps.cli")}
    )
    assert new == []
    assert stale == ["steps/commands/b.py: steps.cli"]
