"""preflight's checks of a live cluster (and the repository) for a plan, before its first backup: the
API, the namespace, the snapshot API and classes, the RBAC of the steps' identity, Pod Security, the
repository key; and the permissions the backup steps need (:data:`PERMISSIONS`,
:data:`CLUSTER_PERMISSIONS`, which step uses each). ``python -m steps preflight``
(:mod:`steps.commands.preflight`) prints them; the control plane's preflight adds its own.
"""

from __future__ import annotations

# (verb, resource, group, subresource, needed-for, group-consistency only): what the backup steps do in
# the app's namespace. The scenario tests run a backup with a Role of exactly these rules.
PERMISSIONS: tuple[tuple[str, str, str, str, str, bool], ...] = (
    ("get", "pods", "", "", "consistent-point (hooks)", False),
    ("create", "pods", "", "exec", "consistent-point, finalize (hooks)", False),
    ("get", "persistentvolumeclaims", "", "", "prepare-clone", False),
    ("create", "persistentvolumeclaims", "", "", "prepare-clone", False),
    ("list", "persistentvolumeclaims", "", "", "finalize", False),
    ("delete", "persistentvolumeclaims", "", "", "finalize", False),
    ("patch", "persistentvolumeclaims", "", "", "consistent-point, finalize (group label)", True),
    ("create", "volumesnapshots", "snapshot.storage.k8s.io", "", "consistent-point", False),
    ("get", "volumesnapshots", "snapshot.storage.k8s.io", "", "consistent-point", False),
    ("list", "volumesnapshots", "snapshot.storage.k8s.io", "", "consistent-point", False),
    ("watch", "volumesnapshots", "snapshot.storage.k8s.io", "", "consistent-point", False),
    ("delete", "volumesnapshots", "snapshot.storage.k8s.io", "", "finalize", False),
    ("patch", "volumesnapshots", "snapshot.storage.k8s.io", "", "consistent-point (group members)", True),
    ("create", "volumegroupsnapshots", "groupsnapshot.storage.k8s.io", "", "consistent-point", True),
    ("get", "volumegroupsnapshots", "groupsnapshot.storage.k8s.io", "", "consistent-point", True),
    ("list", "volumegroupsnapshots", "groupsnapshot.storage.k8s.io", "", "consistent-point", True),
    ("watch", "volumegroupsnapshots", "groupsnapshot.storage.k8s.io", "", "consistent-point", True),
    ("delete", "volumegroupsnapshots", "groupsnapshot.storage.k8s.io", "", "finalize", True),
    ("list", "events", "", "", "error messages", False),
    ("list", "configmaps", "", "", "capture", False),
    ("list", "secrets", "", "", "capture", False),
    ("list", "services", "", "", "capture", False),
    ("list", "serviceaccounts", "", "", "capture", False),
    ("list", "statefulsets", "apps", "", "capture", False),
    ("list", "deployments", "apps", "", "capture", False),
)
# cluster-scoped reads (a ClusterRole): (verb, resource, group, what happens without, group-consistency only)
CLUSTER_PERMISSIONS: tuple[tuple[str, str, str, str, bool], ...] = (
    (
        "get",
        "volumesnapshotcontents",
        "snapshot.storage.k8s.io",
        "the cut time is then the VolumeSnapshot's (whole seconds), not the content's",
        False,
    ),
    ("get", "namespaces", "", "capture then stores no Namespace object (its labels are not restored)", False),
    (
        "get",
        "volumegroupsnapshotcontents",
        "groupsnapshot.storage.k8s.io",
        "the cut time is then the group snapshot's (whole seconds)",
        True,
    ),
    ("get", "persistentvolumes", "", "a group snapshot's members cannot be matched to their PVCs", True),
)

# restore-app with --mover-namespace (steps.manifests.mover_restore): (verb, resource, group,
# subresource, needed-for) in the mover namespace, and cluster-scoped (verb, resource, group,
# needed-for). Its rights in the namespace restored into are those of a restore without it.
RESTORE_MOVER_PERMISSIONS: tuple[tuple[str, str, str, str, str], ...] = (
    tuple(
        (verb, "persistentvolumeclaims", "", "", "staging claims")
        for verb in ("create", "delete", "get", "list", "watch")
    )
    + tuple((verb, "pods", "", "", "mover pods") for verb in ("create", "delete", "get", "list", "watch"))
    + (("get", "pods", "", "log", "a failed mover's log"),)
)
RESTORE_MOVER_CLUSTER_PERMISSIONS: tuple[tuple[str, str, str, str], ...] = (
    ("get", "persistentvolumes", "", "the hand-over of a filled volume"),
    ("list", "persistentvolumes", "", "volumes an earlier run filled (resuming)"),
    ("patch", "persistentvolumes", "", "reclaim policy and claim reservation of a handed-over volume"),
)

