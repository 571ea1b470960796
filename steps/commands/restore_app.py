"""``restore-app``: restore an application — its objects and its volumes — from a committed backup."""

from __future__ import annotations

from steps import runtime
from steps.commands._kube import KUBE_EPILOG, add_kube_args
from steps.commands._options import switch_option
from steps.commands._repo import CONNECTION_EPILOG, add_repo_args

NAME = "restore-app"
HELP = "restore an app's objects and volumes from a committed backup (same or another namespace/cluster)"
DESCRIPTION = """Restore the objects captured with a committed backup, transformed, and fill their PVCs from the
repository. Order: namespace and config objects -> PVCs created and filled -> workloads, held at zero
replicas (suspended, for CronJobs and Jobs) until their data is in place, then released -> bare pods,
autoscalers and custom resources -> optional readiness wait and check command -> a report with the
time of each phase (RTO).

Objects that already exist make the restore refuse, listing them, unless --existing=skip (keep them;
a kept PVC's data is not restored) or --existing=replace (delete and recreate them). Two objects of the
backup that would be created as one (same group, kind, namespace and name after the migrations and
transforms: one object captured under two API groups by an older capture, or two namespaces mapped onto
one) make it fail (exit 3) in one line naming both, before anything is created.

Scope (a backup is untrusted input; checked after the transforms, before anything is created): only
namespaced objects in the restore's namespaces (the one the backup's namespace maps to, and every
target of --namespace-map), the Namespace objects of those (not one that would create its namespace
with Pod Security level privileged enforced), and RoleBindings whose subjects are all
ServiceAccounts of those namespaces, bound to a Role or to ClusterRole admin, edit or view. Everything
else (an object in another namespace, a cluster-scoped object, a binding of a User, a Group, another
namespace's ServiceAccount or another ClusterRole) is refused: listed, one line each with why (and in
the report's "refused"), never created, and the restore fails (exit 3) before creating anything,
unless --skip-refused restores the rest. --cluster-resources allows the cluster-scoped objects and the
bindings; an object in a namespace the restore does not target stays refused.

Filling the PVCs (--mover):
  pod    a mover pod per PVC runs `python -m steps restore --target /data` in the target namespace
         (needs --image, --password-secret and usually --credentials-secret there, or --secrets-namespace
         to copy them, and the --ca-bundle ConfigMap, from the namespace the step runs in); the movers
         get this process's SNAPFLOW_S3_REGION and SNAPFLOW_S3_PATH_STYLE;
  local  the same restore runs in this process into each volume's directory: a PV with hostPath or
         local, or --volume-root DIR/<csi volumeHandle> (csi-hostpath's layout) on a single node;
  none   only objects; the restore WorkflowTemplate runs the movers as its own steps between
         --phase prepare (which writes the volumes to fill to --out, each with the restore_options its
         mover adds) and --phase finish.
With --mover-namespace NS (pod mover, --phase all) no mover pod runs in the target namespace: each
volume is filled by a mover pod in NS on a staging claim of the target claim's storage class, size and
modes; its PersistentVolume is set to reclaim policy Retain, the staging claim deleted, the volume
reserved for the target claim (claimRef) and the target claim created with spec.volumeName naming it;
once bound, the volume gets its reclaim policy back. Run again with the same --restore-id after an
interruption, it resumes: a volume already filled and marked for its claim is not filled again.
Every mover passes --overwrite always (the PVC is one this restore created, and a mover run again after
a failure must finish the half-written restore), restores owners through --uid-map/--gid-map, and on the
volume holding the data directory of a PostgreSQL copied in backup mode it writes the backup's
backup_label (restore --write-backup-label, read from the repository by the mover itself).

Transforms (also from --transforms FILE, YAML; see docs/user/restore.md): --target-namespace,
--namespace-map, --storage-class-map, --add-label/--remove-label, --add-annotation/--remove-annotation,
--image-registry, --uid-map/--gid-map FROM:TO[:COUNT] (security contexts and the restored files' owners),
--patch FILE (RFC 6902 rules), and the built-in
API-version migrations (--no-migrate turns them off). --storage-class-map and --namespace-map also take
several pairs separated by commas; an empty value adds none. --dry-run, --wait-ready and
--mover-non-root also take an explicit true or false (for workflow parameters).

examples:
  python -m steps restore-app --repo s3://backups/shop --backup latest --app db --target-namespace shop-restore \\
      --mover pod --image ghcr.io/example/snapflow:1.0 --password-secret snapflow-repo-key \\
      --credentials-secret snapflow-s3 --secrets-namespace snapflow
  python -m steps restore-app --repo s3://backups/shop --backup backup-db-x7k2 --existing replace \\
      --storage-class-map gp2=gp3 --mover local --volume-root /var/lib/csi-hostpath-data
  python -m steps restore-app --repo s3://backups/shop --backup backup-db-x7k2 --target-namespace t --dry-run
"""

PHASE_CHOICES = ("all", "prepare", "fill", "finish")
MOVERS = ("pod", "local", "none")


