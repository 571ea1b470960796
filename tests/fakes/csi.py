"""Simulated storage for the fake Kubernetes API server: a CSI provisioner that backs every
PersistentVolumeClaim with a directory (a sparse file for volumeMode Block), and the CSI snapshot
controller + sidecar for VolumeSnapshots and VolumeGroupSnapshots.

Provisioning: a claim binds (status.phase Bound, spec.volumeName, a PersistentVolume `pvc-<uid>` with
spec.csi.volumeHandle) after `provision_delay`, at once or, for a WaitForFirstConsumer class, when a
pod uses it. A claim whose dataSource/dataSourceRef is a VolumeSnapshot (ready) or another claim starts
as a copy of it. Deleting a claim (after the pvc-protection finalizer is released: no running pod uses
it) deletes the volume when the reclaim policy is Delete.

Snapshots: creating a VolumeSnapshot creates its VolumeSnapshotContent `snapcontent-<uid>`, copies the
volume at the moment of the cut (`cp -a`: modes, owners, times, xattrs, symlinks, hard links, holes),
writes the content's status.creationTime (Unix nanoseconds, the instant the cut began) and mirrors it
to the VolumeSnapshot (RFC 3339, whole seconds), then sets readyToUse after `ready_delay`. A
VolumeGroupSnapshot cuts all claims its selector matches at one instant and creates one
VolumeSnapshot + content per volume, as the CSI group snapshot API describes (the group content's
status lists volumeHandle -> snapshotHandle). `SnapshotBehavior` rules inject delays and failures:
mode "ready" (default), "never_ready", "error", "late_cut". Failures write status.error and Warning
Events on the snapshot.

Static binding (pre-provisioned snapshots, as the external-snapshotter documents them): a
VolumeSnapshotContent created with `spec.source.snapshotHandle` is imported — ready when the driver
holds that snapshot (its size and cut time are the driver's, so those of the content that cut it), an
error otherwise. A VolumeSnapshot whose `spec.source.volumeSnapshotContentName` names it binds both
ways once the content's `volumeSnapshotRef` names the snapshot (the content gets the snapshot's uid, the
snapshot `boundVolumeSnapshotContentName`) and mirrors its status (readyToUse, restoreSize,
creationTime); a claim can then be provisioned from it in the snapshot's namespace. Until the content
exists, or when it is bound to another snapshot, the snapshot reports an error. Deleting a content whose
deletionPolicy is Retain, or a snapshot bound to one, leaves the driver's snapshot data in place; with
Delete the data goes, whichever content pointed at it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tests.fakes.kube_objects import (
    format_quantity,
    get_path,
    label_selector_matcher,
    ns_to_rfc3339,
    owner_reference,
    parse_quantity,
    rfc3339,
)
from tests.fakes.kube_resources import ResourceType
from tests.fakes.kube_store import ADDED, DELETED, StoreEvent

if TYPE_CHECKING:
    from tests.fakes.kubeapi import FakeKubeAPI

DRIVER = "hostpath.csi.k8s.io"
STORAGE_CLASS = "csi-hostpath-sc"
SNAPSHOT_CLASS = "csi-hostpath-snapclass"
GROUP_SNAPSHOT_CLASS = "csi-hostpath-groupsnapclass"
PVC_PROTECTION = "kubernetes.io/pvc-protection"
SNAPSHOT_GROUP = "snapshot.storage.k8s.io"
GROUP_SNAPSHOT_GROUP = "groupsnapshot.storage.k8s.io"

MODES = ("ready", "never_ready", "error", "late_cut")


@dataclass
class SnapshotBehavior:
    """How the simulated driver treats a snapshot (or group snapshot).

    mode: "ready"       cut after `cut_delay`, readyToUse after `ready_delay`;
          "never_ready" cut (creationTime set) but readyToUse stays false; with `error_message`
                        status.error says why;
          "error"       no cut: status.error = `error_message`, readyToUse false;
          "late_cut"    the first attempt fails (status.error = `error_message` or a deadline
                        message), the cut happens `late_by` seconds after the request.
    """

    mode: str = "ready"
    cut_delay: float = 0.0
    ready_delay: float = 0.0
    error_message: str | None = None
    late_by: float = 1.0

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"SnapshotBehavior.mode {self.mode!r} is not one of {', '.join(MODES)}")


@dataclass
class _Rule:
    behavior: SnapshotBehavior
    namespace: str | None
    pvc: str | None
    name: str | None
    count: int | None

    def matches(self, namespace: str, pvc: str | None, name: str) -> bool:
        return (
            (self.namespace is None or self.namespace == namespace)
            and (self.pvc is None or self.pvc == pvc)
            and (self.name is None or self.name == name)
            and (self.count is None or self.count > 0)
        )


# The environment of the copies, fixed at import: they run on the server's threads, and a child spawned
# while another thread changes os.environ (a test running a step in-process) can inherit a freed
# environment block and fail with EFAULT.
_COPY_ENV = {"PATH": os.environ.get("PATH", os.defpath), "LC_ALL": "C"}


def copy_tree(source: Path, target: Path) -> None:
    """Copy a volume (directory or block file) preserving everything `cp -a` preserves."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        target.mkdir(exist_ok=True)
        cmd = ["cp", "-a", f"{source}/.", str(target)]
    else:
        cmd = ["cp", "-a", str(source), str(target)]
    result = subprocess.run(cmd, capture_output=True, text=True, env=_COPY_ENV)
    if result.returncode != 0:
        raise OSError(f"copying {source} to {target} failed: {result.stderr.strip()}")


