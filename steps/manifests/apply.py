"""The restore engine: creates transformed objects phase by phase through a Kubernetes client.

:class:`Restorer` is handed the objects to create (already transformed) and a client with the
interface of :class:`steps.drivers.kube.KubeClient` (which does the I/O); ``restore-app`` drives it:

``prepare``  refuse (default) when objects exist, or delete those to be replaced (workloads first);
             create the namespace, cluster-scoped objects (only those the restore's scope allowed, see
             :mod:`steps.manifests.scope`), config objects, PVCs, and the workloads held at zero
``fill``     a filler per PVC (a mover pod, or a local restore into the volume's directory)
``finish``   release the held workloads, create the deferred objects (bare pods, autoscalers,
             custom resources), optionally wait until the workloads are ready

Every phase is timed for the report (the restore's RTO).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from steps.drivers.kube_objects import dig
from steps.errors import PermanentError, SnapflowError, UsageError
from steps.manifests.objects import Ref, gk, ref
from steps.manifests.ordering import (
    EXISTING_POLICIES,
    PHASES,
    conflict_message,
    hold,
    is_held,
    order_objects,
    release_patch,
)


@dataclass
class PhaseTime:
    name: str
    started: float
    finished: float | None = None

    @property
    def duration_s(self) -> float | None:
        return None if self.finished is None else round(self.finished - self.started, 3)


@dataclass
class RestoreReport:
    namespaces: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    volumes: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # objects outside the restore's scope, never created: {"object", "namespace", "reason"}
    refused: list[dict] = field(default_factory=list)
    phases: list[PhaseTime] = field(default_factory=list)
    check: dict | None = None

    @contextmanager
    def phase(self, name: str) -> Iterator[PhaseTime]:
        p = PhaseTime(name, time.time())
        self.phases.append(p)
        try:
            yield p
        finally:
            p.finished = time.time()

    def to_dict(self) -> dict[str, Any]:
        started = min((p.started for p in self.phases), default=None)
        finished = max((p.finished or p.started for p in self.phases), default=None)
        return {
            "namespaces": self.namespaces,
            "created": self.created,
            "skipped": self.skipped,
            "replaced": self.replaced,
            "released": self.released,
            "refused": self.refused,
            "volumes": self.volumes,
            "notes": self.notes,
            "phases": [{"name": p.name, "duration_s": p.duration_s} for p in self.phases],
            "rto_s": None if started is None or finished is None else round(finished - started, 3),
            "check": self.check,
        }


@dataclass
class RestoreOptions:
    existing: str = "refuse"
    timeout_s: float = 600.0

    def __post_init__(self) -> None:
        if self.existing not in EXISTING_POLICIES:
            raise UsageError(
                f"--existing: expected one of {', '.join(EXISTING_POLICIES)}, got {self.existing!r}"
            )


def _api(obj: dict) -> tuple[str, str, str, str | None]:
    m = obj.get("metadata") or {}
    return obj["apiVersion"], obj["kind"], m.get("name", ""), m.get("namespace") or None


class Restorer:
    def __init__(
        self,
        client: Any,
        objects: list[dict],
        options: RestoreOptions,
        report: RestoreReport | None = None,
        log: Callable[[str], None] = lambda _m: None,
    ):
        self.client = client
        self.options = options
        self.report = report or RestoreReport()
        self.log = log
        self.phases = order_objects(objects)
        self.report.namespaces = sorted(
            {o["metadata"]["name"] for o in self.phases["namespace"]}
            | {
                o["metadata"].get("namespace")
                for p in PHASES[1:]
                for o in self.phases[p]
                if o["metadata"].get("namespace")
            }
        )
        self._skipped: set[Ref] = set()

    # -- conflicts -------------------------------------------------------------------------------

    def existing(self) -> list[Ref]:
        """Objects of this restore (other than namespaces) that already exist in the cluster."""
        found = []
        for phase in PHASES[1:]:
            for obj in self.phases[phase]:
                api_version, kind, name, ns = _api(obj)
                if self.client.get_or_none(api_version, kind, name, ns) is not None:
                    found.append(ref(obj))
        return found

    def _check_existing(self) -> None:
        found = self.existing()
        if not found:
            return
        if self.options.existing == "refuse":
            raise PermanentError(conflict_message(found, ", ".join(self.report.namespaces)))
        if self.options.existing == "skip":
            self._skipped = set(found)
            return
        # replace: delete in reverse order (deferred, workloads, then their volumes and config)
        by_ref = {ref(o): o for p in PHASES for o in self.phases[p]}
        for phase in reversed(PHASES[1:]):
            for obj in reversed(self.phases[phase]):
                r = ref(obj)
                if r in found:
                    self._delete_and_wait(by_ref[r])
                    self.report.replaced.append(str(r))

    def _delete_and_wait(self, obj: dict) -> None:
        api_version, kind, name, ns = _api(obj)
        self.log(f"deleting existing {kind}/{name} (--existing=replace)")
        self.client.delete(api_version, kind, name, ns, propagation="Foreground")

        def gone(o: dict | None) -> bool:
            return o is None

        self.client.wait_for(
            api_version,
            kind,
            name,
            ns,
            gone,
            self.options.timeout_s,
            on_timeout=lambda o: PermanentError(
                f"{kind}/{name} in namespace {ns}: still present {self.options.timeout_s:g}s after its deletion "
                f"(finalizers: {', '.join(dig(o or {}, 'metadata', 'finalizers', default=[]) or []) or 'none'})"
            ),
        )

    # -- phases ----------------------------------------------------------------------------------

    def prepare(self) -> list[dict]:
        """Namespace, config, PVCs, held workloads. Returns the PVC objects created (to be filled)."""
        with self.report.phase("check-existing"):
            self._wait_namespaces_not_terminating()
            self._check_existing()
        with self.report.phase("namespace"):
            listed = {o["metadata"]["name"] for o in self.phases["namespace"]}
            for ns in self.report.namespaces:
                if ns not in listed:  # captured without its Namespace object (no permission to read it)
                    self.phases["namespace"].append(
                        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
                    )
            for obj in self.phases["namespace"]:
                api_version, kind, name, _ = _api(obj)
                if self.client.get_or_none(api_version, kind, name) is None:
                    self._create(obj)
                else:
                    self.report.notes.append(f"namespace {name} exists; restoring into it")
        if self.phases["cluster"]:
            with self.report.phase("cluster"):
                for obj in self.phases["cluster"]:
                    self._create(obj)
        with self.report.phase("config"):
            for obj in self.phases["config"]:
                self._create(obj)
        filled: list[dict] = []
        with self.report.phase("storage"):
            for obj in self.phases["storage"]:
                if self._create(obj):
                    filled.append(obj)
                else:
                    self.report.notes.append(
                        f"PersistentVolumeClaim/{obj['metadata']['name']} exists and was kept: its data is not restored"
                    )
        with self.report.phase("workloads"):
            for obj in self.phases["workloads"]:
                self._create(hold(obj))
        return filled

    def finish(self, wait_ready: bool = False) -> None:
        with self.report.phase("release"):
            for obj in self.phases["workloads"]:
                if ref(obj) in self._skipped:
                    continue
                api_version, kind, name, ns = _api(obj)
                live = self.client.get_or_none(api_version, kind, name, ns)
                if live is None or not is_held(live):
                    continue
                patch = release_patch(live)
                if patch is not None:
                    self.client.patch(api_version, kind, name, ns, patch)
                    self.report.released.append(str(ref(obj)))
        with self.report.phase("deferred"):
            for obj in self.phases["deferred"]:
                self._create(obj)
        if wait_ready:
            with self.report.phase("ready"):
                self.wait_ready()

    def wait_ready(self) -> None:
        """Wait until every restored Deployment / StatefulSet / ReplicaSet has all its replicas ready."""
        deadline = time.monotonic() + self.options.timeout_s
        for obj in self.phases["workloads"]:
            if gk(obj) not in (("apps", "StatefulSet"), ("apps", "Deployment"), ("apps", "ReplicaSet")):
                continue
            api_version, kind, name, ns = _api(obj)
            want = dig(obj, "spec", "replicas", default=1)

            def ready(o: dict | None, want: int = want) -> bool:
                return o is not None and (dig(o, "status", "readyReplicas", default=0) or 0) >= want

            remaining = max(1.0, deadline - time.monotonic())
            self.client.wait_for(
                api_version,
                kind,
                name,
                ns,
                ready,
                remaining,
                on_timeout=lambda o, kind=kind, name=name, want=want: PermanentError(
                    f"{kind}/{name}: {dig(o or {}, 'status', 'readyReplicas', default=0) or 0} of {want} replicas "
                    f"ready after {self.options.timeout_s:g}s"
                ),
            )

    # -- helpers ---------------------------------------------------------------------------------

    def _wait_namespaces_not_terminating(self) -> None:
        for ns in self.report.namespaces:
            live = self.client.get_or_none("v1", "Namespace", ns)
            if live is not None and dig(live, "status", "phase") == "Terminating":
                self.log(f"namespace {ns} is terminating; waiting until it is gone")
                self.client.wait_for(
                    "v1",
                    "Namespace",
                    ns,
                    None,
                    lambda o: o is None,
                    self.options.timeout_s,
                    on_timeout=lambda _o, ns=ns: PermanentError(
                        f"namespace {ns} still terminating after {self.options.timeout_s:g}s"
                    ),
                )

    def _create(self, obj: dict) -> bool:
        """Create ``obj``; False when it exists and --existing=skip keeps it."""
        r = ref(obj)
        if r in self._skipped:
            self.report.skipped.append(str(r))
            return False
        try:
            self.client.create(obj)
        except SnapflowError as err:
            if getattr(err, "status", None) != 409:  # the client's AlreadyExists
                raise
            if self.options.existing == "skip":
                self.report.skipped.append(str(r))
                return False
            if self.options.existing == "replace":
                self._delete_and_wait(obj)
                self.client.create(obj)
                self.report.replaced.append(str(r))
                return True
            raise PermanentError(conflict_message([r], r.namespace or "-")) from None
        self.report.created.append(str(r))
        self.log(f"created {r}" + (f" in {r.namespace}" if r.namespace else ""))
        return True
