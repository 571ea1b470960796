"""The images an app's pods run, for ``registry-backup --images-of NAMESPACE[:SELECTOR]``.

A registry policy's ``imagesOf`` (``[{namespace, selector}]``) names pods; this module parses that
selection (the same parser for ``snapflow lint`` and the step, through :mod:`steps.api`), reads the
pods through the Kubernetes client, and turns their ``status.containerStatuses[].imageID`` and
``status.initContainerStatuses[].imageID`` into the images to back up:

- ``docker-pullable://HOST/REPO@sha256:...`` (dockershim), ``HOST/REPO@sha256:...`` (containerd, CRI-O):
  the repository and digest the node pulled;
- ``sha256:...`` alone: the digest, with the repository taken from the container's ``image`` field
  (its status, else its spec);
- the tag is the one the pod spec names (``image: HOST/REPO:v1``; ``latest`` when it names neither a
  tag nor a digest), kept only when the spec names the same repository; one digest run under several
  tags keeps each of them. A tag two pods run with
  different digests (a rollout under way) is kept for neither: both are backed up by digest, and a
  warning says so.

Refused (one line, nothing stored): an imageID that is there but names no ``sha256:<64 hex>`` digest,
a selection that matches no pod, or pods whose images are all on other registries. Skipped with a
warning naming pod, container and image: a container whose image is on another registry than the
source's (a sidecar from Docker Hub in a Harbor app: refusing would make most apps impossible to
select), and a container not started yet (no imageID: it runs no image).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from steps.errors import PermanentError, UsageError, printable
from steps.manifests.objects import parse_selector

_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_RUNTIME_PREFIXES = ("docker-pullable://", "docker://", "containerd://", "cri-o://")
DOCKER_HUB = "docker.io"


@dataclass(frozen=True)
class PodSelection:
    """One ``--images-of`` value: the pods of ``namespace`` matching ``selector`` (empty: all)."""

    namespace: str
    selector: str = ""

    def __str__(self) -> str:
        return f"{self.namespace}:{self.selector}" if self.selector else self.namespace


def parse_images_of(text: str, where: str = "--images-of") -> PodSelection:
    """``NAMESPACE`` or ``NAMESPACE:SELECTOR`` (a label selector as ``kubectl -l`` takes it)."""
    namespace, _, selector = (text or "").partition(":")
    namespace, selector = namespace.strip(), selector.strip()
    if not _NAMESPACE.fullmatch(namespace):
        raise UsageError(
            f"{where}: expected NAMESPACE[:SELECTOR] with a namespace name (lower-case DNS label),"
            f" got {printable(text or '')!r}"
        )
    parse_selector(selector, where)
    return PodSelection(namespace, selector)


@dataclass
class PodImages:
    """What the selected pods run: ``roots`` ``(repository, digest, tag or None)`` on the source
    registry, ``pods`` as recorded in the backup, and the warnings of what was skipped."""

    roots: list[tuple[str, str, str | None]] = field(default_factory=list)
    pods: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _split(reference: str) -> tuple[str, str, str | None, str | None]:
    """``(host, repository, tag, digest)`` of an image reference, Docker Hub's short forms expanded as
    the kubelet does (``postgres`` is ``docker.io/library/postgres``); no tag and no digest is ``latest``."""
    raw = reference.strip()
    for prefix in _RUNTIME_PREFIXES:
        if raw.startswith(prefix):
            raw = raw[len(prefix) :]
    name, _, digest = raw.partition("@")
    tag = None
    if ":" in name.rsplit("/", 1)[-1]:
        name, _, tag = name.rpartition(":")
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        host, repository = first, rest
    else:
        host, repository = DOCKER_HUB, name if sep else f"library/{name}"
    if not digest and tag is None:
        tag = "latest"
    return host.lower(), repository, tag, digest or None


def _container_images(pod: dict) -> list[tuple[str, str, str, str]]:
    """``(container, spec image, status image, imageID)`` of every init and regular container."""
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    declared = {
        c.get("name"): c.get("image") or ""
        for key in ("initContainers", "containers")
        for c in spec.get(key) or []
        if isinstance(c, dict)
    }
    out = []
    for key in ("initContainerStatuses", "containerStatuses"):
        for st in status.get(key) or []:
            if not isinstance(st, dict):
                continue
            name = str(st.get("name") or "")
            out.append(
                (
                    name,
                    str(declared.get(name) or ""),
                    str(st.get("image") or ""),
                    str(st.get("imageID") or ""),
                )
            )
    return out


# Docker Hub's names (the kubelet's ``docker.io``, the index and the registry's own host).
_HUB_HOSTS = frozenset({DOCKER_HUB, "index.docker.io", "registry-1.docker.io"})


def same_registry_host(a: str) -> str:
    """``a`` compared as a registry: lower case, the default HTTPS port left out, Docker Hub's aliases
    one name (``harbor.example.com:443`` is ``harbor.example.com``)."""
    host = a.strip().lower()
    if host.endswith(":443"):
        host = host[: -len(":443")]
    return DOCKER_HUB if host in _HUB_HOSTS else host


def images_of_pods(pods: list[dict], registry_host: str) -> PodImages:
    """The images ``pods`` run that live on ``registry_host`` (see the module docstring)."""
    from steps.drivers.registry_reference import check_repository_name, check_tag

    host = same_registry_host(registry_host)
    result = PodImages()
    tags: dict[tuple[str, str], set[str]] = {}  # (repository, tag) → digests
    found: dict[tuple[str, str], set[str]] = {}  # (repository, digest) → tags
    for pod in pods:
        meta = pod.get("metadata") or {}
        where = f"pod {meta.get('namespace', '')}/{meta.get('name', '')}"
        for container, spec_image, status_image, image_id in _container_images(pod):
            at = f"{where} container {printable(container)}"
            if not image_id.strip():
                result.warnings.append(f"skipped: {at}: not started yet (no imageID), it runs no image")
                continue
            bare = image_id.strip()
            for prefix in _RUNTIME_PREFIXES:
                if bare.startswith(prefix):
                    bare = bare[len(prefix) :]
            if _DIGEST.fullmatch(bare):
                named = next((i for i in (status_image, spec_image) if i and not i.startswith("sha256:")), "")
                if not named:
                    raise PermanentError(
                        f"{at}: imageID {bare} names no repository and neither does its image field;"
                        " nothing was stored"
                    )
                img_host, repository, _, _ = _split(named)
                digest = bare
            else:
                img_host, repository, _, digest = _split(bare)
                if not digest or not _DIGEST.fullmatch(digest):
                    raise PermanentError(
                        f"{at}: imageID {printable(image_id)!r} names no digest (expected"
                        " [docker-pullable://]HOST/REPOSITORY@sha256:<64 hex digits> or sha256:<64 hex digits>);"
                        " nothing was stored"
                    )
            if same_registry_host(img_host) != host:
                result.warnings.append(
                    f"skipped: {at} runs {img_host}/{repository}@{digest}, not an image of registry {registry_host}"
                )
                continue
            tag = None
            if spec_image:
                s_host, s_repo, s_tag, _ = _split(spec_image)
                if (same_registry_host(s_host), s_repo) == (same_registry_host(img_host), repository):
                    tag = s_tag
            try:
                # what the registry and a restore accept; a name no registry serves is never asked for
                check_repository_name(repository, "repository")
                if tag is not None:
                    check_tag(tag, "tag")
            except UsageError as err:
                result.warnings.append(f"skipped: {at} runs {printable(image_id)!r}: {err}")
                continue
            result.pods.append(
                {
                    "pod": where[4:],
                    "container": container,
                    "image": f"{img_host}/{repository}@{digest}",
                    "tag": tag,
                }
            )
            found.setdefault((repository, digest), set())
            if tag:
                tags.setdefault((repository, tag), set()).add(digest)
                found[(repository, digest)].add(tag)
    for (repository, tag), digests in sorted(tags.items()):
        if len(digests) > 1:
            result.warnings.append(
                f"tag {repository}:{tag} runs as {len(digests)} digests ({', '.join(sorted(digests))}):"
                " each is backed up by digest, the tag with none"
            )
            for digest in digests:
                found[(repository, digest)].discard(tag)
    result.roots = [
        (repository, digest, tag)
        for (repository, digest), names in sorted(found.items())
        for tag in (sorted(names) or [None])
    ]
    return result


def list_selected_pods(client, selections: list[PodSelection]) -> list[dict]:
    """The pods of every selection, through the Kubernetes API (``list`` in each namespace)."""
    pods: list[dict] = []
    seen: set[tuple[str, str]] = set()
    for sel in selections:
        items, _ = client.list("v1", "Pod", sel.namespace, label_selector=sel.selector or None)
        if not items:
            raise UsageError(
                f"--images-of {sel}: no pod in namespace {sel.namespace}"
                + (f" matches {sel.selector}" if sel.selector else "")
            )
        for pod in items:
            meta = pod.get("metadata") or {}
            key = (str(meta.get("namespace") or sel.namespace), str(meta.get("name") or ""))
            if key not in seen:
                seen.add(key)
                meta.setdefault("namespace", sel.namespace)
                pods.append(pod)
    return pods
