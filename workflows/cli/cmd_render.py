"""snapflow render: policies to Kubernetes manifests (WorkflowTemplates, CronWorkflows, RBAC, plan)."""

from __future__ import annotations

import sys

from steps.errors import EXIT_USAGE
from workflows.cli._common import policy_errors_as_lines, print_warnings

NAME = "render"
HELP = "render policies into Argo and Kubernetes manifests (one file per object + kustomization.yaml)"
DESCRIPTION = """\
Render protection policies into manifests: per policy a ServiceAccount, Role and RoleBinding (least
privilege) for the steps, a separate ServiceAccount and roles for the whole-app restore, a ConfigMap
with the plan the steps read, WorkflowTemplates backup-NAME, restore-NAME, restore-app-NAME,
check-NAME, prune-NAME and init-NAME, and CronWorkflows when the policy has a schedule. Every object
is validated before anything is written; the output directory is replaced as a whole.

examples:
  snapflow render examples/postgresql-statefulset.yaml -o deploy/
  kubectl apply -k deploy/
  argo submit -n shop --from workflowtemplate/backup-orders-db
  snapflow preflight examples/postgresql-statefulset.yaml

  snapflow render policies/*.yaml -o gitops/snapflow     # commit it, let Argo CD / Flux apply it
  snapflow render policy.yaml | kubectl apply -f -        # no -o: one YAML stream on stdout

  snapflow render --fleet fleet.yaml -o gitops/           # one directory per cluster (docs/user/fleet.md)
  kubectl --context prod-eu apply -k gitops/prod-eu

With --guardrails, OUTPUT gets the policies' guardrails instead of their manifests: Gatekeeper
ConstraintTemplates and Constraints in OUTPUT/gatekeeper and the same rules as Kyverno ClusterPolicies
in OUTPUT/kyverno (apply the one your cluster runs; docs/user/guardrails.md). --guardrail-settings
names the platform team that is exempt, the Argo controller's account, allowed restore targets and
tenants' repositories; without it, system:masters and system:serviceaccount:argo:argo are exempt.

  snapflow render --guardrails --guardrail-settings guardrails.yaml policies/*.yaml -o gitops/guardrails
  kubectl apply -k gitops/guardrails/gatekeeper

With --fleet, the fleet file names the policies and the clusters they run on: OUTPUT/CLUSTER holds each
cluster's manifests, every object labelled snapflow.io/cluster and annotated snapflow.io/render-hash. A
cluster that cannot render is reported and its directory left as it was; the others are written, and
the exit status is non-zero.
"""


def configure(parser):
    parser.add_argument(
        "policies", nargs="*", metavar="POLICY", help="policy file (YAML, one or more documents)"
    )
    parser.add_argument(
        "-o", "--output", metavar="DIR", help="directory to write (default: YAML stream on stdout)"
    )
    parser.add_argument(
        "--fleet", metavar="FLEET", help="fleet file: render every cluster's policies into OUTPUT/CLUSTER"
    )
    parser.add_argument(
        "--guardrails",
        action="store_true",
        help="write the policies' guardrails (Gatekeeper and Kyverno) into OUTPUT instead of their manifests",
    )
    parser.add_argument(
        "--guardrail-settings",
        metavar="FILE",
        help="GuardrailSettings file: who is exempt, restore targets, tenants' repositories",
    )


def run(args) -> int:
    if args.guardrail_settings and not args.guardrails:
        print("--guardrail-settings: expected only with --guardrails", file=sys.stderr)
        return EXIT_USAGE
    if args.guardrails:
        if args.fleet:
            print("--guardrails: expected policy files, not --fleet", file=sys.stderr)
            return EXIT_USAGE
        if not args.policies or not args.output:
            print("--guardrails: expected policy files and -o DIR", file=sys.stderr)
            return EXIT_USAGE
        return policy_errors_as_lines(lambda: _run_guardrails(args))
    if args.fleet:
        return policy_errors_as_lines(lambda: _run_fleet(args))
    if not args.policies:
        print("POLICY: required, expected one or more policy files (or --fleet FLEET)", file=sys.stderr)
        return EXIT_USAGE
    return policy_errors_as_lines(lambda: _run(args))


def _run_fleet(args) -> int:
    from workflows.fleetdef.model import load_fleet
    from workflows.fleetdef.render import render_fleet, write_fleet

    if args.policies:
        print("POLICY: expected none with --fleet (the fleet file names the policies)", file=sys.stderr)
        return EXIT_USAGE
    if not args.output:
        print(
            "--output: required with --fleet, expected the directory of the clusters' manifests",
            file=sys.stderr,
        )
        return EXIT_USAGE
    fleet = load_fleet(args.fleet)
    print_warnings(fleet.warnings)
    results = render_fleet(fleet)
    written = write_fleet(fleet, results, args.output)
    for result in results:
        print_warnings(result.warnings)
        print_warnings(result.problems)
    print_warnings(written)
    failed = [r.name for r in results if not r.ok]
    if failed:
        done = f"{len(results) - len(failed)} of {len(results)} clusters written"
        print(f"not rendered: {', '.join(failed)} ({done})", file=sys.stderr)
        return EXIT_USAGE
    return 0


def _run(args) -> int:
    from workflows.render import check_rendering, render_files, write

    rendering = render_files(args.policies)
    check_rendering(rendering)
    print_warnings(rendering.warnings)
    if not args.output:
        sys.stdout.write(rendering.stream())
        return 0
    written = write(rendering, args.output)
    print(f"wrote {len(written)} files to {args.output}", file=sys.stderr)
    for item in rendering.external:
        print(f"needs {item}", file=sys.stderr)
    return 0


def _run_guardrails(args) -> int:
    from workflows.guardrails.manifests import guardrail_files, write_guardrails
    from workflows.guardrails.settings import DEFAULTS, load_settings
    from workflows.render import render_files

    settings = load_settings(args.guardrail_settings) if args.guardrail_settings else DEFAULTS
    rendering = render_files(args.policies)
    print_warnings(rendering.warnings)
    written = write_guardrails(guardrail_files(settings, [o.obj for o in rendering.objects]), args.output)
    print(f"wrote {len(written)} files to {args.output} (gatekeeper/, kyverno/)", file=sys.stderr)
    return 0
