"""Preflight of a policy against a live cluster, before its first backup (``snapflow preflight``).

Wraps the steps' own checks (:func:`steps.commands.preflight.preflight`: API, namespace, snapshot API
and classes per CSI driver, RBAC, Pod Security, repository) with the policy's plan and its rendered
ServiceAccounts (in the mover namespace when the policy names one: their rights in the app's namespace
are checked there all the same), and adds ``rbac-restore``: the restore identity may do what
restore-app does in the policy's namespace (:func:`workflows.rbac.restore_rules`), and with a mover
namespace its staging claims and mover pods there and the PersistentVolumes it hands over; with a mover
namespace also ``rbac-movers`` and ``secrets`` (the repository's Secrets are there, where the step pods mount
them); and ``restore-test``: the scratch volume of the check's restore test can be provisioned (its
StorageClass, or a default one, exists) and is as large as the app's PVCs. ``pod-security`` replaces the steps' own (which sees only the restore mover): every
pod of the rendered WorkflowTemplates and the mover, against the namespace's enforce level
(:func:`workflows.pod_security.check_pod_security`). The access checks are SubjectAccessReviews,
so the caller needs the right to create them (a cluster administrator); ``current_identity`` checks
the caller instead of the ServiceAccounts.

The repository is opened only when the password is in this process's environment
(``SNAPFLOW_PASSWORD`` / ``SNAPFLOW_PASSWORD_FILE``, with ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` and ``SNAPFLOW_S3_*``): the policy names a Secret in the cluster, whose
values preflight does not use (``secrets`` looks only at its key names). Called by :mod:`workflows.cli.cmd_preflight`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from steps.api import runtime
from workflows.names import Names
from workflows.pipelines import backup_pipeline, pipelines_for, plan_for
from workflows.pod_security import check_pod_security
from workflows.policy import Policy, storage_bytes
from workflows.rbac import (
    BLOCK_TRACKING_CLUSTER_RULES,
    BLOCK_TRACKING_RULES,
    MOVER_CLUSTER_RULES,
    MOVER_SIDE_RULES,
    RESTORE_CLUSTER_RULES,
    RESTORE_MOVER_CLUSTER_RULES,
    RESTORE_MOVER_SIDE_RULES,
    app_side_rules,
    restore_rules,
    step_commands,
    tracks_blocks,
)
from workflows.rbac_sources import source_namespaces

STATUS_WORDS = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}


@dataclass
class PolicyChecks:
    policy: Policy
    items: list[dict[str, str]]

    @property
    def failed(self) -> list[dict[str, str]]:
        return [c for c in self.items if c["status"] == "fail"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": f"{self.policy.namespace}/{self.policy.name}",
            "ok": not self.failed,
            "checks": self.items,
        }

    def lines(self) -> list[str]:
        return [f"{STATUS_WORDS[c['status']]} {c['check']:<15} {c['message']}" for c in self.items]


def password_in_environment() -> bool:
    return bool(os.environ.get(runtime.PASSWORD) or os.environ.get(runtime.PASSWORD_FILE))


def _denied(client, sa: str, rules, namespace: str | None, name: str = "") -> list[tuple[str, str, str]]:
    """``(verb, resource, group)`` of ``rules`` (``(group, resource, verbs)``; a resource may name a
    subresource) that ServiceAccount ``sa`` may not do in ``namespace`` (None: cluster-wide), on the
    object ``name`` if given: one access review each."""
    from steps.api import allowed

    out = []
    for group, resource, verbs in rules:
        plural, _, sub = resource.partition("/")
        for verb in verbs:
            if not allowed(client, sa, verb, plural, group, namespace, sub, name):
                out.append((verb, resource, group))
    return out


def check_restore_rbac(client, policy: Policy, checks) -> None:
    """``rbac-restore``: the restore ServiceAccount's rights in the policy's namespace."""
    from steps.api import KubeError, allowed

    names = Names.of(policy)
    sa = f"{policy.workflow_namespace}/{names.restore_service_account}"
    missing: list[str] = []
    try:
        for rule in restore_rules(policy):
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    plural, _, sub = resource.partition("/")
                    for verb in rule["verbs"]:
                        for name in rule.get("resourceNames") or [""]:
                            if not allowed(client, sa, verb, plural, group, policy.namespace, sub, name):
                                what = f"{verb} {resource}{'/' + name if name else ''}"
                                missing.append(f"{what}{'.' + group if group else ''}")
        missing += [f"{v} {r} (cluster)" for v, r, _ in _denied(client, sa, RESTORE_CLUSTER_RULES, None)]
        home = policy.workflow_namespace
        if home != policy.namespace:
            # its staging claims and mover pods in the mover namespace, the volumes it hands over
            missing += [
                f"{v} {r} in namespace {home}"
                for v, r, _ in _denied(client, sa, RESTORE_MOVER_SIDE_RULES, home)
            ]
            missing += [
                f"{v} {r} (cluster)" for v, r, _ in _denied(client, sa, RESTORE_MOVER_CLUSTER_RULES, None)
            ]
    except KubeError as err:
        checks.add("rbac-restore", "warn", f"access reviews not possible: {err}")
        return
    if missing:
        checks.add(
            "rbac-restore",
            "fail",
            f"ServiceAccount {sa} may not, in namespace {policy.namespace}: {'; '.join(missing)} "
            "(restore-app needs it; apply the rendered RBAC)",
        )
    else:
        checks.add("rbac-restore", "ok", f"ServiceAccount {sa} may restore the app into {policy.namespace}")


def check_mover_rbac(client, policy: Policy, checks) -> None:
    """``rbac-movers``: with a mover namespace, prepare-clone's and finalize's rights there and on the
    pre-provisioned VolumeSnapshotContents, and prepare-clone's reads in the app's namespace (the steps'
    own ``rbac`` check leaves prepare-clone out then: it creates its clone in the mover namespace)."""
    from steps.api import KubeError, allowed

    names = Names.of(policy)
    home, ns = policy.workflow_namespace, policy.namespace
    missing: list[str] = []
    try:
        for command in ("prepare-clone", "finalize"):
            sa = f"{home}/{names.step_account(command)}"
            wanted: list[tuple[str | None, str, str, str]] = [
                (home, group, resource, verb)
                for group, resource, verbs in MOVER_SIDE_RULES[command]
                for verb in verbs
            ]
            wanted += [
                (None, group, resource, verb)
                for group, resource, verbs in MOVER_CLUSTER_RULES[command]
                for verb in verbs
            ]
            if command == "prepare-clone":
                wanted += [
                    (ns, group, resource, verb)
                    for rule in app_side_rules(policy, command)
                    for group in rule["apiGroups"]
                    for resource in rule["resources"]
                    for verb in rule["verbs"]
                ]
            for where, group, resource, verb in wanted:
                if not allowed(client, sa, verb, resource, group, where):
                    scope = f"in namespace {where}" if where else "cluster-wide"
                    missing.append(f"{sa}: {verb} {resource}{'.' + group if group else ''} {scope}")
    except KubeError as err:
        checks.add("rbac-movers", "warn", f"access reviews not possible: {err}")
        return
    if missing:
        checks.add("rbac-movers", "fail", f"may not: {'; '.join(missing)} (apply the rendered RBAC)")
    else:
        checks.add(
            "rbac-movers",
            "ok",
            f"prepare-clone and finalize may bind snapshots and make clones in {home} and clean them up",
        )


def check_block_tracking(client, policy: Policy, checks, own_accounts: bool) -> None:
    """``block-tracking``: for each volume with ``blockTracking``, the driver's SnapshotMetadataService
    exists (the driver named, or the provisioner of the PVC's StorageClass), and (with the rendered
    per-step accounts) the copy's account may do what tracking needs. A warning, not a failure: without
    it the copy reads the volume in full and says why."""
    from steps.api import SNAPSHOT_METADATA_API, SNAPSHOT_METADATA_KIND, KubeError, dig

    tracked = [v for v in policy.spec.volumes if v.block_tracking is not None]
    if not tracked:
        return
    problems: list[str] = []
    found: list[str] = []
    try:
        for vol in tracked:
            driver = vol.block_tracking.driver
            if not driver:
                pvc = client.get_or_none("v1", "PersistentVolumeClaim", vol.pvc, policy.namespace)
                sc_name = dig(pvc, "spec", "storageClassName") if pvc else None
                sc = client.get_or_none("storage.k8s.io/v1", "StorageClass", sc_name) if sc_name else None
                driver = dig(sc, "provisioner") if sc else None
                if not driver:
                    problems.append(
                        f"volume {vol.volume_name}: cannot tell its CSI driver (PVC {vol.pvc} has no "
                        "StorageClass with a provisioner); name it in blockTracking.driver"
                    )
                    continue
            if client.get_or_none(SNAPSHOT_METADATA_API, SNAPSHOT_METADATA_KIND, driver) is None:
                problems.append(
                    f"volume {vol.volume_name}: no {SNAPSHOT_METADATA_KIND} {driver!r} (the driver offers no "
                    "changed-block tracking here)"
                )
            else:
                found.append(f"{vol.volume_name} ({driver})")
        if own_accounts:
            home = policy.workflow_namespace
            account = Names.of(policy).step_account("copy")
            sa = f"{home}/{account}"
            denied = [(home, *d) for d in _denied(client, sa, BLOCK_TRACKING_RULES["copy"], home)]
            denied += [(None, *d) for d in _denied(client, sa, BLOCK_TRACKING_CLUSTER_RULES["copy"], None)]
            token = [("", "serviceaccounts/token", ("create",))]  # for itself only (resourceNames)
            denied += [(home, *d) for d in _denied(client, sa, token, home, account)]
            for where, verb, resource, group in denied:
                scope = f"in namespace {where}" if where else "cluster-wide"
                problems.append(f"{sa}: may not {verb} {resource}{'.' + group if group else ''} {scope}")
    except KubeError as err:
        checks.add("block-tracking", "warn", f"cannot check changed-block tracking: {err}")
        return
    if problems:
        checks.add(
            "block-tracking",
            "warn",
            f"{'; '.join(problems)}: these volumes will be read in full",
        )
    else:
        checks.add("block-tracking", "ok", f"changed-block tracking available for {', '.join(found)}")


def check_mover_secrets(client, policy: Policy, checks) -> None:
    """``secrets``: with a mover namespace, what the step pods mount exists there — the repository's
    Secrets with their keys, the CA bundle's ConfigMap, a shared ServiceAccount. A pod mounts only its own
    namespace's Secrets, and every step pod runs in the mover namespace: a copy in the app's namespace
    is not used (restore-app copies them from the mover namespace for its movers). Only key names are
    looked at; no value is printed."""
    from steps.api import KubeError
    from workflows.render import externals

    home = policy.workflow_namespace
    missing: list[str] = []
    found: list[str] = []
    try:
        for item in externals(policy):
            obj = client.get_or_none("v1", item.kind, item.name, home)
            if obj is None:
                beside = client.get_or_none("v1", item.kind, item.name, policy.namespace)
                hint = (
                    f" (one in {policy.namespace} is not used: the step pods run in {home})" if beside else ""
                )
                missing.append(f"{item.kind} {home}/{item.name} does not exist{hint}")
                continue
            keys = set(obj.get("data") or {}) | set(obj.get("binaryData") or {})
            absent = [k for k in item.keys if k not in keys]
            if absent:
                missing.append(f"{item.kind} {home}/{item.name} has no key {', '.join(absent)}")
            else:
                found.append(f"{item.kind} {item.name}")
    except KubeError as err:
        checks.add("secrets", "warn", f"cannot read what the step pods mount in {home}: {err}")
        return
    movers = home != policy.namespace
    if missing:
        where = "the mover namespace (spec.movers.namespace)" if movers else f"namespace {home}"
        checks.add("secrets", "fail", f"{'; '.join(missing)}: create them in {where}")
    else:
        checks.add("secrets", "ok", f"{', '.join(found)} in the {'mover ' if movers else ''}namespace {home}")


DEFAULT_CLASS_ANNOTATIONS = (
    "storageclass.kubernetes.io/is-default-class",
    "storageclass.beta.kubernetes.io/is-default-class",
)


def check_restore_test(client, policy: Policy, checks) -> None:
    """``restore-test``: the restore test's scratch volume (a generic ephemeral volume) can be
    provisioned — without a StorageClass its pod would stay Pending until the workflow's deadline —
    and it is not smaller than the app's PVCs (their requested size bounds what a backup holds)."""
    from steps.api import KubeError, dig

    test = policy.spec.verify.restore_test
    if test is None:
        return
    try:
        classes, _ = client.list("storage.k8s.io/v1", "StorageClass")
        if test.storage_class_name:
            if not any(c["metadata"]["name"] == test.storage_class_name for c in classes):
                checks.add(
                    "restore-test",
                    "fail",
                    f"StorageClass {test.storage_class_name} (verify.restoreTest.storageClassName) does not exist",
                )
                return
            where = f"StorageClass {test.storage_class_name}"
        else:
            defaults = [
                c["metadata"]["name"]
                for c in classes
                if any(
                    ((c["metadata"].get("annotations") or {}).get(a) == "true")
                    for a in DEFAULT_CLASS_ANNOTATIONS
                )
            ]
            if not defaults:
                checks.add(
                    "restore-test",
                    "fail",
                    "no default StorageClass for the scratch volume: set verify.restoreTest.storageClassName",
                )
                return
            where = f"the default StorageClass {defaults[0]}"
        requested = 0
        for vol in policy.spec.volumes:
            pvc = (
                client.get_or_none("v1", "PersistentVolumeClaim", vol.pvc, policy.namespace)
                if vol.pvc
                else None
            )
            size = dig(pvc or {}, "spec", "resources", "requests", "storage")
            requested += (storage_bytes(str(size)) or 0) if size else 0
    except KubeError as err:
        checks.add("restore-test", "warn", f"cannot read StorageClasses or PVCs: {err}")
        return
    scratch = storage_bytes(test.scratch_size) or 0
    if requested > scratch:
        checks.add(
            "restore-test",
            "warn",
            f"the app's PVCs request {requested / 2**30:.1f} GiB, the scratch volume "
            f"(verify.restoreTest.scratchSize) is {test.scratch_size}: a full backup may not fit",
        )
    else:
        checks.add("restore-test", "ok", f"scratch volume of {test.scratch_size} from {where}")


