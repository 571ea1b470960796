"""The ServiceAccounts, Roles and bindings a policy's workflows run with: least privilege, per step.

Every step kind (capture, consistent-point, prepare-clone, copy, verify, finalize, restore, check,
prune, init) runs as a ServiceAccount of its own, ``snapflow-NAME-STEP`` (:meth:`Names.step_account`;
the single-volume restore is ``restore-volume``), named by the pod templates of its steps. Its Role
and RoleBinding have the same name; all carry the label ``snapflow.io/step: STEP`` for guardrails to
match. A Role holds what its step uses (:data:`STEP_PERMISSIONS`, plus :data:`HOOK_RULES` when a hook
runs in a pod, :data:`GROUP_RULES` for ``consistency: group``, :data:`SECRET_RULES` when
``capture.secrets`` is on) and Argo's executor rule (:data:`EXECUTOR_RULES`), nothing else: no
wildcard, no update. copy and verify — the pods that read the app's data and hold the repository's
credentials (mounted by the kubelet, never read through the API) — get only the executor rule: no
exec, no Secret. The steps' own list of what they use is ``PERMISSIONS`` / ``CLUSTER_PERMISSIONS``
in :mod:`steps.commands.preflight`, with ``steps_using`` saying which step uses what; the tests
compare each Role with it and run every step as its account with RBAC enforced. Cluster-scoped reads
go to a ClusterRole of the step (:data:`CLUSTER_RULES`): the cut time of a snapshot is read from its
VolumeSnapshotContent, capture stores the Namespace object (its Pod Security labels), and a group
snapshot's members are matched to their PVCs through the PersistentVolumes. They reveal metadata of
other namespaces, never data.

``restore-app`` runs as ``snapflow-NAME-restore`` (labelled ``snapflow.io/step: restore-app``): it
creates an app's objects and mover pods. Its namespaced rules (:data:`RESTORE_RULES`) are a
ClusterRole that grants nothing by itself: a RoleBinding in the policy's namespace is rendered, and a
restore into another namespace needs one there (``kubectl create rolebinding``, see
docs/user/restore.md). A second ClusterRole lets it read Namespaces (a restore waits for a terminating
one). It never creates namespaces: the target must exist. Without ``capture.secrets`` it reads
Secrets only by name: the repository's, which it copies into the target for its movers.

With a mover namespace (``spec.movers.namespace``, docs/user/mover-namespace.md) the workflows and so
every ServiceAccount live there. Each step's Role there holds Argo's executor rule and what the step
does there (:data:`MOVER_SIDE_RULES`: prepare-clone binds the app's snapshot there and makes the clone,
finalize deletes both); what it does in the app's namespace is a Role of the same name in the app's
namespace, bound to the account in the mover namespace (prepare-clone there only reads: no claim is
created in the app's namespace). The pre-provisioned VolumeSnapshotContents are cluster-scoped
(:data:`MOVER_CLUSTER_RULES`: prepare-clone creates them, finalize deletes them by name, never lists).
restore-app reads the repository's Secrets (and CA bundle) by name in the mover namespace, and runs
its mover pods there: it creates staging claims and mover pods in the mover namespace
(:data:`RESTORE_MOVER_SIDE_RULES`) and gets, lists and patches the PersistentVolumes it provisioned
there to hand them over to the target claims (:data:`RESTORE_MOVER_CLUSTER_RULES`).

A policy with ``spec.source`` (etcd, registry, bucket) renders the same per-step accounts for its
steps (``etcd-snapshot``, ``registry-backup``, ``bucket-restore``, ...); none of them calls the API, so
each Role holds Argo's executor rule alone, and the source step's container gets no token at all (the
template sets ``automountServiceAccountToken: false`` and names the account as Argo's executor's).

A registry policy with ``imagesOf`` is the exception: its ``registry-backup`` lists the selected pods,
so its container gets its token and its account ``get``/``list`` on pods in each namespace named
(:mod:`workflows.rbac_sources`).

``spec.workflow.serviceAccountName`` replaces all of this with one account the user manages, set
workflow-wide: nothing is rendered, and :func:`shared_account_warnings` says what that gives up.

Trade-off of ``capture.secrets`` (default on): listing Secrets lets capture's identity read every
Secret of the namespace — the repository's password and S3 keys included — and the repository then
holds the app's Secrets, so whoever holds the repository key can read them. Off, no backup step
reads a Secret, and a restore needs them recreated first (from their source: a secret manager,
sealed secrets, ...); workloads referencing a missing Secret do not start.

Called by :mod:`workflows.render`. Objects are plain dicts (core Kubernetes kinds, not Argo).
"""

