"""The guardrails' rules in Rego, the one source the Gatekeeper ConstraintTemplates ship and
``snapflow lint`` evaluates (:mod:`workflows.guardrails.evaluate`).

Each rule reads what Gatekeeper hands a ConstraintTemplate: ``input.review`` (the admission request:
``object``, ``oldObject``, ``operation``, ``userInfo``, ``namespace``), ``input.parameters`` (the
Constraint's parameters, :func:`workflows.guardrails.settings.parameters`) and ``data.inventory`` (the
objects Gatekeeper syncs: ``namespace[NS][GROUP/VERSION][KIND][NAME]``). Rules are written in the
``import rego.v1`` style (``violation contains {"msg": ...} if``). Messages join lists with ``concat``
outside ``sprintf``, and strings computed in Rego are not formatted by ``sprintf``: regopy 1.5 prints
them quoted.

Who is exempt (the platform team and the Argo workflow controller, ``exemptUsers`` / ``exemptGroups``)
is the same for every rule that denies; the audit rule on protected namespaces exempts no one.
"""

from __future__ import annotations

from dataclasses import dataclass

_EXEMPT = """
exempt if input.review.userInfo.username in input.parameters.exemptUsers

exempt if {
	some group in object.get(input.review.userInfo, "groups", [])
	group in input.parameters.exemptGroups
}

obj := input.review.object

ns := object.get(obj.metadata, "namespace", object.get(input.review, "namespace", ""))

writes if input.review.operation in {"CREATE", "UPDATE"}

# Gatekeeper's audit reviews existing objects without an operation: they are reported too.
writes if not input.review.operation

managed(o) if o.metadata.labels["app.kubernetes.io/managed-by"] == "snapflow"

workflow_spec := obj.spec if obj.kind in {"Workflow", "WorkflowTemplate", "ClusterWorkflowTemplate"}

workflow_spec := obj.spec.workflowSpec if obj.kind == "CronWorkflow"

subject := concat("", [obj.kind, " ", ns, "/", obj.metadata.name]) if ns != ""

subject := concat("", [obj.kind, " ", obj.metadata.name]) if ns == ""
"""


# What the rules read from data.inventory (Gatekeeper syncs only what a SyncSet or its Config names).
SYNCED = (
    ("", "v1", "Namespace"),
    ("", "v1", "ServiceAccount"),
    ("", "v1", "ConfigMap"),
    ("argoproj.io", "v1alpha1", "CronWorkflow"),
)


@dataclass(frozen=True)
class Rule:
    """One guardrail: its Gatekeeper kind, what it matches, its Rego and the parameters it reads."""

    kind: str  # the Constraint kind (and, lower-cased, the ConstraintTemplate's name)
    letter: str  # a..e, as the user guide names them
    title: str
    kinds: tuple[tuple[str, str], ...]  # (API group, kind) matched
    parameters: tuple[str, ...]
    body: str
    audit_only: bool = False

    @property
    def package(self) -> str:
        return self.kind.lower()

    @property
    def rego(self) -> str:
        return f"package {self.package}\n\nimport rego.v1\n{_EXEMPT}\n{self.body.strip()}\n"


PROTECTED_NAMESPACE = Rule(
    kind="SnapflowProtectedNamespace",
    letter="a",
    title="a namespace labelled as protected has a Snapflow backup CronWorkflow",
    kinds=(("", "Namespace"),),
    parameters=("protectedLabel",),
    audit_only=True,
    body="""
backup_cron(cw) if {
	managed(cw)
	cw.metadata.labels["app.kubernetes.io/component"] == "backup"
	not cw.spec.suspend == true
}

has_backup(name) if {
	some cw in data.inventory.namespace[name]["argoproj.io/v1alpha1"].CronWorkflow
	backup_cron(cw)
}

# With a mover namespace the CronWorkflow lives there and names the app's namespace in a label.
has_backup(name) if {
	some other
	some cw in data.inventory.namespace[other]["argoproj.io/v1alpha1"].CronWorkflow
	cw.metadata.labels["snapflow.io/policy-namespace"] == name
	backup_cron(cw)
}

violation contains {"msg": msg} if {
	obj.kind == "Namespace"
	object.get(object.get(obj.metadata, "labels", {}), input.parameters.protectedLabel, "") == "true"
	not has_backup(obj.metadata.name)
	msg := sprintf(
		"namespace %v is labelled %v=true but has no running Snapflow backup CronWorkflow (render a policy with spec.schedule.cron, or resume the suspended one)",
		[obj.metadata.name, input.parameters.protectedLabel],
	)
}
""",
)