class _Checks:
    """The checks of a source policy, in the shape the steps' preflight reports them."""

    def __init__(self) -> None:
        self.items: list[dict[str, str]] = []

    def add(self, check: str, status: str, message: str) -> None:
        self.items.append({"check": check, "status": status, "message": message})


def preflight_source(client, policy: Policy) -> PolicyChecks:
    """A policy with spec.source: its namespace exists, the Secrets its pods mount are there with their
    keys, and its level of Pod Security admits every step pod (the etcd steps reading the node's files
    need privileged). Its steps call no Kubernetes API, except a registry backup with ``imagesOf``,
    whose account's rights on the pods of each namespace named are checked (``rbac-source``)."""
    from steps.api import KubeError

    checks = _Checks()
    home = policy.workflow_namespace
    try:
        exists = client.get_or_none("v1", "Namespace", home) is not None
    except KubeError as err:
        checks.add("api", "fail", f"cannot reach the Kubernetes API: {err}")
        return PolicyChecks(policy, checks.items)
    checks.add("api", "ok", "the Kubernetes API answers")
    if not exists:
        checks.add("namespace", "fail", f"namespace {home} does not exist")
        return PolicyChecks(policy, checks.items)
    checks.add("namespace", "ok", f"namespace {home} exists")
    check_mover_secrets(client, policy, checks)
    check_pod_security(client, policy, checks)
    check_source_rbac(client, policy, checks)
    if policy.spec.source.etcd is not None:
        check_etcd_reachable(client, policy, checks)
    return PolicyChecks(policy, checks.items)


