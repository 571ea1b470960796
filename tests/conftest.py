"""Test configuration: every module in tests/fixtures/ is loaded as a pytest plugin (shared fixtures)."""

import pkgutil
from pathlib import Path

pytest_plugins = [
    f"tests.fixtures.{m.name}"
    for m in pkgutil.iter_modules([str(Path(__file__).parent / "fixtures")])
    if not m.name.startswith("_")
]
