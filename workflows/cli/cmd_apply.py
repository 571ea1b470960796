"""snapflow apply: create or update a policy's WorkflowTemplates and CronWorkflows on an Argo Server."""

from __future__ import annotations

import sys

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
"""


def configure(parser):
    from workflows.submit import add_server_arguments

    parser.add_argument("policies", nargs="+", metavar="POLICY", help="policy file (YAML)")
    parser.add_argument("--dry-run", action="store_true", help="render and validate only, send nothing")
    add_server_arguments(parser)


def run(args) -> int:
    return policy_errors_as_lines(lambda: _run(args))


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