def configure(parser):
    add_repo_args(parser)
    parser.add_argument(
        "--backup",
        required=True,
        metavar="ID|latest",
        help="backup ID (workflow name) or 'latest' (with --app / --source-namespace)",
    )
    parser.add_argument("--app", default="", metavar="NAME", help="with --backup latest: the application")
    parser.add_argument(
        "--source-namespace", default="", metavar="NS", help="with --backup latest: its namespace"
    )
    t = parser.add_argument_group("transforms")
    t.add_argument("--target-namespace", default="", metavar="NS", help="restore into NS (namespace remap)")
    t.add_argument(
        "--namespace-map", action="append", metavar="FROM=TO[,...]", help="namespace remap (repeatable)"
    )
    t.add_argument(
        "--storage-class-map",
        action="append",
        metavar="FROM=TO[,...]",
        help="storage class map; FROM '*' maps any class (repeatable)",
    )
    t.add_argument("--add-label", action="append", metavar="K=V")
    t.add_argument("--remove-label", action="append", metavar="KEY", help="key or glob (repeatable)")
    t.add_argument("--add-annotation", action="append", metavar="K=V")
    t.add_argument("--remove-annotation", action="append", metavar="KEY", help="key or glob (repeatable)")
    t.add_argument(
        "--image-registry",
        action="append",
        metavar="FROM=TO",
        help="rewrite image registries, e.g. docker.io=registry.internal/hub (repeatable)",
    )
    t.add_argument(
        "--uid-map",
        action="append",
        metavar="FROM:TO[:COUNT]",
        help="remap runAsUser and the owners of the restored files",
    )
    t.add_argument(
        "--gid-map",
        action="append",
        metavar="FROM:TO[:COUNT]",
        help="remap runAsGroup, fsGroup, supplementalGroups and the groups of the restored files",
    )
    t.add_argument(
        "--patch",
        action="append",
        metavar="FILE",
        help="YAML/JSON list of {target: {kind, name, group}, patch: [RFC 6902 ops]} (repeatable)",
    )
    t.add_argument("--transforms", metavar="FILE", help="all transforms in one YAML file")
    t.add_argument("--no-migrate", action="store_true", help="keep deprecated API versions as captured")
    parser.add_argument(
        "--existing",
        default="refuse",
        choices=("refuse", "skip", "replace"),
        help="objects that already exist: refuse (default), skip or replace",
    )
    s = parser.add_argument_group("scope")
    s.add_argument(
        "--cluster-resources",
        **switch_option(),
        help="also create the backup's cluster-scoped objects (ClusterRoles, ClusterRoleBindings, CRDs, other "
        "Namespaces, ...) and RoleBindings reaching outside the restore's namespaces",
    )
    s.add_argument(
        "--skip-refused",
        **switch_option(),
        help="restore the rest when objects are outside the restore's scope (they are listed, never created)",
    )
    parser.add_argument("--exclude", action="append", metavar="PATTERN", help="data paths not to restore")
    m = parser.add_argument_group("volumes")
    m.add_argument("--mover", default="pod", choices=MOVERS, help="how PVCs are filled (default: pod)")
    m.add_argument("--volume-root", metavar="DIR", help="local mover: the CSI hostpath data directory")
    m.add_argument(
        "--image", default="", metavar="IMAGE", help="pod mover: the step image ($SNAPFLOW_STEP_IMAGE)"
    )
    m.add_argument(
        "--password-secret",
        default="",
        metavar="NAME[:KEY]",
        help="pod mover: Secret holding the repository password (key default 'password')",
    )
    m.add_argument(
        "--credentials-secret",
        default="",
        metavar="NAME[:ID_KEY:SECRET_KEY]",
        help="pod mover: Secret with the S3 keys (keys default AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)",
    )
    m.add_argument(
        "--ca-bundle",
        default="",
        metavar="CONFIGMAP[:KEY]",
        help="pod mover: ConfigMap with the object store's CA certificates (key default ca.crt)",
    )
    m.add_argument(
        "--secrets-namespace",
        default="",
        metavar="NS",
        help="pod mover: copy the Secrets (and --ca-bundle) from NS into the target namespace for the restore",
    )
    m.add_argument(
        "--mover-namespace",
        default="",
        metavar="NS",
        help="pod mover: run the movers in NS, on staging claims there, and hand each filled volume over to "
        "its claim in the target namespace (which can then enforce Pod Security restricted)",
    )
    m.add_argument(
        "--mover-non-root",
        **switch_option(),
        help=f"pod mover: run as UID {runtime.STEP_USER} (owners are not restored; for restricted Pod Security)",
    )
    parser.add_argument(
        "--phase",
        default="all",
        choices=PHASE_CHOICES,
        help="all (default), or prepare / fill / finish for a workflow with mover steps",
    )
    parser.add_argument("--volumes", metavar="FILE", help="--phase fill: the volumes --phase prepare wrote")
    parser.add_argument(
        "--out", metavar="FILE", help="--phase prepare: write the volumes to fill (JSON) here"
    )
    c = parser.add_argument_group("check")
    c.add_argument("--wait-ready", **switch_option(), help="wait until the workloads' replicas are ready")
    c.add_argument("--check-pod", metavar="NAME", help="after the restore, exec --check-command in this pod")
    c.add_argument("--check-container", metavar="NAME", help="container of --check-pod")
    c.add_argument("--check-command", metavar="CMD", help="shell command, e.g. \"psql -c 'select 1'\"")
    parser.add_argument(
        "--restore-id",
        default="",
        metavar="ID",
        help="names this restore's mover pods ($ARGO_WORKFLOW_NAME, else generated)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=1800.0,
        metavar="S",
        help="per wait (deletions, binding, movers, readiness); default 1800",
    )
    parser.add_argument("--dry-run", **switch_option(), help="print the transformed objects; change nothing")
    parser.add_argument("--report", metavar="FILE", help="write the restore report (JSON) here too")
    parser.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    add_kube_args(parser)
    parser.epilog = CONNECTION_EPILOG + KUBE_EPILOG