from __future__ import annotations

from typing import Any

from workflows.names import Names
from workflows.pipeline import Pipeline
from workflows.policy import Policy
from workflows.rbac_sources import shared_account_notes, source_rules_elsewhere, source_rules_in

Rule = tuple[str, str, tuple[str, ...]]  # (API group, resource, verbs)

SNAPSHOT_GROUP = "snapshot.storage.k8s.io"
GROUP_SNAPSHOT_GROUP = "groupsnapshot.storage.k8s.io"

# What capture lists (it lists every kind the API serves and stores what it may read; these are the
# kinds a typical app consists of). Secrets only with capture.secrets (SECRET_RULES). Not listed: Pods
# (their specs may hold credentials in env; controllers recreate them), Roles and RoleBindings (a
# restore could only create them with the right to grant what they grant), custom resources.
CAPTURE_RESOURCES: tuple[tuple[str, str], ...] = (
    ("", "configmaps"),
    ("", "persistentvolumeclaims"),
    ("", "serviceaccounts"),
    ("", "services"),
    ("apps", "daemonsets"),
    ("apps", "deployments"),
    ("apps", "statefulsets"),
    ("batch", "cronjobs"),
    ("batch", "jobs"),
    ("autoscaling", "horizontalpodautoscalers"),
    ("networking.k8s.io", "ingresses"),
    ("networking.k8s.io", "networkpolicies"),
    ("policy", "poddisruptionbudgets"),
)
SECRETS: tuple[str, str] = ("", "secrets")

# Namespaced permissions of each step command, without hooks, group snapshots or Secrets.
STEP_PERMISSIONS: dict[str, tuple[Rule, ...]] = {
    "capture": tuple((group, resource, ("list",)) for group, resource in CAPTURE_RESOURCES),
    "consistent-point": (
        ("", "events", ("list",)),  # quoted in snapshot errors
        (SNAPSHOT_GROUP, "volumesnapshots", ("create", "delete", "get", "list", "watch")),
    ),
    "prepare-clone": (
        ("", "persistentvolumeclaims", ("create", "get")),
        ("", "events", ("list",)),
        (SNAPSHOT_GROUP, "volumesnapshots", ("get", "list", "watch")),
    ),
    "finalize": (
        ("", "persistentvolumeclaims", ("delete", "get", "list")),
        (SNAPSHOT_GROUP, "volumesnapshots", ("delete", "get", "list")),
    ),
}

# Hooks run in the app's pods through pods/exec (consistent-point quiesces, finalize thaws again).
EXEC_RULES: tuple[Rule, ...] = (("", "pods", ("get",)), ("", "pods/exec", ("create",)))
HOOK_RULES: dict[str, tuple[Rule, ...]] = {"consistent-point": EXEC_RULES, "finalize": EXEC_RULES}

# consistency: group — consistent-point labels the policy's PVCs so that one VolumeGroupSnapshot
# selects exactly them, then labels the member VolumeSnapshots the snapshot controller made; finalize
# removes a leftover label and deletes the group.
GROUP_RULES: dict[str, tuple[Rule, ...]] = {
    "consistent-point": (
        ("", "persistentvolumeclaims", ("get", "patch")),
        (SNAPSHOT_GROUP, "volumesnapshots", ("patch",)),
        (GROUP_SNAPSHOT_GROUP, "volumegroupsnapshots", ("create", "delete", "get", "list", "watch")),
    ),
    "finalize": (
        ("", "persistentvolumeclaims", ("patch",)),
        (GROUP_SNAPSHOT_GROUP, "volumegroupsnapshots", ("delete", "get", "list")),
    ),
}

