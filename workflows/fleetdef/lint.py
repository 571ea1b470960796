"""Linting a fleet file: the file, every policy it places on every cluster, and what each cluster renders.

The fleet is rendered by :func:`workflows.fleetdef.render.render_fleet`, the code ``snapflow render
--fleet`` runs (overrides applied, each policy validated as a policy, every object stamped and put
through the render checks); each cluster's rendering then gets the strict offline checks and the
guardrails of ``snapflow lint`` (:func:`workflows.validate.lint_rendering`,
:func:`workflows.guardrails.evaluate.lint_objects`). Called by ``snapflow lint --fleet``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from workflows.fleetdef.model import load_fleet
from workflows.fleetdef.render import render_fleet


@dataclass
class FleetLint:
    clusters: int = 0
    manifests: int = 0
    policies: int = 0
    problems: list[str] = field(default_factory=list)  # a cluster that does not render (exit 2)
    issues: list[str] = field(default_factory=list)  # a rendered manifest that fails a check (exit 1)
    warnings: list[str] = field(default_factory=list)
    external: list[str] = field(default_factory=list)


def lint_fleet(path: str, kubernetes_version: str, guardrail_settings: str | None = None) -> FleetLint:
    """Raises PolicyError for a fleet file that is bad as a whole (as ``render --fleet`` does)."""
    from workflows.guardrails.evaluate import lint_objects
    from workflows.guardrails.settings import DEFAULTS, load_settings, parameters
    from workflows.validate import lint_rendering

    fleet = load_fleet(path)
    out = FleetLint(warnings=list(fleet.warnings))
    settings: Any = load_settings(guardrail_settings) if guardrail_settings else DEFAULTS
    for result in render_fleet(fleet):
        out.warnings += result.warnings
        if not result.ok or result.rendering is None:
            out.problems += result.problems
            continue
        rendering = result.rendering
        prefix = f"{fleet.path}: cluster {result.name}"
        issues = [f"{prefix}: {i}" for i in lint_rendering(rendering, kubernetes_version=kubernetes_version)]
        if not issues:
            objects = [o.obj for o in rendering.objects]
            found, audit = lint_objects(objects, parameters(settings, objects))
            issues = [f"{prefix}: {v}" for v in found]
            out.warnings += [f"{prefix}: warning: {finding}" for finding in audit]
        out.issues += issues
        out.clusters += 1
        out.manifests += len(rendering.objects)
        out.policies += len({o.policy for o in rendering.objects})
        out.external += [f"{result.name}: {item}" for item in rendering.external]
    return out


def run_lint_fleet(args: Any) -> int:
    """``snapflow lint --fleet FLEET``: one line per problem; 2 when a cluster does not render, 1 when a
    manifest fails a check, 0 otherwise."""
    import sys

    from steps.errors import EXIT_USAGE, UsageError

    if args.policies:
        raise UsageError("POLICY: expected no policy files with --fleet (the fleet file names them)")
    result = lint_fleet(args.fleet, args.kubernetes_version, args.guardrail_settings)
    for line in result.warnings:
        print(line, file=sys.stderr)
    for line in result.problems + result.issues:
        print(line, file=sys.stderr)
    if result.problems:
        return EXIT_USAGE
    if result.issues:
        return 1
    print(f"ok: {result.clusters} clusters, {result.policies} policies, {result.manifests} manifests")
    for item in result.external:
        print(f"needs {item}")
    return 0
