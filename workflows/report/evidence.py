"""The compliance evidence page: one dated, self-contained HTML document (printable to PDF) saying, for a
period, for every protected app: its policy, whether its RPO was met, the restore tests that passed,
immutability (versions and Object Lock retention of its newest backup record), encryption, and whether
the repository's audit trail verifies, with the audit records of the period.

:func:`collect_evidence` reads one repository (opened once) into an :class:`Evidence`;
:func:`render_evidence` / :func:`write_evidence` make the page (templates/reports/evidence.html.j2,
Jinja2 with autoescape; no script, nothing fetched). :func:`audit_rows` gives the audit trail's rows for
any page that shows them. Called by ``snapflow report --evidence``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from steps.api import UsageError, audit_trail, jinja_env, open_repository, read_catalog
from steps.errors import IntegrityError
from workflows.report.charts import human_duration
from workflows.report.model import AppReport, build_report, parse_time

MAX_AUDIT_ROWS = 2000


def _iso(t: float | datetime | None) -> str | None:
    if t is None:
        return None
    if isinstance(t, float | int):
        t = datetime.fromtimestamp(t, UTC)
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _what_text(what: dict[str, Any]) -> str:
    """An audit record's ``what`` in one short line (IDs shortened)."""
    parts = []
    for k, v in what.items():
        if v in (None, "", [], {}):
            continue
        if isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v):
            v = v[:12]
        elif isinstance(v, list):
            v = ", ".join(str(x)[:40] for x in v[:5]) + (f" (+{len(v) - 5})" if len(v) > 5 else "")
        elif isinstance(v, dict):
            v = ", ".join(f"{a}={b}" for a, b in v.items() if b not in (None, ""))
        parts.append(f"{k}={v}")
    text = "; ".join(parts)
    return text if len(text) <= 240 else text[:237] + "..."


def audit_rows(trail, since: datetime | None = None, app: str | None = None) -> list[dict[str, Any]]:
    """The audit trail's records (oldest first, from ``since``, of ``app``) as table rows: ``seq``,
    ``time``, ``action``, ``who``, ``app``, ``result``, ``what`` (one line), ``id`` (the object's name)."""
    return [
        {
            "seq": e.seq,
            "time": e.time,
            "action": e.action,
            "who": e.actor(),
            "app": e.app_name(),
            "result": e.result,
            "what": _what_text(e.what),
            "id": e.id,
        }
        for e in audit_trail.select(trail, since, app)
    ]


@dataclass
class AppEvidence:
    cluster: str
    namespace: str
    name: str
    policy: str
    schedule: str | None
    retention: str | None
    backups: int  # committed in the period
    last_backup: str | None
    rpo_met: bool | None  # None: no schedule known
    rpo: str
    restore_tests: int
    restore_tests_passed: int
    last_restore_test_passed: str | None
    immutability: str
    immutable: bool
    audit_records: int
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class Evidence:
    repository: str
    repository_id: str
    generated: str
    since: str
    until: str
    period_days: float
    apps: list[AppEvidence]
    encryption: str
    keys: int
    versioning: bool
    audit: dict[str, Any]  # the trail's verification (audit_trail.Verification.to_dict())
    audit_rows: list[dict[str, Any]]
    audit_rows_total: int
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.audit["ok"] and all(a.ok for a in self.apps)


def _policies(paths: Sequence[str]) -> dict[tuple[str, str, str], Any]:
    from workflows.policy import load_policies

    return {(p.spec.cluster, p.namespace, p.app): p for p in (i.policy for i in load_policies(paths))}


def _retention_text(policy) -> str | None:
    rules = policy.spec.retention.rules() if policy is not None and policy.spec.retention else []
    return ", ".join(f"keep {unit} {n}" for unit, n in rules) or None


