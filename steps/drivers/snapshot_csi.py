"""The ``csi`` snapshot driver: Kubernetes VolumeSnapshots (external-snapshotter API).

``consistency: volume`` creates one VolumeSnapshot per PVC, back to back; ``consistency: group`` creates
ONE VolumeGroupSnapshot over every PVC of the plan (they are labelled ``snapflow.io/group=<backup>`` for
the instant of the cut, since a group snapshot selects its PVCs by label) — and fails rather than fall
back to separate snapshots when the cluster cannot do it.

A cut is done when the snapshot's ``status.creationTime`` is set; the cut time recorded for the verdict
is the VolumeSnapshotContent's ``status.creationTime`` (nanoseconds, set by the CSI driver: a retry
can cut later than asked). :meth:`CsiSnapshotDriver.wait_ready` waits separately, after the release,
for ``readyToUse``. Both watch (with a timeout) instead of polling. A failure or a timeout raises
:class:`SnapshotFailed` with one line quoting the snapshot's ``status.error``, its content's error,
conditions and the latest Events.

With a mover namespace, :func:`import_snapshot` binds an app's ready snapshot there statically (a
pre-provisioned VolumeSnapshotContent with the same ``snapshotHandle`` and ``deletionPolicy: Retain``,
and a VolumeSnapshot there naming it), so that a clone can be provisioned there;
:func:`release_mover_objects` deletes that side again and never the app's snapshot data.

Every object created carries ``snapflow.io/backup-id``, ``snapflow.io/app`` and ``snapflow.io/volume``
(see :func:`steps.drivers.kube_objects.backup_labels`), so finalize can find and delete them by label,
even after a failure.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from steps.drivers import kube_objects
from steps.drivers.kube import KubeClient, KubeError, NotFound
from steps.drivers.kube_objects import dig
from steps.drivers.snapshot import CutResult, SnapshotDriver
from steps.errors import PermanentError, SnapflowError, UsageError
from steps.plan import Plan, Volume

SNAPSHOT_API = "snapshot.storage.k8s.io/v1"


class SnapshotFailed(PermanentError):
    """A snapshot reported an error, or was not cut / ready in time."""


class _SliceExpired(SnapflowError):
    """One slice of a wait ended; ``seen`` holds the objects as last observed."""

    def __init__(self, seen: dict[str, dict]):
        super().__init__("wait slice over")
        self.seen = seen


def parse_time(value: Any) -> float | None:
    """A snapshot time as seconds since the epoch: int nanoseconds (contents) or RFC 3339 (snapshots)."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) / 1e9
    text = str(value)
    if text.isdigit():
        return int(text) / 1e9
    frac = ""
    if "." in text:
        head, _, rest = text.partition(".")
        digits = ""
        for ch in rest:
            if ch.isdigit():
                digits += ch
            else:
                break
        frac = digits
        text = head + rest[len(digits) :]
    try:
        base = datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
    return base + (int(frac) / 10 ** len(frac) if frac else 0.0)


def describe_failure(
    client: KubeClient,
    namespace: str,
    kind: str,
    obj: dict | None,
    content: dict | None,
    name: str,
    problem: str,
) -> str:
    """One line: what failed, the snapshot's and content's errors, conditions and recent events."""
    parts = [f"{kind} {namespace}/{name} {problem}"]
    status = (obj or {}).get("status") or {}
    err = dig(status, "error", "message")
    if err:
        parts.append(f"error: {' '.join(str(err).split())}")
    cerr = dig(content or {}, "status", "error", "message")
    if cerr and cerr != err:
        parts.append(f"content error: {' '.join(str(cerr).split())}")
    conds = status.get("conditions") or []
    if conds:
        parts.append(
            "conditions: "
            + ", ".join(
                f"{c.get('type')}={c.get('status')}" + (f" ({c.get('message')})" if c.get("message") else "")
                for c in conds
            )
        )
    if obj is None:
        parts.append("the object does not exist (deleted?)")
    else:
        parts.append(
            f"readyToUse={status.get('readyToUse', False)}, creationTime={status.get('creationTime') or '-'}"
        )
    events = client.events_for(namespace, kind, name)
    parts.append("events: " + (" | ".join(events) if events else "none"))
    return "; ".join(parts)


def _get_quietly(
    client: KubeClient, api_version: str, kind: str, name: str, namespace: str | None
) -> dict | None:
    try:
        return client.get_or_none(api_version, kind, name, namespace)
    except KubeError:
        return None


def failure_message(
    client: KubeClient, namespace: str, kind: str, obj: dict | None, name: str, problem: str
) -> str:
    """:func:`describe_failure` with the snapshot's content and PVC looked up."""
    content = None
    if kind == "VolumeSnapshot" and obj is not None:
        cname = dig(obj, "status", "boundVolumeSnapshotContentName")
        if cname:
            content = _get_quietly(client, SNAPSHOT_API, "VolumeSnapshotContent", cname, None)
        pvc = dig(obj, "spec", "source", "persistentVolumeClaimName")
        if pvc:
            problem = f"(PVC {pvc}) {problem}"
    return describe_failure(client, namespace, kind, obj, content, name, problem)


def wait_objects(
    client: KubeClient,
    namespace: str,
    api_version: str,
    kind: str,
    names: list[str],
    done,
    timeout: float,
    problem: str,
    *,
    label_selector: str | None = None,
    error_grace_s: float = 30.0,
    overall_s: float | None = None,
) -> dict[str, dict]:
    """Watch snapshots ``names`` until ``done`` holds for each. An error the snapshotter keeps reporting
    for ``error_grace_s`` (it retries some) fails at once, anything else at ``timeout``; both raise
    :class:`SnapshotFailed` with the one-line description of :func:`describe_failure`."""
    first_error: dict[str, float] = {}

    def check(obj: dict) -> bool:
        if done(obj):
            return True
        name = obj["metadata"]["name"]
        if dig(obj, "status", "error", "message"):
            seen = first_error.setdefault(name, time.monotonic())
            if time.monotonic() - seen >= error_grace_s:
                raise SnapshotFailed(failure_message(client, namespace, kind, obj, name, "failed"))
        else:
            first_error.pop(name, None)
        return False

    deadline = time.monotonic() + timeout
    last_seen: dict[str, dict] = {}
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            for n in names:
                obj = last_seen.get(n)
                if obj is None or not done(obj):
                    raise SnapshotFailed(
                        failure_message(
                            client, namespace, kind, obj, n, f"{problem} after {overall_s or timeout:g}s"
                        )
                    )
            return last_seen
        # wake up at least every grace period, so that a lasting error is noticed without new events
        slice_s = min(remaining, error_grace_s) if error_grace_s > 0 else remaining
        try:
            return client.wait_for_all(
                api_version,
                kind,
                namespace,
                names,
                check,
                slice_s,
                label_selector=label_selector,
                on_timeout=_SliceExpired,
            )
        except _SliceExpired as over:
            last_seen = over.seen
            for obj in last_seen.values():
                check(obj)


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
        return _get_quietly(self.client, api_version, kind, name, namespace)

    def _content_time(self, content_name: str) -> float | None:
        content = self._get_or_none(SNAPSHOT_API, "VolumeSnapshotContent", content_name, None)
        return parse_time(dig(content, "status", "creationTime"))


# -- the mover namespace: the app's snapshot bound there statically ------------------------------------

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