SECRET_RULES: dict[str, tuple[Rule, ...]] = {"capture": ((*SECRETS, ("list",)),)}

# Cluster-scoped reads: (rule, only for consistency: group).
CLUSTER_RULES: dict[str, tuple[tuple[Rule, bool], ...]] = {
    "capture": ((("", "namespaces", ("get",)), False),),
    "consistent-point": (
        ((SNAPSHOT_GROUP, "volumesnapshotcontents", ("get",)), False),
        ((GROUP_SNAPSHOT_GROUP, "volumegroupsnapshotcontents", ("get",)), True),
        (("", "persistentvolumes", ("get",)), True),
    ),
}

# With a mover namespace: what prepare-clone and finalize do there (the app's snapshot bound through a
# pre-provisioned content, the clone made from it; their clean-up), and with the contents themselves.
MOVER_SIDE_RULES: dict[str, tuple[Rule, ...]] = {
    "prepare-clone": (
        ("", "persistentvolumeclaims", ("create", "get")),
        ("", "events", ("list",)),
        (SNAPSHOT_GROUP, "volumesnapshots", ("create", "get", "list", "watch")),
    ),
    "finalize": (
        ("", "persistentvolumeclaims", ("delete", "list")),
        (SNAPSHOT_GROUP, "volumesnapshots", ("delete", "get", "list")),
    ),
}
MOVER_CLUSTER_RULES: dict[str, tuple[Rule, ...]] = {
    "prepare-clone": ((SNAPSHOT_GROUP, "volumesnapshotcontents", ("create", "get")),),
    "finalize": ((SNAPSHOT_GROUP, "volumesnapshotcontents", ("delete", "get", "patch")),),
}
# ... and what prepare-clone still does in the app's namespace: it reads the source PVC and waits for
# the snapshot; the clone is not made there.
PREPARE_CLONE_APP_SIDE: tuple[Rule, ...] = (
    ("", "persistentvolumeclaims", ("get",)),
    ("", "events", ("list",)),
    (SNAPSHOT_GROUP, "volumesnapshots", ("get", "list", "watch")),
)

# volumes[].blockTracking: the copy reads its clone claim and the snapshot it was made from where its
# pod runs (the app's or the mover namespace), and gets a token of its own ServiceAccount for the
# service's audience (TokenRequest, limited to that account by name: :func:`block_tracking_token_rule`);
# cluster-wide it reads that snapshot's content (driver, handle) and the driver's
# SnapshotMetadataService (address, audience, CA). The sidecar reviews the token and asks whether its
# account may get VolumeSnapshots in the namespace (the client role of kubernetes-csi/
# external-snapshot-metadata, deploy/snpashot-metadata-client-cluster-role.yaml, narrowed to get).
CBT_GROUP = "cbt.storage.k8s.io"
BLOCK_TRACKING_RULES: dict[str, tuple[Rule, ...]] = {
    "copy": (("", "persistentvolumeclaims", ("get",)), (SNAPSHOT_GROUP, "volumesnapshots", ("get",))),
}
BLOCK_TRACKING_CLUSTER_RULES: dict[str, tuple[Rule, ...]] = {
    "copy": (
        (SNAPSHOT_GROUP, "volumesnapshotcontents", ("get",)),
        (CBT_GROUP, "snapshotmetadataservices", ("get",)),
    ),
}

# Argo's executor reports each step's outputs through WorkflowTaskResults.
EXECUTOR_RULES: tuple[Rule, ...] = (("argoproj.io", "workflowtaskresults", ("create", "patch")),)