SERVICE_ACCOUNTS = Rule(
    kind="SnapflowServiceAccounts",
    letter="b",
    title="Snapflow ServiceAccounts are used only by Snapflow's own WorkflowTemplates",
    kinds=(
        ("argoproj.io", "Workflow"),
        ("argoproj.io", "CronWorkflow"),
        ("argoproj.io", "WorkflowTemplate"),
        ("argoproj.io", "ClusterWorkflowTemplate"),
        ("", "Pod"),
    ),
    parameters=("serviceAccounts", "templates"),
    body="""
# What a run of a Snapflow WorkflowTemplate may set besides the reference: nothing that changes which
# containers run or as whom.
run_keys := {"workflowTemplateRef", "arguments", "shutdown", "suspend", "priority", "activeDeadlineSeconds", "workflowMetadata"}

snapflow_account(namespace, name) if concat("/", [namespace, name]) in input.parameters.serviceAccounts

snapflow_account(namespace, name) if {
	sa := data.inventory.namespace[namespace].v1.ServiceAccount[name]
	sa.metadata.labels["snapflow.io/step"]
}

# A ClusterWorkflowTemplate runs in whichever namespace its Workflow is: any namespace's name counts.
snapflow_account_anywhere(name) if {
	some key in input.parameters.serviceAccounts
	endswith(key, concat("", ["/", name]))
}

accounts contains name if name := workflow_spec.serviceAccountName

accounts contains name if {
	some t in workflow_spec.templates
	name := t.serviceAccountName
}

accounts contains name if name := workflow_spec.templateDefaults.serviceAccountName

accounts contains name if name := workflow_spec.executor.serviceAccountName

accounts contains name if {
	obj.kind == "Pod"
	name := object.get(obj.spec, "serviceAccountName", object.get(obj.spec, "serviceAccount", "default"))
}

uses_snapflow_account contains name if {
	obj.kind != "ClusterWorkflowTemplate"
	some name in accounts
	snapflow_account(ns, name)
}

uses_snapflow_account contains name if {
	obj.kind == "ClusterWorkflowTemplate"
	some name in accounts
	snapflow_account_anywhere(name)
}

violation contains {"msg": msg} if {
	writes
	not exempt
	obj.kind == "Pod"
	some name in uses_snapflow_account
	msg := sprintf(
		"Pod %v/%v uses Snapflow ServiceAccount %v: only the Argo workflow controller creates pods with it, for Snapflow's WorkflowTemplates (a workflows.argoproj.io/workflow label proves nothing)",
		[ns, obj.metadata.name, name],
	)
}

violation contains {"msg": msg} if {
	writes
	not exempt
	obj.kind != "Pod"
	some name in uses_snapflow_account
	msg := concat("", [
		subject,
		sprintf(
			" names Snapflow ServiceAccount %v: only Snapflow's rendered WorkflowTemplates, applied by the platform team, may use it; run them through workflowTemplateRef",
			[name],
		),
	])
}

references_snapflow if {
	ref := workflow_spec.workflowTemplateRef
	not ref.clusterScope == true
	concat("/", [ns, ref.name]) in input.parameters.templates
}

violation contains {"msg": msg} if {
	writes
	not exempt
	obj.kind in {"Workflow", "CronWorkflow"}
	references_snapflow
	extra := {k | some k in object.keys(workflow_spec); not k in run_keys}
	count(extra) > 0
	msg := concat("", [
		sprintf("%v %v/%v runs Snapflow WorkflowTemplate %v and overrides ", [obj.kind, ns, obj.metadata.name, workflow_spec.workflowTemplateRef.name]),
		concat(", ", sort(extra)),
		": a run may set only arguments (its steps run as Snapflow ServiceAccounts)",
	])
}
""",
)

RESTORE_TARGETS = Rule(
    kind="SnapflowRestoreTargets",
    letter="c",
    title="restores target only the namespaces allowed for the policy",
    kinds=(("argoproj.io", "Workflow"), ("argoproj.io", "CronWorkflow")),
    parameters=("restoreTargets",),
    body="""
permitted(target, allowed) if target in allowed

permitted(target, allowed) if {
	some pattern in allowed
	endswith(pattern, "*")
	startswith(target, trim_suffix(pattern, "*"))
}

# A policy's restorers (spec.access, workflows/access.py) may also restore into the namespaces where
# restore-app is bound for them; the parameters exist only when some policy has restorers.
restorer_permitted(key, target) if {
	input.review.userInfo.username in object.get(object.get(input.parameters, "restorers", {}), key, [])
	target in object.get(object.get(input.parameters, "restorerNamespaces", {}), key, [])
}

restorer_note(key) := concat("", ["; its restorers also: ", concat(", ", names)]) if {
	names := object.get(object.get(input.parameters, "restorerNamespaces", {}), key, [])
	count(names) > 0
} else := ""

violation contains {"msg": msg} if {
	writes
	not exempt
	ref := workflow_spec.workflowTemplateRef.name
	allowed := input.parameters.restoreTargets[concat("/", [ns, ref])]
	some p in object.get(object.get(workflow_spec, "arguments", {}), "parameters", [])
	p.name == "target-namespace"
	target := object.get(p, "value", "<valueFrom>")
	not permitted(target, allowed)
	not restorer_permitted(concat("/", [ns, ref]), target)
	msg := concat("", [
		sprintf("%v %v/%v restores with %v into namespace ", [obj.kind, ns, obj.metadata.name, ref]),
		target,
		": allowed are ",
		concat(", ", allowed),
		restorer_note(concat("/", [ns, ref])),
	])
}
""",
)

