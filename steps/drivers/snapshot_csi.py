"""The ``csi`` snapshot driver: Kubernetes VolumeSnapshots (external-snapshotter API).

``consistency: volume`` creates one VolumeSnapshot per PVC, back to back; ``consistency: group`` creates
ONE VolumeGroupSnapshot over every PVC of the plan (they are labelled ``snapflow.io/group=<backup>`` for
the instant of the cut, since a group snapshot selects its PVCs by label) — and fails rather than fall
back to separate snapshots when the cluster cannot do it.

A cut is done when the snapshot's ``status.creationTime`` is set; the cut time recorded for the verdict
is the VolumeSnapshotContent's ``status.creationTime`` (nanoseconds, set by the CSI driver: a retry
can cut later than asked). :meth:`CsiSnapshotDriver.wait_ready` waits separately, after the release,
for ``readyToUse``. Both watch (with a timeout) instead of polling, and a failure or a timeout raises
:class:`SnapshotFailed` with one line (:mod:`steps.drivers.snapshot_wait`).

The mover namespace's static binding of a snapshot and its clean-up live in
:mod:`steps.drivers.snapshot_mover`; their names are importable from here too.

Every object created carries ``snapflow.io/backup-id``, ``snapflow.io/app`` and ``snapflow.io/volume``
(see :func:`steps.drivers.kube_objects.backup_labels`), so finalize can find and delete them by label,
even after a failure.
"""

from __future__ import annotations

import time

from steps.drivers import kube_objects
from steps.drivers.kube import KubeClient, KubeError, NotFound
from steps.drivers.kube_objects import dig
from steps.drivers.snapshot import CutResult, SnapshotDriver
from steps.drivers.snapshot_mover import (  # noqa: F401 (prepare-clone and finalize import them from here)
    import_snapshot,
    mover_content_name,
    mover_snapshot_name,
    release_mover_objects,
)
from steps.drivers.snapshot_wait import (
    SNAPSHOT_API,
    SnapshotFailed,
    describe_failure,
    get_quietly,
    parse_time,
    wait_objects,
)
from steps.errors import UsageError
from steps.plan import Plan, Volume


