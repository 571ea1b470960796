"""What each cluster of a fleet runs, compared with what the fleet file renders for it.

Per cluster, through its kube context (the cluster's ``kubeContext`` in its ``kubeconfig``, default
``$KUBECONFIG``), every Snapflow object (label ``app.kubernetes.io/managed-by=snapflow``) of the kinds
``snapflow render`` writes is listed and compared by kind, namespace and name with the cluster's
rendering:

- ``current``: deployed with the render-hash the fleet file renders now;
- ``out of date``: deployed with another render-hash, or none (rendered without ``--fleet``, or edited);
- ``missing``: rendered, not deployed;
- ``unknown``: deployed, not rendered by the fleet file (a policy removed from it, or deployed by hand).

Clusters are read in parallel; a cluster that cannot be read (unreachable, a context the kubeconfig
lacks, credentials refused) is reported on its own line and the others are still shown.

With ``backups``, each app the fleet file places on a cluster also gets its row of the fleet report
(:mod:`workflows.report.fleet_model`): the newest committed backup in its repository and whether its RPO
is met, late or missing, read from the repositories' records (through the record cache, never packs).
A repository that cannot be read is the error of its apps' rows; the others are still read. Called by
``snapflow fleet status``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from steps.errors import SnapflowError, TemporaryError
from workflows.fleetdef.model import Cluster, Fleet
from workflows.fleetdef.render import RENDER_HASH, ClusterRendering, render_fleet

MANAGED_SELECTOR = "app.kubernetes.io/managed-by=snapflow"
KINDS = (
    ("v1", "ServiceAccount"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
    ("v1", "ConfigMap"),
    ("argoproj.io/v1alpha1", "WorkflowTemplate"),
    ("argoproj.io/v1alpha1", "CronWorkflow"),
)
STATES = ("current", "out of date", "missing", "unknown")
MAX_PARALLEL = 8


@dataclass(frozen=True, order=True)
class ObjectStatus:
    state: str
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.state:<12} {self.kind} {where}"


def backup_line(row: Any) -> str:
    """One app's backups as a status line (``row``: a FleetRow)."""
    from workflows.report.charts import human_duration, when

    app = f"{row.namespace}/{row.app}"
    target = f"target {human_duration(row.rpo_target_s)}"
    if row.error is not None:
        return f"{'backups':<12} {app}: RPO unknown: {row.repository}: {row.error}"
    if row.newest_time is None:
        return f"{'backups':<12} {app}: RPO missing: no committed backup in {row.repository} ({target})"
    return (
        f"{'backups':<12} {app}: newest {when(row.newest_time, '%Y-%m-%d %H:%M')} "
        f"({human_duration(row.age_s)} ago), RPO {row.rpo} ({target})"
    )


@dataclass
class ClusterStatus:
    name: str
    context: str | None = None
    objects: list[ObjectStatus] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # why the cluster could not be compared
    apps: list[Any] | None = None  # with backups: the fleet report's rows of the cluster's apps

    @property
    def backups_ok(self) -> bool:
        """Every app's RPO is met (True when the backups were not read)."""
        return self.apps is None or all(r.rpo == "met" for r in self.apps)

    def count(self, state: str) -> int:
        return sum(1 for o in self.objects if o.state == state)

    @property
    def in_sync(self) -> bool:
        return not self.problems and all(o.state == "current" for o in self.objects)

    def lines(self) -> list[str]:
        via = f" (context {self.context})" if self.context else ""
        apps = [f"  {backup_line(r)}" for r in self.apps or ()]
        if self.problems:
            return [f"{self.name}{via}: {self.problems[0]}", *(f"  {p}" for p in self.problems[1:]), *apps]
        counts = ", ".join(f"{self.count(s)} {s}" for s in STATES)
        return (
            [f"{self.name}{via}: {counts}"]
            + [f"  {o}" for o in sorted(self.objects) if o.state != "current"]
            + apps
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "cluster": self.name,
            "context": self.context,
            "inSync": self.in_sync,
            "problems": list(self.problems),
            "counts": {s: self.count(s) for s in STATES},
            "objects": [
                {"state": o.state, "kind": o.kind, "namespace": o.namespace or None, "name": o.name}
                for o in sorted(self.objects)
            ],
            **({} if self.apps is None else {"apps": [r.to_dict() for r in self.apps]}),
        }