# Which step commands use each permission: with one ServiceAccount per step (the rendered RBAC), each
# is checked for the account of every step that uses it. Keys: (verb, resource, group, subresource).
CAPTURE_STEP = ("capture",)
PERMISSION_STEPS: dict[tuple[str, str, str, str], tuple[str, ...]] = {
    ("get", "pods", "", ""): ("consistent-point", "finalize"),
    ("create", "pods", "", "exec"): ("consistent-point", "finalize"),
    ("get", "persistentvolumeclaims", "", ""): ("prepare-clone", "finalize"),
    ("create", "persistentvolumeclaims", "", ""): ("prepare-clone",),
    ("list", "persistentvolumeclaims", "", ""): ("finalize",),
    ("delete", "persistentvolumeclaims", "", ""): ("finalize",),
    ("patch", "persistentvolumeclaims", "", ""): ("consistent-point", "finalize"),
    ("get", "volumesnapshots", "snapshot.storage.k8s.io", ""): (
        "consistent-point",
        "prepare-clone",
        "finalize",
    ),
    ("list", "volumesnapshots", "snapshot.storage.k8s.io", ""): (
        "consistent-point",
        "prepare-clone",
        "finalize",
    ),
    ("watch", "volumesnapshots", "snapshot.storage.k8s.io", ""): ("consistent-point", "prepare-clone"),
    ("delete", "volumesnapshots", "snapshot.storage.k8s.io", ""): ("consistent-point", "finalize"),
    ("delete", "volumegroupsnapshots", "groupsnapshot.storage.k8s.io", ""): ("consistent-point", "finalize"),
    ("list", "events", "", ""): ("consistent-point", "prepare-clone"),
    ("get", "namespaces", "", ""): CAPTURE_STEP,
}


def steps_using(verb: str, resource: str, group: str, sub: str = "") -> tuple[str, ...]:
    """The step commands that use a permission of :data:`PERMISSIONS` / :data:`CLUSTER_PERMISSIONS`:
    capture's lists, the rest consistent-point's unless :data:`PERMISSION_STEPS` says otherwise."""
    key = (verb, resource, group, sub)
    if key in PERMISSION_STEPS:
        return PERMISSION_STEPS[key]
    captured = {(v, r, g, s) for v, r, g, s, step, _ in PERMISSIONS if step == "capture"}
    return CAPTURE_STEP if key in captured else ("consistent-point",)


def runs_hooks_in_pods(plan) -> bool:
    return any(t.pod and not t.local and t.hook != "none" for t in plan.targets)


def required_permissions(plan) -> list[tuple[str, str, str, str, str, bool]]:
    """The entries of :data:`PERMISSIONS` the backup steps of ``plan`` use: group snapshot rights only
    for consistency: group, pods and pods/exec only when a hook runs in a pod, Secrets only when
    capture exports them."""
    out = []
    for entry in PERMISSIONS:
        _verb, resource, _group, _sub, _step, group_only = entry
        if group_only and plan.consistency != "group":
            continue
        if resource == "pods" and not runs_hooks_in_pods(plan):
            continue
        if resource == "secrets" and not plan.capture.secrets:
            continue
        out.append(entry)
    return out


def required_cluster_permissions(plan) -> list[tuple[str, str, str, str, bool]]:
    """The entries of :data:`CLUSTER_PERMISSIONS` the backup steps of ``plan`` use."""
    return [e for e in CLUSTER_PERMISSIONS if plan.consistency == "group" or not e[4]]


class Checks:
    def __init__(self):
        self.items: list[dict] = []

    def add(self, name: str, status: str, message: str) -> None:
        self.items.append({"check": name, "status": status, "message": message})

    @property
    def failed(self) -> list[dict]:
        return [c for c in self.items if c["status"] == "fail"]


def allowed(
    client,
    sa: str,
    verb: str,
    resource: str,
    group: str,
    namespace: str | None,
    sub: str = "",
    name: str = "",
) -> bool:
    """May ServiceAccount ``sa`` (``NS/NAME``; empty: the current identity) do this (to the object
    ``name``, if given)? An access review."""
    if name:
        return client.can_i(verb, resource, namespace, group, sub, service_account=sa, name=name)
    return client.can_i(verb, resource, namespace, group, sub, service_account=sa)


def _default_class(classes: list[dict], driver: str, annotation: str) -> dict | None:
    for c in classes:
        if c.get("driver") == driver and (c["metadata"].get("annotations") or {}).get(annotation) == "true":
            return c
    return None


