"""``restore-app``: restore an application — its objects and its volumes — from a committed backup."""

from __future__ import annotations

from steps.cli import switch_option
from steps.commands._kube import KUBE_EPILOG, add_kube_args
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
# The overwrite mode of every mover, as restore options (render.mover_args passes it itself).
MOVER_OVERWRITE_ARGS = ("--overwrite", "always")
# The repository connection settings a mover pod gets from the restoring process's environment.
MOVER_ENV = ("SNAPFLOW_S3_REGION", "SNAPFLOW_S3_PATH_STYLE")


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
        "--mover-non-root",
        **switch_option(),
        help="pod mover: run as UID 65532 (owners are not restored; for restricted Pod Security)",
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

    from steps.errors import UsageError
    from steps.manifests.transforms import IdRange, TransformSpec, parse_pairs

    base = TransformSpec.load(args.transforms) if args.transforms else TransformSpec()
    ns_map = parse_pairs(pair_list(args.namespace_map), "--namespace-map")
    if args.target_namespace:
        ns_map.setdefault(source_namespace, args.target_namespace)
    patches = []
    for path in args.patch or []:
        try:
            with open(path) as f:
                data = yaml.safe_load(f)
        except FileNotFoundError:
            raise UsageError(f"--patch: file {path} does not exist") from None
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


# --------------------------------------------------------------------------------------------------
# The backup


def _app_of(record) -> dict:
    """The ``app`` of a backup record ({} when missing or not a mapping: records are untrusted)."""
    app = record.get("app") if isinstance(record, dict) else None
    return app if isinstance(app, dict) else {}


def find_backup(repo, backup: str, app: str = "", namespace: str = "") -> dict:
    """The committed backup record (``latest``: the newest matching one)."""
    from steps.errors import PermanentError, UsageError

    if backup == "latest":
        records = [
            r
            for r in repo.list_records("backups")
            if isinstance(r.data, dict)
            and (not app or _app_of(r.data).get("name") == app)
            and (not namespace or _app_of(r.data).get("namespace") == namespace)
        ]
        repo.refuse_damaged_backups(
            "--backup latest",
            lambda d: (
                (not app or _app_of(d).get("name") == app)
                and (not namespace or _app_of(d).get("namespace") == namespace)
            ),
            way_out="pass --backup ID to restore a chosen one",
        )
        if not records:
            which = " ".join(
                x for x in (f"app {app}" if app else "", f"namespace {namespace}" if namespace else "") if x
            )
            raise UsageError(
                f"--backup latest: no committed backup{' of ' + which if which else ''} in {repo.url}"
            )
        return max(records, key=lambda r: str(r.data.get("time", ""))).data
    records = repo.list_records("backups", key=backup)
    if not records:
        repo.refuse_damaged_backups(f"--backup {backup}", key=backup, way_out="choose another backup")
    if records:
        if not isinstance(records[-1].data, dict):
            raise PermanentError(f"--backup: the record of backup {backup} is not a JSON object")
        return records[-1].data
    if any(s.backup_id == backup for s in repo.list_snapshots()):
        raise PermanentError(
            f"--backup: backup {backup} was never committed (its workflow or verify did not succeed): "
            "it is not a restore point"
        )
    raise UsageError(f"--backup: no backup {backup!r} in {repo.url}")


def load_bundle(repo, record: dict):
    from steps.errors import PermanentError
    from steps.manifests import bundle
    from steps.repository.restorer import load_files

    sid = record.get("manifests")
    if sid and not isinstance(sid, str):
        raise PermanentError(f"backup {record.get('backup_id')}: manifests: expected a snapshot ID")
    if not sid:
        raise PermanentError(
            f"backup {record.get('backup_id')}: no manifests were captured with it; "
            "restore its volumes with `python -m steps restore`"
        )
    out = bundle.from_files(load_files(repo, sid), f"manifests snapshot {sid[:8]}")
    recorded = _app_of(record).get("namespace") or ""
    if not isinstance(recorded, str):
        raise PermanentError(f"backup {record.get('backup_id')}: app.namespace: expected a string")
    if recorded and out.namespace and out.namespace != recorded:
        # the namespace a restore in place goes to must not be the manifests' own say
        raise PermanentError(
            f"backup {record.get('backup_id')}: its record names namespace {recorded}, its manifests "
            f"(snapshot {sid[:8]}) were captured in namespace {out.namespace}; a backup that disagrees "
            "with itself is not restored"
        )
    return out


