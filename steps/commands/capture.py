"""``capture``: export an application's Kubernetes objects, cleaned, into the repository."""

from __future__ import annotations

from steps.commands._kube import KUBE_EPILOG, add_kube_args
from steps.commands._repo import CONNECTION_EPILOG, add_repo_args

NAME = "capture"
HELP = "store the app's Kubernetes objects (cleaned) in the repository"
DESCRIPTION = """Export the namespaced objects of --namespace (with --selector: the matching objects and the
ConfigMaps, Secrets, ServiceAccounts, Services and PVCs they reference), leave out runtime objects a
restore would duplicate (Pods, ReplicaSets and Jobs made by controllers, Endpoints, EndpointSlices,
Events, ...) and objects owned by another captured object, strip server-managed fields (status, uid,
resourceVersion, managedFields, a PVC's volumeName, a Service's clusterIPs and node ports, ...), and store
them in the repository as a snapshot tagged kind=manifests and backup=ID, encrypted like the data. The
last line of stdout is the snapshot ID (or a JSON summary with --json).

Every kind the API server serves is read once: at its group's preferred version when that version serves
it, else at the newest version that does (Kubernetes 1.20 serves CronJobs only at batch/v1beta1). An
object the server shows in two groups (one uid: an Ingress as extensions/v1beta1 and networking.k8s.io/v1
on 1.19-1.21) is stored once, the copy in the newest, non-deprecated group; the other is listed under
"aliases" in capture.json.

Objects labelled app.kubernetes.io/managed-by=snapflow (the workflows' ServiceAccounts and plan
ConfigMaps, a running backup's clone PVCs) are left out: applying the rendered manifests recreates the
former, and a restore must never replace the identity it runs as. --no-secrets leaves Secrets out and
never reads them (the identity then needs no right to list them); a restore needs them recreated.

examples:
  python -m steps capture --repo s3://backups/shop --namespace shop --backup-id backup-db-x7k2
  python -m steps capture --repo s3://backups/shop --namespace shop --selector app=db --backup-id backup-db-x7k2 --json
  python -m steps capture --repo s3://backups/shop --namespace shop --backup-id test --dry-run
"""


def configure(parser):
    add_repo_args(parser)
    parser.add_argument("--namespace", required=True, metavar="NS", help="the application's namespace")
    parser.add_argument(
        "--selector",
        default="",
        metavar="SEL",
        help="label selector (kubectl -l syntax); default: the whole namespace",
    )
    parser.add_argument(
        "--backup-id", required=True, metavar="ID", help="the backup run (Argo workflow name)"
    )
    for f in ("cluster", "app", "policy"):
        parser.add_argument(f"--{f}", metavar=f.upper(), help=f"record the {f} with the capture")
    parser.add_argument(
        "--no-secrets",
        action="store_true",
        help="do not read or store Secrets (recreate them before a restore)",
    )
    parser.add_argument("--dry-run", action="store_true", help="list what would be stored; store nothing")
    parser.add_argument("--json", action="store_true", help="print a JSON summary instead of the ID")
    add_kube_args(parser)
    parser.epilog = CONNECTION_EPILOG + KUBE_EPILOG


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
    from steps.drivers.kube import version_priority
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


def run(args) -> int:
    import sys
    from datetime import UTC, datetime

    from steps.commands._kube import kube_client
    from steps.commands._repo import open_repository, print_json, warn
    from steps.manifests import bundle
    from steps.manifests.clean import Dropped, select_objects
    from steps.manifests.objects import parse_selector, ref

    selector = parse_selector(args.selector, "--selector")
    client = kube_client(args)
    aliases: list[dict] = []
    with client:
        objects, unreadable = collect(
            client, args.namespace, warn, secrets=not args.no_secrets, aliases=aliases
        )
    objects, ours = snapflow_objects(objects)
    selection = select_objects(objects, selector)
    selection.dropped.extend(
        Dropped(ref(o), "made by Snapflow (its rendered manifests or a running backup recreate it)")
        for o in ours
    )
    info = {
        "backup_id": args.backup_id,
        "cluster": args.cluster or "default",
        "namespace": args.namespace,
        "selector": args.selector,
        "app": args.app or "",
        "policy": args.policy or "",
        "captured_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "dropped": [d.to_dict() for d in selection.dropped],
        "unreadable": unreadable,
        "aliases": aliases,
        "secrets": not args.no_secrets,
    }
    files = bundle.to_files(selection.objects, info)
    kept = [bundle.object_path(o)[len("objects/") :] for o in selection.objects]
    summary = {
        "objects": len(selection.objects),
        "dropped": len(selection.dropped),
        "unreadable": unreadable,
        "aliases": len(aliases),
    }
    if args.dry_run:
        for path in kept:
            print(f"keep {path}")
        for d in selection.dropped:
            print(f"drop {d.ref} ({d.reason})")
        for a in aliases:
            print(
                f"alias {a['object']} in {a['namespace']} (the same object as its {a['kept_apiVersion']} copy)"
            )
        if args.json:
            print_json({**summary, "id": None})
        return 0

    from steps.repository.archiver import store_files

    repo = open_repository(args)
    identity = {
        "cluster": info["cluster"],
        "namespace": args.namespace,
        "app": args.app,
        "policy": args.policy,
    }
    snapshot_id = store_files(
        repo,
        files,
        tags={"kind": "manifests", "backup": args.backup_id},
        backup_id=args.backup_id,
        identity={k: v for k, v in identity.items() if v},
        source=f"k8s:{info['cluster']}/{args.namespace}",
    )
    print(
        f"captured {len(selection.objects)} objects of namespace {args.namespace} "
        f"({len(selection.dropped)} left out) as snapshot {snapshot_id[:8]}",
        file=sys.stderr,
    )
    if args.json:
        print_json({**summary, "id": snapshot_id})
    else:
        print(snapshot_id)
    return 0
