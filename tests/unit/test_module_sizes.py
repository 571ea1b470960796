"""Every module of ``steps`` and ``workflows`` is at most MAX_LINES lines: a longer one is split by concern.

Modules still longer are listed in KNOWN_LONG_MODULES; the list only shrinks: a listed module that is
split (or gone) fails the test until its entry is removed, and no module may join it.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 800

KNOWN_LONG_MODULES: set[str] = set()


def line_counts() -> dict[str, int]:
    return {
        path.relative_to(ROOT).as_posix(): len(path.read_bytes().splitlines())
        for top in ("steps", "workflows")
        for path in sorted((ROOT / top).rglob("*.py"))
    }


def too_long(counts: dict[str, int]) -> dict[str, int]:
    return {rel: n for rel, n in counts.items() if n > MAX_LINES}


def test_no_module_is_longer_than_the_limit():
    long = too_long(line_counts())
    new = {rel: n for rel, n in long.items() if rel not in KNOWN_LONG_MODULES}
    assert new == {}, f"split these modules by concern (at most {MAX_LINES} lines each)"


def test_every_known_long_module_is_still_long():
    fixed = KNOWN_LONG_MODULES - set(too_long(line_counts()))
    assert fixed == set(), "now within the limit (or gone): remove from KNOWN_LONG_MODULES"


def test_the_check_counts_lines_and_sees_a_long_module():
    counts = {"steps/a.py": MAX_LINES, "steps/b.py": MAX_LINES + 1}
    assert too_long(counts) == {"steps/b.py": MAX_LINES + 1}
    assert len(line_counts()) > 100  # it reads both packages
