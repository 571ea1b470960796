"""``capture``: export an application's Kubernetes objects, cleaned, into the repository."""

from __future__ import annotations

from steps.commands._kube import KUBE_EPILOG, add_kube_args
from steps.commands._repo import CONNECTION_EPILOG, add_repo_args
from steps.manifests.export import collect, snapflow_objects

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

    from steps.repository.stored_files import store_files

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
