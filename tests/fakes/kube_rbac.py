"""RBAC for the fake Kubernetes API server: evaluates Roles, ClusterRoles and their bindings stored in
the fake, answers (Self|Local)SubjectAccessReviews, and, when enforcement is on, authorizes requests
made with tokens that belong to ServiceAccounts or users registered by a test.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tests.fakes.kube_objects import get_path

SYSTEM_MASTERS = "system:masters"


@dataclass
class Identity:
    user: str
    groups: list[str] = field(default_factory=list)

    @property
    def is_admin(self) -> bool:
        return SYSTEM_MASTERS in self.groups


def service_account_identity(namespace: str, name: str) -> Identity:
    return Identity(
        f"system:serviceaccount:{namespace}:{name}",
        ["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"],
    )


@dataclass
class Attributes:
    verb: str
    api_group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    non_resource_path: str = ""


def _subject_matches(subject: dict, who: Identity) -> bool:
    kind = subject.get("kind")
    if kind == "User":
        return subject.get("name") == who.user
    if kind == "Group":
        return subject.get("name") in who.groups
    if kind == "ServiceAccount":
        return who.user == f"system:serviceaccount:{subject.get('namespace', '')}:{subject.get('name')}"
    return False


def _rule_allows(rule: dict, attrs: Attributes) -> bool:
    verbs = rule.get("verbs") or []
    if "*" not in verbs and attrs.verb not in verbs:
        return False
    if attrs.non_resource_path:
        urls = rule.get("nonResourceURLs") or []
        return any(
            u == "*"
            or u == attrs.non_resource_path
            or (u.endswith("*") and attrs.non_resource_path.startswith(u[:-1]))
            for u in urls
        )
    groups = rule.get("apiGroups") or []
    if "*" not in groups and attrs.api_group not in groups:
        return False
    resources = rule.get("resources") or []
    wanted = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
    if not (
        "*" in resources
        or wanted in resources
        or (attrs.subresource and f"*/{attrs.subresource}" in resources)
        or (attrs.subresource and f"{attrs.resource}/*" in resources)
    ):
        return False
    names = rule.get("resourceNames") or []
    return not names or attrs.name in names


def allowed(store, registry, who: Identity, attrs: Attributes) -> tuple[bool, str]:
    """Whether `who` may do `attrs`, and the reason (the binding that allowed it)."""
    if who.is_admin:
        return True, "member of system:masters"
    roles = registry.resolve("roles")
    cluster_roles = registry.resolve("clusterroles")

    def role_rules(ref: dict, namespace: str | None) -> list[dict]:
        if ref.get("kind") == "ClusterRole":
            role = store.peek(cluster_roles, None, ref.get("name", ""))
        else:
            role = store.peek(roles, namespace, ref.get("name", ""))
        return (role or {}).get("rules") or []

    def grants(binding: dict, namespace: str | None) -> bool:
        if not any(_subject_matches(s, who) for s in binding.get("subjects") or []):
            return False
        return any(_rule_allows(r, attrs) for r in role_rules(binding.get("roleRef") or {}, namespace))

    for binding in store.items(registry.resolve("clusterrolebindings")):
        if grants(binding, None):
            return True, f'RBAC: allowed by ClusterRoleBinding "{binding["metadata"]["name"]}"'
    if attrs.namespace:
        for binding in store.items(registry.resolve("rolebindings"), attrs.namespace):
            if grants(binding, attrs.namespace):
                return True, f'RBAC: allowed by RoleBinding "{binding["metadata"]["name"]}/{attrs.namespace}"'
    return False, ""


def review(store, registry, kind: str, body: dict, requester: Identity, namespace: str | None) -> dict:
    """Answer a SubjectAccessReview / SelfSubjectAccessReview / LocalSubjectAccessReview body."""
    spec = body.get("spec") or {}
    if kind == "SelfSubjectAccessReview":
        who = requester
    else:
        who = Identity(spec.get("user", ""), list(spec.get("groups") or []))
    resource_attrs = spec.get("resourceAttributes")
    if resource_attrs is not None:
        attrs = Attributes(
            verb=resource_attrs.get("verb", ""),
            api_group=resource_attrs.get("group", ""),
            resource=resource_attrs.get("resource", ""),
            subresource=resource_attrs.get("subresource", ""),
            namespace=namespace or resource_attrs.get("namespace", ""),
            name=resource_attrs.get("name", ""),
        )
    else:
        attrs = Attributes(
            verb=get_path(spec, "nonResourceAttributes", "verb", default=""),
            non_resource_path=get_path(spec, "nonResourceAttributes", "path", default=""),
        )
    ok, reason = allowed(store, registry, who, attrs)
    out = dict(body)
    out["status"] = {"allowed": ok}
    if ok:
        out["status"]["reason"] = reason
    return out
