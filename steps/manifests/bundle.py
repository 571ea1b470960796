"""The captured objects as files: one YAML document per object plus an index, ``capture.json``.

Layout (stored as one repository snapshot tagged ``kind=manifests`` and ``backup=<ID>``, encrypted and
deduplicated like volume data; ``python -m steps restore`` of that snapshot gives the same files)::

    capture.json                                   index: who/what/when, objects, dropped, unreadable
    objects/_cluster/Namespace/shop.yaml
    objects/shop/ConfigMap/db-config.yaml
    objects/shop/StatefulSet.apps/db.yaml
    objects/shop/Ingress.networking.k8s.io/web.yaml

:func:`to_files` and :func:`from_files` are exact inverses for the objects.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from steps.errors import PermanentError
from steps.manifests.objects import api_group

INDEX_FILE = "capture.json"
FORMAT = "snapflow-manifests"
VERSION = 1


@dataclass
class Bundle:
    objects: list[dict]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def namespace(self) -> str:
        return self.info.get("namespace", "")


def object_path(obj: dict) -> str:
    group = api_group(obj.get("apiVersion", ""))
    kind = obj.get("kind", "")
    m = obj.get("metadata") or {}
    ns = m.get("namespace") or "_cluster"
    folder = f"{kind}.{group}" if group else kind
    return f"objects/{ns}/{folder}/{m.get('name', '')}.yaml"


def to_files(objects: list[dict], info: dict[str, Any]) -> dict[str, bytes]:
    """Files for :func:`steps.repository.archiver.store_files`: the objects and the index."""
    import yaml

    files: dict[str, bytes] = {}
    entries = []
    for obj in objects:
        path = object_path(obj)
        if path in files:
            raise PermanentError(f"capture: two objects map to {path}")
        files[path] = yaml.safe_dump(obj, sort_keys=True, default_flow_style=False).encode()
        m = obj.get("metadata") or {}
        entries.append(
            {
                "path": path,
                "apiVersion": obj.get("apiVersion"),
                "kind": obj.get("kind"),
                "namespace": m.get("namespace"),
                "name": m.get("name"),
            }
        )
    index = {"format": FORMAT, "version": VERSION, **info, "objects": entries}
    files[INDEX_FILE] = (json.dumps(index, indent=2, sort_keys=True) + "\n").encode()
    return files


def from_files(files: dict[str, bytes], source: str = "manifests") -> Bundle:
    """The bundle back from its files; refuses an unknown format or version."""
    import yaml

    raw = files.get(INDEX_FILE)
    if raw is None:
        raise PermanentError(f"{source}: {INDEX_FILE} is missing; not a capture of Snapflow")
    try:
        index = json.loads(raw)
    except ValueError as err:
        raise PermanentError(f"{source}: {INDEX_FILE} is not valid JSON ({err})") from None
    if index.get("format") != FORMAT or index.get("version") != VERSION:
        raise PermanentError(
            f"{source}: {INDEX_FILE}: expected format {FORMAT} version {VERSION}, "
            f"got {index.get('format')!r} version {index.get('version')!r}"
        )
    objects = []
    for entry in index.get("objects") or []:
        data = files.get(entry["path"])
        if data is None:
            raise PermanentError(f"{source}: {entry['path']} is listed in {INDEX_FILE} but missing")
        objects.append(yaml.safe_load(data))
    info = {k: v for k, v in index.items() if k not in ("objects", "format", "version")}
    return Bundle(objects, info)