def record_volumes(record: dict) -> list[dict]:
    """The backup record's volumes, checked: the record is untrusted (a compromised writer can commit
    one), and each snapshot ID lands on a mover's command line. Called before anything is created."""
    import re

    from steps.errors import PermanentError

    volumes = record.get("volumes") or []
    if not isinstance(volumes, list):
        volumes = [volumes]  # refused below
    for i, v in enumerate(volumes):
        if not (
            isinstance(v, dict)
            and isinstance(v.get("name"), str)
            and isinstance(v.get("pvc") or "", str)
            and isinstance(v.get("snapshot"), str)
            and re.fullmatch(r"[0-9a-f]{8,64}", v["snapshot"])
        ):
            raise PermanentError(
                f"backup {record.get('backup_id')}: volumes[{i}]: expected a name, a PVC and a snapshot ID "
                "(hexadecimal); the record is damaged or crafted"
            )
    return volumes


def volumes_to_fill(record: dict, pvcs: list[dict]) -> tuple[list[dict], list[str]]:
    """Each created PVC with the repository snapshot holding its data; notes for the rest."""
    volumes = record_volumes(record)
    by_pvc = {v.get("pvc"): v for v in volumes if v.get("pvc")}
    out, notes = [], []
    for pvc in pvcs:
        name, ns = pvc["metadata"]["name"], pvc["metadata"].get("namespace")
        vol = by_pvc.pop(name, None)
        if vol is None:
            notes.append(f"PersistentVolumeClaim/{name}: no volume data in the backup; created empty")
            continue
        out.append(
            {
                "pvc": name,
                "namespace": ns,
                "volume": vol["name"],
                "snapshot": vol["snapshot"],
                "volume_mode": (pvc.get("spec") or {}).get("volumeMode") or "Filesystem",
            }
        )
    for name, vol in by_pvc.items():
        notes.append(
            f"volume {vol['name']}: its PVC {name} was not captured (or not restored); data not restored"
        )
    return out, notes


def backup_labels_needed(record: dict) -> dict[str, list[tuple[str, dict]]]:
    """Volume name → [(data directory inside it, consistent-point target record)] for every PostgreSQL
    target copied in backup mode (see :func:`steps.quiesce.postgresql.backup_labels_needed`)."""
    from steps.quiesce.postgresql import backup_labels_needed as needed

    return needed(record)


def mover_options(item: dict, spec, labels: dict) -> list[str]:
    """What a mover adds to ``restore --repo R --snapshot ID --target T`` for one volume: the owner ID
    maps of the transforms, and ``--write-backup-label`` for a volume holding the data directory of a
    PostgreSQL copied in backup mode (the mover reads the label from the repository itself)."""
    out: list[str] = []
    for flag, ranges in (("--uid-map", spec.uid_map), ("--gid-map", spec.gid_map)):
        for r in ranges:
            out += [flag, str(r)]
    if item["volume"] in labels:
        out.append("--write-backup-label")
    return out


def _label_report(item: dict, labels: dict) -> dict:
    from steps.quiesce.postgresql import label_files

    written = label_files(labels.get(item["volume"]) or [])
    return {"written": written} if written else {}


# --------------------------------------------------------------------------------------------------
# Movers


def volume_directory(client, namespace: str, pvc: str, volume_root: str | None, timeout: float):
    """The local directory (or file, for Block) behind a bound PVC: hostPath/local PVs, or the CSI hostpath
    layout ``volume_root/<volumeHandle>``."""
    from pathlib import Path

    from steps.errors import PermanentError, UsageError
    from steps.manifests.objects import dig

    claim = client.wait_for(
        "v1",
        "PersistentVolumeClaim",
        pvc,
        namespace,
        lambda o: o is not None and dig(o, "status", "phase") == "Bound",
        timeout,
        on_timeout=lambda o: PermanentError(
            f"PersistentVolumeClaim {namespace}/{pvc} not bound after {timeout:g}s "
            f"(phase {dig(o or {}, 'status', 'phase') or '-'}; a WaitForFirstConsumer class needs --mover pod)"
        ),
    )
    pv = client.get("v1", "PersistentVolume", dig(claim, "spec", "volumeName"))
    path = dig(pv, "spec", "hostPath", "path") or dig(pv, "spec", "local", "path")
    if not path:
        handle = dig(pv, "spec", "csi", "volumeHandle")
        if not handle or not volume_root:
            raise UsageError(
                f"--mover local: PersistentVolume {pv['metadata']['name']} of PVC {pvc} is neither "
                "hostPath nor local; pass --volume-root (the CSI hostpath data directory)"
            )
        path = str(Path(volume_root) / handle)
    if not Path(path).exists():
        raise PermanentError(
            f"--mover local: {path} (volume of PVC {namespace}/{pvc}) does not exist on this machine"
        )
    return path


