"""Reading a fleet's repositories for its rows: records only, never packs, through the record cache.

:func:`placements` gives what a fleet file places on each cluster (each policy rendered as ``snapflow
render --fleet`` renders it: overrides applied, validated); :func:`read_repositories` reads every
repository once (several in parallel; password and S3 credentials from the environment, as for the
other commands), each through its :class:`~workflows.report.record_cache.RecordTable`, so a run opens
only records it has not seen. A repository that cannot be read becomes the error of its rows and
never stops the others. Called by ``snapflow report --fleet`` and ``snapflow fleet status --backups``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workflows.fleet.model import DEFAULT_RPO_S
from workflows.report.fleet_model import Placement, RepositoryRead, fold
from workflows.report.record_cache import RecordTable, refresh

# repositories read at once: each opening derives its key with scrypt (32 MiB, a core for a while)
REPOSITORIES_PARALLEL = max(1, min(4, os.cpu_count() or 1))


@dataclass
class FleetPlacements:
    placements: list[Placement] = field(default_factory=list)
    problems: dict[str, list[str]] = field(default_factory=dict)  # cluster -> why it has no placements
    warnings: list[str] = field(default_factory=list)


def placement_of(cluster: str, loaded: Any) -> Placement:
    """A policy (a LoadedPolicy) placed on ``cluster``: its repository, RPO target and Object Lock."""
    from workflows.schedule import CronSchedule

    p, spec = loaded.policy, loaded.policy.spec
    target = schedule = None
    if spec.schedule is not None:
        grace = float(spec.schedule.starting_deadline_seconds or 600)
        cron = CronSchedule.parse(spec.schedule.cron, spec.schedule.timezone)
        target = cron.interval_s(time.time() - 7 * 86400) + grace
        schedule = (spec.schedule.cron, spec.schedule.timezone, grace)
    lock = spec.repository.object_lock
    return Placement(
        cluster,
        p.namespace,
        p.app,
        spec.repository.url,
        spec.repository.endpoint,
        target if target is not None else DEFAULT_RPO_S,
        f"{lock.mode}, {lock.days} d" if lock is not None else "none",
        loaded.source,
        schedule,
    )


def placements(fleet: Any) -> FleetPlacements:
    from workflows.fleetdef.model import policies_for

    out = FleetPlacements()
    for cluster in fleet.clusters:
        placed = policies_for(fleet, cluster)
        out.warnings += placed.warnings
        if placed.problems:
            out.problems[cluster.name] = list(placed.problems)
            continue
        out.placements += [placement_of(cluster.name, item) for item in placed.loaded]
    for bad in fleet.bad_clusters:
        out.problems[bad.label] = list(bad.problems)
    return out


def _describe(err: Exception) -> str:
    text = " ".join(str(err).split())
    return (f"{type(err).__name__}: {text}" if text else type(err).__name__)[:300]


def read_repository(
    url: str,
    endpoint: str | None,
    *,
    cache_dir: Path | None,
    opener: Callable[[str, str | None], Any] | None = None,
) -> tuple[RepositoryRead, Any]:
    """One repository's facts per app (and the open repository, or None when it could not be read)."""
    from steps.api import open_repository

    t0 = time.monotonic()
    out = RepositoryRead(url, endpoint)
    try:
        repo = (opener or open_repository)(url, endpoint)
        out.open_seconds = time.monotonic() - t0
        table = RecordTable.load(cache_dir, repo.config.id, repo.keys, out.warnings.append)
        stats = refresh(table, repo)
        if table.changed and cache_dir is not None:
            try:
                table.save(cache_dir, repo.keys)
            except OSError as err:
                out.warnings.append(f"record cache of {url}: not written ({err.strerror or err})")
        out.facts = fold(table)
        out.list_seconds = stats.list_seconds
        out.records, out.read, out.damaged, out.cache_used = (
            stats.listed,
            stats.read,
            stats.damaged,
            stats.cached,
        )
        if stats.damaged:
            out.warnings.append(f"{url}: {stats.damaged} record(s) do not open (damaged)")
    except Exception as err:  # one repository's failure is its rows' error, never the others'
        out.error = _describe(err)
        repo = None
    out.seconds = time.monotonic() - t0
    return out, repo


def read_repositories(
    repositories: Sequence[tuple[str, str | None]],
    *,
    cache_dir: Path | None,
    opener: Callable[[str, str | None], Any] | None = None,
    parallel: int = REPOSITORIES_PARALLEL,
) -> list[tuple[RepositoryRead, Any]]:
    """Each (url, endpoint) once, in the given order."""
    unique = list(dict.fromkeys(repositories))
    if not unique:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(unique)))) as pool:
        return list(
            pool.map(lambda r: read_repository(r[0], r[1], cache_dir=cache_dir, opener=opener), unique)
        )
