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
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workflows.fleet.model import DEFAULT_RPO_S
from workflows.report.fleet_model import Placement, RepositoryRead, fold
from workflows.report.record_cache import RecordTable, current, list_records, local_fingerprint, refresh

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


class LazyRepository:
    """A repository opened on its first use: a read that rendered from the cache did not open it, and
    only a per-app report (which reads more than records) needs it."""

    def __init__(self, open_: Callable[[], Any]):
        self._open_ = open_
        self._repo: Any = None
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        with self._lock:
            if self._repo is None:
                self._repo = self._open_()
        return getattr(self._repo, name)


def read_repository(
    url: str,
    endpoint: str | None,
    *,
    cache_dir: Path | None,
    opener: Callable[[str, str | None], Any] | None = None,
    store_opener: Callable[[str, str | None], Any] | None = None,
) -> tuple[RepositoryRead, Any]:
    """One repository's facts per app (and the repository, or None when it could not be read). With a record cache, the repository's names are listed first (its ``config`` says
    its ID; no key is needed): when the saved table holds exactly those names and was read through
    the same URL, the facts come from it and the repository is not opened (no key derivation; the
    :class:`LazyRepository` returned opens it when something uses it). Else
    it is opened and only the names the table does not hold are read. ``opener(url, endpoint)`` opens
    a repository; ``store_opener(url, endpoint)`` its store (without an ``opener``: ``open_store``; with
    one and no ``store_opener``: every run opens the repository)."""
    from steps.api import open_repository_on, open_store, repository_id, repository_password

    t0 = time.monotonic()
    out = RepositoryRead(url, endpoint)
    repo = None
    store = table = listing = fingerprint = raw_config = None
    try:
        if opener is None:
            password = repository_password()  # (asked for first: a warm run needs it as a cold one does)
            store_opener = store_opener or open_store

            def opener(u: str, e: str | None) -> Any:
                return open_repository_on(store if store is not None else open_store(u, e), password)

        if cache_dir is not None and store_opener is not None:
            store = store_opener(url, endpoint)
            try:
                raw_config = store.get("config")
            except KeyError:  # (no repository here: opening it below says so)
                raw_config = None
        if raw_config is not None:
            rid = repository_id(raw_config, url)  # (its errors are the opening's)
            table = RecordTable.load(cache_dir, rid, None, out.warnings.append, url=url)
            t_list = time.monotonic()
            fingerprint = local_fingerprint(store)  # (before the names are listed)
            if table.entries and table.url == url:
                unchanged = fingerprint is not None and fingerprint == table.fingerprint
                if not unchanged:
                    listing = list_records(store)
                    unchanged = current(table, listing)
                if unchanged:  # nothing new, nothing vanished: the cache as it is
                    if fingerprint != table.fingerprint:
                        table.fingerprint = fingerprint
                        _reseal(table, cache_dir, url, out.warnings)
                    out.facts = fold(table)
                    out.list_seconds = time.monotonic() - t_list
                    out.records, out.cache_used = len(table.entries), True
                    out.seconds = time.monotonic() - t0
                    return out, LazyRepository(lambda: opener(url, endpoint))
        t_open = time.monotonic()
        repo = opener(url, endpoint)
        out.open_seconds = time.monotonic() - t_open
        if table is not None and table.repository_id == repo.config.id:
            # (loaded before the key was known: now also its seal under the repository key)
            table.check_repository(
                repo.keys, out.warnings.append, RecordTable.path(cache_dir, table.repository_id)
            )
        else:
            table = RecordTable.load(cache_dir, repo.config.id, repo.keys, out.warnings.append, url=url)
            listing = None
        stats = refresh(table, repo, listing=listing)
        if stats.damaged:
            fingerprint = None  # (damaged records are read, and reported, again: their names are listed)
        if fingerprint != table.fingerprint:
            table.fingerprint, table.changed = fingerprint, True
        if (table.changed or table.url != url) and cache_dir is not None:
            try:
                table.save(cache_dir, repo.keys, url)
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


def _reseal(table: RecordTable, cache_dir: Path, url: str, warnings: list[str]) -> None:
    try:
        table.reseal(cache_dir)
    except OSError as err:
        warnings.append(f"record cache of {url}: not written ({err.strerror or err})")


def read_repositories(
    repositories: Sequence[tuple[str, str | None]],
    *,
    cache_dir: Path | None,
    opener: Callable[[str, str | None], Any] | None = None,
    store_opener: Callable[[str, str | None], Any] | None = None,
    parallel: int = REPOSITORIES_PARALLEL,
) -> list[tuple[RepositoryRead, Any]]:
    """Each (url, endpoint) once, in the given order (see :func:`read_repository`)."""
    unique = list(dict.fromkeys(repositories))
    if not unique:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(unique)))) as pool:
        return list(
            pool.map(
                lambda r: read_repository(
                    r[0], r[1], cache_dir=cache_dir, opener=opener, store_opener=store_opener
                ),
                unique,
            )
        )