def fill_local(client, items: list[dict], args, report, log, spec, labels: dict) -> None:
    """Restore each volume into its directory with the very command a mover pod runs (owner ID maps and
    the ``backup_label`` of a PostgreSQL copied in backup mode included)."""
    import time

    from steps import cli
    from steps.errors import PermanentError
    from steps.manifests import render

    for item in items:
        started = time.time()
        path = volume_directory(client, item["namespace"], item["pvc"], args.volume_root, args.timeout)
        argv = render.mover_args(
            args.repo,
            item["snapshot"],
            path,
            args.endpoint,
            args.exclude,
            extra_args=mover_options(item, spec, labels),
        )
        log(f"filling PVC {item['namespace']}/{item['pvc']} from snapshot {item['snapshot'][:8]}")
        rc = cli.main(argv)
        if rc != 0:
            raise PermanentError(
                f"restore of snapshot {item['snapshot'][:8]} into PVC {item['namespace']}/"
                f"{item['pvc']} failed (exit {rc})"
            )
        report.volumes.append(
            {
                **item,
                "duration_s": round(time.time() - started, 3),
                "mover": "local",
                **_label_report(item, labels),
            }
        )


def _split_secret(value: str) -> tuple[str, str]:
    name, _, key = value.partition(":")
    return name, key or "password"


def _split_credentials(value: str) -> tuple[str, str, str]:
    """``NAME[:ID_KEY:SECRET_KEY]`` of --credentials-secret."""
    from steps.errors import UsageError

    parts = value.split(":")
    if len(parts) == 1:
        return parts[0], "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"
    if len(parts) == 3 and all(parts):
        return parts[0], parts[1], parts[2]
    raise UsageError(f"--credentials-secret: expected NAME or NAME:ID_KEY:SECRET_KEY, got {value!r}")


def _copy_for_restore(client, kind: str, name: str, source_ns: str, ns: str, restore_id: str) -> bool:
    """Copy Secret or ConfigMap ``name`` from ``source_ns`` into ``ns`` unless it is there; True if copied."""
    from steps.manifests import render

    if client.get_or_none("v1", kind, name, ns) is not None:
        return False
    src = client.get("v1", kind, name, source_ns)
    copy = {
        "apiVersion": "v1",
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {
                **render.MANAGED_BY,
                render.LABEL_RESTORE: render.label_value(restore_id),
                render.LABEL_ROLE: "mover-secret" if kind == "Secret" else "mover-config",
            },
        },
    }
    if kind == "Secret":
        copy["type"] = src.get("type", "Opaque")
    for key in ("data", "binaryData") if kind == "ConfigMap" else ("data",):
        if src.get(key):
            copy[key] = src[key]
    client.create(copy)
    return True


