"""What a repository holds per committed backup, damaged records included: for listings and reports.

Provides :func:`read_catalog` (one reading of the ``backups``, ``snapshots`` and ``runs`` records into a
:class:`Catalog`), :func:`describe` (one backup as a plain dict: app, verdict and reasons, freeze
window, verify, volumes with their snapshots and sizes, and what about it is damaged or missing) and
:meth:`Catalog.damage` (every damaged record and every snapshot a committed backup names that is gone,
one line each). Called by the ``backups`` step and by ``snapflow report``.

Nothing is skipped quietly: a backup record that does not open is listed as damaged (with its content
when the bytes are an intact record under a wrong name), a volume whose snapshot record is damaged or
missing says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .damage import DamagedRecord
from .records import Record, Snapshot, referenced_snapshots
from .repo import Repository
from .restore_points import Commits


@dataclass
class Catalog:
    commits: Commits
    snapshots: dict[str, Snapshot]  # intact snapshot records by ID
    damaged_snapshots: list[DamagedRecord]
    damaged_runs: list[DamagedRecord]
    group_of: Any  # backup ID -> record group
    present: set[str] = field(default_factory=set)  # every snapshot name listed (damaged ones too)
    runs: list[Record] = field(default_factory=list)  # every run record that opens

    def damaged_of(self, backup_id: str) -> list[DamagedRecord]:
        """The damaged backup and run records in the groups of ``backup_id``."""
        group = self.group_of(backup_id)
        return [d for d in self.commits.damaged + self.damaged_runs if d.group == group]

    def snapshot_state(self, sid: str) -> tuple[str, DamagedRecord | None]:
        """``ok``, ``damaged`` (its record does not open) or ``missing``."""
        if sid in self.snapshots:
            return "ok", None
        for d in self.damaged_snapshots:
            if d.id == sid:
                return "damaged", d
        return "missing", None

    def damage(self) -> list[dict[str, Any]]:
        """Every damaged record (snapshots, backups, runs) and every missing snapshot a committed backup
        names, as ``{"kind", "key", "problem", ...}``, backups first."""
        owners = {r.key_group: r.data.get("backup_id") for r in self.runs if r.key_group}
        out = []
        for d in self.commits.damaged + self.damaged_snapshots + self.damaged_runs:
            entry = d.to_dict()
            if not entry.get("backup_id") and owners.get(d.group):
                entry["backup_id"] = owners[d.group]  # (the run records of the same group say whose)
            out.append(entry)
        for rec in self.commits.records:
            for sid in sorted(referenced_snapshots(rec.data) - self.present):
                out.append(
                    {
                        "kind": "snapshots",
                        "key": f"snapshots/{sid}",
                        "problem": f"missing, but backup {rec.data.get('backup_id')} names it (deleted outside"
                        " Snapflow?)",
                        "backup_id": rec.data.get("backup_id"),
                    }
                )
        return out


def read_catalog(repo: Repository) -> Catalog:
    """Backup records first, then snapshot records, then one more listing of snapshot names (so that a
    backup committed while reading does not look as if it named a missing snapshot), then run records."""
    commits = repo.commits()
    snapshots = {s.id: s for s in repo.list_snapshots()}
    damaged_snapshots = repo.damaged_records("snapshots")
    present = {i.key.rsplit("/", 1)[-1] for i in repo.store.list("snapshots/")}
    runs, damaged_runs = repo.scan_records("runs")
    return Catalog(commits, snapshots, damaged_snapshots, damaged_runs, repo.key_group, present, runs)


def _iso_min_max(values: list[Any]) -> tuple[str | None, str | None]:
    times = [v for v in values if isinstance(v, str) and v]
    return (min(times), max(times)) if times else (None, None)


def identity(data: dict) -> dict[str, str | None]:
    app = data.get("app") if isinstance(data.get("app"), dict) else {}
    return {
        "cluster": app.get("cluster") or data.get("cluster"),
        "namespace": app.get("namespace") or data.get("namespace"),
        "app": app.get("name")
        or app.get("app")
        or (data.get("app") if isinstance(data.get("app"), str) else None),
        "policy": app.get("policy") or data.get("policy"),
    }


def describe(catalog: Catalog, record_key: str, data: dict) -> dict[str, Any]:
    """One backup record as a plain dict (see the module docstring); ``problems`` lists what about it
    is damaged or missing."""
    bid = data.get("backup_id")
    consistency = data.get("consistency") if isinstance(data.get("consistency"), dict) else {}
    targets = ((consistency.get("timeline") or {}).get("targets")) or []
    quiesced, _ = _iso_min_max([t.get("quiesced") for t in targets if isinstance(t, dict)])
    _, released = _iso_min_max([t.get("released") for t in targets if isinstance(t, dict)])
    problems: list[str] = []
    volumes = []
    size = added = 0
    for v in data.get("volumes") or []:
        if not isinstance(v, dict):
            continue
        sid = v.get("snapshot")
        state, damaged = catalog.snapshot_state(sid) if isinstance(sid, str) else ("missing", None)
        summary = (catalog.snapshots[sid].data.get("summary") or {}) if state == "ok" else {}
        bytes_total = summary.get("bytes_total", v.get("bytes"))
        bytes_added = summary.get("bytes_added")
        size += int(bytes_total or 0)
        added += int(bytes_added or 0)
        volumes.append(
            {
                "name": v.get("name") or v.get("volume"),
                "pvc": v.get("pvc"),
                "path": v.get("path"),
                "snapshot": sid,
                "files": summary.get("files", v.get("files")),
                "bytes": bytes_total,
                "bytes_added": bytes_added,
                "state": state,
            }
        )
        if state == "damaged" and damaged is not None:
            problems.append(
                f"volume {volumes[-1]['name']}: snapshot record {damaged.key} is damaged ({damaged.problem})"
            )
        elif state == "missing":
            problems.append(f"volume {volumes[-1]['name']}: snapshot record snapshots/{sid} is missing")
    manifests = None
    if isinstance(data.get("manifests"), str):
        state, damaged = catalog.snapshot_state(data["manifests"])
        manifests = {"snapshot": data["manifests"], "state": state}
        if state != "ok":
            problems.append(
                f"manifests: snapshot record {damaged.key if damaged else 'snapshots/' + data['manifests']} is {state}"
            )
    if bid:
        group = catalog.group_of(bid)
        for d in catalog.damaged_runs:
            if d.group == group:
                problems.append(f"run record {d.key} is damaged ({d.problem})")
        for d in catalog.commits.damaged:
            if d.group == group and d.key != record_key:
                problems.append(f"another backup record {d.key} of it is damaged ({d.problem})")
    verify = data.get("verify") if isinstance(data.get("verify"), dict) else None
    return {
        "backup_id": bid,
        "record": record_key,
        "time": data.get("time"),
        **identity(data),
        "consistency": consistency.get("verdict"),
        "reasons": [str(r) for r in consistency.get("reasons") or []],
        "recovery": consistency.get("recovery") or {},
        "freeze_window_ms": consistency.get("freeze_window_ms"),
        "freeze": {"quiesced": quiesced, "released": released} if quiesced or released else None,
        "verify": verify,
        "volumes": volumes,
        "manifests": manifests,
        "size_bytes": size,
        "added_bytes": added,
        "snapshot_driver": data.get("snapshot_driver"),
        "targets": [t for t in data.get("targets") or [] if isinstance(t, dict)],
        "workflow_status": data.get("workflow_status"),
        "damaged": False,
        "problems": problems,
    }


def describe_damaged(catalog: Catalog, d: DamagedRecord) -> dict[str, Any]:
    """A backup record that does not open, listed as damaged: with what its bytes say when they are an
    intact record under a wrong name, else only where it is and why it does not open."""
    if d.data is not None:
        out = describe(catalog, d.key, d.data)
    else:
        out = {"backup_id": None, "record": d.key, "time": None, "cluster": None, "namespace": None,
               "app": None, "policy": None, "consistency": None, "reasons": [], "volumes": [],
               "size_bytes": None, "problems": []}  # fmt: skip
    out["damaged"] = True
    out["problem"] = d.problem
    if d.true_id:
        out["belongs_under"] = d.true_key
    out["problems"] = [f"backup record {d.key} is damaged ({d.problem})", *out["problems"]]
    return out


def list_backups(catalog: Catalog, filters: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Every committed backup (oldest first) and every damaged backup record, described; ``filters``
    (cluster, namespace, app, policy) keep matching ones, and every damaged record that cannot be read
    (it may be any backup)."""
    filters = {k: v for k, v in (filters or {}).items() if v}
    out = [describe(catalog, r.key, r.data) for r in catalog.commits.records]
    out += [describe_damaged(catalog, d) for d in catalog.commits.damaged]

    def keep(item: dict) -> bool:
        if item.get("damaged") and item.get("backup_id") is None:
            return True
        return all(item.get(k) == v for k, v in filters.items())

    def when(item: dict) -> str:
        t = item.get("time")
        return t if isinstance(t, str) else datetime.max.isoformat()

    return sorted((i for i in out if keep(i)), key=lambda i: (when(i), i["record"]))