CONTROL_PLANE_LABELS = ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master")


def check_etcd_reachable(client, policy: Policy, checks) -> None:
    """``etcd``: the etcd pod runs on a control-plane node (without ``endpoints``) or reaches the ones
    named. A cluster that shows no control-plane node is managed (EKS, GKE, AKS, ...): its etcd cannot
    be reached, so without endpoints the policy fails, pointing to app-centric protection."""
    from steps.api import KubeError
    from workflows.policy_sources import MANAGED_HINT

    etcd = policy.spec.source.etcd
    try:
        nodes, _ = client.list("v1", "Node", None)
    except KubeError as err:
        checks.add("etcd", "warn", f"cannot list the nodes to find the control plane: {err}")
        return
    control = [
        n["metadata"]["name"]
        for n in nodes
        if set((n.get("metadata") or {}).get("labels") or {}) & set(CONTROL_PLANE_LABELS)
    ]
    if control:
        checks.add("etcd", "ok", f"control-plane node(s) {', '.join(sorted(control)[:5])}: etcd runs there")
    elif etcd.endpoints:
        checks.add(
            "etcd",
            "warn",
            f"no control-plane node is visible (a managed cluster?); the pod must reach {', '.join(etcd.endpoints)}"
            " from a worker node",
        )
    else:
        checks.add(
            "etcd", "fail", f"no control-plane node in the cluster (a managed cluster): {MANAGED_HINT}"
        )


