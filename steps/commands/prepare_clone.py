"""``prepare-clone``: wait until a VolumeSnapshot is ready, then create a PVC cloned from it."""

from __future__ import annotations

from steps.commands._kube import KUBE_EPILOG, add_kube_args

NAME = "prepare-clone"
HELP = "wait for a VolumeSnapshot to be ready and create a clone PVC from it (prints the claim name)"
DESCRIPTION = """Wait (watching, up to --timeout) until the VolumeSnapshot --snapshot is readyToUse, then create
a PersistentVolumeClaim provisioned from it — same storage class, volume mode (Filesystem or Block) and
access modes as the source PVC --pvc, at least the snapshot's restoreSize — labelled with the backup ID
so finalize deletes it. Idempotent: a clone made by an earlier attempt is reused. The copy step mounts
the clone (read-only) and streams it into the repository. The last line of stdout is the claim name.

Without --snapshot, the VolumeSnapshot of --volume (default: --pvc) labelled with the backup ID is used
(what consistent-point created, also for a group snapshot's members).

With --mover-namespace, the clone is made there instead, so that the copy pod (which reads every
owner's files as root) runs in a namespace of its own and the app's namespace can enforce Pod Security
restricted: the app's snapshot is bound in the mover namespace through a pre-provisioned
VolumeSnapshotContent with the same snapshotHandle and deletionPolicy Retain, and a VolumeSnapshot
there naming it; the clone is provisioned from that. The clean-up of that side (release_mover_objects in
steps.drivers.snapshot_csi) deletes the three and never the app's snapshot data.

examples:
  python -m steps prepare-clone --namespace shop --snapshot snapflow-backup-db-x7k2-data --pvc data-db-0 \\
      --backup-id backup-db-x7k2
  python -m steps prepare-clone --namespace shop --pvc data-db-0 --volume data --backup-id backup-db-x7k2 \\
      --storage-class xfs-nouuid --out /tmp/claim
  python -m steps prepare-clone --namespace shop --mover-namespace shop-movers --pvc data-db-0 \\
      --backup-id backup-db-x7k2
"""


def configure(parser):
    parser.add_argument("--namespace", required=True, metavar="NS", help="namespace of the snapshot and PVC")
    parser.add_argument(
        "--snapshot", default="", metavar="NAME", help="VolumeSnapshot name (default: by label)"
    )
    parser.add_argument(
        "--mover-namespace",
        default="",
        metavar="NS",
        help="make the clone in this namespace, from the snapshot bound there statically "
        "(default: --namespace)",
    )
    parser.add_argument(
        "--pvc", required=True, metavar="NAME", help="the source PVC (its spec shapes the clone)"
    )
    parser.add_argument(
        "--backup-id", required=True, metavar="ID", help="the backup run (Argo workflow name)"
    )
    parser.add_argument(
        "--volume", default="", metavar="NAME", help="the plan's volume name (default: --pvc)"
    )
    parser.add_argument("--app", default="", metavar="NAME", help="the application (recorded as a label)")
    parser.add_argument(
        "--storage-class",
        default="",
        metavar="NAME",
        help="storage class of the clone (default: the source PVC's; XFS clones need one "
        "mounting with nouuid)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        metavar="S",
        help="seconds to wait for readyToUse (default 600)",
    )
    parser.add_argument(
        "--out", metavar="FILE", help="also write the claim name to FILE (Argo output parameter)"
    )
    add_kube_args(parser)
    parser.epilog = KUBE_EPILOG


def find_snapshot(client, namespace: str, backup_id: str, volume: str, pvc: str) -> str:
    """The VolumeSnapshot of ``volume`` made for ``backup_id`` (by label), else the one of ``pvc``."""
    from steps.drivers import kube_objects as render
    from steps.drivers.kube_objects import dig
    from steps.drivers.snapshot_csi import SNAPSHOT_API
    from steps.errors import PermanentError

    selector = f"{render.LABEL_BACKUP}={render.label_value(backup_id)}"
    items, _ = client.list(SNAPSHOT_API, "VolumeSnapshot", namespace, label_selector=selector)
    by_volume = [
        s for s in items if dig(s, "metadata", "labels", render.LABEL_VOLUME) == render.label_value(volume)
    ]
    by_pvc = [s for s in items if dig(s, "spec", "source", "persistentVolumeClaimName") == pvc]
    found = by_volume or by_pvc
    if len(found) != 1:
        raise PermanentError(
            f"backup {backup_id}: expected one VolumeSnapshot of volume {volume} (PVC {pvc}) in namespace "
            f"{namespace} labelled {selector}, found {len(found)}"
        )
    return found[0]["metadata"]["name"]


