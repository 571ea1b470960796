"""Run the guardrails' Rego (:mod:`workflows.guardrails.rego`) with a real Rego engine (regopy), the
way Gatekeeper does: one admission review, the Constraint's parameters, an inventory of synced objects.

Called by ``snapflow lint`` (:func:`lint_rendering`) and the tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from workflows.guardrails.rego import RULES, SYNCED, Rule

SYNCED_KINDS = {kind for _, _, kind in SYNCED}  # what data.inventory holds (the rendered SyncSet)
LINT_USER = "snapflow-lint"  # the requester of the reviews lint builds: nobody exempt


@dataclass(frozen=True)
class Violation:
    rule: Rule = field(repr=False)
    message: str

    def __str__(self) -> str:
        return f"guardrail {self.rule.letter} ({self.rule.kind}): {self.message}"


def review(
    obj: Mapping[str, Any],
    *,
    user: str = LINT_USER,
    groups: Iterable[str] = (),
    operation: str | None = "CREATE",
    old: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``input.review`` Gatekeeper builds from an AdmissionReview request."""
    api_version = obj.get("apiVersion", "v1")
    group, _, version = api_version.rpartition("/")
    out: dict[str, Any] = {
        "kind": {"group": group, "version": version, "kind": obj.get("kind")},
        "userInfo": {"username": user, "groups": list(groups)},
        "object": dict(obj),
        "name": obj.get("metadata", {}).get("name", ""),
    }
    if operation:  # None: an audit review of an existing object, as Gatekeeper's audit builds it
        out["operation"] = operation
    if obj.get("metadata", {}).get("namespace"):
        out["namespace"] = obj["metadata"]["namespace"]
    if old is not None:
        out["oldObject"] = dict(old)
    return out


def inventory(objects: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Gatekeeper's ``data.inventory`` of ``objects`` (as if all were synced)."""
    namespaced: dict[str, Any] = {}
    cluster: dict[str, Any] = {}
    for obj in objects:
        meta = obj["metadata"]
        where = namespaced.setdefault(meta["namespace"], {}) if meta.get("namespace") else cluster
        where.setdefault(obj["apiVersion"], {}).setdefault(obj["kind"], {})[meta["name"]] = obj
    return {"namespace": namespaced, "cluster": cluster}


def matches(rule: Rule, obj: Mapping[str, Any]) -> bool:
    group = obj.get("apiVersion", "v1").rpartition("/")[0]
    return (group, obj.get("kind")) in rule.kinds


class Engine:
    """One rule loaded into the Rego engine with its parameters and inventory, to review many objects."""

    def __init__(self, rule: Rule, parameters: Mapping[str, Any], synced: Mapping[str, Any] | None = None):
        from regopy import Interpreter

        self.rule = rule
        self.parameters = dict(parameters)
        self._engine = Interpreter()
        self._engine.add_module(rule.package, rule.rego)
        self._engine.add_data({"inventory": dict(synced or {"namespace": {}, "cluster": {}})})

    def __call__(self, admission: Mapping[str, Any]) -> list[Violation]:
        self._engine.set_input({"review": dict(admission), "parameters": self.parameters})
        package = f"data.{self.rule.package}.violation"
        try:
            output = self._engine.query(f"violations := [v.msg | some v in {package}]")
        except ValueError:
            # regopy 1.5 writes a string holding a quote into its JSON output unescaped: the count is
            # still exact, the text is lost.
            count = self._engine.query(f"n := count({package})").results[0].bindings["n"]
            return [
                Violation(self.rule, "an object value holds a quote the Rego engine cannot print")
                for _ in range(count)
            ]
        if not getattr(output, "results", None):
            raise RuntimeError(f"guardrail {self.rule.kind}: the Rego engine failed: {output}")
        found = output.results[0].bindings["violations"]
        return [Violation(self.rule, m) for m in sorted(found)]


def evaluate(
    rule: Rule,
    admission: Mapping[str, Any],
    parameters: Mapping[str, Any],
    synced: Mapping[str, Any] | None = None,
) -> list[Violation]:
    """The violations ``rule`` finds in one admission review."""
    return Engine(rule, parameters, synced)(admission)


def violations(
    admission: Mapping[str, Any],
    parameters: Mapping[str, Mapping[str, Any]],
    synced: Mapping[str, Any] | None = None,
    rules: Iterable[Rule] = RULES,
) -> list[Violation]:
    """Every rule matching the reviewed object, each with its own Constraint's parameters."""
    obj = admission["object"]
    return [
        v
        for rule in rules
        if matches(rule, obj)
        for v in evaluate(rule, admission, parameters[rule.kind], synced)
    ]


def lint_objects(
    objects: Iterable[Mapping[str, Any]], parameters: Mapping[str, Mapping[str, Any]]
) -> tuple[list[Violation], list[Violation]]:
    """(violations, audit findings) of the rendered ``objects``, each reviewed as a CREATE by a
    requester nobody exempts, with every rendered object in the inventory.

    Not reviewed: rule b on WorkflowTemplates, which name Snapflow's ServiceAccounts by design and are
    applied by the exempt platform team (their deployer). Rule a reviews each policy's namespace as if
    it were labelled protected: a policy without a backup schedule is an audit finding, not an error.
    """
    from workflows.guardrails.rego import PROTECTED_NAMESPACE, RULES

    objects = list(objects)
    synced = inventory(o for o in objects if o["kind"] in SYNCED_KINDS)
    found: list[Violation] = []
    for rule in RULES:
        if rule.audit_only:
            continue
        engine = Engine(rule, parameters[rule.kind], synced)
        for obj in objects:
            if rule.letter == "b" and obj["kind"] in {"WorkflowTemplate", "ClusterWorkflowTemplate"}:
                continue
            if matches(rule, obj):
                found += engine(review(obj))
    label = parameters[PROTECTED_NAMESPACE.kind]["protectedLabel"]
    audit: list[Violation] = []
    namespaces = sorted(
        {
            (o["metadata"].get("labels") or {}).get("snapflow.io/policy-namespace")
            or o["metadata"]["namespace"]
            for o in objects
            if o["kind"] == "ConfigMap" and o["metadata"].get("namespace")
        }
    )
    for name in namespaces:
        namespace = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": {label: "true"}},
        }
        audit += evaluate(
            PROTECTED_NAMESPACE, review(namespace), parameters[PROTECTED_NAMESPACE.kind], synced
        )
    return found, audit