REPOSITORY_TENANT = Rule(
    kind="SnapflowRepositoryTenant",
    letter="d",
    title="a policy's repository belongs to its tenant (its namespace)",
    kinds=(("", "ConfigMap"), ("argoproj.io", "WorkflowTemplate")),
    parameters=("repositories", "sharedRepositories", "tenantRepositories"),
    body="""
labels(o) := object.get(o.metadata, "labels", {})

tenant_of(o) := object.get(labels(o), "snapflow.io/policy-namespace", object.get(o.metadata, "namespace", ""))

repository_of(o) := url if {
	o.kind == "ConfigMap"
	labels(o)["app.kubernetes.io/component"] == "plan"
	url := json.unmarshal(o.data["plan.json"]).repository.url
}

repository_of(o) := url if {
	o.kind == "WorkflowTemplate"
	some t in o.spec.templates
	args := t.container.args
	some i, a in args
	a == "--repo"
	url := args[i + 1]
}

repo := repository_of(obj) if managed(obj)

tenant := tenant_of(obj)

violation contains {"msg": msg} if {
	writes
	not exempt
	owners := input.parameters.repositories[repo]
	not tenant in owners
	msg := concat("", [
		sprintf("%v %v/%v: repository %v belongs to namespace(s) ", [obj.kind, ns, obj.metadata.name, repo]),
		concat(", ", owners),
		sprintf(", not %v", [tenant]),
	])
}

violation contains {"msg": msg} if {
	writes
	not exempt
	prefixes := input.parameters.tenantRepositories[tenant]
	not startswith_any(repo, prefixes)
	msg := concat("", [
		sprintf("%v %v/%v: repository %v is outside namespace %v's repositories (", [obj.kind, ns, obj.metadata.name, repo, tenant]),
		concat(", ", prefixes),
		")",
	])
}

startswith_any(s, prefixes) if {
	some p in prefixes
	startswith(s, p)
}

violation contains {"msg": msg} if {
	writes
	not exempt
	not repo in input.parameters.sharedRepositories
	some other_ns
	some other in data.inventory.namespace[other_ns].v1.ConfigMap
	managed(other)
	repository_of(other) == repo
	other_tenant := tenant_of(other)
	other_tenant != tenant
	msg := sprintf(
		"%v %v/%v: repository %v is already used by namespace %v (ConfigMap %v/%v); sharing a repository needs repository.shared: true in both policies",
		[obj.kind, ns, obj.metadata.name, repo, other_tenant, other_ns, other.metadata.name],
	)
}
""",
)

SUSPEND_REASON = Rule(
    kind="SnapflowSuspendReason",
    letter="e",
    title="a backup CronWorkflow is suspended only with an annotation naming who and why",
    kinds=(("argoproj.io", "CronWorkflow"),),
    parameters=("templates",),
    body="""
required := ["snapflow.io/suspended-by", "snapflow.io/suspend-reason"]

backup_cron if {
	managed(obj)
	obj.metadata.labels["app.kubernetes.io/component"] == "backup"
}

backup_cron if {
	ref := obj.spec.workflowSpec.workflowTemplateRef.name
	startswith(ref, "backup-")
	concat("/", [ns, ref]) in input.parameters.templates
}

violation contains {"msg": msg} if {
	writes
	not exempt
	backup_cron
	obj.spec.suspend == true
	annotations := object.get(obj.metadata, "annotations", {})
	missing := [k | some k in required; trim_space(object.get(annotations, k, "")) == ""]
	count(missing) > 0
	msg := concat("", [
		sprintf("CronWorkflow %v/%v is suspended without ", [ns, obj.metadata.name]),
		concat(" and ", missing),
		": annotate who suspended the backups and why",
	])
}
""",
)

RULES: tuple[Rule, ...] = (
    PROTECTED_NAMESPACE,
    SERVICE_ACCOUNTS,
    RESTORE_TARGETS,
    REPOSITORY_TENANT,
    SUSPEND_REASON,
)
