"""The plan: what one protection policy asks the steps to do, as JSON handed to each step (``--plan FILE``).

The control plane (:mod:`workflows.pipeline`) writes it from a validated policy; the steps read it with
:func:`steps.drivers.files.load_plan` (reading the file is a driver's business: this module does no
I/O, and every layer may import it). It is plain data so the step image needs neither pydantic models of the policy nor
hera. Example::

    {
      "version": 1,
      "app": {"cluster": "prod-eu", "namespace": "shop", "name": "orders-db", "policy": "orders-db"},
      "repository": {"url": "s3://backups/shop", "endpoint": "https://minio.example:9000"},
      "consistency": "volume",
      "snapshot": {"driver": "csi", "class": "csi-hostpath-snapclass", "group_class": null,
                   "timeout_s": 600, "delete_after_copy": true},
      "capture": {"secrets": true},
      "freeze": {"deadline_s": 30, "keepalive_s": 5},
      "targets": [
        {"name": "orders-db-0", "hook": "postgresql",
         "pod": "orders-db-0", "container": "postgres",
         "params": {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "postgres",
                    "mode": "checkpoint"}}
      ],
      "volumes": [
        {"name": "data-orders-db-0", "pvc": "data-orders-db-0"}
      ]
    }

For a local run a target has ``"local": true`` (its hook runs as local processes) and a volume has
``"path": "/srv/pgdata"`` instead of ``"pvc"``; ``snapshot.driver`` is then ``"local"``.

A policy with ``spec.source`` has a plan with ``"source": {"kind": "etcd" | "registry" | "bucket",
"name": POLICY}`` and no targets or volumes (without a source, at least one volume is required).

``snapshot.class`` is the VolumeSnapshotClass (``null``: the CSI driver's default one);
``snapshot.group_class`` the VolumeGroupSnapshotClass used with ``"consistency": "group"`` (``null``:
the driver's default group class). ``capture.secrets`` says whether the backup exports the app's
Secrets (``preflight`` then checks the right to list them). Both keys are optional: absent, they
read as ``null`` and ``true``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from steps.errors import UsageError

PLAN_VERSION = 1
HOOK_KINDS = ("postgresql", "mysql", "mariadb", "mongodb", "redis", "fsfreeze", "custom", "none")
SNAPSHOT_DRIVERS = ("csi", "local")
CONSISTENCY_LEVELS = ("volume", "group")
SOURCE_KINDS = ("etcd", "registry", "bucket")


@dataclass(frozen=True)
class AppRef:
    namespace: str
    name: str
    cluster: str = "default"
    policy: str = ""

    def to_dict(self) -> dict[str, str]:
        """As the plan, the consistent-point record and the backup record write it."""
        return {
            "cluster": self.cluster,
            "namespace": self.namespace,
            "name": self.name,
            "policy": self.policy,
        }


@dataclass(frozen=True)
class RepositoryRef:
    url: str
    endpoint: str | None = None


@dataclass(frozen=True)
class Target:
    name: str
    hook: str
    pod: str | None = None
    container: str | None = None
    local: bool = False
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Volume:
    name: str
    pvc: str | None = None
    path: str | None = None
    role: str = "data"  # "data" or "wal" (PostgreSQL WAL on its own volume is cut after pg_backup_stop)
    block: bool = False
    target: str | None = None  # the target (pod) whose hook quiesces this volume; None = every target

    def to_dict(self) -> dict[str, Any]:
        """As the plan and the backup record write it."""
        return {
            "name": self.name,
            "pvc": self.pvc,
            "path": self.path,
            "role": self.role,
            "block": self.block,
            "target": self.target,
        }


@dataclass(frozen=True)
class SnapshotSpec:
    driver: str = "csi"
    snapshot_class: str | None = None  # VolumeSnapshotClass
    group_class: str | None = None  # VolumeGroupSnapshotClass (consistency: group)
    timeout_s: float = 600.0
    delete_after_copy: bool = True
    local_dir: str | None = None  # local driver: where snapshots/copies go (default: next to the volume)


@dataclass(frozen=True)
class CaptureSpec:
    secrets: bool = True  # the backup exports the app's Secrets (needs the right to list them)


@dataclass(frozen=True)
class FreezeSpec:
    deadline_s: float = 30.0
    keepalive_s: float = 5.0


@dataclass(frozen=True)
class SourceRef:
    """What a policy with ``spec.source`` protects instead of an app's volumes: the kind of the
    snapshot its backup stores (``tags["kind"]``) and the source's name (the policy's)."""

    kind: str
    name: str

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name}


@dataclass(frozen=True)
class Plan:
    app: AppRef
    repository: RepositoryRef | None
    targets: tuple[Target, ...]
    volumes: tuple[Volume, ...]
    consistency: str = "volume"
    snapshot: SnapshotSpec = field(default_factory=SnapshotSpec)
    freeze: FreezeSpec = field(default_factory=FreezeSpec)
    version: int = PLAN_VERSION
    capture: CaptureSpec = field(default_factory=CaptureSpec)
    source: SourceRef | None = None  # a source policy: no targets, no volumes, one source snapshot

    def to_dict(self) -> dict[str, Any]:
        out = {
            "version": self.version,
            "app": self.app.to_dict(),
            "repository": None
            if self.repository is None
            else {"url": self.repository.url, "endpoint": self.repository.endpoint},
            "consistency": self.consistency,
            "snapshot": {
                "driver": self.snapshot.driver,
                "class": self.snapshot.snapshot_class,
                "group_class": self.snapshot.group_class,
                "timeout_s": self.snapshot.timeout_s,
                "delete_after_copy": self.snapshot.delete_after_copy,
                "local_dir": self.snapshot.local_dir,
            },
            "freeze": {"deadline_s": self.freeze.deadline_s, "keepalive_s": self.freeze.keepalive_s},
            "capture": {"secrets": self.capture.secrets},
            "targets": [
                {
                    "name": t.name,
                    "hook": t.hook,
                    "pod": t.pod,
                    "container": t.container,
                    "local": t.local,
                    "params": dict(t.params),
                }
                for t in self.targets
            ],
            "volumes": [v.to_dict() for v in self.volumes],
        }
        if self.source is not None:  # an app's plan is written as before
            out["source"] = self.source.to_dict()
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def _req(d: dict, key: str, where: str, kind: type = str):
    if key not in d or d[key] is None:
        raise UsageError(f"{where}.{key}: required, expected {kind.__name__}")
    val = d[key]
    if kind is float and isinstance(val, int):
        val = float(val)
    if not isinstance(val, kind):
        raise UsageError(f"{where}.{key}: expected {kind.__name__}, got {type(val).__name__}")
    return val


def _obj(d: dict, key: str, where: str) -> dict:
    """An optional JSON object (absent or null: empty)."""
    val = d.get(key)
    if val is None:
        return {}
    if not isinstance(val, dict):
        raise UsageError(f"{where}: {key}: expected a JSON object, got {type(val).__name__}")
    return val


def _list(d: dict, key: str, where: str) -> list[dict]:
    """An optional list of JSON objects (absent or null: empty)."""
    val = d.get(key)
    if val is None:
        return []
    if not isinstance(val, list):
        raise UsageError(f"{where}: {key}: expected a list, got {type(val).__name__}")
    for i, item in enumerate(val):
        if not isinstance(item, dict):
            raise UsageError(f"{where}: {key}[{i}]: expected a JSON object, got {type(item).__name__}")
    return val


def _seconds(d: dict, key: str, default: float, where: str) -> float:
    val = d.get(key, default)
    if isinstance(val, bool) or not isinstance(val, int | float):
        raise UsageError(f"{where}.{key}: expected a number of seconds, got {val!r}")
    return float(val)


def plan_from_dict(d: dict[str, Any], source: str = "plan") -> Plan:
    if not isinstance(d, dict):
        raise UsageError(f"{source}: expected a JSON object")
    version = d.get("version", PLAN_VERSION)
    if version != PLAN_VERSION:
        raise UsageError(f"{source}: version: expected {PLAN_VERSION}, got {version!r}")
    app = _req(d, "app", source, dict)
    app_ref = AppRef(
        namespace=_req(app, "namespace", f"{source}: app"),
        name=_req(app, "name", f"{source}: app"),
        cluster=app.get("cluster") or "default",
        policy=app.get("policy") or "",
    )
    repo = _obj(d, "repository", source)
    repo_ref = (
        None
        if not repo
        else RepositoryRef(url=_req(repo, "url", f"{source}: repository"), endpoint=repo.get("endpoint"))
    )
    consistency = d.get("consistency", "volume")
    if consistency not in CONSISTENCY_LEVELS:
        raise UsageError(
            f"{source}: consistency: expected one of {', '.join(CONSISTENCY_LEVELS)}, got {consistency!r}"
        )
    snap = _obj(d, "snapshot", source)
    driver = snap.get("driver", "csi")
    if driver not in SNAPSHOT_DRIVERS:
        raise UsageError(
            f"{source}: snapshot.driver: expected one of {', '.join(SNAPSHOT_DRIVERS)}, got {driver!r}"
        )
    snapshot = SnapshotSpec(
        driver=driver,
        snapshot_class=snap.get("class"),
        group_class=snap.get("group_class"),
        timeout_s=_seconds(snap, "timeout_s", 600, f"{source}: snapshot"),
        delete_after_copy=bool(snap.get("delete_after_copy", True)),
        local_dir=snap.get("local_dir"),
    )
    fr = _obj(d, "freeze", source)
    freeze = FreezeSpec(
        deadline_s=_seconds(fr, "deadline_s", 30, f"{source}: freeze"),
        keepalive_s=_seconds(fr, "keepalive_s", 5, f"{source}: freeze"),
    )
    if freeze.deadline_s <= 0:
        raise UsageError(
            f"{source}: freeze.deadline_s: expected a positive number of seconds, got {freeze.deadline_s}"
        )
    if freeze.keepalive_s <= 0:
        raise UsageError(
            f"{source}: freeze.keepalive_s: expected a positive number of seconds, got {freeze.keepalive_s}"
        )
    cap = d.get("capture") or {}
    if not isinstance(cap, dict):
        raise UsageError(f"{source}: capture: expected a JSON object")
    if not isinstance(cap.get("secrets", True), bool):
        raise UsageError(f"{source}: capture.secrets: expected true or false, got {cap.get('secrets')!r}")
    capture = CaptureSpec(secrets=cap.get("secrets", True))
    targets = []
    for i, t in enumerate(_list(d, "targets", source)):
        where = f"{source}: targets[{i}]"
        hook = _req(t, "hook", where)
        if hook not in HOOK_KINDS:
            raise UsageError(f"{where}.hook: expected one of {', '.join(HOOK_KINDS)}, got {hook!r}")
        targets.append(
            Target(
                name=_req(t, "name", where),
                hook=hook,
                pod=t.get("pod"),
                container=t.get("container"),
                local=bool(t.get("local", False)),
                params=dict(t.get("params") or {}),
            )
        )
    volumes = []
    for i, v in enumerate(_list(d, "volumes", source)):
        where = f"{source}: volumes[{i}]"
        if not v.get("pvc") and not v.get("path"):
            raise UsageError(f"{where}: expected 'pvc' (Kubernetes) or 'path' (local)")
        volumes.append(
            Volume(
                name=_req(v, "name", where),
                pvc=v.get("pvc"),
                path=v.get("path"),
                role=v.get("role", "data"),
                block=bool(v.get("block", False)),
                target=v.get("target"),
            )
        )
        if volumes[-1].role not in ("data", "wal"):
            raise UsageError(f"{where}.role: expected data or wal, got {volumes[-1].role!r}")
    names = {t.name for t in targets}
    for i, vol in enumerate(volumes):
        if vol.target is not None and vol.target not in names:
            raise UsageError(
                f"{source}: volumes[{i}].target: expected one of the target names, got {vol.target!r}"
            )
    src = _obj(d, "source", source)
    source_ref = None
    if src:
        kind = _req(src, "kind", f"{source}: source")
        if kind not in SOURCE_KINDS:
            raise UsageError(
                f"{source}: source.kind: expected one of {', '.join(SOURCE_KINDS)}, got {kind!r}"
            )
        source_ref = SourceRef(kind=kind, name=_req(src, "name", f"{source}: source"))
    if source_ref is None and not volumes:
        raise UsageError(f"{source}: volumes: expected at least one volume (or a source)")
    if source_ref is not None and (volumes or targets):
        raise UsageError(f"{source}: source: expected no volumes and no targets with a source")
    return Plan(
        app=app_ref,
        repository=repo_ref,
        targets=tuple(targets),
        volumes=tuple(volumes),
        consistency=consistency,
        snapshot=snapshot,
        freeze=freeze,
        version=version,
        capture=capture,
        source=source_ref,
    )