def remove_tree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _size_of(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


class StorageSimulator:
    def __init__(self, server: FakeKubeAPI):
        self.server = server
        self.store = server.store
        self.provision_delay = 0.0
        self.pvc_protection = True
        self.default = SnapshotBehavior()
        self._rules: list[_Rule] = []
        self._provisioning: set[str] = set()
        self._snapshotting: set[str] = set()
        self.volumes_root = server.root / "volumes"
        self.snapshots_root = server.root / "snapshots"
        reg = server.registry
        self.rt = {
            "pvc": reg.resolve("persistentvolumeclaims"),
            "pv": reg.resolve("persistentvolumes"),
            "pod": reg.resolve("pods"),
            "sc": reg.resolve("storageclasses.storage.k8s.io"),
            "vs": reg.resolve("volumesnapshots.snapshot.storage.k8s.io"),
            "vsc": reg.resolve("volumesnapshotcontents.snapshot.storage.k8s.io"),
            "vsclass": reg.resolve("volumesnapshotclasses.snapshot.storage.k8s.io"),
            "vgs": reg.resolve("volumegroupsnapshots.groupsnapshot.storage.k8s.io"),
            "vgsc": reg.resolve("volumegroupsnapshotcontents.groupsnapshot.storage.k8s.io"),
            "vgsclass": reg.resolve("volumegroupsnapshotclasses.groupsnapshot.storage.k8s.io"),
        }

    # -- configuration --------------------------------------------------------------------------------

    def behave(
        self,
        behavior: SnapshotBehavior | None = None,
        *,
        namespace: str | None = None,
        pvc: str | None = None,
        name: str | None = None,
        count: int | None = None,
        **fields,
    ) -> SnapshotBehavior:
        """Add a rule: snapshots (or group snapshots, by `name`) matching namespace / source claim /
        snapshot name get `behavior` (or SnapshotBehavior(**fields)); `count` limits how many. The
        newest matching rule wins; unmatched snapshots follow `self.default`."""
        behavior = behavior or SnapshotBehavior(**fields)
        self._rules.insert(0, _Rule(behavior, namespace, pvc, name, count))
        return behavior

    def clear_rules(self) -> None:
        self._rules.clear()

    def _behavior(self, namespace: str, pvc: str | None, name: str) -> SnapshotBehavior:
        for rule in self._rules:
            if rule.matches(namespace, pvc, name):
                if rule.count is not None:
                    rule.count -= 1
                return rule.behavior
        return self.default

    # -- wiring ---------------------------------------------------------------------------------------

    def install(self) -> None:
        self.store.admission.append(self.admit)
        self.store.listeners.append(self.handle)

    def seed(self) -> None:
        def ensure(rtype: ResourceType, body: dict) -> None:
            if self.store.peek(rtype, None, body["metadata"]["name"]) is None:
                self.store.create(rtype, None, body)

        ensure(
            self.server.registry.resolve("csidrivers.storage.k8s.io"),
            {
                "metadata": {"name": DRIVER},
                "spec": {
                    "attachRequired": False,
                    "podInfoOnMount": True,
                    "volumeLifecycleModes": ["Persistent"],
                },
            },
        )
        ensure(
            self.rt["sc"],
            {
                "metadata": {
                    "name": STORAGE_CLASS,
                    "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
                },
                "provisioner": DRIVER,
                "reclaimPolicy": "Delete",
                "volumeBindingMode": "Immediate",
                "allowVolumeExpansion": True,
            },
        )
        ensure(
            self.rt["vsclass"],
            {
                "metadata": {
                    "name": SNAPSHOT_CLASS,
                    "annotations": {"snapshot.storage.kubernetes.io/is-default-class": "true"},
                },
                "driver": DRIVER,
                "deletionPolicy": "Delete",
            },
        )
        ensure(
            self.rt["vgsclass"],
            {
                "metadata": {
                    "name": GROUP_SNAPSHOT_CLASS,
                    "annotations": {"groupsnapshot.storage.kubernetes.io/is-default-class": "true"},
                },
                "driver": DRIVER,
                "deletionPolicy": "Delete",
            },
        )

    # -- paths ----------------------------------------------------------------------------------------

    def volume_path(self, namespace: str, claim: str) -> Path:
        pvc = self.store.peek(self.rt["pvc"], namespace, claim)
        if pvc is None:
            raise KeyError(f"persistentvolumeclaim {namespace}/{claim} does not exist")
        pv_name = get_path(pvc, "spec", "volumeName")
        pv = self.store.peek(self.rt["pv"], None, pv_name) if pv_name else None
        handle = get_path(pv or {}, "spec", "csi", "volumeHandle")
        if not handle:
            raise KeyError(f"persistentvolumeclaim {namespace}/{claim} is not bound to a volume yet")
        return self.volumes_root / handle

    def snapshot_path(self, namespace: str, snapshot: str) -> Path:
        vs = self.store.peek(self.rt["vs"], namespace, snapshot)
        if vs is None:
            raise KeyError(f"volumesnapshot {namespace}/{snapshot} does not exist")
        content = get_path(vs, "status", "boundVolumeSnapshotContentName")
        vsc = self.store.peek(self.rt["vsc"], None, content) if content else None
        handle = get_path(vsc or {}, "status", "snapshotHandle")
        if not handle or not (self.snapshots_root / handle).exists():
            raise KeyError(f"volumesnapshot {namespace}/{snapshot} has not been cut yet")
        return self.snapshots_root / handle

    # -- admission ------------------------------------------------------------------------------------

    def admit(self, operation: str, rtype: ResourceType, new: dict, old: dict | None) -> None:
        if rtype.key != self.rt["pvc"].key or operation != "CREATE":
            return
        spec = new.setdefault("spec", {})
        if "storageClassName" not in spec:
            default = self._default_class()
            if default:
                spec["storageClassName"] = default
        spec.setdefault("volumeMode", "Filesystem")
        source, ref = spec.get("dataSource"), spec.get("dataSourceRef")
        if source and not ref:
            spec["dataSourceRef"] = dict(source)
        elif ref and not source and not ref.get("namespace"):
            spec["dataSource"] = {k: v for k, v in ref.items() if k != "namespace"}
        if self.pvc_protection:
            finalizers = new["metadata"].setdefault("finalizers", [])
            if PVC_PROTECTION not in finalizers:
                finalizers.append(PVC_PROTECTION)
        new["status"] = {"phase": "Pending"}

    def _default_class(self) -> str | None:
        for sc in self.store.items(self.rt["sc"]):
            if (sc["metadata"].get("annotations") or {}).get(
                "storageclass.kubernetes.io/is-default-class"
            ) == "true":
                return sc["metadata"]["name"]
        return None

    # -- events ---------------------------------------------------------------------------------------

    def handle(self, event: StoreEvent) -> None:
        key, obj = event.rtype.key, event.obj
        meta = obj["metadata"]
        if key == self.rt["pvc"].key:
            if event.type == DELETED:
                self._release(obj)
            elif meta.get("deletionTimestamp"):
                self._protect(meta["namespace"], meta["name"])
            elif get_path(obj, "status", "phase") == "Pending":
                self._maybe_provision(obj, consumer=False)
        elif key == self.rt["pod"].key:
            phase = get_path(obj, "status", "phase")
            if event.type == DELETED or phase in ("Succeeded", "Failed"):
                for pvc in self.store.items(self.rt["pvc"], meta.get("namespace")):
                    if pvc["metadata"].get("deletionTimestamp"):
                        self._protect(pvc["metadata"]["namespace"], pvc["metadata"]["name"])
        elif key == self.rt["vs"].key:
            if event.type == ADDED:
                self.server._spawn(self._snapshot(meta["namespace"], meta["name"], meta["uid"]))
            elif event.type == DELETED:
                self._snapshot_deleted(obj)
        elif key == self.rt["vsc"].key:
            if event.type == DELETED:
                if get_path(obj, "spec", "deletionPolicy", default="Delete") == "Delete":
                    handle = get_path(obj, "status", "snapshotHandle") or get_path(
                        obj, "spec", "source", "snapshotHandle"
                    )
                    if handle:
                        self.server._spawn(self._remove(self.snapshots_root / handle))
            else:
                if (
                    event.type == ADDED
                    and get_path(obj, "spec", "source", "snapshotHandle")
                    and not obj.get("status")
                ):
                    self._import_content(obj)
                self._mirror_content(meta["name"])
        elif key == self.rt["vgs"].key:
            if event.type == ADDED:
                self.server._spawn(self._group_snapshot(meta["namespace"], meta["name"], meta["uid"]))
            elif event.type == DELETED:
                content = get_path(obj, "status", "boundVolumeGroupSnapshotContentName")
                vgsc = self.store.peek(self.rt["vgsc"], None, content) if content else None
                if vgsc and get_path(vgsc, "spec", "deletionPolicy", default="Delete") == "Delete":
                    self.store.delete(self.rt["vgsc"], None, content)

    # -- provisioning ---------------------------------------------------------------------------------

    def consumer_created(self, namespace: str, claims: list[str]) -> None:
        for claim in claims:
            pvc = self.store.peek(self.rt["pvc"], namespace, claim)
            if pvc is not None and get_path(pvc, "status", "phase") == "Pending":
                self._maybe_provision(pvc, consumer=True)

    def _maybe_provision(self, pvc: dict, consumer: bool) -> None:
        uid = pvc["metadata"]["uid"]
        if uid in self._provisioning or get_path(pvc, "spec", "volumeName"):
            return
        class_name = get_path(pvc, "spec", "storageClassName")
        sc = self.store.peek(self.rt["sc"], None, class_name) if class_name else None
        if sc is not None and sc.get("volumeBindingMode") == "WaitForFirstConsumer" and not consumer:
            self.server.record_event(
                pvc,
                "WaitForFirstConsumer",
                "waiting for first consumer to be created before binding",
                "Normal",
                "persistentvolume-controller",
            )
            return
        self._provisioning.add(uid)
        self.server._spawn(self._provision(pvc["metadata"]["namespace"], pvc["metadata"]["name"], uid))

    def _source_path(self, pvc: dict) -> tuple[Path | None, str | None, int]:
        """(path to copy from, why not yet, source size in bytes) for the claim's data source."""
        namespace = pvc["metadata"]["namespace"]
        ref = get_path(pvc, "spec", "dataSourceRef") or get_path(pvc, "spec", "dataSource")
        if not ref:
            return None, None, 0
        kind, name = ref.get("kind"), ref.get("name", "")
        if ref.get("namespace") and ref["namespace"] != namespace:
            return None, f"cross-namespace data source {ref['namespace']}/{name} is not supported", 0
        if kind == "VolumeSnapshot" and ref.get("apiGroup") == SNAPSHOT_GROUP:
            vs = self.store.peek(self.rt["vs"], namespace, name)
            if vs is None:
                return (
                    None,
                    (
                        f"error getting handle for DataSource Type VolumeSnapshot by Name {name}: error getting "
                        f'snapshot {name} from api server: volumesnapshots.snapshot.storage.k8s.io "{name}" not found'
                    ),
                    0,
                )
            if not get_path(vs, "status", "readyToUse"):
                return (
                    None,
                    f"error getting handle for DataSource Type VolumeSnapshot by Name {name}: snapshot {name} is not Ready",
                    0,
                )
            try:
                path = self.snapshot_path(namespace, name)
            except KeyError as error:
                return None, str(error), 0
            vsc = self.store.peek(
                self.rt["vsc"], None, get_path(vs, "status", "boundVolumeSnapshotContentName")
            )
            return path, None, int(get_path(vsc or {}, "status", "restoreSize", default=0) or 0)
        if kind == "PersistentVolumeClaim" and not ref.get("apiGroup"):
            source = self.store.peek(self.rt["pvc"], namespace, name)
            if source is None or get_path(source, "status", "phase") != "Bound":
                return (
                    None,
                    f'error getting handle for DataSource Type PersistentVolumeClaim by Name {name}: claim "{name}" is not bound',
                    0,
                )
            size = parse_quantity(get_path(source, "status", "capacity", "storage", default="0"))
            return self.volume_path(namespace, name), None, size
        return None, f"data source {ref.get('apiGroup', '')}/{kind} {name} is not supported by {DRIVER}", 0

    async def _provision(self, namespace: str, name: str, uid: str) -> None:
        try:
            if self.provision_delay:
                await asyncio.sleep(self.provision_delay)
            last_problem = None
            while True:
                pvc = self.store.peek(self.rt["pvc"], namespace, name)
                if pvc is None or pvc["metadata"]["uid"] != uid or pvc["metadata"].get("deletionTimestamp"):
                    return
                class_name = get_path(pvc, "spec", "storageClassName")
                sc = self.store.peek(self.rt["sc"], None, class_name) if class_name else None
                problem = None
                if sc is None:
                    problem = (
                        f'storageclass.storage.k8s.io "{class_name}" not found'
                        if class_name
                        else "no storage class is set and there is no default storage class"
                    )
                source, why, source_size = (None, None, 0) if problem else self._source_path(pvc)
                problem = problem or why
                requested = parse_quantity(
                    get_path(pvc, "spec", "resources", "requests", "storage", default="0")
                )
                if not problem and source is not None and source_size > requested:
                    problem = (
                        f"requested volume size {requested} is less than the size {source_size} for the "
                        f"source snapshot {get_path(pvc, 'spec', 'dataSourceRef', 'name')}"
                    )
                if problem is None:
                    break
                if problem != last_problem:
                    self.server.record_event(
                        pvc,
                        "ProvisioningFailed",
                        f'failed to provision volume with StorageClass "{class_name}": {problem}',
                        "Warning",
                        f"{DRIVER}_csi-hostpathplugin-0",
                    )
                    last_problem = problem
                await asyncio.sleep(0.05)
            handle = str(uuid.uuid4())
            target = self.volumes_root / handle
            block = get_path(pvc, "spec", "volumeMode") == "Block"
            loop = asyncio.get_running_loop()

            def make() -> None:
                self.volumes_root.mkdir(parents=True, exist_ok=True)
                if source is not None:
                    copy_tree(source, target)
                elif block:
                    with open(target, "wb") as f:
                        f.truncate(requested)
                else:
                    target.mkdir()
                if block and target.stat().st_size < requested:
                    with open(target, "r+b") as f:
                        f.truncate(requested)

            try:
                await loop.run_in_executor(None, make)
            except OSError as error:
                remove_tree(target)
                self.server.record_event(
                    pvc,
                    "ProvisioningFailed",
                    f"failed to provision volume: {error}",
                    "Warning",
                    f"{DRIVER}_csi-hostpathplugin-0",
                )
                return
            self._bind(namespace, name, uid, sc, handle, requested)
        finally:
            self._provisioning.discard(uid)

    def _bind(self, namespace: str, name: str, uid: str, sc: dict, handle: str, size: int) -> None:
        pvc = self.store.peek(self.rt["pvc"], namespace, name)
        if pvc is None or pvc["metadata"]["uid"] != uid:
            remove_tree(self.volumes_root / handle)
            return
        pv_name = f"pvc-{uid}"
        capacity = get_path(pvc, "spec", "resources", "requests", "storage") or format_quantity(size)
        self.store.create(
            self.rt["pv"],
            None,
            {
                "metadata": {
                    "name": pv_name,
                    "annotations": {
                        "pv.kubernetes.io/provisioned-by": DRIVER,
                        "volume.kubernetes.io/provisioner-deletion-secret-name": "",
                        "volume.kubernetes.io/provisioner-deletion-secret-namespace": "",
                    },
                    "finalizers": ["external-provisioner.volume.kubernetes.io/finalizer"],
                },
                "spec": {
                    "capacity": {"storage": capacity},
                    "accessModes": list(get_path(pvc, "spec", "accessModes", default=[]) or []),
                    "persistentVolumeReclaimPolicy": sc.get("reclaimPolicy", "Delete"),
                    "storageClassName": sc["metadata"]["name"],
                    "volumeMode": get_path(pvc, "spec", "volumeMode", default="Filesystem"),
                    "claimRef": {
                        "kind": "PersistentVolumeClaim",
                        "apiVersion": "v1",
                        "namespace": namespace,
                        "name": name,
                        "uid": uid,
                        "resourceVersion": pvc["metadata"]["resourceVersion"],
                    },
                    "csi": {
                        "driver": sc.get("provisioner", DRIVER),
                        "volumeHandle": handle,
                        "fsType": "ext4",
                        "volumeAttributes": {
                            "storage.kubernetes.io/csiProvisionerIdentity": "fake-provisioner"
                        },
                    },
                },
                "status": {"phase": "Bound"},
            },
            keep_status=True,
        )

        def bind(claim: dict) -> None:
            claim["spec"]["volumeName"] = pv_name
            annotations = claim["metadata"].setdefault("annotations", {})
            annotations.update(
                {
                    "pv.kubernetes.io/bind-completed": "yes",
                    "pv.kubernetes.io/bound-by-controller": "yes",
                    "volume.beta.kubernetes.io/storage-provisioner": DRIVER,
                    "volume.kubernetes.io/storage-provisioner": DRIVER,
                }
            )
            claim["status"] = {
                "phase": "Bound",
                "accessModes": list(get_path(claim, "spec", "accessModes", default=[]) or []),
                "capacity": {"storage": capacity},
            }

        self.store.mutate(self.rt["pvc"], namespace, name, bind)
        self.server.record_event(
            pvc,
            "ProvisioningSucceeded",
            f"Successfully provisioned volume {pv_name}",
            "Normal",
            f"{DRIVER}_csi-hostpathplugin-0",
        )

    def _protect(self, namespace: str, name: str) -> None:
        """pvc-protection: release the finalizer once no running pod uses the claim."""
        pvc = self.store.peek(self.rt["pvc"], namespace, name)
        if pvc is None or PVC_PROTECTION not in (pvc["metadata"].get("finalizers") or []):
            return
        for pod in self.store.items(self.rt["pod"], namespace):
            if get_path(pod, "status", "phase") in ("Succeeded", "Failed"):
                continue
            claims = [
                get_path(v, "persistentVolumeClaim", "claimName")
                for v in get_path(pod, "spec", "volumes", default=[]) or []
            ]
            if name in claims:
                return
        self.store.mutate(
            self.rt["pvc"],
            namespace,
            name,
            lambda o: o["metadata"].__setitem__(
                "finalizers", [f for f in o["metadata"].get("finalizers") or [] if f != PVC_PROTECTION]
            ),
        )

    def _release(self, pvc: dict) -> None:
        pv_name = get_path(pvc, "spec", "volumeName")
        pv = self.store.peek(self.rt["pv"], None, pv_name) if pv_name else None
        if pv is None:
            return
        if get_path(pv, "spec", "persistentVolumeReclaimPolicy") == "Delete":
            handle = get_path(pv, "spec", "csi", "volumeHandle")
            self.store.mutate(
                self.rt["pv"], None, pv_name, lambda o: o["metadata"].__setitem__("finalizers", [])
            )
            if self.store.peek(self.rt["pv"], None, pv_name) is not None:
                self.store.delete(self.rt["pv"], None, pv_name)
            if handle:
                self.server._spawn(self._remove(self.volumes_root / handle))
        else:
            self.store.set_status(self.rt["pv"], None, pv_name, {"phase": "Released"})

    async def _remove(self, path: Path) -> None:
        await asyncio.get_running_loop().run_in_executor(None, remove_tree, path)

    # -- snapshots ------------------------------------------------------------------------------------

    def _snapshot_event(self, obj: dict, reason: str, message: str, kind: str = "Normal") -> None:
        self.server.record_event(obj, reason, message, kind, "snapshot-controller")

    def _find_class(
        self, rtype: ResourceType, explicit: str | None, driver: str, annotation: str
    ) -> tuple[dict | None, str | None]:
        if explicit:
            cls = self.store.peek(rtype, None, explicit)
            if cls is None:
                return None, f'{rtype.qualified} "{explicit}" not found'
            if cls.get("driver") != driver:
                return None, f"{rtype.kind} {explicit} is for driver {cls.get('driver')}, not {driver}"
            return cls, None
        defaults = [
            c
            for c in self.store.items(rtype)
            if c.get("driver") == driver
            and (c["metadata"].get("annotations") or {}).get(annotation) == "true"
        ]
        if len(defaults) != 1:
            return None, f"cannot find default {rtype.kind} for driver {driver}" if not defaults else (
                f"more than one default {rtype.kind} for driver {driver}"
            )
        return defaults[0], None

    def _set_error(self, rtype: ResourceType, namespace: str | None, name: str, message: str | None) -> None:
        def change(obj: dict) -> None:
            status = obj.setdefault("status", {})
            if message is None:
                status.pop("error", None)
            else:
                status["error"] = {"message": message, "time": rfc3339()}
                status.setdefault("readyToUse", False)

        self.store.mutate(rtype, namespace, name, change)

    def _mirror_content(self, content_name: str) -> None:
        """The snapshot controller's half: a bound VolumeSnapshot follows its content's status."""
        vsc = self.store.peek(self.rt["vsc"], None, content_name)
        if vsc is None:
            return
        ref = get_path(vsc, "spec", "volumeSnapshotRef") or {}
        vs = self.store.peek(self.rt["vs"], ref.get("namespace"), ref.get("name", ""))
        if vs is None or (ref.get("uid") and ref["uid"] != vs["metadata"]["uid"]):
            return
        if get_path(vs, "spec", "source", "volumeSnapshotContentName") not in (None, content_name):
            return
        if not ref.get("uid"):
            # static binding: the content now points at this very snapshot (uid), as the controller binds it
            uid = vs["metadata"]["uid"]
            self.store.mutate(
                self.rt["vsc"],
                None,
                content_name,
                lambda o: o["spec"]["volumeSnapshotRef"].update({"uid": uid}),
            )
        source = vsc.get("status") or {}

        def mirror(snapshot: dict) -> None:
            status = snapshot.setdefault("status", {})
            status["boundVolumeSnapshotContentName"] = content_name
            status["readyToUse"] = bool(source.get("readyToUse"))
            if source.get("creationTime"):
                status["creationTime"] = ns_to_rfc3339(int(source["creationTime"]))
            if source.get("restoreSize") is not None:
                status["restoreSize"] = format_quantity(int(source["restoreSize"]))
            if source.get("error"):
                status["error"] = dict(source["error"])
            else:
                status.pop("error", None)
            if source.get("volumeGroupSnapshotHandle") and vs["metadata"].get("ownerReferences"):
                owner = next(
                    (r for r in vs["metadata"]["ownerReferences"] if r.get("kind") == "VolumeGroupSnapshot"),
                    None,
                )
                if owner:
                    status["volumeGroupSnapshotName"] = owner["name"]

        self.store.mutate(self.rt["vs"], ref.get("namespace"), ref.get("name", ""), mirror)

    def _import_content(self, vsc: dict) -> None:
        """A pre-provisioned content (spec.source.snapshotHandle): ready if the snapshot exists, with the
        size and cut time the driver recorded when it cut it (those of the content that did)."""
        handle = vsc["spec"]["source"]["snapshotHandle"]
        path = self.snapshots_root / handle
        if path.exists():
            cut = next(
                (
                    c["status"]
                    for c in self.store.items(self.rt["vsc"])
                    if c["metadata"]["name"] != vsc["metadata"]["name"]
                    and get_path(c, "status", "snapshotHandle") == handle
                    and get_path(c, "status", "creationTime")
                ),
                {},
            )
            status = {
                "snapshotHandle": handle,
                "readyToUse": True,
                "creationTime": cut.get("creationTime") or path.stat().st_mtime_ns,
                "restoreSize": cut.get("restoreSize") or _size_of(path),
            }
        else:
            status = {
                "readyToUse": False,
                "error": {"message": f"snapshot {handle} not found on {DRIVER}", "time": rfc3339()},
            }
        self.store.set_status(self.rt["vsc"], None, vsc["metadata"]["name"], status)

    def _snapshot_deleted(self, vs: dict) -> None:
        content = (
            get_path(vs, "status", "boundVolumeSnapshotContentName") or f"snapcontent-{vs['metadata']['uid']}"
        )
        vsc = self.store.peek(self.rt["vsc"], None, content)
        if vsc is None:
            return
        ref = get_path(vsc, "spec", "volumeSnapshotRef") or {}
        if ref.get("uid") not in (None, vs["metadata"]["uid"]):
            return
        if get_path(vsc, "spec", "deletionPolicy", default="Delete") == "Delete":
            self.store.delete(self.rt["vsc"], None, content)

    async def _bind_static(self, namespace: str, name: str, uid: str) -> None:
        """A snapshot naming a pre-provisioned content: bind once the content exists and names it back;
        until then report why not (the controller retries)."""
        last = None
        while True:
            vs = self.store.peek(self.rt["vs"], namespace, name)
            if vs is None or vs["metadata"]["uid"] != uid:
                return
            content_name = vs["spec"]["source"]["volumeSnapshotContentName"]
            vsc = self.store.peek(self.rt["vsc"], None, content_name)
            ref = get_path(vsc or {}, "spec", "volumeSnapshotRef") or {}
            if vsc is None:
                problem = f'volumesnapshotcontents.snapshot.storage.k8s.io "{content_name}" not found'
            elif (ref.get("namespace"), ref.get("name")) != (namespace, name) or ref.get("uid") not in (
                None,
                uid,
            ):
                problem = (
                    f"VolumeSnapshotContent {content_name} is bound to snapshot "
                    f"{ref.get('namespace')}/{ref.get('name')}, not to {namespace}/{name}"
                )
            else:
                self._mirror_content(content_name)
                return
            if problem != last:
                self.store.mutate(
                    self.rt["vs"],
                    namespace,
                    name,
                    lambda o, p=problem: o.setdefault("status", {}).update(
                        {"error": {"message": p, "time": rfc3339()}}
                    ),
                )
                self._snapshot_event(vs, "SnapshotBindFailed", problem, "Warning")
                last = problem
            await asyncio.sleep(0.05)

    async def _wait_for_source(
        self, namespace: str, name: str, uid: str
    ) -> tuple[dict, dict, dict, Path] | None:
        """Resolve claim -> volume -> class for a dynamic snapshot, reporting problems until solved."""
        last = None
        while True:
            vs = self.store.peek(self.rt["vs"], namespace, name)
            if vs is None or vs["metadata"]["uid"] != uid:
                return None
            claim = get_path(vs, "spec", "source", "persistentVolumeClaimName")
            pvc = self.store.peek(self.rt["pvc"], namespace, claim)
            problem = None
            if pvc is None:
                problem = f'failed to get input parameters to create snapshot {name}: "persistentvolumeclaims \\"{claim}\\" not found"'
            elif get_path(pvc, "status", "phase") != "Bound":
                problem = (
                    f'failed to get input parameters to create snapshot {name}: "the PVC {claim} is not yet bound '
                    f'to a PV, will not attempt to take a snapshot"'
                )
            else:
                pv = self.store.peek(self.rt["pv"], None, get_path(pvc, "spec", "volumeName"))
                driver = get_path(pv or {}, "spec", "csi", "driver", default="")
                cls, why = self._find_class(
                    self.rt["vsclass"],
                    get_path(vs, "spec", "volumeSnapshotClassName"),
                    driver,
                    "snapshot.storage.kubernetes.io/is-default-class",
                )
                if cls is None:
                    problem = f"Failed to get snapshot class with error {why}"
                else:
                    if last is not None:
                        self._set_error(self.rt["vs"], namespace, name, None)
                    return vs, pvc, cls, self.volume_path(namespace, claim)
            if problem != last:
                self._set_error(self.rt["vs"], namespace, name, problem)
                self._snapshot_event(
                    vs,
                    "SnapshotCreationFailed" if pvc is not None else "SnapshotContentCreationFailed",
                    problem,
                    "Warning",
                )
                last = problem
            await asyncio.sleep(0.05)

    async def _snapshot(self, namespace: str, name: str, uid: str) -> None:
        vs = self.store.peek(self.rt["vs"], namespace, name)
        if vs is None:
            return
        if get_path(vs, "spec", "source", "volumeSnapshotContentName"):
            await self._bind_static(namespace, name, uid)
            return
        resolved = await self._wait_for_source(namespace, name, uid)
        if resolved is None:
            return
        vs, pvc, cls, volume = resolved
        content_name = f"snapcontent-{uid}"
        pv = self.store.peek(self.rt["pv"], None, pvc["spec"]["volumeName"])
        self.store.create(
            self.rt["vsc"],
            None,
            {
                "metadata": {"name": content_name, "finalizers": []},
                "spec": {
                    "deletionPolicy": cls.get("deletionPolicy", "Delete"),
                    "driver": cls["driver"],
                    "source": {"volumeHandle": pv["spec"]["csi"]["volumeHandle"]},
                    "sourceVolumeMode": get_path(pvc, "spec", "volumeMode", default="Filesystem"),
                    "volumeSnapshotClassName": cls["metadata"]["name"],
                    "volumeSnapshotRef": {
                        "apiVersion": "snapshot.storage.k8s.io/v1",
                        "kind": "VolumeSnapshot",
                        "namespace": namespace,
                        "name": name,
                        "uid": uid,
                        "resourceVersion": vs["metadata"]["resourceVersion"],
                    },
                },
            },
        )
        self.store.mutate(
            self.rt["vs"],
            namespace,
            name,
            lambda o: o.setdefault("status", {}).update(
                {"boundVolumeSnapshotContentName": content_name, "readyToUse": False}
            ),
        )
        behavior = self._behavior(namespace, pvc["metadata"]["name"], name)
        self._snapshot_event(
            vs,
            "CreatingSnapshot",
            f"Waiting for a snapshot {namespace}/{name} to be created by the CSI driver.",
        )
        await self._run_behavior(
            behavior,
            cut=lambda: self._cut_one(volume, pvc, content_name),
            fail=lambda message: self._content_error(content_name, message),
            clear=lambda: self._set_error(self.rt["vsc"], None, content_name, None),
            ready=lambda: self._content_ready(content_name),
            alive=lambda: self.store.peek(self.rt["vsc"], None, content_name) is not None,
            on_event=lambda reason, message, kind: self._snapshot_event(
                self.store.peek(self.rt["vs"], namespace, name) or vs, reason, message, kind
            ),
            label=f"{namespace}/{name}",
        )

    async def _run_behavior(
        self, behavior: SnapshotBehavior, *, cut, fail, clear, ready, alive, on_event, label: str
    ) -> None:
        if behavior.mode == "error":
            message = (
                behavior.error_message
                or "failed to take snapshot of the volume: rpc error: code = Internal desc = simulated failure"
            )
            fail(message)
            on_event("SnapshotCreationFailed", f"Failed to create snapshot: {message}", "Warning")
            return
        if behavior.mode == "late_cut":
            message = behavior.error_message or (
                "Failed to check and update snapshot content: failed to take snapshot of the volume: rpc error: "
                "code = DeadlineExceeded desc = context deadline exceeded"
            )
            fail(message)
            on_event("SnapshotContentCheckandUpdateFailed", message, "Warning")
            await asyncio.sleep(behavior.late_by)
            if not alive():
                return
            clear()
        if behavior.cut_delay:
            await asyncio.sleep(behavior.cut_delay)
        if not alive():
            return
        try:
            await cut()
        except OSError as error:
            message = f"failed to take snapshot of the volume: {error}"
            fail(message)
            on_event("SnapshotCreationFailed", message, "Warning")
            return
        if not alive():
            return
        on_event("SnapshotCreated", f"Snapshot {label} was successfully created by the CSI driver.", "Normal")
        if behavior.mode == "never_ready":
            if behavior.error_message:
                fail(behavior.error_message)
                on_event("SnapshotReadyFailed", behavior.error_message, "Warning")
            return
        if behavior.ready_delay:
            await asyncio.sleep(behavior.ready_delay)
        if not alive():
            return
        ready()
        on_event("SnapshotReady", f"Snapshot {label} is ready to use.", "Normal")

    def _content_error(self, content_name: str, message: str) -> None:
        self._set_error(self.rt["vsc"], None, content_name, message)

    def _content_ready(self, content_name: str) -> None:
        self.store.mutate(
            self.rt["vsc"],
            None,
            content_name,
            lambda o: o.setdefault("status", {}).update({"readyToUse": True}),
        )

    async def _copy_volumes(self, sources: list[Path]) -> tuple[int, list[str]]:
        """Cut: copy every source at one instant; returns (cut time in ns, snapshot handles)."""
        handles = [f"snap-{uuid.uuid4()}" for _ in sources]

        def copy_all() -> int:
            self.snapshots_root.mkdir(parents=True, exist_ok=True)
            cut_ns = time.time_ns()
            try:
                for source, handle in zip(sources, handles, strict=True):
                    copy_tree(source, self.snapshots_root / handle)
            except OSError:
                for handle in handles:
                    remove_tree(self.snapshots_root / handle)
                raise
            return cut_ns

        cut_ns = await asyncio.get_running_loop().run_in_executor(None, copy_all)
        return cut_ns, handles

    async def _cut_one(self, volume: Path, pvc: dict, content_name: str) -> None:
        cut_ns, (handle,) = await self._copy_volumes([volume])
        size = parse_quantity(get_path(pvc, "status", "capacity", "storage", default="0"))
        if self.store.peek(self.rt["vsc"], None, content_name) is None:
            remove_tree(self.snapshots_root / handle)
            return
        self.store.mutate(
            self.rt["vsc"],
            None,
            content_name,
            lambda o: o.setdefault("status", {}).update(
                {"snapshotHandle": handle, "creationTime": cut_ns, "restoreSize": size, "readyToUse": False}
            ),
        )

    # -- group snapshots ------------------------------------------------------------------------------

    async def _group_snapshot(self, namespace: str, name: str, uid: str) -> None:
        vgs_rt, vgsc_rt = self.rt["vgs"], self.rt["vgsc"]
        last = None
        while True:
            vgs = self.store.peek(vgs_rt, namespace, name)
            if vgs is None or vgs["metadata"]["uid"] != uid:
                return
            if get_path(vgs, "spec", "source", "volumeGroupSnapshotContentName"):
                return
            matcher = label_selector_matcher(get_path(vgs, "spec", "source", "selector"))
            claims = [
                p
                for p in self.store.items(self.rt["pvc"], namespace)
                if matcher(p["metadata"].get("labels") or {})
            ]
            problem, cls = None, None
            if not claims:
                problem = f"no PersistentVolumeClaims in namespace {namespace} match the selector of group snapshot {name}"
            elif any(get_path(p, "status", "phase") != "Bound" for p in claims):
                pending = [p["metadata"]["name"] for p in claims if get_path(p, "status", "phase") != "Bound"]
                problem = f"the PVCs {', '.join(pending)} are not yet bound to a PV, will not attempt to take a group snapshot"
            else:
                drivers = {
                    get_path(
                        self.store.peek(self.rt["pv"], None, p["spec"]["volumeName"]) or {},
                        "spec",
                        "csi",
                        "driver",
                    )
                    for p in claims
                }
                if len(drivers) != 1:
                    problem = f"the selected PVCs use more than one CSI driver: {', '.join(sorted(map(str, drivers)))}"
                else:
                    cls, why = self._find_class(
                        self.rt["vgsclass"],
                        get_path(vgs, "spec", "volumeGroupSnapshotClassName"),
                        drivers.pop(),
                        "groupsnapshot.storage.kubernetes.io/is-default-class",
                    )
                    problem = None if cls else f"Failed to get group snapshot class with error {why}"
            if problem is None:
                if last is not None:
                    self._set_error(vgs_rt, namespace, name, None)
                break
            if problem != last:
                self._set_error(vgs_rt, namespace, name, problem)
                self._snapshot_event(vgs, "GroupSnapshotCreationFailed", problem, "Warning")
                last = problem
            await asyncio.sleep(0.05)
        claims.sort(key=lambda p: p["metadata"]["name"])
        pvs = [self.store.peek(self.rt["pv"], None, p["spec"]["volumeName"]) for p in claims]
        volume_handles = [pv["spec"]["csi"]["volumeHandle"] for pv in pvs]
        content_name = f"groupsnapcontent-{uid}"
        self.store.create(
            vgsc_rt,
            None,
            {
                "metadata": {"name": content_name},
                "spec": {
                    "deletionPolicy": cls.get("deletionPolicy", "Delete"),
                    "driver": cls["driver"],
                    "source": {"volumeHandles": volume_handles},
                    "volumeGroupSnapshotClassName": cls["metadata"]["name"],
                    "volumeGroupSnapshotRef": {
                        "apiVersion": f"{GROUP_SNAPSHOT_GROUP}/{vgs_rt.storage_version}",
                        "kind": "VolumeGroupSnapshot",
                        "namespace": namespace,
                        "name": name,
                        "uid": uid,
                        "resourceVersion": vgs["metadata"]["resourceVersion"],
                    },
                },
            },
        )

        def bind_group(obj: dict) -> None:
            obj.setdefault("status", {}).update(
                {"boundVolumeGroupSnapshotContentName": content_name, "readyToUse": False}
            )

        self.store.mutate(vgs_rt, namespace, name, bind_group)
        self._snapshot_event(
            vgs,
            "CreatingGroupSnapshot",
            f"Waiting for group snapshot {namespace}/{name} to be created by the CSI driver.",
        )
        behavior = self._behavior(namespace, None, name)
        members: list[tuple[str, str]] = []

        async def cut() -> None:
            sources = [self.volumes_root / h for h in volume_handles]
            cut_ns, handles = await self._copy_volumes(sources)
            group = self.store.peek(vgs_rt, namespace, name)
            if group is None:
                for handle in handles:
                    remove_tree(self.snapshots_root / handle)
                return
            group_handle = f"groupsnap-{uuid.uuid4()}"
            infos = []
            for pvc, handle, volume_handle in zip(claims, handles, volume_handles, strict=True):
                digest = hashlib.sha256(f"{uid}{volume_handle}".encode()).hexdigest()
                vs_name, vsc_name = f"snapshot-{digest}", f"snapcontent-{digest}"
                size = parse_quantity(get_path(pvc, "status", "capacity", "storage", default="0"))
                infos.append(
                    {
                        "volumeHandle": volume_handle,
                        "snapshotHandle": handle,
                        "creationTime": cut_ns,
                        "readyToUse": False,
                        "restoreSize": size,
                    }
                )
                self.store.create(
                    self.rt["vsc"],
                    None,
                    {
                        "metadata": {"name": vsc_name},
                        "spec": {
                            "deletionPolicy": cls.get("deletionPolicy", "Delete"),
                            "driver": cls["driver"],
                            "source": {"snapshotHandle": handle},
                            "sourceVolumeMode": get_path(pvc, "spec", "volumeMode", default="Filesystem"),
                            "volumeSnapshotRef": {
                                "apiVersion": "snapshot.storage.k8s.io/v1",
                                "kind": "VolumeSnapshot",
                                "namespace": namespace,
                                "name": vs_name,
                            },
                        },
                        "status": {
                            "snapshotHandle": handle,
                            "creationTime": cut_ns,
                            "restoreSize": size,
                            "readyToUse": False,
                            "volumeGroupSnapshotHandle": group_handle,
                        },
                    },
                    keep_status=True,
                )
                self.store.create(
                    self.rt["vs"],
                    namespace,
                    {
                        "metadata": {"name": vs_name, "ownerReferences": [owner_reference(group)]},
                        "spec": {"source": {"volumeSnapshotContentName": vsc_name}},
                    },
                )
                members.append((vs_name, vsc_name))

            def group_status(obj: dict) -> None:
                obj.setdefault("status", {}).update(
                    {
                        "volumeGroupSnapshotHandle": group_handle,
                        "creationTime": ns_to_rfc3339(cut_ns),
                        "readyToUse": False,
                        "volumeSnapshotInfoList": infos,
                    }
                )

            self.store.mutate(vgsc_rt, None, content_name, group_status)
            self.store.mutate(
                vgs_rt,
                namespace,
                name,
                lambda o: o.setdefault("status", {}).update(
                    {"creationTime": ns_to_rfc3339(cut_ns), "readyToUse": False}
                ),
            )

        def fail(message: str) -> None:
            self._set_error(vgsc_rt, None, content_name, message)
            self._set_error(vgs_rt, namespace, name, message)

        def clear() -> None:
            self._set_error(vgsc_rt, None, content_name, None)
            self._set_error(vgs_rt, namespace, name, None)

        def ready() -> None:
            for _, vsc_name in members:
                self._content_ready(vsc_name)

            def all_ready(obj: dict) -> None:
                status = obj.setdefault("status", {})
                status["readyToUse"] = True
                for info in status.get("volumeSnapshotInfoList") or []:
                    info["readyToUse"] = True

            self.store.mutate(vgsc_rt, None, content_name, all_ready)
            self.store.mutate(
                vgs_rt, namespace, name, lambda o: o.setdefault("status", {}).update({"readyToUse": True})
            )

        await self._run_behavior(
            behavior,
            cut=cut,
            fail=fail,
            clear=clear,
            ready=ready,
            alive=lambda: self.store.peek(vgs_rt, namespace, name) is not None,
            on_event=lambda reason, message, kind: self._snapshot_event(
                self.store.peek(vgs_rt, namespace, name) or vgs,
                reason.replace("Snapshot", "GroupSnapshot", 1),
                message,
                kind,
            ),
            label=f"{namespace}/{name}",
        )