def fill_pods(
    client, items: list[dict], args, record: dict, restore_id: str, report, log, spec, pg_labels: dict
) -> None:
    """A mover pod per volume, all at once; waits for every one; deletes them afterwards. Each runs
    ``restore`` with the owner ID maps of ``spec`` and, for a volume in ``pg_labels``, writes the
    ``backup_label`` it reads from the repository."""
    import os
    import time

    from steps.drivers.kube import AlreadyExists, KubeError
    from steps.errors import PermanentError, UsageError
    from steps.manifests import render
    from steps.manifests.objects import dig

    image = args.image or os.environ.get("SNAPFLOW_STEP_IMAGE", "")
    if not image:
        raise UsageError("--image: the step image is required for --mover pod (or set SNAPFLOW_STEP_IMAGE)")
    if not args.password_secret:
        raise UsageError(
            "--password-secret: required for --mover pod (the Secret with the repository password)"
        )
    pw_name, pw_key = _split_secret(args.password_secret)
    cred_name, cred_id_key, cred_secret_key = (
        _split_credentials(args.credentials_secret) if args.credentials_secret else ("", "", "")
    )
    ca_name, _, ca_key = args.ca_bundle.partition(":")
    ca_key = ca_key or "ca.crt"
    extra_env = {k: os.environ[k] for k in MOVER_ENV if os.environ.get(k)}
    copied: list[tuple[str, str, str]] = []  # (kind, namespace, name)
    if args.secrets_namespace:
        wanted = [("Secret", n) for n in (pw_name, cred_name) if n] + (
            [("ConfigMap", ca_name)] if ca_name else []
        )
        for kind, name in wanted:
            for ns in sorted({i["namespace"] for i in items}):
                if _copy_for_restore(client, kind, name, args.secrets_namespace, ns, restore_id):
                    copied.append((kind, ns, name))
    backup_id = record.get("backup_id", "")
    app = str(_app_of(record).get("name") or "")
    pods = {}
    started = time.time()
    try:
        for item in items:
            name = render.k8s_name("snapflow-restore", restore_id, item["pvc"])
            labels = {
                **render.backup_labels(backup_id, app, item["volume"], role="mover"),
                render.LABEL_RESTORE: render.label_value(restore_id),
            }
            manifest = render.mover_pod(
                name=name,
                namespace=item["namespace"],
                pvc=item["pvc"],
                image=image,
                repository=args.repo,
                snapshot_id=item["snapshot"],
                labels=labels,
                password_secret=pw_name,
                password_secret_key=pw_key,
                credentials_secret=cred_name or None,
                access_key_key=cred_id_key or "AWS_ACCESS_KEY_ID",
                secret_key_key=cred_secret_key or "AWS_SECRET_ACCESS_KEY",
                ca_config_map=ca_name or None,
                ca_key=ca_key,
                extra_env=extra_env,
                endpoint=args.endpoint,
                excludes=args.exclude,
                volume_mode=item["volume_mode"],
                run_as_root=not args.mover_non_root,
                extra_args=mover_options(item, spec, pg_labels),
            )
            try:
                client.create(manifest)
            except AlreadyExists:
                client.delete("v1", "Pod", name, item["namespace"])
                client.wait_for("v1", "Pod", name, item["namespace"], lambda o: o is None, args.timeout)
                client.create(manifest)
            pods[name] = item
            log(
                f"mover pod {name} fills PVC {item['namespace']}/{item['pvc']} from snapshot {item['snapshot'][:8]}"
            )
        for ns in sorted({i["namespace"] for i in items}):
            names = [n for n, i in pods.items() if i["namespace"] == ns]

            def finished(o: dict, ns: str = ns) -> bool:
                phase = dig(o, "status", "phase")
                if phase == "Failed":
                    n = o["metadata"]["name"]
                    raise PermanentError(
                        f"mover pod {ns}/{n} (PVC {pods[n]['pvc']}) failed: {_pod_failure(client, o)}"
                    )
                return phase == "Succeeded"

            client.wait_for_all(
                "v1",
                "Pod",
                ns,
                names,
                finished,
                args.timeout,
                label_selector=f"{render.LABEL_RESTORE}={render.label_value(restore_id)}",
                on_timeout=lambda seen, ns=ns, names=names: PermanentError(
                    f"mover pods in {ns} not finished after {args.timeout:g}s: "
                    + ", ".join(
                        f"{n} ({dig(seen.get(n) or {}, 'status', 'phase') or 'missing'})"
                        for n in sorted(seen) or names
                    )
                ),
            )
        for name, item in pods.items():
            report.volumes.append(
                {
                    **item,
                    "duration_s": round(time.time() - started, 3),
                    "mover": "pod",
                    "pod": name,
                    **_label_report(item, pg_labels),
                }
            )
    finally:
        for name, item in pods.items():
            try:
                client.delete("v1", "Pod", name, item["namespace"])
            except KubeError as err:
                log(f"could not delete mover pod {name}: {err}")
        for kind, ns, name in copied:
            try:
                client.delete("v1", kind, name, ns)
            except KubeError as err:
                log(f"could not delete the copied {kind} {ns}/{name}: {err}")


def _pod_failure(client, pod: dict) -> str:
    from steps.manifests.objects import dig

    parts = []
    for cs in dig(pod, "status", "containerStatuses", default=[]) or []:
        term = dig(cs, "state", "terminated") or {}
        if term:
            parts.append(
                f"exit {term.get('exitCode')}" + (f": {term.get('message')}" if term.get("message") else "")
            )
    try:
        log = client.pod_log(pod["metadata"]["namespace"], pod["metadata"]["name"], tail_lines=5)
        lines = [ln for ln in log.splitlines() if ln.strip()]
        if lines:
            parts.append("log: " + " | ".join(lines[-5:]))
    except Exception:  # the log is a courtesy; the failure itself is already known
        pass
    return "; ".join(parts) or "no details"


