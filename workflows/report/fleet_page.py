"""The fleet report's outputs: the HTML page (templates/reports/fleet.html.j2: one self-contained file
whose only script sorts and filters the table in place), and the same rows as JSON and CSV."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from steps.api import jinja_env
from workflows.report.charts import human_duration, when
from workflows.report.csv_export import csv_text
from workflows.report.fleet_model import COLUMNS, RPO_STATES, FleetRow, RepositoryRead, counts

FORMATS = ("html", "json", "csv")


def format_of(path: str, wanted: str | None) -> str:
    """``wanted``, else the output file's suffix (.json, .csv), else html."""
    if wanted:
        return wanted
    suffix = os.path.splitext(path)[1].lower().lstrip(".")
    return suffix if suffix in ("json", "csv") else "html"


def render_html(
    rows: Sequence[FleetRow],
    *,
    title: str,
    generated: float,
    repositories: Sequence[RepositoryRead],
    problems: dict[str, list[str]] | None = None,
    warnings: Sequence[str] = (),
) -> str:
    env = jinja_env("reports", autoescape=True)
    return env.get_template("fleet.html.j2").render(
        title=title,
        generated=when(generated),
        rows=rows,
        counts=counts(rows),
        repositories=repositories,
        problems=problems or {},
        warnings=list(warnings),
        rpo_rank={s: i for i, s in enumerate(("missing", "unknown", "late", "met"))},
        human_duration=human_duration,
        when=when,
    )


def render_json(
    rows: Sequence[FleetRow],
    *,
    title: str,
    generated: float,
    repositories: Sequence[RepositoryRead],
    problems: dict[str, list[str]] | None = None,
) -> str:
    doc: dict[str, Any] = {
        "fleet": title,
        "generated": when(generated, "%Y-%m-%dT%H:%M:%SZ").removesuffix(" UTC"),
        "counts": counts(rows),
        "repositories": [
            {"url": r.url, "endpoint": r.endpoint, "records": r.records, "error": r.error}
            for r in repositories
        ],
        "problems": problems or {},
        "rows": [r.to_dict() for r in rows],
    }
    return json.dumps(doc, indent=1) + "\n"


def render_csv(rows: Sequence[FleetRow]) -> str:
    """The rows as CSV a spreadsheet opens safely (a formula-like cell is quoted as text)."""
    out = []
    for row in rows:
        d = row.to_dict()
        d["anomalyReasons"] = "; ".join(d["anomalyReasons"])
        out.append([d[c] for c in COLUMNS])
    return csv_text(COLUMNS, out)


__all__ = [
    "FORMATS",
    "RPO_STATES",
    "format_of",
    "render_csv",
    "render_html",
    "render_json",
]
