"""Guardrails as policy: admission rules that keep Snapflow's identities, restores, repositories and
schedules within what the platform team allows.

- :mod:`workflows.guardrails.rego` — the rules, in Rego (the one source of them)
- :mod:`workflows.guardrails.settings` — who is exempt and what is allowed; the Constraints' parameters
- :mod:`workflows.guardrails.manifests` — Gatekeeper ConstraintTemplates + Constraints, Kyverno ClusterPolicies
- :mod:`workflows.guardrails.schemas` — strict schemas of the Gatekeeper and Kyverno fields rendered
- :mod:`workflows.guardrails.evaluate` — the Rego run by a real engine (regopy), for ``snapflow lint``

Used by ``snapflow render --guardrails`` and ``snapflow lint``; docs/user/guardrails.md.
"""
