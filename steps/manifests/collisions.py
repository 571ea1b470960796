"""Two captured objects that a restore would create as one: found before anything is created.

The API server identifies an object by group, kind, namespace and name — not by API version. Two objects
of a backup collide when they share that identity once transformed: the same object captured under two
API groups by a capture that did not deduplicate by uid (an Ingress as ``extensions/v1beta1`` and
``networking.k8s.io/v1`` on Kubernetes 1.19-1.21: both migrate to ``networking.k8s.io/v1``), or two
namespaces joined by a namespace map. Creating both would stop the restore midway on "already exists",
after the first was created; ``restore-app`` refuses such a backup up front instead.

The group of the identity is the one the migration table leads to (:mod:`steps.manifests.migrations`),
so the two copies collide with ``--no-migrate`` too (old clusters serve them from one storage).
Whether a kind is namespaced is the API server's answer (``namespaced(api_version, kind)``): a
namespace on a cluster-scoped object is ignored, as the server ignores it.

Pure functions, no I/O; called by ``restore-app``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from steps.manifests.bundle import object_path
from steps.manifests.migrations import find_migration
from steps.manifests.objects import api_group


@dataclass(frozen=True)
class Collision:
    """Two captured objects (``first`` and ``second``, as captured) that would be created as ``target``
    (the first one's transformed form)."""

    first: dict
    second: dict
    target: dict

    def __str__(self) -> str:
        t = self.target
        meta = t.get("metadata") or {}
        where = f" in namespace {meta['namespace']}" if meta.get("namespace") else ""
        return (
            f"{_describe(self.first)} and {_describe(self.second)} would both be created as "
            f"{t.get('apiVersion')} {t.get('kind')} {meta.get('name')}{where}"
        )


def _describe(obj: dict) -> str:
    meta = obj.get("metadata") or {}
    return f"{obj.get('apiVersion')} {obj.get('kind')} {meta.get('name')} ({object_path(obj)})"


def identity(obj: dict, namespaced: Callable[[str, str], bool]) -> tuple[str, str, str, str]:
    """(group, kind, namespace, name) of ``obj`` as the API server stores it: the group is the one the
    built-in migrations lead to (``extensions`` Ingress → ``networking.k8s.io``)."""
    api_version = str(obj.get("apiVersion") or "")
    kind = str(obj.get("kind") or "")
    migration = find_migration(api_version, kind)
    group = api_group(migration.target if migration is not None and migration.target else api_version)
    meta = obj.get("metadata") or {}
    namespace = str(meta.get("namespace") or "") if namespaced(api_version, kind) else ""
    return group, kind, namespace, str(meta.get("name") or "")


def find_collisions(
    objects: list[dict], origins: list[dict], namespaced: Callable[[str, str], bool]
) -> list[Collision]:
    """Pairs of ``objects`` (transformed; ``origins[i]`` is the captured form of ``objects[i]``) with
    the same identity, in the order found."""
    seen: dict[tuple[str, str, str, str], int] = {}
    found: list[Collision] = []
    for i, obj in enumerate(objects):
        key = identity(obj, namespaced)
        if key in seen:
            first = seen[key]
            found.append(Collision(origins[first], origins[i], objects[first]))
        else:
            seen[key] = i
    return found


def collision_message(collisions: list[Collision]) -> str:
    """One line: the first collision, and how many more there are."""
    more = len(collisions) - 1
    return (
        f"restore refused: the backup holds one object twice: {collisions[0]}"
        + (f" (and {more} more such pair{'s' if more != 1 else ''})" if more else "")
        + "; the same object captured under two API groups, or two namespaces mapped onto one. "
        "This run created nothing"
    )
