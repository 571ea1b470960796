"""capture's export of an application's objects: every object of its namespace the client may list,
each once (one object served by two API groups is kept in its preferred group, the other copy
recorded as an alias), Snapflow's own objects told apart. ``python -m steps capture``
(:mod:`steps.commands.capture`) selects, cleans and stores them.
"""

from __future__ import annotations

# Kinds a restore of a typical app cannot do without.
IMPORTANT_KINDS = frozenset(
    {
        "configmaps",
        "secrets",
        "serviceaccounts",
        "services",
        "persistentvolumeclaims",
        "statefulsets.apps",
        "deployments.apps",
        "daemonsets.apps",
        "cronjobs.batch",
        "jobs.batch",
    }
)


SNAPFLOW_MANAGED = ("app.kubernetes.io/managed-by", "snapflow")


def snapflow_objects(objects: list[dict]) -> tuple[list[dict], list[dict]]:
    """(the app's objects, Snapflow's own): objects labelled managed-by snapflow are not the app's."""
    key, value = SNAPFLOW_MANAGED
    app: list[dict] = []
    ours: list[dict] = []
    for o in objects:
        labels = (o.get("metadata") or {}).get("labels") or {}
        mine = o.get("kind") != "Namespace" and labels.get(key) == value
        (ours if mine else app).append(o)
    return app, ours


def _copy_rank(obj: dict) -> tuple:
    """Which copy of an object served by several groups is kept (highest first): one whose API version
    is not deprecated (no migration starts from it), then the newest version (Kubernetes' order), then
    the group name, so that the choice never depends on the order of discovery."""
    from steps.drivers.kube_types import version_priority
    from steps.manifests.migrations import find_migration

    api_version, kind = str(obj.get("apiVersion") or ""), str(obj.get("kind") or "")
    group, _, version = api_version.rpartition("/")
    return (find_migration(api_version, kind) is None, version_priority(version), group)


def dedupe_by_uid(objects: list[dict]) -> tuple[list[dict], list[dict]]:
    """(objects, aliases): one object per ``metadata.uid``. The API server may serve one object in two
    groups (an Ingress as ``extensions/v1beta1`` and ``networking.k8s.io/v1`` on Kubernetes 1.19-1.21):
    the copy in the preferred, newest group is kept (:func:`_copy_rank`), each other one is an alias,
    recorded as {"object", "apiVersion", "kind", "namespace", "name", "uid", "kept_apiVersion"}. Objects
    without a uid are kept as they are."""
    best: dict[str, dict] = {}
    for obj in objects:
        uid = (obj.get("metadata") or {}).get("uid")
        if not isinstance(uid, str) or not uid:
            continue
        if uid not in best or _copy_rank(obj) > _copy_rank(best[uid]):
            best[uid] = obj
    kept: list[dict] = []
    aliases: list[dict] = []
    for obj in objects:
        meta = obj.get("metadata") or {}
        uid = meta.get("uid")
        if not isinstance(uid, str) or not uid or best[uid] is obj:
            kept.append(obj)
            continue
        winner = best[uid]
        aliases.append(
            {
                "object": f"{obj.get('apiVersion')} {obj.get('kind')} {meta.get('name')}",
                "apiVersion": obj.get("apiVersion"),
                "kind": obj.get("kind"),
                "namespace": meta.get("namespace"),
                "name": meta.get("name"),
                "uid": uid,
                "kept_apiVersion": winner.get("apiVersion"),
            }
        )
    return kept, aliases


def collect(
    client, namespace: str, warn, *, secrets: bool = True, aliases: list[dict] | None = None
) -> tuple[list[dict], list[str]]:
    """Every object of ``namespace`` (and the Namespace itself) the client may list, each once; the kinds
    it may not list. Every served kind is listed at one version (see ``KubeClient.namespaced_types``);
    an object served by two groups is kept once (:func:`dedupe_by_uid`) and the other copy appended to
    ``aliases``; a deprecated group that may not be listed is not unreadable when the group its
    migration leads to was listed (the same objects). ``secrets=False`` never lists Secrets."""
    from steps.drivers.kube import Forbidden, KubeError, NotFound
    from steps.errors import UsageError
    from steps.manifests.clean import RUNTIME_KINDS
    from steps.manifests.migrations import find_migration
    from steps.manifests.objects import api_group

    objects: list[dict] = []
    try:
        ns_obj = client.get_or_none("v1", "Namespace", namespace)
    except Forbidden as err:
        ns_obj = {}
        warn(f"cannot read namespace {namespace} ({err}); its labels and annotations are not captured")
    if ns_obj is None:
        raise UsageError(f"--namespace: namespace {namespace} does not exist")
    if ns_obj:
        ns_obj.setdefault("apiVersion", "v1")
        ns_obj.setdefault("kind", "Namespace")
        objects.append(ns_obj)
    unreadable: list[str] = []
    forbidden: list = []  # (type, resource) whose list was refused
    listed: set[tuple[str, str]] = set()  # (group, kind) listed
    for rt in client.namespaced_types():
        if (rt.group, rt.kind) in RUNTIME_KINDS:
            continue  # dropped anyway; listing Events of a busy namespace is expensive
        if not secrets and (rt.group, rt.kind) == ("", "Secret"):
            continue
        resource = f"{rt.plural}.{rt.group}" if rt.group else rt.plural
        try:
            items, _ = client.list(rt.api_version, rt.kind, namespace)
        except Forbidden:
            forbidden.append((rt, resource))
            continue
        except NotFound:
            continue
        except KubeError as err:
            if resource in IMPORTANT_KINDS:
                raise
            # an add-on API that is down (an aggregated API server) must not stop every backup
            unreadable.append(resource)
            warn(f"cannot list {resource} in namespace {namespace} ({err}); not captured")
            continue
        listed.add((rt.group, rt.kind))
        objects.extend(items)
    for rt, resource in forbidden:
        # A deprecated group serving the objects of the one its migration leads to (extensions/v1beta1
        # Ingresses are networking.k8s.io's on 1.19-1.21): refused there, read there, nothing is lost.
        migration = find_migration(rt.api_version, rt.kind)
        if migration is not None and migration.target and (api_group(migration.target), rt.kind) in listed:
            continue
        unreadable.append(resource)
    objects, found_aliases = dedupe_by_uid(objects)
    if aliases is not None:
        aliases.extend(found_aliases)
    important = [u for u in unreadable if u in IMPORTANT_KINDS]
    if important:
        warn(
            f"not captured, no permission to list them in namespace {namespace}: {', '.join(important)}; "
            "a restore will lack them"
        )
    if len(unreadable) > len(important):
        warn(
            f"not captured, no permission to list them: {len(unreadable) - len(important)} other kinds "
            "(see 'unreadable' in capture.json)"
        )
    return objects, unreadable
