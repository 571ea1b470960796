"""Pushing a restored stage back to a registry for ``registry-restore``: the description is checked
before anything names a file by it, every manifest and blob is checked against its digest (and each
manifest against the media type the description lists for it) before the first push, then blobs
(skipped or mounted when the registry has them), manifests children first and tags are pushed.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

from steps.drivers.registry_client import RegistryClient
from steps.drivers.registry_reference import (
    DEFAULT_CHUNK,
    MANIFEST_TYPES,
    MAX_DEPTH,
    MAX_MANIFEST_BYTES,
    READ_SIZE,
    check_digest,
    check_repository_name,
    check_tag,
    manifest_children,
)
from steps.drivers.registry_stage import (
    BLOB_DIR,
    DESCRIPTION_FILE,
    MANIFEST_DIR,
    staged_path,
    type_contradiction,
)
from steps.errors import IntegrityError


def read_stage(workdir: str, where: str) -> dict:
    """The description of a restored stage, checked enough that nothing outside it is named."""
    path = os.path.join(workdir, DESCRIPTION_FILE)
    try:
        with open(path, "rb") as f:
            desc = json.loads(f.read())
    except (OSError, ValueError) as err:
        raise IntegrityError(f"{where}: {DESCRIPTION_FILE} is missing or not JSON ({err})") from None
    if not isinstance(desc, dict) or desc.get("kind") != "registry" or desc.get("format") != 1:
        raise IntegrityError(f"{where}: {DESCRIPTION_FILE} is not a registry backup of format 1")
    for name, entry in (desc.get("repositories") or {}).items():
        check_repository_name(name, f"{where}: repository")
        for tag, digest in (entry.get("tags") or {}).items():
            check_tag(tag, f"{where}: tag of {name}")
            check_digest(digest, f"{where}: tag {name}:{tag}")
        for digest in entry.get("digests") or []:
            check_digest(digest, f"{where}: image of {name}")
    for digest, meta in (desc.get("manifests") or {}).items():
        check_digest(digest, f"{where}: manifest")
        if meta.get("media_type") not in MANIFEST_TYPES:
            raise IntegrityError(f"{where}: manifest {digest} has an unknown media type")
    for digest in desc.get("blobs") or {}:
        check_digest(digest, f"{where}: blob")
    return desc


def file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(READ_SIZE):
            h.update(data)
    return "sha256:" + h.hexdigest()


@dataclass
class PushStats:
    blobs_pushed: int = 0
    blobs_present: int = 0
    blobs_mounted: int = 0
    bytes_pushed: int = 0
    manifests_pushed: int = 0
    tags: int = 0


def push_stage(
    client: RegistryClient,
    workdir: str,
    desc: dict,
    rename,
    chunk_size: int = DEFAULT_CHUNK,
    where: str = "snapshot",
) -> PushStats:
    """Push a restored stage to ``client``'s registry: for each repository (renamed by ``rename``), the
    blobs it needs (skipped when the registry has them, mounted when another repository of this push
    has them), then its manifests children first, byte for byte, then its tags. Every manifest and
    blob of the stage is checked against its digest before the first push, so a damaged backup
    changes nothing in the registry."""
    stats = PushStats()
    manifests = desc.get("manifests") or {}
    checked: set[str] = set()
    pushed_in: dict[str, str] = {}  # blob digest → a target repository that has it

    def local(kind: str, digest: str) -> str:
        path = staged_path(workdir, kind, digest)
        if digest not in checked:
            if not os.path.isfile(path):
                raise IntegrityError(f"{where}: {kind[:-1]} {digest} is missing from the backup")
            if file_digest(path) != digest:
                raise IntegrityError(
                    f"{where}: {kind[:-1]} {digest} read back from the repository does not match its digest;"
                    " nothing was pushed"
                )
            checked.add(digest)
        return path

    def manifest_of(digest: str) -> tuple[bytes, str, list[str], list[tuple[str, int | None]]]:
        meta = manifests.get(digest)
        if meta is None:
            raise IntegrityError(f"{where}: manifest {digest} is missing from the backup")
        with open(local(MANIFEST_DIR, digest), "rb") as f:
            data = f.read(MAX_MANIFEST_BYTES + 1)
        try:
            children, blobs = manifest_children(data, meta["media_type"])
        except (ValueError, AttributeError):
            raise IntegrityError(f"{where}: manifest {digest} is not a JSON object") from None
        # the digest covers the bytes, not the type listed beside them, and the type decides the children
        why = type_contradiction(json.loads(data), meta["media_type"])
        if why is not None:
            raise IntegrityError(
                f"{where}: manifest {digest} is listed in {DESCRIPTION_FILE} as {meta['media_type']}, but"
                f" {why}; nothing was pushed"
            )
        for child in children:
            check_digest(child, f"{where}: a child of manifest {digest}")
        for blob, _size in blobs:
            check_digest(blob, f"{where}: a blob of manifest {digest}")
        return data, meta["media_type"], children, blobs

    def push_tree(target: str | None, done: set[str], digest: str, path: tuple[str, ...]) -> None:
        """Push ``digest`` and what it refers to into ``target``; with ``target`` None, only check them."""
        if digest in done:
            return
        if digest in path or len(path) > MAX_DEPTH:
            raise IntegrityError(f"{where}: manifest {digest} refers to itself")
        data, media_type, children, blobs = manifest_of(digest)
        for child in children:
            push_tree(target, done, child, (*path, digest))
        for blob, _size in blobs:
            if blob in done:
                continue
            if target is None:
                local(BLOB_DIR, blob)
            elif client.blob_exists(target, blob):
                stats.blobs_present += 1
            elif (mounted := blob in pushed_in and client.mount_blob(target, blob, pushed_in[blob])) is True:
                stats.blobs_mounted += 1
            else:
                file = local(BLOB_DIR, blob)
                client.push_blob(target, blob, file, chunk_size, mounted or None)
                stats.blobs_pushed += 1
                stats.bytes_pushed += os.path.getsize(file)
            if target is not None:
                pushed_in.setdefault(blob, target)
            done.add(blob)
        if target is not None:
            client.put_manifest(target, digest, data, media_type)
            stats.manifests_pushed += 1
        done.add(digest)

    repositories = sorted((desc.get("repositories") or {}).items())
    for check_only in (True, False):
        for source, entry in repositories:
            target = None if check_only else rename(source)
            done: set[str] = set()
            for digest in entry.get("digests") or []:
                push_tree(target, done, digest, ())
            for tag, digest in sorted((entry.get("tags") or {}).items()):
                push_tree(target, done, digest, ())
                if target is not None:
                    data, media_type, _, _ = manifest_of(digest)
                    client.put_manifest(target, tag, data, media_type)
                    stats.tags += 1
    return stats