def _immutability(repo, record_key: str | None) -> tuple[str, bool]:
    """How the newest backup record of an app is protected: its Object Lock retention, or why it is not."""
    store = repo.store
    if not store.versioning_enabled():
        return "no: the bucket keeps no object versions", False
    if record_key is None:
        return "versioned bucket; no backup record to check", False
    info = store.stat(record_key)
    retention = store.get_retention(record_key, info.version_id) if info is not None else None
    if retention is None:
        return "versioned bucket; newest backup record not locked", False
    until = retention.until
    if until <= store.server_time():
        return f"versioned bucket; lock of the newest backup record expired {_iso(until)}", False
    return f"Object Lock {retention.mode} until {_iso(until)}", True


def _rpo(app: AppReport) -> tuple[bool | None, str]:
    rpo = app.rpo
    if rpo.schedule is None:
        return None, "no schedule known (pass the policy with --policy)"
    counts = ", ".join(f"{n} {k}" for k, n in rpo.counts.items() if n)
    text = f"target {human_duration(rpo.target_s)}, worst gap {human_duration(rpo.worst_gap_s)}; slots: {counts or 'none'}"
    return rpo.ok, text


def collect_evidence(
    repo_url: str,
    endpoint: str | None = None,
    *,
    policies: Sequence[str] = (),
    since: datetime,
    now: datetime | None = None,
) -> Evidence:
    """Read the repository (password and S3 settings from the environment) for the period ``since`` to
    ``now``; the audit trail is verified whole, its rows are those of the period."""
    now = now or datetime.now(UTC)
    by_app = _policies(policies) if policies else {}
    repo = open_repository(repo_url, endpoint)
    catalog = read_catalog(repo)
    trail = audit_trail.read_trail(repo)
    verification = audit_trail.verify_trail(repo, trail, backups=catalog.commits.records)
    from workflows.report.reading import schedules_from_policies

    window_days = max((now - since).total_seconds() / 86400, 1 / 24)
    report = build_report(
        repo.url,
        [r.data for r in catalog.commits.records],
        [r.data for r in catalog.runs],
        [{"id": s.id, **s.data} for s in catalog.snapshots.values()],
        schedules=schedules_from_policies(policies) if policies else {},
        now=now.timestamp(),
        window_days=window_days,
        damaged=catalog.damage(),
    )
    newest_record: dict[str, tuple[str, str]] = {}
    for rec in catalog.commits.records:
        a = rec.data.get("app") or {}
        k = f"{a.get('cluster')}/{a.get('namespace')}/{a.get('name')}"
        t = str(rec.data.get("time") or "")
        if k not in newest_record or t > newest_record[k][0]:
            newest_record[k] = (t, rec.key)
    tests = [r.data for r in catalog.runs if r.data.get("name") == "restore-test"]
    start = since.timestamp()
    apps = []
    for app in report.apps:
        policy = by_app.get(app.key)
        in_period = [r for r in app.backups if (r.point_in_time or r.started or 0) >= start]
        rpo_met, rpo_text = _rpo(app)
        mine = [
            t
            for t in tests
            if (t.get("app") or {}).get("name") == app.name
            and (t.get("app") or {}).get("namespace") == app.namespace
            and (parse_time(t.get("time")) or 0) >= start
        ]
        passed = [t for t in mine if t.get("ok")]
        key = f"{app.cluster}/{app.namespace}/{app.name}"
        immutability, immutable = _immutability(repo, newest_record.get(key, ("", None))[1])
        records = audit_trail.select(trail, since, f"{app.namespace}/{app.name}")
        problems = []
        if not in_period:
            problems.append("no backup committed in the period")
        if rpo_met is False:
            problems.append("RPO not met")
        if mine and not passed:
            problems.append("no restore test passed")
        elif not mine:
            problems.append("no restore test in the period")
        if not immutable:
            problems.append("not immutable")
        apps.append(
            AppEvidence(
                cluster=app.cluster,
                namespace=app.namespace,
                name=app.name,
                policy=", ".join(app.policies) or (policy.name if policy is not None else "—"),
                schedule=f"{policy.spec.schedule.cron} ({policy.spec.schedule.timezone})"
                if policy is not None and policy.spec.schedule
                else (app.rpo.schedule or None),
                retention=_retention_text(policy),
                backups=len(in_period),
                last_backup=_iso(app.last_backup.point_in_time) if app.last_backup else None,
                rpo_met=rpo_met,
                rpo=rpo_text,
                restore_tests=len(mine),
                restore_tests_passed=len(passed),
                last_restore_test_passed=max((str(t.get("time")) for t in passed), default=None),
                immutability=immutability,
                immutable=immutable,
                audit_records=len(records),
                problems=problems,
            )
        )
    keys = [k for k in repo.list_keys() if not k.get("damaged")]
    kdf = keys[0]["kdf"] if keys else {}
    rows = audit_rows(trail, since)
    return Evidence(
        repository=repo.url,
        repository_id=repo.config.id,
        generated=_iso(now) or "",
        since=_iso(since) or "",
        until=_iso(now) or "",
        period_days=round((now - since).total_seconds() / 86400, 2),
        apps=apps,
        encryption=(
            "AES-256-GCM with a key per object (HKDF-SHA256), keyed BLAKE3 names; master key wrapped by"
            f" scrypt (N={kdf.get('n')}, r={kdf.get('r')}, p={kdf.get('p')})"
        ),
        keys=len(keys),
        versioning=repo.store.versioning_enabled(),
        audit=verification.to_dict(),
        audit_rows=rows[-MAX_AUDIT_ROWS:],
        audit_rows_total=len(rows),
        warnings=[w for w in repo.warnings if not w.startswith("skipping damaged record ")],
    )


