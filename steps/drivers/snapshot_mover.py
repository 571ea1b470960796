"""The mover namespace's side of a backup: the app's snapshot bound there statically, and its clean-up.

With a mover namespace, :func:`import_snapshot` binds an app's ready snapshot there statically (a
pre-provisioned VolumeSnapshotContent with the same ``snapshotHandle`` and ``deletionPolicy: Retain``,
and a VolumeSnapshot there naming it), so that a clone can be provisioned there;
:func:`release_mover_objects` deletes that side again and never the app's snapshot data. Both objects
carry the backup's labels (:func:`steps.drivers.kube_objects.backup_labels`) with the roles
``mover-content`` and ``mover-snapshot``.
"""

from __future__ import annotations

from typing import Any

from steps.drivers import kube_objects
from steps.drivers.kube import KubeClient, KubeError
from steps.drivers.kube_objects import dig
from steps.drivers.snapshot_wait import SNAPSHOT_API, SnapshotFailed, failure_message, wait_objects
from steps.errors import PermanentError, UsageError

ROLE_MOVER_CONTENT = "mover-content"
ROLE_MOVER_SNAPSHOT = "mover-snapshot"
RETAIN = "Retain"


def mover_content_name(mover_namespace: str, backup_id: str, volume: str) -> str:
    """The pre-provisioned VolumeSnapshotContent of one volume in the mover namespace (cluster-scoped,
    so the mover namespace is part of the name)."""
    return kube_objects.k8s_name("snapflow", mover_namespace, backup_id, volume)


def mover_snapshot_name(backup_id: str, volume: str) -> str:
    """The VolumeSnapshot in the mover namespace bound to :func:`mover_content_name`."""
    return kube_objects.k8s_name("snapflow", backup_id, volume)


def _check_same(existing: dict, want: dict, what: str, fields: list[tuple[str, ...]]) -> None:
    for path in fields:
        if dig(existing, *path) != dig(want, *path):
            raise PermanentError(
                f"{what} exists but {'.'.join(path)} is {dig(existing, *path)!r}, not "
                f"{dig(want, *path)!r}: it is not this backup's; delete it or run the backup again"
            )