def check_snapshots(client, plan, checks: Checks, group_class: str) -> None:
    from steps.drivers import kube_objects
    from steps.drivers.kube import Forbidden, KubeError
    from steps.drivers.kube_objects import dig

    ns = plan.app.namespace
    try:
        classes, _ = client.list("snapshot.storage.k8s.io/v1", "VolumeSnapshotClass")
        checks.add("snapshot-api", "ok", "snapshot.storage.k8s.io/v1 is served")
    except Forbidden as err:
        checks.add(
            "snapshot-api",
            "fail",
            f"{err} (run preflight as a cluster reader; check a ServiceAccount's "
            "rights with --service-account)",
        )
        return
    except KubeError as err:
        checks.add(
            "snapshot-api",
            "fail",
            f"VolumeSnapshot API not usable: {err} (install the external-snapshotter CRDs and controller)",
        )
        return
    group_classes = None
    if plan.consistency == "group":
        for api_version in kube_objects.GROUP_SNAPSHOT_API_VERSIONS:
            try:
                group_classes, _ = client.list(api_version, "VolumeGroupSnapshotClass")
                checks.add("snapshot-api", "ok", f"{api_version} is served (consistency: group)")
                break
            except KubeError:
                continue
        if group_classes is None:
            checks.add(
                "snapshot-api",
                "fail",
                "consistency: group, but no VolumeGroupSnapshot API is served "
                f"({', '.join(kube_objects.GROUP_SNAPSHOT_API_VERSIONS)})",
            )
    named = None
    if plan.snapshot.snapshot_class:
        named = next((c for c in classes if c["metadata"]["name"] == plan.snapshot.snapshot_class), None)
        if named is None:
            checks.add(
                "snapshot-class", "fail", f"VolumeSnapshotClass {plan.snapshot.snapshot_class} does not exist"
            )
            return
    for v in plan.volumes:
        if not v.pvc:
            continue
        pvc = client.get_or_none("v1", "PersistentVolumeClaim", v.pvc, ns)
        if pvc is None:
            checks.add("snapshot-class", "fail", f"PVC {ns}/{v.pvc} (volume {v.name}) does not exist")
            continue
        sc_name = dig(pvc, "spec", "storageClassName")
        sc = client.get_or_none("storage.k8s.io/v1", "StorageClass", sc_name) if sc_name else None
        if sc is None:
            checks.add(
                "snapshot-class",
                "fail",
                f"PVC {v.pvc}: storage class {sc_name or '(none)'} not found; cannot tell its CSI driver",
            )
            continue
        driver = sc.get("provisioner", "")
        if named is not None:
            chosen = named
            if chosen.get("driver") != driver:
                checks.add(
                    "snapshot-class",
                    "fail",
                    f"PVC {v.pvc}: VolumeSnapshotClass {chosen['metadata']['name']} "
                    f"is for driver {chosen.get('driver')}, the PVC uses {driver}",
                )
                continue
        else:
            chosen = _default_class(classes, driver, "snapshot.storage.kubernetes.io/is-default-class")
            if chosen is None:
                checks.add(
                    "snapshot-class",
                    "fail",
                    f"PVC {v.pvc}: no default VolumeSnapshotClass for driver {driver}"
                    " (set spec.snapshot.className in the policy)",
                )
                continue
        checks.add("snapshot-class", "ok", f"PVC {v.pvc}: {chosen['metadata']['name']} (driver {driver})")
        if group_classes is not None:
            if group_class:
                g = next((c for c in group_classes if c["metadata"]["name"] == group_class), None)
            else:
                g = _default_class(
                    group_classes, driver, "groupsnapshot.storage.kubernetes.io/is-default-class"
                )
            if g is None or g.get("driver") != driver:
                wanted = (
                    f"VolumeGroupSnapshotClass {group_class}"
                    if group_class
                    else "default VolumeGroupSnapshotClass"
                )
                checks.add(
                    "snapshot-class",
                    "fail",
                    f"PVC {v.pvc}: no {wanted} for driver {driver} (spec.snapshot.groupClassName in the policy)",
                )
            else:
                checks.add("snapshot-class", "ok", f"PVC {v.pvc}: group class {g['metadata']['name']}")