def render_evidence(evidence: Evidence) -> str:
    env = jinja_env("reports", autoescape=True)
    return env.get_template("evidence.html.j2").render(ev=evidence)


def write_evidence(evidence: Evidence, path: str) -> None:
    """Write the page atomically (a reader never sees half of it)."""
    from steps.api import write_text_atomic

    write_text_atomic(path, render_evidence(evidence))


def parse_since(value: str | None, now: datetime, days: float) -> datetime:
    """``--since``: an ISO time, or a duration back from ``now`` (``90d``, ``12w``, ``36h``); else ``days``."""
    from datetime import timedelta

    if not value:
        return now - timedelta(days=days)
    text = value.strip()
    units = {"h": 3600, "d": 86400, "w": 7 * 86400}
    if text[-1:] in units and text[:-1].replace(".", "", 1).isdigit() and float(text[:-1]) > 0:
        return now - timedelta(seconds=float(text[:-1]) * units[text[-1]])
    t = parse_time(text)
    if t is None or t >= now.timestamp():
        raise UsageError(
            f"--since: expected an ISO time before now like 2026-01-01T00:00:00Z, or a duration like 90d, got {value!r}"
        )
    return datetime.fromtimestamp(t, UTC)


def run_evidence(args, now: float | None) -> int:
    """``snapflow report --evidence``: write the page; exit 3 naming the first break when the audit trail
    does not verify (the page, written first, shows every break)."""
    import sys

    if len(args.repo) != 1:
        raise UsageError(f"--evidence: expected exactly one --repo, got {len(args.repo)}")
    when = datetime.fromtimestamp(now, UTC) if now is not None else datetime.now(UTC)
    since = parse_since(args.since, when, args.days)
    evidence = collect_evidence(args.repo[0], args.endpoint, policies=args.policy, since=since, now=when)
    write_evidence(evidence, args.output)
    for w in evidence.warnings:
        print(f"warning: {w}", file=sys.stderr)
    flagged = sum(1 for a in evidence.apps if a.problems)
    print(
        f"wrote {args.output}: evidence for {since:%Y-%m-%d} to {when:%Y-%m-%d}, {len(evidence.apps)} app(s),"
        f" {flagged} with findings, audit trail {'verified' if evidence.audit['ok'] else 'BROKEN'}",
        file=sys.stderr,
    )
    if not evidence.audit["ok"]:
        findings = evidence.audit["findings"]
        if findings:
            raise IntegrityError(audit_trail.describe([audit_trail.Finding(**f) for f in findings]))
        raise IntegrityError(f"audit trail: {evidence.audit['replaced'][0]}")
    return 0