def compare(rendered: list[dict[str, Any]], deployed: list[dict[str, Any]]) -> list[ObjectStatus]:
    """The state of every object rendered or deployed, keyed by kind, namespace and name."""

    def key(obj: dict[str, Any]) -> tuple[str, str, str]:
        meta = obj.get("metadata") or {}
        return obj["kind"], meta.get("namespace") or "", meta.get("name") or ""

    def hash_of(obj: dict[str, Any]) -> str | None:
        return ((obj.get("metadata") or {}).get("annotations") or {}).get(RENDER_HASH)

    have = {key(o): o for o in deployed}
    want = {key(o): o for o in rendered}
    out = []
    for k, obj in want.items():
        if k not in have:
            out.append(ObjectStatus("missing", *k))
        elif hash_of(have[k]) != hash_of(obj):
            out.append(ObjectStatus("out of date", *k))
        else:
            out.append(ObjectStatus("current", *k))
    out += [ObjectStatus("unknown", *k) for k in have if k not in want]
    return out


def deployed_objects(client: Any) -> list[dict[str, Any]]:
    """Every Snapflow object of the rendered kinds on the cluster of ``client`` (a KubeClient); a kind
    the cluster does not serve (Argo not installed) lists as empty."""
    from steps.api import KubeError

    out: list[dict[str, Any]] = []
    for api_version, kind in KINDS:
        try:
            items, _ = client.list(api_version, kind, label_selector=MANAGED_SELECTOR)
        except KubeError as err:
            if getattr(err, "status", None) == 404:
                continue
            raise
        out += items
    return out


def _client(fleet: Fleet, cluster: Cluster, kubeconfig: str | None):
    from steps.api import KubeClient, KubeSettings

    path = str(fleet.resolve(cluster.kubeconfig)) if cluster.kubeconfig else kubeconfig
    return KubeClient(KubeSettings.from_env(path, cluster.kube_context))


def cluster_status(fleet: Fleet, result: ClusterRendering, kubeconfig: str | None = None) -> ClusterStatus:
    cluster = result.cluster
    status = ClusterStatus(result.name, cluster.kube_context if cluster else None)
    if not result.ok or result.rendering is None or cluster is None:
        status.problems = ["not rendered:", *result.problems]
        return status
    if not cluster.kube_context:
        status.problems = ["not checked: the cluster has no kubeContext (status reads through one)"]
        return status
    try:
        with _client(fleet, cluster, kubeconfig) as client:
            deployed = deployed_objects(client)
    except SnapflowError as err:
        # temporary: no answer (the API server is down or unreachable); else: no such context,
        # credentials refused, ...
        what = "unreachable" if isinstance(err, TemporaryError) else "cannot read"
        status.problems = [f"{what}: {' '.join(str(err).split())}"]
        return status
    status.objects = compare([o.obj for o in result.rendering.objects], deployed)
    return status


def fleet_status(
    fleet: Fleet,
    kubeconfig: str | None = None,
    *,
    backups: bool = False,
    cache_dir: Any = None,
    opener: Any = None,
    now: float | None = None,
) -> list[ClusterStatus]:
    """Every cluster's status, in the fleet file's order (bad entries last); with ``backups``, each with
    the rows of its apps (``cache_dir``: the record cache; ``opener(url, endpoint)`` opens a repository)."""
    results = render_fleet(fleet)
    with ThreadPoolExecutor(max_workers=max(1, min(MAX_PARALLEL, len(results)))) as pool:
        statuses = list(pool.map(lambda r: cluster_status(fleet, r, kubeconfig), results))
    if backups:
        import time

        from workflows.report.fleet_model import build_rows
        from workflows.report.fleet_reading import placements, read_repositories

        placed = placements(fleet).placements
        reads = read_repositories(
            [(p.repository, p.endpoint) for p in placed], cache_dir=cache_dir, opener=opener
        )
        rows = build_rows(placed, [r for r, _ in reads], time.time() if now is None else now)
        for status in statuses:
            status.apps = [r for r in rows if r.in_fleet and r.cluster == status.name]
    return statuses