def redact(obj: dict) -> dict:
    """A Secret with its values replaced (a dry run prints objects; it must not print credentials)."""
    if obj.get("kind") != "Secret" or obj.get("apiVersion") != "v1":
        return obj
    out = dict(obj)
    for key in ("data", "stringData"):
        if isinstance(obj.get(key), dict):
            out[key] = dict.fromkeys(obj[key], "<redacted>")
    return out


# --------------------------------------------------------------------------------------------------
# Scope


def restore_scope(client, args, spec, bundle, record: dict):
    """The restore's namespaces: the one the backup's namespace maps to, and every target of the
    namespace map (each named by the user); which of them exist."""
    from steps.manifests.scope import Scope

    source = bundle.namespace or _app_of(record).get("namespace") or ""
    return Scope.of(
        spec.map_namespace(source) if source else "",
        spec.namespace_map.values(),
        cluster_resources=args.cluster_resources,
        exists=lambda ns: client.get_or_none("v1", "Namespace", ns) is not None,
    )


def in_scope(client, objects: list[dict], args, spec, bundle, record: dict, report) -> list[dict]:
    """The objects the restore may create; the refused ones go to ``report.refused`` (see
    :mod:`steps.manifests.scope`). Whether a kind is namespaced is the API server's answer."""
    from steps.manifests.scope import check_scope

    def namespaced(api_version: str, kind: str) -> bool:
        return client.resource(api_version, kind).namespaced

    result = check_scope(objects, restore_scope(client, args, spec, bundle, record), namespaced)
    report.refused = [r.to_dict() for r in result.refused]
    return result.allowed


def refuse_collisions(client, result) -> None:
    """Fail, before anything is created, when two objects of the backup would be created as one (same
    group, kind, namespace and name once transformed; see :mod:`steps.manifests.collisions`)."""
    from steps.errors import PermanentError
    from steps.manifests.collisions import collision_message, find_collisions

    def namespaced(api_version: str, kind: str) -> bool:
        return client.resource(api_version, kind).namespaced

    collisions = find_collisions(result.objects, result.origins, namespaced)
    if collisions:
        raise PermanentError(collision_message(collisions))


def _refuse_or_skip(report, args) -> None:
    """List the refused objects on stderr, one line each; fail unless --skip-refused."""
    import sys

    from steps.errors import PermanentError

    if not report.refused:
        return
    verb = "skipped" if args.skip_refused else "refused"
    for r in report.refused:
        where = f" in namespace {r['namespace']}" if r["namespace"] else ""
        print(f"{verb}: {r['object']}{where}: {r['reason']}", file=sys.stderr)
    if not args.skip_refused:
        n = len(report.refused)
        raise PermanentError(
            f"restore refused: {n} object{'s' if n != 1 else ''} of the backup {'are' if n != 1 else 'is'} "
            "outside the restore's scope (listed above); this run created nothing. Pass --skip-refused to "
            "restore the rest, or --cluster-resources to create cluster-scoped objects and bindings"
        )


def _write_summary(out: dict, args) -> None:
    """The report of a restore refused before it created anything (--report, --json)."""
    import json
    from pathlib import Path

    if args.report:
        Path(args.report).write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    if args.json:
        print(json.dumps(out, sort_keys=True))


# --------------------------------------------------------------------------------------------------
# Check


def run_check(args, namespace: str, timeout: float) -> dict:
    from steps.drivers.runner_kube import KubeRunner
    from steps.errors import PermanentError

    runner = KubeRunner(namespace=namespace, pod=args.check_pod, container=args.check_container)
    result = runner.run(["sh", "-c", args.check_command], timeout=timeout)
    out = {
        "pod": args.check_pod,
        "command": args.check_command,
        "exit": result.returncode,
        "stdout": result.stdout[-2000:],
        "ok": result.ok,
    }
    if not result.ok:
        raise PermanentError(
            f"check command in pod {namespace}/{args.check_pod} failed (exit "
            f"{result.returncode}): {' '.join(result.stderr.split())[-300:]}"
        )
    return out


# --------------------------------------------------------------------------------------------------