def check_source_rbac(client, policy: Policy, checks) -> None:
    """``rbac-source``: the rights a source step uses through the API (:mod:`workflows.rbac_sources`:
    registry-backup with ``imagesOf`` lists pods in each namespace named), for its account."""
    from steps.api import KubeError

    names = Names.of(policy)
    missing: list[str] = []
    checked: list[str] = []
    try:
        for command in step_commands(pipelines_for(policy)):
            sa = f"{policy.workflow_namespace}/{names.step_account(command)}"
            for namespace, rules in source_namespaces(policy, command).items():
                checked.append(f"{sa} in {namespace}")
                missing += [
                    f"{sa}: {v} {r} in namespace {namespace}"
                    for v, r, _ in _denied(client, sa, rules, namespace)
                ]
    except KubeError as err:
        checks.add("rbac-source", "warn", f"access reviews not possible: {err}")
        return
    if missing:
        checks.add("rbac-source", "fail", f"may not: {'; '.join(missing)} (apply the rendered RBAC)")
    elif checked:
        checks.add("rbac-source", "ok", f"may read the pods it backs up the images of: {', '.join(checked)}")


def preflight_policy(
    client,
    policy: Policy,
    *,
    service_account: str = "",
    current_identity: bool = False,
    repository: bool = True,
) -> PolicyChecks:
    """Every check for one policy. ``service_account`` (``NS/NAME``) overrides the policy's own."""
    from steps.api import preflight

    if policy.spec.source is not None:
        return preflight_source(client, policy)
    plan = plan_for(policy)
    names = Names.of(policy)
    sa: str | dict[str, str] = service_account
    if not current_identity and not service_account:
        # each step's own ServiceAccount (or the policy's shared one for all)
        sa = {
            s.command: f"{policy.workflow_namespace}/{names.step_account(s.command)}"
            for s in backup_pipeline(policy).all_steps()
            # with a mover namespace prepare-clone acts there: check_mover_rbac checks it
            if not (policy.spec.movers.namespace and s.command == "prepare-clone")
        }
    elif current_identity:
        sa = ""
    open_repository = repository and password_in_environment()
    checks = preflight(client, plan, service_account=sa, repository=open_repository)
    if repository and not open_repository:
        checks.add(
            "repository",
            "warn",
            f"not checked: set {runtime.PASSWORD} (or {runtime.PASSWORD_FILE}) and the S3 credentials to open "
            f"{policy.spec.repository.url} from here, or pass --skip-repository",
        )
    api_ok = any(c["check"] == "api" and c["status"] == "ok" for c in checks.items)
    if api_ok and not current_identity and not service_account:
        check_restore_rbac(client, policy, checks)
        if policy.spec.movers.namespace:
            check_mover_rbac(client, policy, checks)
    if api_ok and policy.spec.movers.namespace:
        check_mover_secrets(client, policy, checks)
    if api_ok and tracks_blocks(policy):
        check_block_tracking(client, policy, checks, not current_identity and not service_account)
    if api_ok:
        check_restore_test(client, policy, checks)
        checks.items = [c for c in checks.items if c["check"] != "pod-security"]
        check_pod_security(client, policy, checks)
    return PolicyChecks(policy, checks.items)