# --------------------------------------------------------------------------------------------------
# Arguments → transforms


def pair_list(values: list[str] | None) -> list[str]:
    """Each value split at commas, blanks dropped: ``["a=b,c=d", ""]`` → ``["a=b", "c=d"]``."""
    return [p.strip() for v in values or [] for p in v.split(",") if p.strip()]


def transform_spec(args, source_namespace: str):
    import yaml

    from steps.drivers import files
    from steps.errors import UsageError
    from steps.idmap import IdRange
    from steps.manifests.transforms import TransformSpec, parse_pairs

    base = TransformSpec.load(args.transforms) if args.transforms else TransformSpec()
    ns_map = parse_pairs(pair_list(args.namespace_map), "--namespace-map")
    if args.target_namespace:
        ns_map.setdefault(source_namespace, args.target_namespace)
    patches = []
    for path in args.patch or []:
        try:
            data = yaml.safe_load(files.read_text(path, "--patch"))
        except yaml.YAMLError as err:
            raise UsageError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
        rules = data if isinstance(data, list) else [data]
        if rules and isinstance(rules[0], dict) and "op" in rules[0]:
            raise UsageError(
                f"{path}: expected rules {{target: {{kind, name}}, patch: [operations]}}, got bare operations"
            )
        patches.append(TransformSpec.from_dict({"patches": rules}, path))
    flags = TransformSpec(
        namespace_map=ns_map,
        storage_class_map=parse_pairs(pair_list(args.storage_class_map), "--storage-class-map"),
        add_labels=parse_pairs(args.add_label, "--add-label"),
        remove_labels=tuple(args.remove_label or ()),
        add_annotations=parse_pairs(args.add_annotation, "--add-annotation"),
        remove_annotations=tuple(args.remove_annotation or ()),
        image_registry_map=parse_pairs(args.image_registry, "--image-registry"),
        uid_map=tuple(IdRange.parse(x, "--uid-map") for x in args.uid_map or ()),
        gid_map=tuple(IdRange.parse(x, "--gid-map") for x in args.gid_map or ()),
        migrate_api_versions=not args.no_migrate,
    )
    spec = base.merged(flags)
    for p in patches:
        spec = spec.merged(p)
    spec.check()
    return spec


def run(args) -> int:
    import dataclasses
    import os
    import uuid

    from steps.commands._kube import kube_client, log
    from steps.commands._repo import open_repository, warn
    from steps.errors import UsageError
    from steps.manifests.app_restore import RestoreAppOptions, restore_app

    if args.timeout <= 0:
        raise UsageError(f"--timeout: expected a positive number of seconds, got {args.timeout:g}")
    if args.phase == "fill" and not args.volumes:
        raise UsageError("--volumes: required with --phase fill (the file --phase prepare wrote with --out)")
    if args.check_command and not args.check_pod:
        raise UsageError("--check-pod: required with --check-command")
    if args.mover_namespace and not args.dry_run and (args.mover != "pod" or args.phase != "all"):
        raise UsageError(
            f"--mover-namespace: needs --mover pod and --phase all (got --mover {args.mover}, --phase {args.phase})"
        )
    restore_id = (
        args.restore_id or os.environ.get(runtime.ARGO_WORKFLOW_NAME) or f"restore-{uuid.uuid4().hex[:8]}"
    )
    opts = RestoreAppOptions(**{f.name: getattr(args, f.name) for f in dataclasses.fields(RestoreAppOptions)})
    repo = open_repository(args)
    from steps.commands.audit_trail import audited, restore_app_what

    return audited(repo, "restore-app", restore_app_what(args, restore_id), restore_app)(
        repo,
        opts,
        args.backup,
        args.app,
        args.source_namespace,
        make_spec=lambda namespace: transform_spec(args, namespace),
        connect=lambda: kube_client(args),
        restore_id=restore_id,
        log=log,
        warn=warn,
    )
