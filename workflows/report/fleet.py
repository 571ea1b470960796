"""The fleet report: every cluster x app of a fleet file (or of several repositories) on one page.

:func:`fleet_report` places the fleet file's policies (:mod:`~workflows.report.fleet_reading`), reads
each repository once through the record cache, and builds the rows (:mod:`~workflows.report.fleet_model`);
with ``details`` it also writes, per repository, today's per-app report (:mod:`workflows.report`) into
a folder beside the page, and each row links to its app there. :func:`write_fleet_report` writes the
page, or the rows as JSON or CSV (:mod:`~workflows.report.fleet_page`). Called by ``snapflow report
--fleet`` / ``snapflow report --repo A --repo B``.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workflows.report.fleet_model import FleetRow, Placement, RepositoryRead, build_rows
from workflows.report.fleet_page import format_of, render_csv, render_html, render_json
from workflows.report.fleet_reading import placements, read_repositories


@dataclass
class FleetReport:
    title: str
    generated: float
    rows: list[FleetRow]
    repositories: list[RepositoryRead]
    problems: dict[str, list[str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0


def detail_name(url: str) -> str:
    """The per-app report's file name of a repository: readable, and unique by a hash of the URL."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", url.split("://", 1)[-1]).strip("-")[:60]
    return f"{slug}-{hashlib.sha256(url.encode()).hexdigest()[:8]}.html"


def _write_detail(
    repo: Any, read: RepositoryRead, mine: Sequence[Placement], now: float, days: float, path: Path
) -> None:
    from steps.api import read_catalog
    from workflows.report import ScheduleInfo, build_report, write_report

    schedules = {
        p.key: ScheduleInfo(p.schedule[0], p.schedule[1], p.schedule[2], p.policy) for p in mine if p.schedule
    }
    catalog = read_catalog(repo)
    snapshots = [{"id": s.id, **s.data} for s in catalog.snapshots.values()]
    report = build_report(
        repo.url,
        [r.data for r in catalog.commits.records],
        [r.data for r in catalog.runs],
        snapshots,
        schedules=schedules,
        now=now,
        window_days=days,
        warnings=[w for w in repo.warnings if not w.startswith("skipping damaged record ")],
        damaged=catalog.damage(),
    )
    write_report(report, str(path))


def fleet_report(
    *,
    fleet_path: str | None = None,
    repos: Sequence[str] = (),
    endpoint: str | None = None,
    now: float | None = None,
    cache_dir: Path | None = None,
    details_dir: Path | None = None,
    details_link: str = "",
    window_days: float = 30,
    opener: Callable[[str, str | None], Any] | None = None,
) -> FleetReport:
    """The rows of the fleet file's apps and of the repositories' records. ``details_dir``: write the
    per-app reports there, linked from the rows as ``details_link/FILE#APP``."""
    t0 = time.monotonic()
    now = time.time() if now is None else now
    placed: list[Placement] = []
    problems: dict[str, list[str]] = {}
    warnings: list[str] = []
    title = ", ".join(repos)
    if fleet_path:
        from workflows.fleetdef.model import load_fleet

        fleet = load_fleet(fleet_path)
        title = fleet.name
        warnings += fleet.warnings
        found = placements(fleet)
        placed, problems = found.placements, found.problems
        warnings += found.warnings
    wanted = [(p.repository, p.endpoint) for p in placed] + [(url, endpoint) for url in repos]
    results = read_repositories(wanted, cache_dir=cache_dir, opener=opener)
    reads = [read for read, _repo in results]
    for read, repo in results:
        warnings += read.warnings
        if details_dir is None or repo is None:
            continue
        name = detail_name(read.url)
        mine = [p for p in placed if p.repository == read.url]
        try:
            _write_detail(repo, read, mine, now, window_days, details_dir / name)
            read.detail = f"{details_link}/{name}" if details_link else name
        except Exception as err:  # the rows still come; the link is left out
            warnings.append(f"{read.url}: per-app report not written: {type(err).__name__}: {err}")
    rows = build_rows(placed, reads, now)
    return FleetReport(title, now, rows, reads, problems, warnings, time.monotonic() - t0)


def write_fleet_report(report: FleetReport, output: str, fmt: str | None = None) -> str:
    """Write the page (or the JSON / CSV rows) to ``output``; returns the format written."""
    fmt = format_of(output, fmt)
    common = {"title": report.title, "generated": report.generated, "repositories": report.repositories}
    if fmt == "json":
        text = render_json(report.rows, problems=report.problems, **common)
    elif fmt == "csv":
        text = render_csv(report.rows)
    else:
        text = render_html(report.rows, problems=report.problems, warnings=report.warnings, **common)
    from steps.api import write_text_atomic

    write_text_atomic(output, text)
    return fmt


def details_for(output: str) -> tuple[Path, str]:
    """Where the per-app reports of a page at ``output`` go, and the link to them from the page."""
    stem = os.path.splitext(os.path.basename(output))[0]
    folder = f"{stem}-detail"
    return Path(os.path.dirname(os.path.abspath(output))) / folder, folder


# -- the command line (``snapflow report``) -----------------------------------------------------------


def wants_fleet(args: Any) -> bool:
    """A fleet report: --fleet, several --repo, --format (one repository's rows), or rows as JSON / CSV."""
    fmt = format_of(args.output, args.format)
    return bool(args.fleet) or len(args.repo) != 1 or args.format is not None or fmt != "html"


def run_fleet_report(args: Any, now: float | None) -> int:
    import sys

    from steps.api import UsageError
    from workflows.report.record_cache import default_cache_dir

    if not args.fleet and not args.repo:
        raise UsageError("--repo: expected a repository URL (or --fleet FLEET)")
    if args.policy:
        raise UsageError("--policy: not used by a fleet report (the fleet file places the policies)")
    fmt = format_of(args.output, args.format)
    cache_dir = None if args.no_cache else Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    details_dir = link = None
    if fmt == "html" and not args.no_details:
        details_dir, link = details_for(args.output)
    report = fleet_report(
        fleet_path=args.fleet,
        repos=args.repo,
        endpoint=args.endpoint,
        now=now,
        cache_dir=cache_dir,
        details_dir=details_dir,
        details_link=link or "",
        window_days=args.days,
    )
    write_fleet_report(report, args.output, fmt)
    for w in report.warnings:
        print(f"warning: {w}", file=sys.stderr)
    for cluster, lines in report.problems.items():
        for line in lines:
            print(f"{cluster}: {line}", file=sys.stderr)
    c = {s: sum(1 for r in report.rows if r.rpo == s) for s in ("met", "late", "missing", "unknown")}
    records = sum(r.records for r in report.repositories)
    opened = sum(r.read for r in report.repositories)
    print(
        f"wrote {args.output}: {len(report.rows)} app(s) in {len(report.repositories)} repositories "
        f"(RPO met {c['met']}, late {c['late']}, missing {c['missing']}, unknown {c['unknown']}); "
        f"{records} records, {opened} read, the others from the cache; {report.seconds:.1f} s",
        file=sys.stderr,
    )
    opening = sum(r.open_seconds for r in report.repositories)
    listing = sum(r.list_seconds for r in report.repositories)
    print(
        f"time summed over the repositories: opening {opening:.1f} s, listing records {listing:.1f} s, "
        f"in all {sum(r.seconds for r in report.repositories):.1f} s",
        file=sys.stderr,
    )
    return 0
