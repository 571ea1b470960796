"""snapflow apply: create or update a policy's WorkflowTemplates and CronWorkflows on an Argo Server."""

from __future__ import annotations

import sys

from steps.errors import EXIT_USAGE
from workflows.cli._common import policy_errors_as_lines, print_warnings

NAME = "apply"
HELP = "render policies and create/update their WorkflowTemplates and CronWorkflows on an Argo Server"
DESCRIPTION = """\
Render and validate policies, then create or update their WorkflowTemplates and CronWorkflows through
the Argo Server API. The Argo Server manages Argo objects only: apply the ServiceAccount, Role,
RoleBinding and plan ConfigMap with kubectl (they change only when the policy's volumes, hooks or
repository change). With --dry-run nothing is sent.

examples:
  snapflow render policy.yaml -o deploy/ && kubectl apply -k deploy/     # everything, via kubectl
  snapflow apply policy.yaml --server https://argo.example.com:2746 --token-file token
  snapflow apply --dry-run examples/*.yaml
  snapflow apply --fleet fleet.yaml          # every cluster of a fleet (docs/user/fleet.md)

With --fleet, each cluster of the fleet file gets its own rendering: the WorkflowTemplates and
CronWorkflows through the cluster's argoServer (token from its tokenFile or tokenSecret), everything
else, and the Argo objects of a cluster without an argoServer, through its kubeContext. A cluster that
fails is reported and the others are still applied; the exit status is then non-zero.
"""


def configure(parser):
    from workflows.submit import add_server_arguments

    parser.add_argument("policies", nargs="*", metavar="POLICY", help="policy file (YAML)")
    parser.add_argument("--dry-run", action="store_true", help="render and validate only, send nothing")
    parser.add_argument("--fleet", metavar="FLEET", help="fleet file: apply every cluster's rendering")
    parser.add_argument(
        "--kubeconfig",
        metavar="FILE",
        help="with --fleet: kubeconfig holding the clusters' contexts (default: $KUBECONFIG)",
    )
    add_server_arguments(parser)


def run(args) -> int:
    if args.fleet:
        return policy_errors_as_lines(lambda: _run_fleet(args))
    if not args.policies:
        print("POLICY: required, expected one or more policy files (or --fleet FLEET)", file=sys.stderr)
        return EXIT_USAGE
    return policy_errors_as_lines(lambda: _run(args))


def _run_fleet(args) -> int:
    from workflows.fleetdef.apply import apply_cluster
    from workflows.fleetdef.model import load_fleet
    from workflows.fleetdef.render import render_fleet

    if args.policies:
        print("POLICY: expected none with --fleet (the fleet file names the policies)", file=sys.stderr)
        return EXIT_USAGE
    if args.server or args.token_file:
        print("--server: expected none with --fleet (each cluster names its argoServer)", file=sys.stderr)
        return EXIT_USAGE
    fleet = load_fleet(args.fleet)
    print_warnings(fleet.warnings)
    failed = []
    for result in render_fleet(fleet):
        print_warnings(result.warnings)
        applied = apply_cluster(fleet, result, args.kubeconfig, dry_run=args.dry_run)
        for line in applied.lines:
            print(f"{applied.name}: {line}")
        print_warnings(applied.problems)
        if applied.problems:
            failed.append(applied.name)
    if failed:
        print(f"not applied: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _run(args) -> int:
    from workflows.render import check_rendering, render_files
    from workflows.submit import APPLIED_KINDS, apply_objects, settings_from

    rendering = render_files(args.policies)
    check_rendering(rendering)
    print_warnings(rendering.warnings)
    argo = [o.obj for o in rendering.ordered() if o.kind in APPLIED_KINDS]
    core = [o for o in rendering.ordered() if o.kind not in APPLIED_KINDS]
    if args.dry_run:
        for obj in argo:
            print(f"would apply {obj['kind']} {obj['metadata']['namespace']}/{obj['metadata']['name']}")
    else:
        for line in apply_objects(settings_from(args), argo):
            print(line)
    if core:
        kinds = ", ".join(sorted({o.kind for o in core}))
        print(
            f"note: {len(core)} objects ({kinds}) are not managed by the Argo Server; "
            f"apply them with: snapflow render {' '.join(args.policies)} -o DIR && kubectl apply -k DIR",
            file=sys.stderr,
        )
    return 0