def check_rbac(client, plan, checks: Checks, sa: str | dict[str, str]) -> None:
    """``sa``: one ServiceAccount (``NS/NAME``; empty: the current identity) checked for everything the
    backup steps do, or one per step command (the rendered accounts), each checked for what its step
    does (a step missing from the mapping is not checked)."""
    from steps.drivers.kube import KubeError

    checked: set[str] = set()

    def accounts(verb: str, resource: str, group: str, sub: str = "") -> list[str]:
        if isinstance(sa, str):
            return [sa]
        out = [sa[step] for step in steps_using(verb, resource, group, sub) if step in sa]
        checked.update(out)
        return out

    ns = plan.app.namespace
    missing = []
    try:
        for verb, resource, group, sub, step, _group_only in required_permissions(plan):
            for account in accounts(verb, resource, group, sub):
                if not allowed(client, account, verb, resource, group, ns, sub):
                    what = f"{verb} {resource}{'/' + sub if sub else ''}{'.' + group if group else ''}"
                    whose = "" if isinstance(sa, str) else f"{account}: "
                    missing.append(f"{whose}{what} ({step})")
        for verb, resource, group, consequence, _group_only in required_cluster_permissions(plan):
            for account in accounts(verb, resource, group):
                if not allowed(client, account, verb, resource, group, None):
                    # without PVs a group snapshot cannot be used at all; the rest only loses precision
                    whose = "" if isinstance(sa, str) else f"ServiceAccount {account} "
                    checks.add(
                        "rbac",
                        "fail" if resource == "persistentvolumes" else "warn",
                        f"{whose}cannot {verb} {resource}: {consequence}",
                    )
    except KubeError as err:
        checks.add("rbac", "warn", f"access reviews not possible: {err}")
        return
    if isinstance(sa, str):
        who, has = (f"ServiceAccount {sa}" if sa else "the current identity"), "has"
    else:
        who, has = f"the steps' ServiceAccounts ({', '.join(sorted(checked))})", "have"
    if missing:
        checks.add("rbac", "fail", f"{who} may not, in namespace {ns}: {'; '.join(missing)}")
    else:
        checks.add("rbac", "ok", f"{who} {has} every permission the backup steps use in {ns}")


def check_pod_security(namespace_obj: dict | None, checks: Checks) -> None:
    from steps.drivers import kube_objects
    from steps.manifests.podsecurity import LEVELS, violations

    labels = ((namespace_obj or {}).get("metadata") or {}).get("labels") or {}
    level = labels.get("pod-security.kubernetes.io/enforce", "privileged")
    if level not in LEVELS:
        checks.add("pod-security", "warn", f"unknown enforce level {level!r}")
        return

    def mover_spec(**options) -> dict:
        return kube_objects.mover_pod(
            name="preflight",
            namespace="x",
            pvc="x",
            image="x",
            repository="s3://x/x",
            snapshot_id="x",
            labels={},
            password_secret="x",
            **options,
        )["spec"]

    problems = violations(mover_spec(), level)
    if problems:
        if not violations(mover_spec(run_as_root=False), level):
            checks.add(
                "pod-security",
                "warn",
                f"enforce={level} rejects the restore mover as root ("
                f"{problems[0]}); restores there need --mover-non-root (file owners are then not restored)",
            )
        else:
            checks.add(
                "pod-security",
                "fail",
                f"enforce={level} rejects the restore mover pod: {'; '.join(problems)}",
            )
    else:
        checks.add("pod-security", "ok", f"enforce={level} admits the restore mover pod")


def check_repository(plan, checks: Checks) -> None:
    from steps.errors import SnapflowError
    from steps.repository.opener import open_repository

    if plan.repository is None:
        checks.add("repository", "warn", "the plan names no repository")
        return
    try:
        open_repository(plan.repository.url, plan.repository.endpoint)
        checks.add("repository", "ok", f"{plan.repository.url} opens with the given password")
    except SnapflowError as err:
        checks.add("repository", "fail", f"{plan.repository.url}: {err}")


def preflight(
    client,
    plan,
    *,
    service_account: str | dict[str, str] = "",
    group_class: str = "",
    repository: bool = True,
) -> Checks:
    from steps.drivers.kube import KubeError

    checks = Checks()
    try:
        version = client.request("GET", "/version", what="version")
        checks.add("api", "ok", f"{client.host} answers (Kubernetes {version.get('gitVersion', '?')})")
    except KubeError as err:
        checks.add("api", "fail", str(err))
        if repository:
            check_repository(plan, checks)
        return checks
    ns_obj = None
    try:
        ns_obj = client.get_or_none("v1", "Namespace", plan.app.namespace)
        if ns_obj is None:
            checks.add("namespace", "fail", f"namespace {plan.app.namespace} does not exist")
        else:
            checks.add("namespace", "ok", f"namespace {plan.app.namespace} exists")
    except KubeError as err:
        checks.add("namespace", "warn", f"cannot read namespace {plan.app.namespace}: {err}")
    if plan.snapshot.driver == "csi":
        check_snapshots(client, plan, checks, group_class or plan.snapshot.group_class or "")
    check_rbac(client, plan, checks, service_account)
    check_pod_security(ns_obj, checks)
    if repository:
        check_repository(plan, checks)
    return checks