def import_snapshot(
    client: KubeClient,
    *,
    namespace: str,
    snapshot: str,
    mover_namespace: str,
    backup_id: str,
    volume: str,
    app: str = "",
    timeout: float = 600.0,
    log=lambda _m: None,
) -> dict:
    """Make the app's ready VolumeSnapshot ``namespace/snapshot`` usable in ``mover_namespace``: a
    pre-provisioned VolumeSnapshotContent with the same ``snapshotHandle`` (and driver, source volume
    mode and class), ``deletionPolicy: Retain`` so that deleting it never deletes the snapshot, and a
    VolumeSnapshot in the mover namespace naming it (``source.volumeSnapshotContentName``). A claim
    provisioned from that snapshot lives in the mover namespace, so the pod mounting it runs there.

    This is the static binding every external-snapshotter supports; the cross-namespace data source
    (``dataSourceRef.namespace``) is alpha and needs a ReferenceGrant, so it is not used. Idempotent: the
    objects of an earlier attempt are reused if they are this volume's. Returns the mover-side
    VolumeSnapshot once ``readyToUse``."""
    if mover_namespace == namespace:
        raise UsageError(f"mover namespace {mover_namespace}: must differ from the app's namespace")
    app_snap = client.get_or_none(SNAPSHOT_API, "VolumeSnapshot", snapshot, namespace)
    if app_snap is None:
        raise SnapshotFailed(f"VolumeSnapshot {namespace}/{snapshot} does not exist")
    content_name = dig(app_snap, "status", "boundVolumeSnapshotContentName") or dig(
        app_snap, "spec", "source", "volumeSnapshotContentName"
    )
    content = (
        client.get_or_none(SNAPSHOT_API, "VolumeSnapshotContent", content_name, None)
        if content_name
        else None
    )
    handle = dig(content, "status", "snapshotHandle") or dig(content, "spec", "source", "snapshotHandle")
    if content is None or not handle:
        raise SnapshotFailed(
            failure_message(
                client,
                namespace,
                "VolumeSnapshot",
                app_snap,
                snapshot,
                "has no VolumeSnapshotContent with a snapshotHandle to bind in the mover namespace",
            )
        )
    labels = kube_objects.backup_labels(backup_id, app, volume, role=ROLE_MOVER_CONTENT)
    vsc_name = mover_content_name(mover_namespace, backup_id, volume)
    vs_name = mover_snapshot_name(backup_id, volume)
    spec: dict[str, Any] = {
        "deletionPolicy": RETAIN,
        "driver": dig(content, "spec", "driver"),
        "source": {"snapshotHandle": handle},
        "volumeSnapshotRef": {
            "apiVersion": SNAPSHOT_API,
            "kind": "VolumeSnapshot",
            "namespace": mover_namespace,
            "name": vs_name,
        },
    }
    for key in ("sourceVolumeMode", "volumeSnapshotClassName"):
        if dig(content, "spec", key):
            spec[key] = dig(content, "spec", key)
    want_content = {
        "apiVersion": SNAPSHOT_API,
        "kind": "VolumeSnapshotContent",
        "metadata": {"name": vsc_name, "labels": labels},
        "spec": spec,
    }
    _create_or_reuse(
        client,
        want_content,
        None,
        f"VolumeSnapshotContent {vsc_name}",
        [
            ("spec", "source", "snapshotHandle"),
            ("spec", "volumeSnapshotRef", "namespace"),
            ("spec", "volumeSnapshotRef", "name"),
        ],
        log,
    )
    want_snapshot = {
        "apiVersion": SNAPSHOT_API,
        "kind": "VolumeSnapshot",
        "metadata": {
            "name": vs_name,
            "namespace": mover_namespace,
            "labels": kube_objects.backup_labels(backup_id, app, volume, role=ROLE_MOVER_SNAPSHOT),
        },
        "spec": {"source": {"volumeSnapshotContentName": vsc_name}},
    }
    _create_or_reuse(
        client,
        want_snapshot,
        mover_namespace,
        f"VolumeSnapshot {mover_namespace}/{vs_name}",
        [("spec", "source", "volumeSnapshotContentName")],
        log,
    )
    log(
        f"VolumeSnapshot {namespace}/{snapshot} bound in namespace {mover_namespace} as {vs_name} "
        f"(content {vsc_name}, deletionPolicy {RETAIN})"
    )
    return wait_objects(
        client,
        mover_namespace,
        SNAPSHOT_API,
        "VolumeSnapshot",
        [vs_name],
        lambda o: dig(o, "status", "readyToUse") is True,
        timeout,
        "not ready to use",
    )[vs_name]


def _create_or_reuse(
    client: KubeClient, want: dict, namespace: str | None, what: str, same: list[tuple[str, ...]], log
) -> None:
    try:
        client.create(want)
        log(f"{what} created")
    except KubeError as err:
        if getattr(err, "status", None) != 409:
            raise SnapshotFailed(f"{what}: {err}") from None
        existing = client.get(want["apiVersion"], want["kind"], want["metadata"]["name"], namespace)
        _check_same(existing, want, what, same)
        log(f"{what} already exists; reused")


