"""Staging images on local disk for ``registry-backup``: every manifest and blob below the images chosen,
fetched once each and checked against its digest, laid out as ``manifests/sha256/HEX`` and
``blobs/sha256/HEX`` with a ``registry.json`` description beside them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from steps.drivers.registry_client import RegistryClient
from steps.drivers.registry_reference import INDEX_TYPES, MAX_DEPTH, check_digest, children_of
from steps.errors import IntegrityError, printable

DESCRIPTION_FILE = "registry.json"
MANIFEST_DIR = "manifests"
BLOB_DIR = "blobs"


def staged_path(base: str, kind: str, digest: str) -> str:
    algorithm, _, hexdigest = digest.partition(":")
    return os.path.join(base, kind, algorithm, hexdigest)


@dataclass
class Stage:
    """What :func:`stage_images` put into its directory, and the statistics a summary shows."""

    dir: str
    repositories: dict[str, dict] = field(
        default_factory=dict
    )  # name → {"tags": {tag: digest}, "digests": [...]}
    manifests: dict[str, dict] = field(default_factory=dict)  # digest → {"media_type", "size"}
    blobs: dict[str, dict] = field(default_factory=dict)  # digest → {"size"}
    image_bytes: int = 0  # the sum of every image's size (what a copy without sharing would hold)
    reused: dict[str, dict] = field(default_factory=dict)  # blob digest → the parent snapshot's file node
    blobs_downloaded: int = 0
    bytes_downloaded: int = 0
    manifests_fetched: int = 0
    manifests_reused: int = 0

    def describe(self, registry: str, time: str, selection: dict) -> dict:
        return {
            "kind": "registry",
            "format": 1,
            "registry": registry,
            "time": time,
            "selection": selection,
            "repositories": self.repositories,
            "manifests": self.manifests,
            "blobs": self.blobs,
            "manifest_count": len(self.manifests),
            "blob_count": len(self.blobs),
            "blob_bytes": sum(b["size"] for b in self.blobs.values()),
            "image_bytes": self.image_bytes,
        }


def type_contradiction(doc, media_type: str) -> str | None:
    """Why the manifest document ``doc`` (parsed JSON) is not of ``media_type``, or None when it may be.

    The digest covers a manifest's bytes, not the media type a description lists beside it, and the
    type decides what the manifest refers to (an index's ``manifests``, an image's ``config`` and
    ``layers``). So the document's own ``mediaType``, when it has one, must be that type, and its shape
    must fit it: ``manifests`` for an index or list, ``config`` or ``layers`` (and no ``manifests``)
    for an image manifest."""
    if not isinstance(doc, dict):
        return "it is not a JSON object"
    own = doc.get("mediaType")
    if own is not None and own != media_type:
        return f"its own mediaType is {_printable_type(own)}"
    if media_type in INDEX_TYPES:
        if not isinstance(doc.get("manifests"), list) or "config" in doc or "layers" in doc:
            return "it is not shaped as an index (a manifests list, no config or layers)"
    elif "manifests" in doc or not ("config" in doc or "layers" in doc):
        return "it is not shaped as an image manifest (config and layers, no manifests list)"
    return None


def _printable_type(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return repr(printable(text[:100]))


def _fsync_write(path: str, data: bytes) -> None:
    with open(path, "xb") as f:
        f.write(data)


def stage_images(
    client: RegistryClient, roots: list[tuple], workdir: str, progress=None, parent=None
) -> Stage:
    """Every manifest and blob below ``roots`` (``(repository, tag or digest)``, or ``(repository,
    digest, tag)``) into ``workdir``:
    manifests as served, blobs streamed to files, each checked against its digest; a blob or manifest
    shared by several images (or repositories) is fetched once.

    ``parent`` (a :class:`steps.repository.registry_tree.RegistryParent`): what the previous snapshot
    of this registry holds. A blob it holds whole is not downloaded (its node goes to
    ``Stage.reused``); a manifest it holds is read from it and checked against its digest instead of
    fetched; a tag is resolved with a HEAD first, and its manifest fetched only when the parent does
    not hold the digest named."""
    stage = Stage(workdir)
    for kind in (MANIFEST_DIR, BLOB_DIR):
        os.makedirs(os.path.join(workdir, kind, "sha256"), exist_ok=True)

    def visit(repository: str, ref: str, path: tuple[str, ...]) -> tuple[str, int]:
        """Fetch manifest ``ref`` and what it refers to; returns its digest and the image's size."""
        if len(path) > MAX_DEPTH:
            raise IntegrityError(
                f"{client.where}: manifest {repository}@{ref}: nested deeper than {MAX_DEPTH}"
            )
        data = None
        if parent is not None:
            known = ref if ref.startswith("sha256:") else client.manifest_digest(repository, ref)
            held = parent.manifest(known) if known else None
            if held is not None:
                (data, media_type), digest = held, known
                stage.manifests_reused += 1
        if data is None:
            data, media_type, digest = client.get_manifest(repository, ref)
            stage.manifests_fetched += 1
        if digest in path:
            raise IntegrityError(
                f"{client.where}: manifest {repository}@{digest} refers to itself (through"
                f" {len(path) - path.index(digest)} level(s)); nothing was stored"
            )
        doing = f"manifest {repository}@{digest}"
        doc = json.loads(data)
        manifests, blobs = children_of(doc, media_type)
        total = len(data)
        for child in manifests:
            child_digest = check_digest(child.get("digest"), f"{client.where}: {doing}: a child manifest")
            if child_digest == digest or child_digest in path:
                raise IntegrityError(
                    f"{client.where}: {doing} refers to itself ({child_digest}); nothing was stored"
                )
            if child_digest in stage.manifests and child_digest not in path:
                total += stage.manifests[child_digest]["image_bytes"]
                continue
            _, size = visit(repository, child_digest, (*path, digest))
            total += size
        for blob in blobs:
            blob_digest = check_digest(blob.get("digest"), f"{client.where}: {doing}: a blob")
            size = blob.get("size")
            if not isinstance(size, int) or size < 0:
                raise IntegrityError(f"{client.where}: {doing}: blob {blob_digest} has no valid size")
            total += size
            if blob_digest in stage.blobs:
                continue
            node = parent.blob_node(blob_digest, size) if parent is not None else None
            if node is not None:
                stage.reused[blob_digest] = node
                stage.blobs[blob_digest] = {"size": size}
                continue
            target = staged_path(workdir, BLOB_DIR, blob_digest)
            got = client.blob_to_file(repository, blob_digest, target, size)
            stage.blobs[blob_digest] = {"size": got}
            stage.blobs_downloaded += 1
            stage.bytes_downloaded += got
            if progress is not None:
                progress.add(got)
        if digest not in stage.manifests:
            _fsync_write(staged_path(workdir, MANIFEST_DIR, digest), data)
            stage.manifests[digest] = {"media_type": media_type, "size": len(data), "image_bytes": total}
        return digest, total

    for root in roots:
        # (repository, tag or digest), or (repository, digest, tag): an image a pod runs, fetched by
        # its digest and recorded under the tag its spec names (never resolved again at the registry)
        repository, ref, tag = (*root, None)[:3]
        entry = stage.repositories.setdefault(repository, {"tags": {}, "digests": []})
        digest, total = visit(repository, ref, ())
        stage.image_bytes += total
        if tag:
            entry["tags"][tag] = digest
        elif ref.startswith("sha256:"):
            if digest not in entry["digests"]:
                entry["digests"].append(digest)
        else:
            entry["tags"][ref] = digest
    return stage


def write_description(workdir: str, desc: dict) -> None:
    with open(os.path.join(workdir, DESCRIPTION_FILE), "w", encoding="utf-8") as f:
        json.dump(desc, f, indent=1, sort_keys=True)
