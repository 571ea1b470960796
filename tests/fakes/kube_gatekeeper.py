"""Gatekeeper as an admission step of the fake Kubernetes API server: every CREATE and UPDATE of a kind a
Snapflow guardrail matches is reviewed by the guardrails' Rego (workflows/guardrails/rego.py), run by
the real Rego engine of :mod:`workflows.guardrails.evaluate` (regopy), with the requester's user and
groups and an inventory of the synced kinds read from the fake's store at that moment, as Gatekeeper's
validating webhook does. A violation of a denying rule refuses the request with 403 and Gatekeeper's
message; audit-only rules never deny.

The requester is the identity the fake authenticated for the HTTP request (:data:`REQUESTER`, set by
the fake's dispatcher for the request's task); objects the fake itself or a test writes directly
(``server.create``) act as ``system:admin`` in ``system:masters``.

Example::

    gate = GatekeeperAdmission(server, parameters(DEFAULTS, rendered_objects)).install()
    ...  # requests made with a ServiceAccount's token are now reviewed
    gate.uninstall()
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from typing import Any

from tests.fakes.kube_objects import ApiError
from tests.fakes.kube_rbac import SYSTEM_MASTERS, Identity

REQUESTER: ContextVar[Identity | None] = ContextVar("fake_kube_requester", default=None)
"""Who made the HTTP request being served (None: the fake itself or a test writing to the store)."""

ADMIN = Identity("system:admin", [SYSTEM_MASTERS, "system:authenticated"])
WEBHOOK = "validation.gatekeeper.sh"


def _api_version(rtype) -> str:
    version = rtype.versions[0]
    return f"{rtype.group}/{version}" if rtype.group else version


class GatekeeperAdmission:
    """Reviews writes with the denying guardrails and their Constraint ``parameters``
    (:func:`workflows.guardrails.settings.parameters`); ``denials`` keeps every refusal's message."""

    def __init__(self, server, parameters: Mapping[str, Mapping[str, Any]], rules: Sequence | None = None):
        from workflows.guardrails.rego import RULES

        self.server = server
        self.parameters = parameters
        self.rules = [r for r in (RULES if rules is None else rules) if not r.audit_only]
        self.denials: list[str] = []
        self.reviews = 0

    def install(self) -> GatekeeperAdmission:
        self.server.store.admission.append(self)
        return self

    def uninstall(self) -> None:
        if self in self.server.store.admission:
            self.server.store.admission.remove(self)

    def _inventory(self) -> dict[str, Any]:
        from workflows.guardrails.evaluate import inventory
        from workflows.guardrails.rego import SYNCED

        objects = []
        for group, version, kind in SYNCED:
            rtype = next(
                (
                    r
                    for r in self.server.registry.all()
                    if r.group == group and r.kind == kind and version in r.versions
                ),
                None,
            )
            if rtype is None:
                continue
            for obj in self.server.store.items(rtype):
                objects.append({**obj, "apiVersion": _api_version(rtype), "kind": kind})
        return inventory(objects)

    def __call__(self, operation: str, rtype, new: dict, old: dict | None) -> None:
        from workflows.guardrails.evaluate import Engine, matches, review

        if operation not in ("CREATE", "UPDATE"):
            return
        obj = {**new, "apiVersion": _api_version(rtype), "kind": rtype.kind}
        rules = [r for r in self.rules if matches(r, obj)]
        if not rules:
            return
        who = REQUESTER.get() or ADMIN
        admission = review(
            obj,
            user=who.user,
            groups=who.groups,
            operation=operation,
            old=None if old is None else {**old, "apiVersion": obj["apiVersion"], "kind": rtype.kind},
        )
        synced = self._inventory()
        self.reviews += 1
        found = [v for rule in rules for v in Engine(rule, self.parameters[rule.kind], synced)(admission)]
        if found:
            from workflows.guardrails.manifests import resource_name

            message = f'admission webhook "{WEBHOOK}" denied the request: ' + "\n".join(
                f"[{resource_name(v.rule)}] {v.message}" for v in found
            )
            self.denials.append(message)
            raise ApiError(
                403,
                "Forbidden",
                message,
                {"name": new.get("metadata", {}).get("name", ""), "group": rtype.group, "kind": rtype.plural},
            )