class CsiSnapshotDriver(SnapshotDriver):
    name = "csi"

    def __init__(
        self,
        plan: Plan,
        client: KubeClient | None = None,
        *,
        group_snapshot_class: str | None = None,
        cut_timeout_s: float | None = None,
        error_grace_s: float = 30.0,
        log=None,
    ):
        self.plan = plan
        self.namespace = plan.app.namespace
        self.client = client or KubeClient()
        self.snapshot_class = plan.snapshot.snapshot_class
        self.group_snapshot_class = group_snapshot_class or getattr(plan.snapshot, "group_class", None)
        # The cut sits inside the freeze window: bounded by the freeze deadline unless told otherwise.
        self.cut_timeout_s = cut_timeout_s or max(1.0, min(plan.snapshot.timeout_s, plan.freeze.deadline_s))
        self.error_grace_s = error_grace_s
        self.log = log or (lambda _m: None)
        self._handles: dict[str, str] = {}

    # -- interface ---------------------------------------------------------------------------------

    def is_atomic(self, volumes: list[Volume]) -> bool:
        # Each VolumeSnapshot is atomic for its volume; several volumes are cut at one instant only by a
        # group snapshot.
        if self.plan.consistency == "group":
            # called before the freeze: look the volume handles up now rather than inside the hold
            try:
                self._volume_handles([v.pvc for v in volumes if v.pvc])
            except (KubeError, SnapshotFailed):
                pass
            return True
        return len(volumes) <= 1

    def cut(
        self, volumes: list[Volume], labels: dict[str, str], defer: dict[str, list[str]] | None = None
    ) -> list[CutResult]:
        if not volumes:
            return []
        for v in volumes:
            if not v.pvc:
                raise UsageError(
                    f"volumes.{v.name}: the csi driver needs 'pvc' (a PersistentVolumeClaim name)"
                )
        backup_id = labels.get("backup") or labels.get(kube_objects.LABEL_BACKUP) or ""
        if not backup_id:
            raise UsageError("csi snapshot driver: no backup id in the labels")
        app = labels.get("app") or self.plan.app.name
        if self.plan.consistency == "group":
            return self._cut_group(volumes, backup_id, app)
        return self._cut_each(volumes, backup_id, app)

    def wait_ready(self, results: list[CutResult], timeout: float) -> None:
        if not results:
            return
        deadline = time.monotonic() + timeout

        def left() -> float:
            return max(1.0, deadline - time.monotonic())

        groups = sorted({r.handle["group"] for r in results if r.handle.get("group")})
        for g in groups:
            members = [r for r in results if r.handle.get("group") == g]
            self._group_members(members, left())  # they exist once the group is cut
            self._wait(
                members[0].handle["group_api_version"],
                "VolumeGroupSnapshot",
                [g],
                self._ready,
                left(),
                "not ready to use",
                overall_s=timeout,
            )
        names = [r.snapshot for r in results]
        self._wait(
            SNAPSHOT_API,
            "VolumeSnapshot",
            names,
            self._ready,
            left(),
            "not ready to use",
            label_selector=f"{kube_objects.LABEL_BACKUP}={kube_objects.label_value(results[0].handle['backup_id'])}",
            overall_s=timeout,
        )
        for r in results:
            r.ready = True

    def delete(self, result: CutResult) -> None:
        group = result.handle.get("group")
        if group:
            self.client.delete(
                result.handle["group_api_version"], "VolumeGroupSnapshot", group, self.namespace
            )
        if result.snapshot:
            self.client.delete(SNAPSHOT_API, "VolumeSnapshot", result.snapshot, self.namespace)

    # -- per-volume snapshots ----------------------------------------------------------------------

    def _cut_each(self, volumes: list[Volume], backup_id: str, app: str) -> list[CutResult]:
        started: dict[str, float] = {}
        names: dict[str, str] = {}
        for v in volumes:
            name = kube_objects.k8s_name("snapflow", backup_id, v.name)
            manifest = kube_objects.volume_snapshot(
                name=name,
                namespace=self.namespace,
                pvc=v.pvc or "",
                labels=kube_objects.backup_labels(backup_id, app, v.name, role="snapshot"),
                snapshot_class=self.snapshot_class,
            )
            started[v.name] = time.time()
            try:
                self.client.create(manifest)
            except KubeError as err:
                if getattr(err, "status", None) != 409:
                    raise SnapshotFailed(
                        f"VolumeSnapshot {self.namespace}/{name} of PVC {v.pvc}: {err}"
                    ) from None
                # created by an earlier attempt of this backup: reuse it only if it snapshots the same PVC
                existing = self.client.get(SNAPSHOT_API, "VolumeSnapshot", name, self.namespace)
                if dig(existing, "spec", "source", "persistentVolumeClaimName") != v.pvc:
                    raise SnapshotFailed(
                        f"VolumeSnapshot {self.namespace}/{name} exists for another PVC"
                    ) from None
            names[v.name] = name
            self.log(f"VolumeSnapshot {name} of PVC {v.pvc} requested")
        selector = f"{kube_objects.LABEL_BACKUP}={kube_objects.label_value(backup_id)}"
        cut = self._wait(
            SNAPSHOT_API,
            "VolumeSnapshot",
            list(names.values()),
            self._cut_done,
            self.cut_timeout_s,
            "not cut",
            label_selector=selector,
        )
        observed = time.time()
        results = []
        for v in volumes:
            snap = cut[names[v.name]]
            content_name = dig(snap, "status", "boundVolumeSnapshotContentName")
            cut_time = self._content_time(content_name) if content_name else None
            if cut_time is None:
                cut_time = parse_time(dig(snap, "status", "creationTime"))
            results.append(
                CutResult(
                    volume=v.name,
                    snapshot=names[v.name],
                    atomic=True,
                    cut_time=cut_time,
                    started=started[v.name],
                    finished=observed,
                    handle={
                        "kind": "VolumeSnapshot",
                        "namespace": self.namespace,
                        "name": names[v.name],
                        "pvc": v.pvc,
                        "content": content_name,
                        "backup_id": backup_id,
                        "restore_size": dig(snap, "status", "restoreSize"),
                    },
                )
            )
        return results

    # -- group snapshots ---------------------------------------------------------------------------

    def _volume_handles(self, pvcs: list[str]) -> dict[str, str]:
        """PVC name → CSI volume handle (how a group snapshot's content names its volumes)."""
        out = {}
        for pvc in pvcs:
            if pvc in self._handles:
                out[pvc] = self._handles[pvc]
                continue
            claim = self.client.get_or_none("v1", "PersistentVolumeClaim", pvc, self.namespace)
            if claim is None:
                raise SnapshotFailed(f"PersistentVolumeClaim {self.namespace}/{pvc} does not exist")
            pv_name = dig(claim, "spec", "volumeName")
            pv = self._get_or_none("v1", "PersistentVolume", pv_name, None) if pv_name else None
            handle = dig(pv, "spec", "csi", "volumeHandle")
            if handle:
                self._handles[pvc] = out[pvc] = handle
        return out

    def _cut_group(self, volumes: list[Volume], backup_id: str, app: str) -> list[CutResult]:
        group_value = kube_objects.label_value(backup_id)
        name = kube_objects.k8s_name("snapflow", backup_id, "group")
        pvcs = [v.pvc or "" for v in volumes]
        handles = self._volume_handles(pvcs)
        labelled: list[str] = []
        started = time.time()
        try:
            for pvc in pvcs:
                try:
                    self.client.patch(
                        "v1",
                        "PersistentVolumeClaim",
                        pvc,
                        self.namespace,
                        {"metadata": {"labels": {kube_objects.LABEL_GROUP: group_value}}},
                    )
                except NotFound:
                    raise SnapshotFailed(
                        f"PersistentVolumeClaim {self.namespace}/{pvc} does not exist"
                    ) from None
                labelled.append(pvc)
            api_version = self._create_group(name, group_value, backup_id, app)
            vgs = self._wait(
                api_version, "VolumeGroupSnapshot", [name], self._cut_done, self.cut_timeout_s, "not cut"
            )[name]
        finally:
            for pvc in labelled:
                try:
                    self.client.patch(
                        "v1",
                        "PersistentVolumeClaim",
                        pvc,
                        self.namespace,
                        {"metadata": {"labels": {kube_objects.LABEL_GROUP: None}}},
                    )
                except KubeError as err:
                    self.log(f"could not remove label {kube_objects.LABEL_GROUP} from PVC {pvc}: {err}")
        observed = time.time()
        # The cut time: the group content's per-volume creationTime (ns), else the content's, else the group's.
        group_time = parse_time(dig(vgs, "status", "creationTime"))
        content_name = dig(vgs, "status", "boundVolumeGroupSnapshotContentName")
        infos: dict[str, dict] = {}
        if content_name:
            gc = self._get_or_none(api_version, "VolumeGroupSnapshotContent", content_name, None)
            group_time = parse_time(dig(gc, "status", "creationTime")) or group_time
            infos = {
                i.get("volumeHandle"): i
                for i in dig(gc, "status", "volumeSnapshotInfoList", default=[]) or []
            }
        results = []
        for v in volumes:
            info = infos.get(handles.get(v.pvc or ""), {})
            results.append(
                CutResult(
                    volume=v.name,
                    snapshot="",
                    atomic=True,
                    cut_time=parse_time(info.get("creationTime")) or group_time,
                    started=started,
                    finished=observed,
                    handle={
                        "kind": "VolumeSnapshot",
                        "namespace": self.namespace,
                        "pvc": v.pvc,
                        "group": name,
                        "group_api_version": api_version,
                        "group_content": content_name,
                        "backup_id": backup_id,
                        "app": app,
                        "volume_handle": handles.get(v.pvc or ""),
                    },
                )
            )
        return results

    def _create_group(self, name: str, group_value: str, backup_id: str, app: str) -> str:
        last: KubeError | None = None
        for api_version in kube_objects.GROUP_SNAPSHOT_API_VERSIONS:
            manifest = kube_objects.volume_group_snapshot(
                name=name,
                namespace=self.namespace,
                selector={kube_objects.LABEL_GROUP: group_value},
                labels=kube_objects.backup_labels(backup_id, app, role="group-snapshot"),
                group_snapshot_class=self.group_snapshot_class,
                api_version=api_version,
            )
            try:
                self.client.create(manifest)
                self.log(f"VolumeGroupSnapshot {name} ({api_version}) requested")
                return api_version
            except NotFound as err:  # this version is not served here: try the next one
                last = err
            except KubeError as err:
                if getattr(err, "status", None) == 409:
                    return api_version
                raise SnapshotFailed(f"VolumeGroupSnapshot {self.namespace}/{name}: {err}") from None
        raise SnapshotFailed(
            f"consistency: group needs VolumeGroupSnapshots, but this cluster serves none of "
            f"{', '.join(kube_objects.GROUP_SNAPSHOT_API_VERSIONS)} ({last}); install the external-snapshotter group "
            "snapshot CRDs and a CSI driver that supports them, or use consistency: volume"
        )

    def _group_members(self, results: list[CutResult], timeout: float) -> None:
        """Name each group result after its member VolumeSnapshot (made by the snapshot controller once the
        group is cut) and label the members like every other object of the backup. Runs after the release."""
        group = results[0].handle["group"]
        api_version = results[0].handle["group_api_version"]
        pvc_by_handle = {
            r.handle.get("volume_handle"): r.handle["pvc"] for r in results if r.handle.get("volume_handle")
        }
        deadline = time.monotonic() + timeout
        while True:
            items, _ = self.client.list(SNAPSHOT_API, "VolumeSnapshot", self.namespace)
            by_pvc: dict[str, dict] = {}
            for s in items:
                if dig(s, "status", "volumeGroupSnapshotName") != group and not any(
                    o.get("kind") == "VolumeGroupSnapshot" and o.get("name") == group
                    for o in dig(s, "metadata", "ownerReferences", default=[]) or []
                ):
                    continue
                pvc = dig(s, "spec", "source", "persistentVolumeClaimName") or self._member_pvc(
                    s, pvc_by_handle, results
                )
                if pvc:
                    by_pvc[pvc] = s
            missing = [r.handle["pvc"] for r in results if r.handle["pvc"] not in by_pvc]
            if not missing:
                break
            if time.monotonic() >= deadline:
                vgs = self._get_or_none(api_version, "VolumeGroupSnapshot", group, self.namespace)
                raise SnapshotFailed(
                    describe_failure(
                        self.client,
                        self.namespace,
                        "VolumeGroupSnapshot",
                        vgs,
                        None,
                        group,
                        f"has no member snapshot for PVC {', '.join(missing)} after {timeout:g}s",
                    )
                )
            time.sleep(0.2)
        for r in results:
            snap = by_pvc[r.handle["pvc"]]
            r.snapshot = r.handle["name"] = snap["metadata"]["name"]
            r.handle["content"] = dig(snap, "spec", "source", "volumeSnapshotContentName") or dig(
                snap, "status", "boundVolumeSnapshotContentName"
            )
            try:
                self.client.patch(
                    SNAPSHOT_API,
                    "VolumeSnapshot",
                    r.snapshot,
                    self.namespace,
                    {
                        "metadata": {
                            "labels": kube_objects.backup_labels(
                                r.handle["backup_id"], r.handle.get("app", ""), r.volume, role="snapshot"
                            )
                        }
                    },
                )
            except KubeError as err:
                self.log(f"could not label group member {r.snapshot}: {err}")

    def _member_pvc(self, snap: dict, pvc_by_handle: dict[str, str], results: list[CutResult]) -> str | None:
        """A group member's PVC, through its content's snapshot handle and the group content's list."""
        content_name = dig(snap, "spec", "source", "volumeSnapshotContentName") or dig(
            snap, "status", "boundVolumeSnapshotContentName"
        )
        vsc = (
            self._get_or_none(SNAPSHOT_API, "VolumeSnapshotContent", content_name, None)
            if content_name
            else None
        )
        if vsc is None:
            return None
        volume_handle = dig(vsc, "spec", "source", "volumeHandle")
        if not volume_handle:
            snapshot_handle = dig(vsc, "status", "snapshotHandle") or dig(
                vsc, "spec", "source", "snapshotHandle"
            )
            gc_name = results[0].handle.get("group_content")
            gc = (
                self._get_or_none(
                    results[0].handle["group_api_version"], "VolumeGroupSnapshotContent", gc_name, None
                )
                if gc_name
                else None
            )
            for info in dig(gc, "status", "volumeSnapshotInfoList", default=[]) or []:
                if info.get("snapshotHandle") == snapshot_handle:
                    volume_handle = info.get("volumeHandle")
        return pvc_by_handle.get(volume_handle)

    # -- waiting -----------------------------------------------------------------------------------

    @staticmethod
    def _cut_done(obj: dict) -> bool:
        return bool(dig(obj, "status", "creationTime"))

    @staticmethod
    def _ready(obj: dict) -> bool:
        return dig(obj, "status", "readyToUse") is True

    def _wait(
        self,
        api_version: str,
        kind: str,
        names: list[str],
        done,
        timeout: float,
        problem: str,
        label_selector: str | None = None,
        overall_s: float | None = None,
    ) -> dict[str, dict]:
        return wait_objects(
            self.client,
            self.namespace,
            api_version,
            kind,
            names,
            done,
            timeout,
            problem,
            label_selector=label_selector,
            error_grace_s=self.error_grace_s,
            overall_s=overall_s,
        )

    def _get_or_none(self, api_version: str, kind: str, name: str, namespace: str | None) -> dict | None:
        return get_quietly(self.client, api_version, kind, name, namespace)

    def _content_time(self, content_name: str) -> float | None:
        content = self._get_or_none(SNAPSHOT_API, "VolumeSnapshotContent", content_name, None)
        return parse_time(dig(content, "status", "creationTime"))
