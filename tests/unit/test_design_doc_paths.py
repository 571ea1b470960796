"""docs/design.md names modules and files of the code base (``steps/repository/pruner.py``,
``steps.repository.records.commit_backup``); each must exist, so that a move or a rename updates the
format's reference with it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DESIGN = ROOT / "docs" / "design.md"
FILE_NAMED = re.compile(r"\b((?:steps|workflows|tests|docs|bench|scripts|examples)/[\w./-]*\w)")
MODULE_NAMED = re.compile(r"\b((?:steps|workflows)(?:\.\w+)+)")


def _module_file(parts: list[str]) -> Path | None:
    base = ROOT.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _defines(path: Path, name: str) -> bool:
    """Whether module ``path`` defines or imports ``name`` at its top level (or as a class member)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names = [node.name]
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.asname or a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.Assign):
            names = [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names = [node.target.id]
        else:
            continue
        if name in names:
            return True
    return False


def missing_names(text: str) -> list[str]:
    """What ``text`` names that the code base does not hold."""
    missing = sorted({p for p in FILE_NAMED.findall(text) if not (ROOT / p).exists()})
    for dotted in sorted(set(MODULE_NAMED.findall(text))):
        parts = dotted.split(".")
        found = next(
            ((i, f) for i in range(len(parts), 0, -1) if (f := _module_file(parts[:i])) is not None), None
        )
        if found is None:
            missing.append(dotted)
            continue
        i, path = found
        rest = parts[i:]
        if rest and not _defines(path, rest[0]):
            missing.append(dotted)
    return missing


def test_every_module_and_file_design_md_names_exists():
    assert missing_names(DESIGN.read_text()) == []


def test_a_renamed_module_or_a_missing_function_is_found():
    text = (
        "in `steps/repository/prune.py` and `steps/repository/pruner.py`, through"
        " `steps.repository.records.commit_backup` and `steps.repository.records.no_such_function`,"
        " or `steps.repository.prune`"
    )
    assert missing_names(text) == [
        "steps/repository/prune.py",
        "steps.repository.prune",
        "steps.repository.records.no_such_function",
    ]
