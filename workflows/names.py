"""Names of the objects rendered for one policy, in one place so that references always match: the plan
ConfigMap, the WorkflowTemplates, every step's ServiceAccount, Role and ClusterRole, the restore
identity's objects, and the labels they all carry.

:class:`Names` holds only what names depend on (the policy's name, namespace, app, labels and its
optional shared ServiceAccount); :meth:`Names.of` takes them from a policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from workflows.policy import Policy

# The ServiceAccount name of a step command, when not the command itself (see Names.step_account).
STEP_ACCOUNT_SUFFIX = {"restore-app": "restore", "restore": "restore-volume"}


@dataclass(frozen=True)
class Names:
    """Names of the objects rendered for one policy."""

    policy: str  # metadata.name
    namespace: str
    app: str
    policy_labels: tuple[tuple[str, str], ...] = ()  # metadata.labels
    # spec.workflow.serviceAccountName: the user's own ServiceAccount, every step runs as it.
    shared_service_account: str | None = None
    # spec.movers.namespace: where the workflows, their ServiceAccounts and the plan live instead.
    movers_namespace: str | None = None

    @classmethod
    def of(cls, policy: Policy) -> Names:
        return cls(
            policy=policy.name,
            namespace=policy.namespace,
            app=policy.app,
            policy_labels=tuple(policy.metadata.labels.items()),
            shared_service_account=policy.spec.workflow.service_account_name,
            movers_namespace=policy.spec.movers.namespace,
        )

    @property
    def workflow_namespace(self) -> str:
        """The namespace of the WorkflowTemplates, their pods, the step ServiceAccounts and the plan: the
        mover namespace if the policy names one. Argo creates a workflow's pods in the workflow's own
        namespace (argo-workflows docs/security.md: "The controller will only create workflow pods in the
        workflow's namespace"), so the copy runs where its workflow is."""
        return self.movers_namespace or self.namespace

    @property
    def plan_config_map(self) -> str:
        return f"snapflow-plan-{self.policy}"

    @property
    def renders_rbac(self) -> bool:
        return self.shared_service_account is None

    def step_account(self, command: str) -> str:
        """The ServiceAccount a step command runs as: ``snapflow-NAME-STEP`` (its Role and RoleBinding
        have the same name), or the user's own for every step. restore-app keeps ``snapflow-NAME-restore``
        (bound by name in restore target namespaces); the single-volume restore is ``restore-volume``."""
        return (
            self.shared_service_account
            or f"snapflow-{self.policy}-{STEP_ACCOUNT_SUFFIX.get(command, command)}"
        )

    @property
    def cluster_prefix(self) -> str:
        """``snapflow.NS.NAME``: the start of every name that must be unique across namespaces (cluster
        objects, bindings in restore targets). The dot after the namespace (a DNS label, which holds
        none) keeps policies apart whose namespace and name would join the same with a dash
        (``shop-eu``/``db`` and ``shop``/``eu-db``): sharing one ClusterRoleBinding, the one applied last
        would decide what the other's account may do."""
        return f"snapflow.{self.namespace}.{self.policy}"

    def step_cluster_role(self, command: str) -> str:
        """The ClusterRole (and binding) of a step's cluster-scoped reads."""
        return f"{self.cluster_prefix}-{STEP_ACCOUNT_SUFFIX.get(command, command)}"

    @property
    def restore_service_account(self) -> str:
        """The identity of restore-app: a ServiceAccount of its own, or the user's existing one."""
        return self.step_account("restore-app")

    @property
    def restore_role(self) -> str:
        """The ClusterRole of restore-app's namespaced rules, bound per target namespace by RoleBindings
        (named like the ServiceAccount); it grants nothing by itself."""
        return f"{self.cluster_prefix}-restore"

    @property
    def restore_binding(self) -> str:
        return f"{self.cluster_prefix}-restore"

    @property
    def restore_namespaces_role(self) -> str:
        """The ClusterRole (and binding) letting restore-app read Namespaces (and, with a mover namespace,
        read and patch the PersistentVolumes it hands over)."""
        return f"{self.cluster_prefix}-restore-namespaces"

    def template(self, pipeline: str) -> str:
        return f"{pipeline}-{self.policy}"

    def labels(self, component: str | None = None) -> dict[str, str]:
        labels = dict(self.policy_labels)
        labels.update(
            {
                "app.kubernetes.io/managed-by": "snapflow",
                "app.kubernetes.io/part-of": "snapflow",
                "snapflow.io/policy": self.policy,
                "snapflow.io/app": self.app,
            }
        )
        if component:
            labels["app.kubernetes.io/component"] = component
        return labels
