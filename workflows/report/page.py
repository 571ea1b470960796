"""The report's HTML page: one self-contained file (templates/reports/, Jinja2 with StrictUndefined
and autoescape; charts are inline SVG, no script, nothing fetched at view time), written atomically."""

from __future__ import annotations

from steps.api import jinja_env
from workflows.report.charts import (
    backups_chart,
    changes_text,
    human_bytes,
    human_duration,
    lock_text,
    ratio,
    rpo_chart,
    run_timeline,
    series_chart,
    when,
)
from workflows.report.model import Report, restore_commands

RUNS_WITH_TIMELINE = 12


def render_html(report: Report) -> str:
    env = jinja_env("reports", autoescape=True)
    template = env.get_template("report.html.j2")
    apps = []
    for app in report.apps:
        newest_first = list(reversed(app.runs))
        apps.append(
            {
                "app": app,
                "chart": backups_chart(app, report.generated),
                "freeze_chart": series_chart(
                    app,
                    lambda r: r.freeze_window_ms,
                    "Freeze window per backup",
                    lambda v: f"{v:.0f} ms" if v >= 10 else f"{v:.1f} ms",
                    report.generated,
                ),
                "duration_chart": series_chart(
                    app, lambda r: r.duration_s, "Backup duration", human_duration, report.generated
                ),
                "rpo_chart": rpo_chart(app),
                "runs": newest_first,
                "timelines": [(r, run_timeline(r)) for r in newest_first[:RUNS_WITH_TIMELINE]],
                "restore": restore_commands(app, report.repository),
            }
        )
    return template.render(
        report=report,
        apps=apps,
        generated=when(report.generated),
        changes_text=changes_text,
        human_bytes=human_bytes,
        lock_text=lock_text,
        human_duration=human_duration,
        ratio=ratio,
        when=when,
    )


def write_report(report: Report, path: str) -> None:
    """Write the page atomically (a reader never sees half a report)."""
    from steps.api import write_text_atomic

    write_text_atomic(path, render_html(report))