# restore-app in a target namespace: every restored kind is looked up, created, and with
# existing=replace deleted and watched until gone; held workloads are released with a patch; a mover
# pod per PVC is created, watched, its log read on failure, and deleted; the repository's Secrets
# (and CA bundle ConfigMap) are read in the policy's namespace and copied for the time of the
# restore; the optional check command runs through pods/exec.
RESTORE_VERBS = ("create", "delete", "get", "list", "watch")
RELEASED_WORKLOADS: tuple[tuple[str, str], ...] = (
    ("apps", "daemonsets"),
    ("apps", "deployments"),
    ("apps", "statefulsets"),
    ("batch", "cronjobs"),
    ("batch", "jobs"),
)
RESTORE_RULES: tuple[Rule, ...] = (
    *((group, resource, RESTORE_VERBS) for group, resource in CAPTURE_RESOURCES),
    *((group, resource, ("patch",)) for group, resource in RELEASED_WORKLOADS),
    ("", "pods", ("create", "delete", "get", "list", "watch")),
    ("", "pods/log", ("get",)),
    ("", "pods/exec", ("create",)),
    *EXECUTOR_RULES,
)
RESTORE_SECRET_RULES: tuple[Rule, ...] = ((*SECRETS, RESTORE_VERBS),)
RESTORE_CLUSTER_RULES: tuple[Rule, ...] = (("", "namespaces", ("get", "list", "watch")),)
# With a mover namespace, restore-app fills each volume there: a staging claim is created, watched
# until bound, deleted once its volume is set aside (leftovers listed by label and deleted); a mover
# pod per claim is created, watched, its log read on failure, and deleted.
RESTORE_MOVER_SIDE_RULES: tuple[Rule, ...] = (
    ("", "persistentvolumeclaims", ("create", "delete", "get", "list", "watch")),
    ("", "pods", ("create", "delete", "get", "list", "watch")),
    ("", "pods/log", ("get",)),
)
# ... and hands each volume over to its target claim: the volumes it marked are listed by label, read,
# and patched (reclaim policy, claimRef reservation, the policy back).
RESTORE_MOVER_CLUSTER_RULES: tuple[Rule, ...] = (("", "persistentvolumes", ("get", "list", "patch")),)


def merge(rules: list[Rule]) -> list[dict[str, Any]]:
    """RBAC rules as Kubernetes writes them: one per (API group, verb set), sorted."""
    verbs: dict[tuple[str, str], set[str]] = {}
    for group, resource, vs in rules:
        verbs.setdefault((group, resource), set()).update(vs)
    by_verbs: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for (group, resource), vs in sorted(verbs.items()):
        by_verbs.setdefault((group, tuple(sorted(vs))), []).append(resource)
    return [
        {"apiGroups": [group], "resources": sorted(resources), "verbs": list(vs)}
        for (group, vs), resources in sorted(by_verbs.items())
    ]


def step_commands(pipelines: list[Pipeline]) -> list[str]:
    """Every step command the pipelines run (each gets its own ServiceAccount), sorted."""
    return sorted({s.command for p in pipelines for s in p.all_steps()})


def _runs_hooks_in_pods(policy: Policy) -> bool:
    return any(t.hook != "none" and not t.local for t in policy.spec.quiesce)


def step_rules(policy: Policy, command: str) -> list[dict[str, Any]]:
    """The Role of one step command's ServiceAccount, in the policy's namespace: what that command
    uses, and Argo's executor reporting its outputs. Commands that use no API (copy, verify, restore,
    check, prune, init) get only the executor's rule: no Secret, no pod, no exec; so does every step of
    a source policy (spec.source: its finalize reads the plan and the repository only)."""
    if policy.spec.source is not None:
        return merge([*EXECUTOR_RULES, *source_rules_in(policy, command, policy.workflow_namespace)])
    rules: list[Rule] = list(EXECUTOR_RULES)
    rules.extend(STEP_PERMISSIONS.get(command, ()))
    if _runs_hooks_in_pods(policy):
        rules.extend(HOOK_RULES.get(command, ()))
    if policy.spec.snapshot.consistency == "group":
        rules.extend(GROUP_RULES.get(command, ()))
    if policy.spec.capture.secrets:
        rules.extend(SECRET_RULES.get(command, ()))
    if policy.spec.movers.namespace:  # the copy runs there: see mover_side_rules
        return merge(rules)
    return _with_block_tracking(policy, command, rules)


