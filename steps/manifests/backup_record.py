"""The committed backup record as restore-app reads it: which backup, its manifests bundle, the volumes
to fill and what each mover adds to its restore (owner ID maps, PostgreSQL's backup_label).

A backup record is untrusted input (a compromised writer can commit one): each field is checked
before anything is created, and a snapshot ID lands on a mover's command line only as hexadecimal.
"""

from __future__ import annotations


def app_of(record) -> dict:
    """The ``app`` of a backup record ({} when missing or not a mapping: records are untrusted)."""
    app = record.get("app") if isinstance(record, dict) else None
    return app if isinstance(app, dict) else {}


def find_backup(repo, backup: str, app: str = "", namespace: str = "") -> dict:
    """The committed backup record (``latest``: the newest matching one)."""
    from steps.errors import PermanentError, UsageError

    if backup == "latest":
        records = [
            r
            for r in repo.list_records("backups")
            if isinstance(r.data, dict)
            and (not app or app_of(r.data).get("name") == app)
            and (not namespace or app_of(r.data).get("namespace") == namespace)
        ]
        repo.refuse_damaged_backups(
            "--backup latest",
            lambda d: (
                (not app or app_of(d).get("name") == app)
                and (not namespace or app_of(d).get("namespace") == namespace)
            ),
            way_out="pass --backup ID to restore a chosen one",
        )
        if not records:
            which = " ".join(
                x for x in (f"app {app}" if app else "", f"namespace {namespace}" if namespace else "") if x
            )
            raise UsageError(
                f"--backup latest: no committed backup{' of ' + which if which else ''} in {repo.url}"
            )
        return max(records, key=lambda r: str(r.data.get("time", ""))).data
    records = repo.list_records("backups", key=backup)
    if not records:
        repo.refuse_damaged_backups(f"--backup {backup}", key=backup, way_out="choose another backup")
    if records:
        if not isinstance(records[-1].data, dict):
            raise PermanentError(f"--backup: the record of backup {backup} is not a JSON object")
        return records[-1].data
    if any(s.backup_id == backup for s in repo.list_snapshots()):
        raise PermanentError(
            f"--backup: backup {backup} was never committed (its workflow or verify did not succeed): "
            "it is not a restore point"
        )
    raise UsageError(f"--backup: no backup {backup!r} in {repo.url}")


def load_bundle(repo, record: dict):
    from steps.errors import PermanentError
    from steps.manifests import bundle
    from steps.repository.snapshot_read import load_files

    sid = record.get("manifests")
    if sid and not isinstance(sid, str):
        raise PermanentError(f"backup {record.get('backup_id')}: manifests: expected a snapshot ID")
    if not sid:
        raise PermanentError(
            f"backup {record.get('backup_id')}: no manifests were captured with it; "
            "restore its volumes with `python -m steps restore`"
        )
    out = bundle.from_files(load_files(repo, sid), f"manifests snapshot {sid[:8]}")
    recorded = app_of(record).get("namespace") or ""
    if not isinstance(recorded, str):
        raise PermanentError(f"backup {record.get('backup_id')}: app.namespace: expected a string")
    if recorded and out.namespace and out.namespace != recorded:
        # the namespace a restore in place goes to must not be the manifests' own say
        raise PermanentError(
            f"backup {record.get('backup_id')}: its record names namespace {recorded}, its manifests "
            f"(snapshot {sid[:8]}) were captured in namespace {out.namespace}; a backup that disagrees "
            "with itself is not restored"
        )
    return out


def record_volumes(record: dict) -> list[dict]:
    """The backup record's volumes, checked: the record is untrusted (a compromised writer can commit
    one), and each snapshot ID lands on a mover's command line. Called before anything is created."""
    import re

    from steps.errors import PermanentError

    volumes = record.get("volumes") or []
    if not isinstance(volumes, list):
        volumes = [volumes]  # refused below
    for i, v in enumerate(volumes):
        if not (
            isinstance(v, dict)
            and isinstance(v.get("name"), str)
            and isinstance(v.get("pvc") or "", str)
            and isinstance(v.get("snapshot"), str)
            and re.fullmatch(r"[0-9a-f]{8,64}", v["snapshot"])
        ):
            raise PermanentError(
                f"backup {record.get('backup_id')}: volumes[{i}]: expected a name, a PVC and a snapshot ID "
                "(hexadecimal); the record is damaged or crafted"
            )
    return volumes


def volumes_to_fill(record: dict, pvcs: list[dict]) -> tuple[list[dict], list[str]]:
    """Each created PVC with the repository snapshot holding its data; notes for the rest."""
    volumes = record_volumes(record)
    by_pvc = {v.get("pvc"): v for v in volumes if v.get("pvc")}
    out, notes = [], []
    for pvc in pvcs:
        name, ns = pvc["metadata"]["name"], pvc["metadata"].get("namespace")
        vol = by_pvc.pop(name, None)
        if vol is None:
            notes.append(f"PersistentVolumeClaim/{name}: no volume data in the backup; created empty")
            continue
        out.append(
            {
                "pvc": name,
                "namespace": ns,
                "volume": vol["name"],
                "snapshot": vol["snapshot"],
                "volume_mode": (pvc.get("spec") or {}).get("volumeMode") or "Filesystem",
            }
        )
    for name, vol in by_pvc.items():
        notes.append(
            f"volume {vol['name']}: its PVC {name} was not captured (or not restored); data not restored"
        )
    return out, notes


def backup_labels_needed(record: dict) -> dict[str, list[tuple[str, dict]]]:
    """Volume name → [(data directory inside it, consistent-point target record)] for every PostgreSQL
    target copied in backup mode (see :func:`steps.quiesce.postgresql.backup_labels_needed`)."""
    from steps.quiesce.postgresql import backup_labels_needed as needed

    return needed(record)


def mover_options(item: dict, spec, labels: dict) -> list[str]:
    """What a mover adds to ``restore --repo R --snapshot ID --target T`` for one volume: the owner ID
    maps of the transforms, and ``--write-backup-label`` for a volume holding the data directory of a
    PostgreSQL copied in backup mode (the mover reads the label from the repository itself)."""
    out: list[str] = []
    for flag, ranges in (("--uid-map", spec.uid_map), ("--gid-map", spec.gid_map)):
        for r in ranges:
            out += [flag, str(r)]
    if item["volume"] in labels:
        out.append("--write-backup-label")
    return out


def label_report(item: dict, labels: dict) -> dict:
    from steps.quiesce.postgresql import label_files

    written = label_files(labels.get(item["volume"]) or [])
    return {"written": written} if written else {}
