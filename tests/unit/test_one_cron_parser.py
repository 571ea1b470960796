"""One cron parser: workflows/schedule.py. The policy's validator and the report parse schedules through
its CronSchedule, and no other module of steps/ or workflows/ holds a cron field table of its own (the
field bounds 0-59, 0-23, 1-31 and 1-12 together in one module, the mark of a second parser)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HOME = "workflows/schedule.py"
FIELD_BOUNDS = {59, 23, 31, 12}


def _int_constants(tree: ast.AST) -> set[int]:
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and type(n.value) is int}


def cron_tables(root: Path) -> list[str]:
    """The modules under ``root`` (steps/, workflows/) whose constants hold every cron field bound."""
    found = []
    for package in ("steps", "workflows"):
        for path in sorted((root / package).rglob("*.py")):
            if _int_constants(ast.parse(path.read_text(encoding="utf-8"))) >= FIELD_BOUNDS:
                found.append(path.relative_to(root).as_posix())
    return found


def _uses_cron_schedule(rel: str) -> bool:
    tree = ast.parse((ROOT / rel).read_text(encoding="utf-8"))
    return any(
        isinstance(n, ast.ImportFrom)
        and n.module == "workflows.schedule"
        and any(a.name == "CronSchedule" for a in n.names)
        for n in ast.walk(tree)
    )


def test_only_the_schedule_module_holds_a_cron_field_table():
    assert cron_tables(ROOT) == [HOME]


def test_a_second_parser_would_be_found(tmp_path):
    for package in ("steps", "workflows"):
        (tmp_path / package).mkdir()
    (tmp_path / HOME).write_text("BOUNDS = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 6)]\n")
    (tmp_path / "steps" / "report_cron.py").write_text("MINUTE, HOUR, DOM, MONTH = 59, 23, 31, 12\n")
    assert cron_tables(tmp_path) == ["steps/report_cron.py", HOME]


def test_the_policy_and_the_report_parse_schedules_with_the_schedule_module():
    assert _uses_cron_schedule("workflows/policy.py")
    assert _uses_cron_schedule("workflows/report/model.py")