def tracks_blocks(policy: Policy) -> bool:
    return any(v.block_tracking is not None for v in policy.spec.volumes)


def block_tracking_token_rule(policy: Policy) -> dict[str, Any]:
    """TokenRequest for the copy's own ServiceAccount only (the name is in the request path, so
    ``resourceNames`` applies to ``create`` on this subresource)."""
    return {
        "apiGroups": [""],
        "resources": ["serviceaccounts/token"],
        "resourceNames": [Names.of(policy).step_account("copy")],
        "verbs": ["create"],
    }


def _with_block_tracking(policy: Policy, command: str, rules: list[Rule]) -> list[dict[str, Any]]:
    extra = BLOCK_TRACKING_RULES.get(command, ()) if tracks_blocks(policy) else ()
    if not extra:
        return merge(rules)
    return [*merge([*rules, *extra]), block_tracking_token_rule(policy)]


def step_cluster_rules(policy: Policy, command: str) -> list[dict[str, Any]]:
    """The cluster-scoped calls of one step command; empty when it needs none (or for a source)."""
    if policy.spec.source is not None:
        return []
    group = policy.spec.snapshot.consistency == "group"
    rules = [rule for rule, group_only in CLUSTER_RULES.get(command, ()) if group or not group_only]
    if policy.spec.movers.namespace:
        rules.extend(MOVER_CLUSTER_RULES.get(command, ()))
    if tracks_blocks(policy):
        rules.extend(BLOCK_TRACKING_CLUSTER_RULES.get(command, ()))
    return merge(rules)


def app_side_rules(policy: Policy, command: str) -> list[dict[str, Any]]:
    """With a mover namespace: the Role of one step command in the app's namespace (what it does there
    through the API), without Argo's executor rule, which belongs where the pod runs; empty when the
    step does nothing there (nor any step of a source policy)."""
    if policy.spec.source is not None:
        return []
    rules = [
        (group, resource, tuple(rule["verbs"]))
        for rule in step_rules(policy, command)
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        if (group, resource, tuple(rule["verbs"])) not in EXECUTOR_RULES
    ]
    if command == "prepare-clone":
        rules = [r for r in rules if r[:2] not in {(g, res) for g, res, _ in PREPARE_CLONE_APP_SIDE}]
        rules.extend(PREPARE_CLONE_APP_SIDE)
    return merge(rules) if rules else []


def mover_side_rules(policy: Policy, command: str) -> list[dict[str, Any]]:
    """With a mover namespace: the Role of one step command there, where its pod runs: Argo's executor
    rule and what it does with the mover-side snapshot and clone (a source policy's steps: the rule alone)."""
    if policy.spec.source is not None:
        return merge([*EXECUTOR_RULES, *source_rules_in(policy, command, policy.workflow_namespace)])
    return _with_block_tracking(policy, command, [*EXECUTOR_RULES, *MOVER_SIDE_RULES.get(command, ())])


def namespaced_rules(policy: Policy, pipelines: list[Pipeline]) -> list[dict[str, Any]]:
    """The union of every step's Role: what one shared ServiceAccount (spec.workflow.serviceAccountName)
    must be granted for the policy's steps (without restore-app's, see :func:`restore_rules`)."""
    rules: list[Rule] = []
    named: list[dict[str, Any]] = []
    for command in step_commands(pipelines):
        if command == RESTORE_APP:
            continue
        for rule in step_rules(policy, command):
            if rule.get("resourceNames"):
                named.append(rule)
                continue
            for group in rule["apiGroups"]:
                rules.extend((group, resource, tuple(rule["verbs"])) for resource in rule["resources"])
    return [*merge(rules), *named]


def cluster_rules(policy: Policy, pipelines: list[Pipeline]) -> list[dict[str, Any]]:
    """The union of the steps' cluster-scoped reads (see :func:`namespaced_rules`)."""
    rules: list[Rule] = []
    for command in step_commands(pipelines):
        for rule in step_cluster_rules(policy, command):
            for group in rule["apiGroups"]:
                rules.extend((group, resource, tuple(rule["verbs"])) for resource in rule["resources"])
    return merge(rules)


