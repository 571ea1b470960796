"""The slow marking of tests/conftest.py: every entry names a test or a path that exists (a renamed test
must not silently join the fast set), and a test is marked slow by what it uses."""

from __future__ import annotations

from pathlib import Path

from tests import conftest

TESTS = Path(conftest.__file__).parent


def test_every_listed_slow_test_exists():
    missing = [
        (module, name)
        for module, name in sorted(conftest.SLOW_TESTS)
        if f"def {name}(" not in (TESTS / module).read_text(encoding="utf-8")
    ]
    assert missing == []


def test_every_slow_path_matches_a_test_module():
    modules = [p.relative_to(TESTS).as_posix() for p in TESTS.rglob("test_*.py")]
    assert [p for p in conftest.SLOW_PATHS if not any(m.startswith(p) for m in modules)] == []


class _Item:
    def __init__(self, path: Path, name: str, fixturenames: tuple[str, ...] = ()):
        self.path, self.name, self.originalname, self.fixturenames = path, name, name, fixturenames


def test_a_test_is_slow_by_its_fixtures_its_path_or_its_listing():
    unit = TESTS / "unit" / "test_x.py"
    assert conftest.is_slow(_Item(unit, "test_a", ("tmp_path", "s3_server")))
    assert conftest.is_slow(_Item(TESTS / "scenarios" / "test_x.py", "test_a"))
    module, name = sorted(conftest.SLOW_TESTS)[0]
    assert conftest.is_slow(_Item(TESTS / module, name))
    assert not conftest.is_slow(_Item(unit, "test_a", ("tmp_path", "monkeypatch")))