def run(args) -> int:
    import json
    import os
    import sys
    import uuid
    from pathlib import Path

    from steps.commands._kube import kube_client, log
    from steps.commands._repo import open_repository, warn
    from steps.errors import UsageError
    from steps.manifests.apply import RestoreOptions, Restorer, RestoreReport
    from steps.manifests.transforms import describe, transform_objects

    if args.timeout <= 0:
        raise UsageError(f"--timeout: expected a positive number of seconds, got {args.timeout:g}")
    if args.phase == "fill" and not args.volumes:
        raise UsageError("--volumes: required with --phase fill (the file --phase prepare wrote with --out)")
    if args.check_command and not args.check_pod:
        raise UsageError("--check-pod: required with --check-command")
    restore_id = args.restore_id or os.environ.get("ARGO_WORKFLOW_NAME") or f"restore-{uuid.uuid4().hex[:8]}"

    repo = open_repository(args)
    record = find_backup(repo, args.backup, args.app, args.source_namespace)
    record_volumes(record)
    bundle = load_bundle(repo, record)
    spec = transform_spec(args, bundle.namespace)
    result = transform_objects(bundle.objects, spec)
    report = RestoreReport(notes=list(result.notes))
    pg_labels = backup_labels_needed(record)

    def summary() -> dict:
        return {
            "backup_id": record.get("backup_id"),
            "restore_id": restore_id,
            "phase": args.phase,
            "transforms": describe(spec),
            **report.to_dict(),
        }

    if args.dry_run:
        import yaml

        with kube_client(args) as client:
            refuse_collisions(client, result)
            objects = in_scope(client, result.objects, args, spec, bundle, record, report)
            restorer = Restorer(client, objects, RestoreOptions(args.existing, args.timeout))
            existing = restorer.existing()
        sys.stdout.write(yaml.safe_dump_all([redact(o) for o in objects], sort_keys=True))
        for n in result.notes:
            print(f"note: {n}", file=sys.stderr)
        if existing:
            print(
                f"already present ({args.existing}): " + ", ".join(str(r) for r in existing), file=sys.stderr
            )
        _refuse_or_skip(report, args)
        return 0

    with kube_client(args) as client:
        refuse_collisions(client, result)
        objects = in_scope(client, result.objects, args, spec, bundle, record, report)
        if report.refused and not args.skip_refused:
            _write_summary(summary(), args)
            _refuse_or_skip(report, args)
        restorer = Restorer(client, objects, RestoreOptions(args.existing, args.timeout), report, log=log)
        items: list[dict] = []
        if args.phase in ("all", "prepare"):
            created_pvcs = restorer.prepare()
            items, notes = volumes_to_fill(record, created_pvcs)
            for item in items:
                # what a mover run by the workflow itself (--mover none) adds to its restore command:
                # the overwrite mode every mover passes (see render.mover_args), then this volume's own
                item["restore_options"] = [*MOVER_OVERWRITE_ARGS, *mover_options(item, spec, pg_labels)]
            report.notes.extend(notes)
            if args.out:
                Path(args.out).write_text(json.dumps(items, indent=2, sort_keys=True) + "\n")
        if args.phase == "fill":
            items = json.loads(Path(args.volumes).read_text())
        if args.phase in ("all", "fill") and items:
            with report.phase("fill"):
                if args.mover == "local":
                    fill_local(client, items, args, report, log, spec, pg_labels)
                elif args.mover == "pod":
                    fill_pods(client, items, args, record, restore_id, report, log, spec, pg_labels)
        if args.phase in ("all", "finish"):
            restorer.finish(wait_ready=args.wait_ready or bool(args.check_command))
            if args.check_command:
                with report.phase("check"):
                    target_ns = spec.map_namespace(bundle.namespace)
                    report.check = run_check(args, target_ns, args.timeout)
    out = summary()
    if args.report:
        Path(args.report).write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    _refuse_or_skip(report, args)
    try:
        repo.save_record("runs", {"name": "restore", **out}, key=record.get("backup_id") or restore_id)
    except Exception as err:  # a read-only repository credential may restore but not record
        warn(f"the restore report was not stored in the repository: {err}")
    for n in report.notes:
        log(f"note: {n}")
    if args.json:
        print(json.dumps(out, sort_keys=True))
    else:
        phases = ", ".join(f"{p['name']} {p['duration_s']}s" for p in out["phases"])
        print(
            f"restored backup {record.get('backup_id')} into {', '.join(report.namespaces)}: "
            f"{len(report.created)} created, {len(report.skipped)} kept, {len(report.replaced)} replaced, "
            f"{len(report.refused)} refused, {len(report.volumes)} volumes filled; {phases}; "
            f"RTO {out['rto_s']}s",
            file=sys.stderr,
        )
    return 0
