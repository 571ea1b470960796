"""Reading a repository (and the schedules of policy files) into the report's model."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from steps.api import SnapflowError, open_repository, read_catalog
from workflows.report.model import DEFAULT_GRACE_S, DEFAULT_WINDOW_DAYS, Report, ScheduleInfo, build_report


def schedules_from_policies(paths: Sequence[str]) -> dict[tuple[str, str, str], ScheduleInfo]:
    from workflows.policy import load_policies

    out: dict[tuple[str, str, str], ScheduleInfo] = {}
    for item in load_policies(paths):
        p = item.policy
        if p.spec.schedule is None:
            continue
        s = p.spec.schedule
        out[(p.spec.cluster, p.namespace, p.app)] = ScheduleInfo(
            s.cron, s.timezone, float(s.starting_deadline_seconds or DEFAULT_GRACE_S), item.source
        )
    return out


def read_audit(repo, catalog, since: datetime) -> tuple[dict | None, list[dict], str | None]:
    """The audit trail's verification (the whole trail, bounded by the committed backups) and its
    records since ``since``, oldest first; ``(None, [], warning)`` when the trail cannot be read. A
    trail that does not verify is not an error here: the page shows it (the evidence page fails)."""
    from steps.api import audit_trail
    from workflows.report.evidence import audit_rows

    try:
        trail = audit_trail.read_trail(repo)
        verification = audit_trail.verify_trail(repo, trail, backups=catalog.commits.records)
    except (SnapflowError, OSError) as err:
        return None, [], f"the audit trail could not be read: {err}"
    return verification.to_dict(), audit_rows(trail, since), None


def collect(
    repo_url: str,
    endpoint: str | None = None,
    *,
    policies: Sequence[str] = (),
    now: float | None = None,
    window_days: float = DEFAULT_WINDOW_DAYS,
) -> Report:
    """Read the repository (password and S3 settings from the environment) into a :class:`Report`."""
    schedules = schedules_from_policies(policies) if policies else {}
    repo = open_repository(repo_url, endpoint)
    catalog = read_catalog(repo)
    backups = [r.data for r in catalog.commits.records]
    runs = [r.data for r in catalog.runs]
    snapshots = [{"id": s.id, **s.data} for s in catalog.snapshots.values()]
    known = {b.get("backup_id") for b in backups + runs} | {s.get("backup_id") for s in snapshots}
    damaged_by_backup = {
        bid: [d.key for d in catalog.damaged_of(bid)] for bid in known if bid and catalog.damaged_of(bid)
    }
    now = now if now is not None else datetime.now(UTC).timestamp()
    audit, rows, unread = read_audit(repo, catalog, datetime.fromtimestamp(now - window_days * 86400, UTC))
    # (the banner lists damaged records; their warning lines would only repeat it)
    warnings = [w for w in repo.warnings if not w.startswith("skipping damaged record ")]
    if unread:
        warnings.append(unread)
    return build_report(
        repo.url,
        backups,
        runs,
        snapshots,
        schedules=schedules,
        now=now,
        window_days=window_days,
        warnings=warnings,
        damaged=catalog.damage(),
        damaged_by_backup=damaged_by_backup,
        audit=audit,
        audit_rows=rows,
    )
