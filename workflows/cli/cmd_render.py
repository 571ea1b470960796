"""snapflow render: policies to Kubernetes manifests (WorkflowTemplates, CronWorkflows, RBAC, plan)."""

from __future__ import annotations

import sys

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
"""


def configure(parser):
    parser.add_argument(
        "policies", nargs="+", metavar="POLICY", help="policy file (YAML, one or more documents)"
    )
    parser.add_argument(
        "-o", "--output", metavar="DIR", help="directory to write (default: YAML stream on stdout)"
    )


def run(args) -> int:
    return policy_errors_as_lines(lambda: _run(args))


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