def repository_secret_names(policy: Policy) -> list[str]:
    """The Secrets holding the repository's password and S3 keys, the only ones a step reads by name."""
    repo = policy.spec.repository
    names = {repo.password_secret.name}
    if repo.credentials_secret:
        names.add(repo.credentials_secret.name)
    return sorted(names)


def restore_rules(policy: Policy) -> list[dict[str, Any]]:
    """The namespaced rules restore-app needs in its target namespace (and in the policy's). Secrets:
    with ``capture.secrets`` it restores the app's, so it needs them all; else it only reads the
    repository's Secrets (in the policy's namespace) and copies them into the target for the movers, so
    ``get`` and ``delete`` name them (``resourceNames``); ``create`` cannot be limited by name."""
    rules = list(RESTORE_RULES)
    if policy.spec.capture.secrets:
        rules.extend(RESTORE_SECRET_RULES)
        return merge(rules)
    rules.append((*SECRETS, ("create",)))
    named = {
        "apiGroups": [""],
        "resources": ["secrets"],
        "resourceNames": repository_secret_names(policy),
        "verbs": ["delete", "get"],
    }
    return [*merge(rules), named]


RESTORE_APP = "restore-app"
STEP_LABEL = "snapflow.io/step"


def shared_account_warnings(policy: Policy, source: str) -> list[str]:
    """A policy naming its own ServiceAccount runs every step as it: say what that gives up."""
    sa = Names.of(policy).shared_service_account
    if sa is None:
        return []
    return [
        f"{source}: spec.workflow.serviceAccountName: every step runs as {sa!r}, so the copy and verify "
        "pods hold whatever it may do (exec into the app, read Secrets); without it each step gets a "
        "ServiceAccount of its own with only what that step uses",
        *shared_account_notes(policy, source, sa),
    ]


