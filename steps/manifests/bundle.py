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
    """The bundle back from its files; refuses an unknown format or version, and objects without the
    shape a restore relies on (a mapping with apiVersion, kind and metadata.name)."""
    raw = files.get(INDEX_FILE)
    if raw is None:
        raise PermanentError(f"{source}: {INDEX_FILE} is missing; not a capture of Snapflow")
    try:
        index = json.loads(raw)
    except ValueError as err:
        raise PermanentError(f"{source}: {INDEX_FILE} is not valid JSON ({err})") from None
    if not isinstance(index, dict):
        raise PermanentError(f"{source}: {INDEX_FILE}: expected a JSON object")
    if index.get("format") != FORMAT or index.get("version") != VERSION:
        raise PermanentError(
            f"{source}: {INDEX_FILE}: expected format {FORMAT} version {VERSION}, "
            f"got {index.get('format')!r} version {index.get('version')!r}"
        )
    entries = index.get("objects") or []
    if not isinstance(entries, list):
        raise PermanentError(f"{source}: {INDEX_FILE}: objects: expected a list")
    if not isinstance(index.get("namespace", ""), str):
        raise PermanentError(f"{source}: {INDEX_FILE}: namespace: expected a string")
    objects = []
    for i, entry in enumerate(entries):
        path = entry.get("path") if isinstance(entry, dict) else None
        if not isinstance(path, str) or not path:
            raise PermanentError(f"{source}: {INDEX_FILE}: objects[{i}]: expected an entry with a path")
        data = files.get(path)
        if data is None:
            raise PermanentError(f"{source}: {path} is listed in {INDEX_FILE} but missing")
        objects.append(_object(data, f"{source}: {path}"))
    info = {k: v for k, v in index.items() if k not in ("objects", "format", "version")}
    return Bundle(objects, info)


def _object(data: bytes, where: str) -> dict:
    """One captured object, checked for the shape every later step relies on (the bundle is untrusted:
    a repository may have been written by a compromised writer)."""
    import yaml

    try:
        obj = yaml.safe_load(data)
    except yaml.YAMLError as err:
        raise PermanentError(f"{where}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(obj, dict):
        raise PermanentError(f"{where}: expected a Kubernetes object (a mapping)")
    meta = obj.get("metadata")
    for key, value in (("apiVersion", obj.get("apiVersion")), ("kind", obj.get("kind"))):
        if not isinstance(value, str) or not value:
            raise PermanentError(f"{where}: {key}: expected a non-empty string")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
        raise PermanentError(f"{where}: metadata.name: expected a non-empty string")
    if not isinstance(meta.get("namespace") or "", str):
        raise PermanentError(f"{where}: metadata.namespace: expected a string")
    return obj
