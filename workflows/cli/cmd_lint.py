"""snapflow lint: check policies and the manifests they render, offline and strictly."""

from __future__ import annotations

import sys

from workflows.cli._common import policy_errors_as_lines, print_warnings

NAME = "lint"
HELP = "check policies and their rendered manifests offline (unknown keys are errors)"
DESCRIPTION = """\
Validate policies, render them in memory and check every manifest strictly and offline: Argo objects
against Argo's API models (an unknown key is an error), core objects against the Kubernetes schema in
strict mode, and every template, parameter, ConfigMap, Secret and ServiceAccount reference. Then the
guardrails (docs/user/guardrails.md) run on the rendered objects with the Rego engine, as Gatekeeper
would admit them from a requester nobody exempts: a violation is a problem; a policy without a backup
schedule is reported as a warning (its namespace, if labelled protected, fails the audit). Prints one
line per problem; exit status 0 when everything is fine, 2 for a bad policy, 1 for a bad manifest.

examples:
  snapflow lint examples/*.yaml
  snapflow lint --kubernetes-version 1.30 policies/orders-db.yaml
  snapflow lint --guardrail-settings guardrails.yaml policies/*.yaml
  snapflow lint --fleet examples/fleet/fleet.yaml
"""


def configure(parser):
    from workflows.validate import KUBERNETES_VERSION

    parser.add_argument("policies", nargs="*", metavar="POLICY", help="policy file (YAML)")
    parser.add_argument(
        "--fleet", metavar="FLEET", help="a fleet file: every policy it places, rendered per cluster"
    )
    parser.add_argument(
        "--kubernetes-version",
        default=KUBERNETES_VERSION,
        metavar="X.Y",
        help=f"Kubernetes schema version for core objects (default: {KUBERNETES_VERSION})",
    )
    parser.add_argument(
        "--guardrail-settings",
        metavar="FILE",
        help="GuardrailSettings file the guardrails are checked with (default: the built-in settings)",
    )


def run(args) -> int:
    return policy_errors_as_lines(lambda: _run(args))


def _run(args) -> int:
    from workflows.render import render_files
    from workflows.validate import lint_rendering

    if args.fleet:
        from workflows.fleetdef.lint import run_lint_fleet

        return run_lint_fleet(args)
    if not args.policies:
        from steps.errors import UsageError

        raise UsageError("POLICY: expected at least one policy file (or --fleet FLEET)")

    rendering = render_files(args.policies)
    print_warnings(rendering.warnings)
    issues = lint_rendering(rendering, kubernetes_version=args.kubernetes_version)
    if not issues:
        found, audit = _guardrails(args, rendering)
        print_warnings([f"warning: {finding}" for finding in audit])
        issues = [str(v) for v in found]
    for issue in issues:
        print(issue, file=sys.stderr)
    if issues:
        return 1
    policies = len({o.policy for o in rendering.objects})
    print(f"ok: {policies} policies, {len(rendering.objects)} manifests")
    for item in rendering.external:
        print(f"needs {item}")
    return 0


def _guardrails(args, rendering):
    from workflows.guardrails.evaluate import lint_objects
    from workflows.guardrails.settings import DEFAULTS, load_settings, parameters

    settings = load_settings(args.guardrail_settings) if args.guardrail_settings else DEFAULTS
    objects = [o.obj for o in rendering.objects]
    return lint_objects(objects, parameters(settings, objects))
