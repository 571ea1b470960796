"""Self-service access to a policy's workflows through Argo Server's SSO RBAC (``spec.access``).

A policy names who may operate it, by SSO group or user, in one of three roles:

- ``viewer``: sees the policy's runs (Workflows, CronWorkflows), their pods and logs, and reads the
  policy's WorkflowTemplates by name;
- ``operator``: what a viewer may, and creates Workflows: runs a backup now, restores into the app's
  own namespace (guardrail (c) allows the policy's namespace to everyone);
- ``restorer``: what an operator may, and restores into the other namespaces the entry lists
  (``namespaces``). That list is the one place they are named: each gets a RoleBinding of
  restore-app's ClusterRole to its ServiceAccount, and guardrail (c) allows exactly the namespaces
  holding such a binding, for the restorer's identity only (:func:`restorer_parameters`).

Argo Server maps an SSO user to a Kubernetes ServiceAccount and acts as it (argo-workflows
docs/argo-server-sso.md, "SSO RBAC": "all users of the Argo Server must ultimately use a service
account", chosen by the ``workflows.argoproj.io/rbac-rule`` annotation, an expression over the
token's claims, and ``workflows.argoproj.io/rbac-rule-precedence``, "Numerically higher values have
higher precedence"). Per entry this renders:

- a ServiceAccount ``snapflow.NS.NAME-ROLE`` with both annotations; the rule is
  ``'GROUP' in groups || email == 'USER'`` built from checked names only (:func:`quote`), the
  precedence :data:`PRECEDENCE` (restorer > operator > viewer, so a user in several entries gets the
  strongest role);
- its token Secret ``snapflow.NS.NAME-ROLE.service-account-token`` (Kubernetes 1.24 and later create
  none; Argo finds it by that name: docs/service-account-secrets.md, "Option 1 - Discovery By Name");
- a Role and RoleBinding in the workflow namespace (:func:`role_rules`).

Where the ServiceAccount lives (``spec.argoServer``): by default in Argo Server's namespace
(``argo``): "map a user ... to a service account in the same namespace as argo server", with a
RoleBinding in the policy's namespace ("To allow service accounts to manage resources in other
namespaces create a role and role binding in the target namespace"). With
``delegateRbacToNamespace: true`` (Argo Server started with ``SSO_DELEGATE_RBAC_TO_NAMESPACE=true``,
docs/argo-server-sso.md, "SSO RBAC Namespace Delegation") it lives in the workflow namespace itself,
and Argo uses it for requests in that namespace; every user must still map to a login ServiceAccount
in Argo's namespace ("All users MUST map to a cluster service account ... before a namespace service
account can apply"), which the platform team provides with a lower precedence.

RBAC cannot restrict which WorkflowTemplate a new Workflow references, nor which ServiceAccount it
names: guardrail (b) refuses Workflows naming a Snapflow ServiceAccount or overriding a Snapflow
template, and Argo's ``templateReferencing: Strict`` refuses Workflows that are not a template
reference (docs/user/access.md).

Called by :mod:`workflows.policy` (the fields and :func:`access_problems`), :mod:`workflows.render`
(:func:`access_objects`, :func:`access_warnings`) and :mod:`workflows.guardrails.settings`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from workflows.policy_fields import DNS_LABEL_RE

if TYPE_CHECKING:
    from workflows.policy import LoadedPolicy, Policy

ROLES = ("viewer", "operator", "restorer")
Role = Literal["viewer", "operator", "restorer"]

# docs/argo-server-sso.md, "SSO RBAC": the annotations Argo Server reads on a ServiceAccount.
RBAC_RULE = "workflows.argoproj.io/rbac-rule"
RBAC_RULE_PRECEDENCE = "workflows.argoproj.io/rbac-rule-precedence"
# "Numerically higher values have higher precedence": a user matching several entries of one policy
# acts with the strongest role. The platform team's login account (rule "true") keeps precedence 0;
# its own accounts (admins) can sit above 3.
PRECEDENCE = {"viewer": 1, "operator": 2, "restorer": 3}
# docs/service-account-secrets.md, "Option 1 - Discovery By Name": ${serviceAccountName}.service-account-token
TOKEN_SECRET_SUFFIX = ".service-account-token"
TOKEN_SECRET_TYPE = "kubernetes.io/service-account-token"
TOKEN_SECRET_ANNOTATION = "kubernetes.io/service-account.name"
DEFAULT_ARGO_NAMESPACE = "argo"

ACCESS_LABEL = "snapflow.io/access"  # viewer | operator | restorer | restore-target
RESTORE_TARGET = "restore-target"  # the RoleBinding of restore-app's ClusterRole in a listed namespace
POLICY_NAMESPACE_LABEL = "snapflow.io/policy-namespace"

# A group or user is written into the rbac-rule as an expr string literal in single quotes
# (https://expr-lang.org/docs/language-definition, "Strings"). Only names that need no escape are
# accepted, so no name can end the literal or add to the expression.
PRINCIPAL_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9 ._@:+=/-]{0,254}[A-Za-z0-9_])?$")
PRINCIPAL_MEANING = (
    "letters, digits, spaces and . _ @ : + = / - (starting with a letter or digit, ending with a "
    "letter, digit or _, at most 256 characters)"
)


def quote(name: str) -> str:
    """``name`` as an expr string literal; refuses anything :data:`PRINCIPAL_RE` does not accept."""
    if not isinstance(name, str) or not PRINCIPAL_RE.fullmatch(name):  # fullmatch: "$" allows a final \n
        raise ValueError(f"expected {PRINCIPAL_MEANING}, got {name!r}")
    return f"'{name}'"


def _principal(value: str) -> str:
    quote(value)
    return value


Principal = Annotated[str, AfterValidator(_principal)]
Namespace = Annotated[str, Field(pattern=DNS_LABEL_RE, max_length=63)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True)


class AccessEntry(_Model):
    """Who may operate this policy's workflows in one role, through Argo Server's SSO."""

    role: Role = Field(
        description="viewer: sees runs, logs and templates; operator: also runs backups and restores into "
        "the app's namespace; restorer: also restores into the namespaces listed here."
    )
    groups: list[Principal] = Field(
        default_factory=list, description="SSO groups (the token's groups claim) given this role."
    )
    users: list[Principal] = Field(
        default_factory=list, description="SSO users (the token's email claim) given this role."
    )
    namespaces: list[Namespace] = Field(
        default_factory=list,
        description="restorer only: the other namespaces restores may go to (restore-app is bound there, "
        "and guardrail (c) allows them to the restorers).",
    )

    @model_validator(mode="after")
    def _shape(self) -> AccessEntry:
        if not self.groups and not self.users:
            raise ValueError(
                "@groups|expected at least one group or user (an entry naming nobody grants nothing)"
            )
        for field in ("groups", "users", "namespaces"):
            values = getattr(self, field)
            for i, value in enumerate(values):
                if value in values[:i]:
                    raise ValueError(f"@{field}[{i}]|expected each name once, {value!r} is listed twice")
        if self.role == "restorer" and not self.namespaces:
            raise ValueError(
                "@namespaces|required for a restorer: the namespaces it may restore into besides the app's "
                "own (restoring into the app's namespace is the operator role)"
            )
        if self.role != "restorer" and self.namespaces:
            raise ValueError(
                f"@namespaces|expected no namespaces for a {self.role} (only a restorer restores elsewhere)"
            )
        return self

    @property
    def rbac_rule(self) -> str:
        """The expression Argo Server evaluates over the SSO token's claims (docs/argo-server-sso.md:
        ``groups`` is the array of groups; other claims, ``email`` here, are available since v3.1.4,
        "Custom claims")."""
        terms = [f"{quote(g)} in groups" for g in self.groups]
        terms += [f"email == {quote(u)}" for u in self.users]
        return " || ".join(terms)


class ArgoServer(_Model):
    """Where Argo Server looks for the ServiceAccounts ``spec.access`` renders."""

    namespace: Namespace = Field(
        DEFAULT_ARGO_NAMESPACE, description="Argo Server's namespace (its SSO ServiceAccounts live there)."
    )
    delegate_rbac_to_namespace: bool = Field(
        False,
        description="Argo Server runs with SSO_DELEGATE_RBAC_TO_NAMESPACE=true: the ServiceAccounts are "
        "rendered in the workflow namespace instead of Argo's.",
    )


# --------------------------------------------------------------------------------------------------
# Rules across fields.


def access_problems(policy: Policy) -> list[tuple[str, str]]:
    """(field path, what was expected) for spec.access rules that span fields of the policy."""
    spec = policy.spec
    problems: list[tuple[str, str]] = []
    if not spec.access:
        if "argo_server" in spec.model_fields_set:
            problems.append(
                ("spec.argoServer", "expected spec.access with it (it places the access ServiceAccounts)")
            )
        return problems
    seen: dict[str, int] = {}
    for i, entry in enumerate(spec.access):
        where = f"spec.access[{i}]"
        if entry.role in seen:
            problems.append(
                (
                    f"{where}.role",
                    f"expected each role once, {entry.role!r} is also spec.access[{seen[entry.role]}] "
                    "(list every group and user of a role in one entry)",
                )
            )
        seen.setdefault(entry.role, i)
        if entry.role != "restorer":
            continue
        if spec.source is not None:
            problems.append(
                (
                    f"{where}.role",
                    "expected viewer or operator with spec.source (restore-app restores apps only)",
                )
            )
        if spec.workflow.service_account_name:
            problems.append(
                (
                    f"{where}.namespaces",
                    "expected no restorer with spec.workflow.serviceAccountName: restore-app then runs as "
                    "your own ServiceAccount, bind it in the target namespaces yourself",
                )
            )
        for k, ns in enumerate(entry.namespaces):
            if ns == policy.namespace:
                problems.append(
                    (
                        f"{where}.namespaces[{k}]",
                        f"expected another namespace than the policy's own {ns!r} (an operator restores there)",
                    )
                )
            elif ns == spec.movers.namespace:
                problems.append(
                    (
                        f"{where}.namespaces[{k}]",
                        f"expected another namespace than the mover namespace {ns!r}",
                    )
                )
    return problems


# --------------------------------------------------------------------------------------------------
# Rendering.

WORKFLOW_READ = ("get", "list", "watch")


def role_rules(role: str, templates: Sequence[str]) -> list[dict[str, Any]]:
    """The Role of an access entry in the workflow namespace.

    Every role reads Workflows and CronWorkflows (the Argo UI's lists and DAG view), the step pods and
    their logs (the UI's log view lists pods and reads ``pods/log``), and gets the policy's
    WorkflowTemplates by name (``resourceNames``; submitting from a template reads it). operator and
    restorer also create Workflows. No role updates or deletes anything, reads Secrets or ConfigMaps,
    or execs into a pod."""
    rules: list[dict[str, Any]] = [
        {"apiGroups": [""], "resources": ["pods"], "verbs": list(WORKFLOW_READ)},
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
        {"apiGroups": ["argoproj.io"], "resources": ["cronworkflows"], "verbs": list(WORKFLOW_READ)},
        {
            "apiGroups": ["argoproj.io"],
            "resources": ["workflows"],
            "verbs": sorted({*WORKFLOW_READ, *(("create",) if role != "viewer" else ())}),
        },
        {
            "apiGroups": ["argoproj.io"],
            "resources": ["workflowtemplates"],
            "resourceNames": sorted(templates),
            "verbs": ["get"],
        },
    ]
    return rules


def account_name(policy: Policy, role: str) -> str:
    """``snapflow.NS.NAME-ROLE``: unique in Argo's namespace, which serves every policy. The dot after
    the namespace (a DNS label, which holds none) keeps two policies apart whose namespace and name
    would join the same with a dash (``shop-eu``/``db`` and ``shop``/``eu-db``): one account shared by
    both would carry one team's rule into the other's namespace."""
    return f"snapflow.{policy.namespace}.{policy.name}-{role}"


def account_namespace(policy: Policy) -> str:
    server = policy.spec.argo_server
    return policy.workflow_namespace if server.delegate_rbac_to_namespace else server.namespace


def access_objects(policy: Policy, templates: Sequence[str]) -> list[dict[str, Any]]:
    """Per entry of spec.access: ServiceAccount (annotated for Argo's SSO RBAC), its token Secret, a
    Role and RoleBinding in the workflow namespace; per restorer namespace a RoleBinding of restore-app's
    ClusterRole. Nothing without spec.access."""
    from workflows.names import Names
    from workflows.rbac import RBAC_API

    if not policy.spec.access:
        return []
    names = Names.of(policy)
    home = policy.workflow_namespace
    sa_ns = account_namespace(policy)
    objects: list[dict[str, Any]] = []
    for entry in policy.spec.access:
        name = account_name(policy, entry.role)
        labels = {
            **names.labels("access"),
            ACCESS_LABEL: entry.role,
            POLICY_NAMESPACE_LABEL: policy.namespace,
        }
        objects += [
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {
                    "name": name,
                    "namespace": sa_ns,
                    "labels": dict(labels),
                    "annotations": {
                        RBAC_RULE: entry.rbac_rule,
                        RBAC_RULE_PRECEDENCE: str(PRECEDENCE[entry.role]),
                    },
                },
            },
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "name": name + TOKEN_SECRET_SUFFIX,
                    "namespace": sa_ns,
                    "labels": dict(labels),
                    "annotations": {TOKEN_SECRET_ANNOTATION: name},
                },
                "type": TOKEN_SECRET_TYPE,
            },
            {
                "apiVersion": RBAC_API,
                "kind": "Role",
                "metadata": {"name": name, "namespace": home, "labels": dict(labels)},
                "rules": role_rules(entry.role, templates),
            },
            {
                "apiVersion": RBAC_API,
                "kind": "RoleBinding",
                "metadata": {"name": name, "namespace": home, "labels": dict(labels)},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": sa_ns}],
            },
        ]
        for target in entry.namespaces:
            target_labels = {
                **names.labels("rbac-restore"),
                ACCESS_LABEL: RESTORE_TARGET,
                POLICY_NAMESPACE_LABEL: policy.namespace,
            }
            objects.append(
                {
                    "apiVersion": RBAC_API,
                    "kind": "RoleBinding",
                    "metadata": {"name": names.restore_binding, "namespace": target, "labels": target_labels},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "ClusterRole",
                        "name": names.restore_role,
                    },
                    "subjects": [
                        {"kind": "ServiceAccount", "name": names.restore_service_account, "namespace": home}
                    ],
                }
            )
    return objects


def access_warnings(loaded: Sequence[LoadedPolicy]) -> list[str]:
    """A group or user given access by several policies whose ServiceAccounts Argo Server chooses
    among (one namespace of accounts): Argo uses one account per user there, the matching one of highest
    precedence, so the user gets only that policy's role."""
    owners: dict[tuple[str, str, str], list[tuple[str, str]]] = {}  # (sa ns, kind, name) -> [(where, policy)]
    for item in loaded:
        policy = item.policy
        sa_ns = account_namespace(policy)
        for i, entry in enumerate(policy.spec.access):
            for kind in ("groups", "users"):
                for k, principal in enumerate(getattr(entry, kind)):
                    owners.setdefault((sa_ns, kind, principal), []).append(
                        (f"{item.source}: spec.access[{i}].{kind}[{k}]", f"{policy.namespace}/{policy.name}")
                    )
    warnings: list[str] = []
    for (sa_ns, kind, principal), places in sorted(owners.items()):
        policies = sorted({p for _, p in places})
        if len(policies) < 2:
            continue
        warnings.append(
            f"{places[0][0]}: {kind[:-1]} {principal!r} is given access by policies {', '.join(policies)}, "
            f"whose ServiceAccounts are all in namespace {sa_ns!r}: Argo Server acts for a user as one "
            "ServiceAccount there (the matching one of highest precedence), so it gets one policy's role "
            "only; use delegateRbacToNamespace with policies in different namespaces, or one group per policy"
        )
    return warnings


# --------------------------------------------------------------------------------------------------
# Guardrail (c): who may restore where, from the rendered objects.


def restorer_parameters(
    objects: Sequence[Mapping[str, Any]], templates: Mapping[str, str]
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(restorers, restorerNamespaces) of guardrail (c), each keyed by the restore-app template
    (``NS/restore-app-NAME``): the users of the restorer ServiceAccounts, and the namespaces where
    restore-app's ClusterRole is bound for a restorer (:data:`RESTORE_TARGET`). ``templates`` maps
    ``POLICY-NS/POLICY-NAME`` to that key. Both come from the rendered objects, so the RBAC and the
    guardrail allow the same namespaces."""
    users: dict[str, set[str]] = {}
    targets: dict[str, set[str]] = {}
    for obj in objects:
        meta = obj.get("metadata") or {}
        labels = meta.get("labels") or {}
        role = labels.get(ACCESS_LABEL)
        if labels.get("app.kubernetes.io/managed-by") != "snapflow" or role not in (
            "restorer",
            RESTORE_TARGET,
        ):
            continue
        key = templates.get(f"{labels.get(POLICY_NAMESPACE_LABEL)}/{labels.get('snapflow.io/policy')}")
        if key is None:
            continue
        if role == "restorer" and obj.get("kind") == "ServiceAccount":
            users.setdefault(key, set()).add(f"system:serviceaccount:{meta['namespace']}:{meta['name']}")
        if role == RESTORE_TARGET and obj.get("kind") == "RoleBinding":
            targets.setdefault(key, set()).add(meta["namespace"])
    keys = sorted(set(users) & set(targets))
    return {k: sorted(users[k]) for k in keys}, {k: sorted(targets[k]) for k in keys}