def release_mover_objects(
    client: KubeClient, mover_namespace: str, backup_id: str, volumes: list[str], log=lambda _m: None
) -> dict[str, list[str]]:
    """Clean-up of one backup in the mover namespace: its clone claims, the VolumeSnapshots bound
    there and their pre-provisioned contents (found by name, :func:`mover_content_name`, so nothing
    lists the cluster's contents). Never the app's snapshot data: a content is switched to
    ``deletionPolicy: Retain`` first if anyone changed it, before its snapshot or itself is deleted,
    and only a content pointing into ``mover_namespace`` and labelled with ``backup_id`` is touched.
    Every failure is reported, none stops the rest; idempotent."""
    done: dict[str, list[str]] = {"deleted": [], "errors": []}
    backup = kube_objects.label_value(backup_id)
    selector = f"{kube_objects.LABEL_BACKUP}={backup}"

    def delete(api_version: str, kind: str, name: str, namespace: str | None) -> None:
        try:
            if client.delete(api_version, kind, name, namespace):
                done["deleted"].append(f"{kind}/{name}")
                log(f"deleted {kind}/{name}" + (f" in namespace {namespace}" if namespace else ""))
        except KubeError as err:
            done["errors"].append(f"delete {kind}/{name}: {err}")

    def listed(api_version: str, kind: str, role: str) -> list[str]:
        try:
            items, _ = client.list(
                api_version,
                kind,
                mover_namespace,
                label_selector=f"{selector},{kube_objects.LABEL_ROLE}={role}",
            )
        except KubeError as err:
            done["errors"].append(f"list {kind} in namespace {mover_namespace}: {err}")
            return []
        return [i["metadata"]["name"] for i in items]

    for claim in listed("v1", "PersistentVolumeClaim", "clone"):
        delete("v1", "PersistentVolumeClaim", claim, mover_namespace)
    contents: list[str] = []
    for volume in volumes:
        name = mover_content_name(mover_namespace, backup_id, volume)
        try:
            vsc = client.get_or_none(SNAPSHOT_API, "VolumeSnapshotContent", name, None)
        except KubeError as err:
            done["errors"].append(f"get VolumeSnapshotContent/{name}: {err}")
            continue
        if vsc is None:
            continue
        ref = dig(vsc, "spec", "volumeSnapshotRef", "namespace")
        if ref != mover_namespace or dig(vsc, "metadata", "labels", kube_objects.LABEL_BACKUP) != backup:
            done["errors"].append(
                f"VolumeSnapshotContent/{name} is not this backup's in namespace {mover_namespace} "
                f"(it points into {ref}); left alone"
            )
            continue
        if dig(vsc, "spec", "deletionPolicy") != RETAIN:
            try:
                client.patch(
                    SNAPSHOT_API, "VolumeSnapshotContent", name, None, {"spec": {"deletionPolicy": RETAIN}}
                )
                log(f"VolumeSnapshotContent/{name}: deletionPolicy set back to {RETAIN} before deleting")
            except KubeError as err:
                done["errors"].append(
                    f"VolumeSnapshotContent/{name} has deletionPolicy {dig(vsc, 'spec', 'deletionPolicy')} "
                    f"and could not be set to {RETAIN} ({err}); left alone so the snapshot is not deleted"
                )
                continue
        contents.append(name)
    for snapshot in listed(SNAPSHOT_API, "VolumeSnapshot", ROLE_MOVER_SNAPSHOT):
        try:
            obj = client.get_or_none(SNAPSHOT_API, "VolumeSnapshot", snapshot, mover_namespace)
            bound = dig(obj, "status", "boundVolumeSnapshotContentName") or dig(
                obj, "spec", "source", "volumeSnapshotContentName"
            )
            gone = (
                bool(bound)
                and bound not in contents
                and (client.get_or_none(SNAPSHOT_API, "VolumeSnapshotContent", bound, None) is None)
            )
        except KubeError as err:
            done["errors"].append(f"get VolumeSnapshot/{snapshot}: {err}")
            continue
        if bound and bound not in contents and not gone:
            # deleting a snapshot bound to a content that is not Retain would delete the snapshot data
            done["errors"].append(
                f"VolumeSnapshot/{snapshot} in namespace {mover_namespace} is bound to "
                f"VolumeSnapshotContent/{bound}, not a Retain content of this backup; left alone"
            )
            continue
        delete(SNAPSHOT_API, "VolumeSnapshot", snapshot, mover_namespace)
    for name in contents:
        delete(SNAPSHOT_API, "VolumeSnapshotContent", name, None)
    return done
