"""Image references, digests, repository names and tags as the OCI Distribution API spells them; the
manifest media types the registry client accepts, its size and depth limits, and the image graph
(what a manifest refers to). Used by :mod:`steps.drivers.registry_client`,
:mod:`steps.drivers.registry_stage` and :mod:`steps.drivers.registry_push`.

A digest that is not ``sha256:<64 hex digits>`` is an :class:`~steps.errors.IntegrityError` (it came
from a registry or a backup); a repository name, tag or image reference given on the command line
that does not parse is a :class:`~steps.errors.UsageError`, one line naming the option.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from steps.errors import IntegrityError, UsageError, printable

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, DOCKER_LIST)
ACCEPT = ", ".join(MANIFEST_TYPES)

MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # what distribution itself accepts
MAX_DEPTH = 8  # an index of indexes of ... deeper than this is refused
READ_SIZE = 1024 * 1024
DEFAULT_CHUNK = 64 * 1024 * 1024

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_REPO_NAME = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def check_digest(value: str, what: str) -> str:
    if not _DIGEST.fullmatch(value or ""):
        raise IntegrityError(
            f"{what}: expected a digest sha256:<64 hex digits>, got {printable(str(value))!r}"
        )
    return value


def check_repository_name(value: str, what: str) -> str:
    if len(value) > 255 or not _REPO_NAME.fullmatch(value):
        raise UsageError(f"{what}: expected a repository name (lower-case path), got {printable(value)!r}")
    return value


def check_tag(value: str, what: str) -> str:
    if not _TAG.fullmatch(value):
        raise UsageError(f"{what}: expected a tag ([A-Za-z0-9_.-], at most 128), got {printable(value)!r}")
    return value


@dataclass(frozen=True)
class Reference:
    """``host/repository[:tag][@digest]``; ``host`` may be empty (the registry given elsewhere)."""

    host: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    def __str__(self) -> str:
        text = f"{self.host}/{self.repository}" if self.host else self.repository
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse_reference(text: str, what: str = "--image") -> Reference:
    """An image reference as Kubernetes reports it (``imageID``: ``docker-pullable://HOST/REPO@DIGEST``
    too) or as written in a pod spec."""
    raw = text.strip()
    for prefix in ("docker-pullable://", "docker://", "containerd://"):
        if raw.startswith(prefix):
            raw = raw[len(prefix) :]
    name, _, digest = raw.partition("@")
    tag = None
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, _, tag = name.rpartition(":")
    host = ""
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        host, name = first, rest
    if not name:
        raise UsageError(f"{what}: expected [HOST/]REPOSITORY[:TAG][@sha256:DIGEST], got {printable(text)!r}")
    check_repository_name(name, what)
    if tag is not None:
        check_tag(tag, what)
    if digest:
        if not _DIGEST.fullmatch(digest):
            raise UsageError(
                f"{what}: expected a digest sha256:<64 hex digits> after '@', got {printable(text)!r}"
            )
    elif tag is None:
        tag = "latest"
    return Reference(host, name, tag, digest or None)


# ---------------------------------------------------------------------------------------- the image graph


def children_of(doc: dict, media_type: str) -> tuple[list[dict], list[dict]]:
    """``(manifests, blobs)`` a manifest refers to: an index's manifests; an image manifest's config,
    layers (and the subject it points at, another manifest)."""
    manifests: list[dict] = []
    blobs: list[dict] = []
    if media_type in INDEX_TYPES:
        manifests = [m for m in doc.get("manifests") or [] if isinstance(m, dict)]
    else:
        config = doc.get("config")
        if isinstance(config, dict):
            blobs.append(config)
        blobs.extend(m for m in doc.get("layers") or [] if isinstance(m, dict))
        # foreign (non-distributable) layers live elsewhere and are not the registry's to serve
        blobs = [b for b in blobs if not b.get("urls")]
    if isinstance(doc.get("subject"), dict):
        manifests.append(doc["subject"])
    return manifests, blobs


def manifest_children(data: bytes, media_type: str) -> tuple[list[str], list[tuple[str, int | None]]]:
    doc = json.loads(data)
    manifests, blobs = children_of(doc, media_type)
    return [m.get("digest") for m in manifests], [(b.get("digest"), b.get("size")) for b in blobs]