def rbac_objects(policy: Policy, pipelines: list[Pipeline]) -> list[dict[str, Any]]:
    """Per step command: a ServiceAccount, a Role and a RoleBinding named ``snapflow-NAME-STEP`` (and
    a ClusterRole and binding for its cluster-scoped reads, if any), labelled ``snapflow.io/step``;
    restore-app's identity as described in the module. Nothing when the policy names its own account."""
    names = Names.of(policy)
    if not names.renders_rbac:
        return []
    ns = policy.namespace
    home = names.workflow_namespace  # where the accounts live: the mover namespace, if any
    movers = home != ns
    objects: list[dict[str, Any]] = []
    for command in step_commands(pipelines):
        if command == RESTORE_APP:
            continue
        name = names.step_account(command)
        labels = {**names.labels("rbac"), STEP_LABEL: command}
        subject = [{"kind": "ServiceAccount", "name": name, "namespace": home}]
        objects += [
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(name, home, labels)},
            {
                "apiVersion": RBAC_API,
                "kind": "Role",
                "metadata": _meta(name, home, labels),
                "rules": mover_side_rules(policy, command) if movers else step_rules(policy, command),
            },
            _binding("RoleBinding", name, home, labels, "Role", name, subject),
        ]
        app_rules = app_side_rules(policy, command) if movers else []
        if app_rules:
            objects += [
                {
                    "apiVersion": RBAC_API,
                    "kind": "Role",
                    "metadata": _meta(name, ns, labels),
                    "rules": app_rules,
                },
                _binding("RoleBinding", name, ns, labels, "Role", name, subject),
            ]
        for other, rules in source_rules_elsewhere(policy, command, home):  # registry imagesOf: pods read
            objects += [
                {
                    "apiVersion": RBAC_API,
                    "kind": "Role",
                    "metadata": _meta(name, other, labels),
                    "rules": merge(list(rules)),
                },
                _binding("RoleBinding", name, other, labels, "Role", name, subject),
            ]
        cluster = step_cluster_rules(policy, command)
        if cluster:
            cluster_name = names.step_cluster_role(command)
            objects += [
                {
                    "apiVersion": RBAC_API,
                    "kind": "ClusterRole",
                    "metadata": _meta(cluster_name, None, labels),
                    "rules": cluster,
                },
                _binding(
                    "ClusterRoleBinding", cluster_name, None, labels, "ClusterRole", cluster_name, subject
                ),
            ]
    if RESTORE_APP in step_commands(pipelines):
        restore_labels = {**names.labels("rbac-restore"), STEP_LABEL: RESTORE_APP}
        restorer = [{"kind": "ServiceAccount", "name": names.restore_service_account, "namespace": home}]
        objects += [
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": _meta(names.restore_service_account, home, restore_labels),
            },
            {
                "apiVersion": RBAC_API,
                "kind": "ClusterRole",
                "metadata": _meta(names.restore_role, None, restore_labels),
                "rules": restore_rules(policy),
            },
            _binding(
                "RoleBinding",
                names.restore_binding,
                ns,
                restore_labels,
                "ClusterRole",
                names.restore_role,
                restorer,
            ),
            {
                "apiVersion": RBAC_API,
                "kind": "ClusterRole",
                "metadata": _meta(names.restore_namespaces_role, None, restore_labels),
                "rules": restore_cluster_rules(policy),
            },
            _binding(
                "ClusterRoleBinding",
                names.restore_namespaces_role,
                None,
                restore_labels,
                "ClusterRole",
                names.restore_namespaces_role,
                restorer,
            ),
        ]
        if movers:
            # where it runs: Argo's executor rule, and the repository's Secrets (and CA bundle) by name,
            # which it copies into the target namespace for its movers
            objects += [
                {
                    "apiVersion": RBAC_API,
                    "kind": "Role",
                    "metadata": _meta(names.restore_service_account, home, restore_labels),
                    "rules": restore_home_rules(policy),
                },
                _binding(
                    "RoleBinding",
                    names.restore_service_account,
                    home,
                    restore_labels,
                    "Role",
                    names.restore_service_account,
                    restorer,
                ),
            ]
    return objects


def restore_cluster_rules(policy: Policy) -> list[dict[str, Any]]:
    """restore-app's cluster-scoped rules: Namespaces read, and with a mover namespace the
    PersistentVolumes it hands over (:data:`RESTORE_MOVER_CLUSTER_RULES`)."""
    rules = list(RESTORE_CLUSTER_RULES)
    if policy.workflow_namespace != policy.namespace:
        rules.extend(RESTORE_MOVER_CLUSTER_RULES)
    return merge(rules)


def restore_home_rules(policy: Policy) -> list[dict[str, Any]]:
    """With a mover namespace: restore-app's Role there (see :func:`rbac_objects`): Argo's executor
    rule, its staging claims and mover pods (:data:`RESTORE_MOVER_SIDE_RULES`), the repository's
    Secrets (and CA bundle) by name."""
    rules: list[dict[str, Any]] = [
        *merge([*EXECUTOR_RULES, *RESTORE_MOVER_SIDE_RULES]),
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": repository_secret_names(policy),
            "verbs": ["get"],
        },
    ]
    ca = policy.spec.repository.ca_bundle
    if ca:
        rules.append(
            {
                "apiGroups": [""],
                "resources": ["configmaps"],
                "resourceNames": [ca.config_map],
                "verbs": ["get"],
            }
        )
    return rules


RBAC_API = "rbac.authorization.k8s.io/v1"


def _meta(name: str, namespace: str | None, labels: dict[str, str]) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    meta["labels"] = dict(labels)
    return meta


def _binding(
    kind: str,
    name: str,
    namespace: str | None,
    labels: dict[str, str],
    role_kind: str,
    role: str,
    subjects: list[dict[str, str]],
) -> dict[str, Any]:
    return {
        "apiVersion": RBAC_API,
        "kind": kind,
        "metadata": _meta(name, namespace, labels),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
        "subjects": [dict(s) for s in subjects],
    }
