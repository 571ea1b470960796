"""snapflow submit: start a workflow from a WorkflowTemplate on an Argo Server."""

from __future__ import annotations

NAME = "submit"
HELP = "start a workflow from a WorkflowTemplate (like argo submit --from workflowtemplate/NAME)"
DESCRIPTION = """\
Start a workflow from one of the rendered WorkflowTemplates through the Argo Server API. Parameters
not given keep the template's defaults. Prints the new workflow's name.

examples:
  export ARGO_SERVER=argo.example.com:2746 ARGO_TOKEN="Bearer $(kubectl create token snapflow-ci)"
  snapflow submit -n shop backup-orders-db
  snapflow submit -n shop backup-orders-db -p read-data-percent=100
  snapflow submit -n shop restore-orders-db -p snapshot=4f1c2a9e -p target-pvc=data-orders-db-0
  snapflow submit -n shop prune-orders-db -p dry-run=true --server https://argo:2746 --ca-file ca.pem
"""


def configure(parser):
    from workflows.submit import add_server_arguments

    parser.add_argument("template", metavar="TEMPLATE", help="WorkflowTemplate name, e.g. backup-orders-db")
    parser.add_argument("-n", "--namespace", help="namespace of the template (env ARGO_NAMESPACE)")
    parser.add_argument(
        "-p", "--parameter", action="append", default=[], metavar="NAME=VALUE", help="workflow parameter"
    )
    parser.add_argument(
        "-l", "--label", action="append", default=[], metavar="KEY=VALUE", help="workflow label"
    )
    add_server_arguments(parser)


def run(args) -> int:
    from steps.errors import UsageError
    from workflows.submit import namespace_from, parse_parameters, settings_from, submit, submit_request

    labels = {}
    for item in args.label:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--label: expected KEY=VALUE, got {item!r}")
        labels[key] = value
    settings = settings_from(args)
    request = submit_request(namespace_from(args), args.template, parse_parameters(args.parameter), labels)
    print(submit(settings, request))
    return 0