def _quantity_bytes(q: str | int | None) -> float:
    if q is None:
        return 0.0
    if isinstance(q, int | float):
        return float(q)
    units = {
        "Ki": 2**10,
        "Mi": 2**20,
        "Gi": 2**30,
        "Ti": 2**40,
        "Pi": 2**50,
        "Ei": 2**60,
        "k": 1e3,
        "K": 1e3,
        "M": 1e6,
        "G": 1e9,
        "T": 1e12,
        "P": 1e15,
        "E": 1e18,
        "m": 1e-3,
    }
    text = str(q).strip()
    for suffix in sorted(units, key=len, reverse=True):
        if text.endswith(suffix):
            try:
                return float(text[: -len(suffix)]) * units[suffix]
            except ValueError:
                return 0.0
    try:
        return float(text)
    except ValueError:
        return 0.0


def prepare_clone(
    client,
    *,
    namespace: str,
    pvc: str,
    backup_id: str,
    snapshot: str = "",
    volume: str = "",
    app: str = "",
    storage_class: str = "",
    timeout: float = 600.0,
    mover_namespace: str = "",
    log=lambda _m: None,
) -> str:
    """Create (or reuse) the clone PVC of one snapshot; returns its claim name. With
    ``mover_namespace`` the clone is made there, from the snapshot bound there statically
    (:func:`steps.drivers.snapshot_csi.import_snapshot`)."""
    from steps.drivers import kube_objects as render
    from steps.drivers.kube import AlreadyExists
    from steps.drivers.kube_objects import dig
    from steps.drivers.snapshot_csi import SNAPSHOT_API, import_snapshot, wait_objects
    from steps.errors import PermanentError, UsageError

    volume = volume or pvc
    if mover_namespace == namespace:
        raise UsageError(f"--mover-namespace: must differ from --namespace ({namespace})")
    source = client.get_or_none("v1", "PersistentVolumeClaim", pvc, namespace)
    if source is None:
        raise UsageError(f"--pvc: PersistentVolumeClaim {pvc} does not exist in namespace {namespace}")
    name = snapshot or find_snapshot(client, namespace, backup_id, volume, pvc)
    snap = wait_objects(
        client,
        namespace,
        SNAPSHOT_API,
        "VolumeSnapshot",
        [name],
        lambda o: dig(o, "status", "readyToUse") is True,
        timeout,
        "not ready to use",
    )[name]
    if dig(snap, "spec", "source", "persistentVolumeClaimName") not in (None, pvc):
        raise UsageError(
            f"--snapshot: VolumeSnapshot {name} is of PVC "
            f"{dig(snap, 'spec', 'source', 'persistentVolumeClaimName')}, not of --pvc {pvc}"
        )
    restore_size = dig(snap, "status", "restoreSize")
    requested = dig(source, "spec", "resources", "requests", "storage")
    size = requested or restore_size
    if restore_size and _quantity_bytes(restore_size) > _quantity_bytes(requested):
        size = restore_size
    if not size:
        raise PermanentError(f"VolumeSnapshot {name}: no restoreSize and PVC {pvc} requests no storage")
    clone_namespace, clone_source = namespace, name
    if mover_namespace:
        bound = import_snapshot(
            client,
            namespace=namespace,
            snapshot=name,
            mover_namespace=mover_namespace,
            backup_id=backup_id,
            volume=volume,
            app=app,
            timeout=timeout,
            log=log,
        )
        clone_namespace, clone_source = mover_namespace, bound["metadata"]["name"]
    claim = render.clone_claim_name(backup_id, volume)
    manifest = render.clone_pvc(
        name=claim,
        namespace=clone_namespace,
        snapshot=clone_source,
        size=str(size),
        labels=render.backup_labels(backup_id, app, volume, role="clone"),
        storage_class=storage_class or dig(source, "spec", "storageClassName"),
        volume_mode=dig(source, "spec", "volumeMode") or "Filesystem",
        access_modes=["ReadWriteOnce"],
    )
    where = f" in namespace {clone_namespace}" if mover_namespace else ""
    try:
        client.create(manifest)
        log(f"clone PVC {claim} of VolumeSnapshot {clone_source} created{where}")
    except AlreadyExists:
        existing = client.get("v1", "PersistentVolumeClaim", claim, clone_namespace)
        if dig(existing, "spec", "dataSource", "name") != clone_source:
            raise PermanentError(
                f"PersistentVolumeClaim {clone_namespace}/{claim} exists but is not a clone of "
                f"VolumeSnapshot {clone_source}"
            ) from None
        log(f"clone PVC {claim} of VolumeSnapshot {clone_source} already exists{where}; reused")
    return claim


def run(args) -> int:
    from steps.commands._kube import kube_client, log
    from steps.drivers.files import write_text
    from steps.errors import UsageError

    if args.timeout <= 0:
        raise UsageError(f"--timeout: expected a positive number of seconds, got {args.timeout:g}")
    with kube_client(args) as client:
        claim = prepare_clone(
            client,
            namespace=args.namespace,
            pvc=args.pvc,
            backup_id=args.backup_id,
            snapshot=args.snapshot,
            volume=args.volume,
            app=args.app,
            storage_class=args.storage_class,
            timeout=args.timeout,
            mover_namespace=args.mover_namespace,
            log=log,
        )
    if args.out:
        write_text(args.out, claim)
    print(claim)
    return 0
