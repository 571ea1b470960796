"""Golden YAML of every example policy: the rendered manifests, compared after normalising (parsed,
templates sorted by name). Regenerate with `make regenerate-golden` (REGENERATE=1), never under CI."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

from tests.fixtures.policies import example_files
from workflows.render import render_files

GOLDEN = Path(__file__).parent
REGENERATE = os.environ.get("REGENERATE") == "1"


def normalise(text: str) -> list:
    """Parsed documents, with workflow templates sorted by name (their order carries no meaning)."""
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    for doc in docs:
        spec = doc.get("spec") if isinstance(doc, dict) else None
        for holder in (spec, (spec or {}).get("workflowSpec")):
            if isinstance(holder, dict) and isinstance(holder.get("templates"), list):
                holder["templates"] = sorted(holder["templates"], key=lambda t: t.get("name", ""))
    return docs


@pytest.mark.parametrize("example", example_files(), ids=lambda p: p.stem)
def test_rendered_manifests_match_the_golden_files(example):
    # GIVEN an example policy WHEN rendered
    files = render_files([example]).files()
    golden_dir = GOLDEN / example.stem
    if REGENERATE:
        if os.environ.get("CI"):
            pytest.fail("golden files are never regenerated under CI")
        shutil.rmtree(golden_dir, ignore_errors=True)
        for rel, text in files.items():
            target = golden_dir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
    # THEN every file matches its golden file, and no golden file is left over
    assert golden_dir.is_dir(), f"no golden files for {example.name}: run `make regenerate-golden`"
    expected = {str(p.relative_to(golden_dir)) for p in golden_dir.rglob("*.yaml")}
    assert set(files) == expected, "rendered files differ from the golden set: run `make regenerate-golden`"
    for rel, text in files.items():
        assert normalise(text) == normalise((golden_dir / rel).read_text()), f"{example.stem}/{rel} differs"
