"""snapflow fleet: the clusters of a fleet file (``fleet status``: deployed versus rendered)."""

from __future__ import annotations

import argparse
import json
import sys

from workflows.cli._common import policy_errors_as_lines, print_warnings

NAME = "fleet"
HELP = "the clusters of a fleet file: what each one runs compared with what the fleet file renders"
DESCRIPTION = """\
fleet status: render the fleet file in memory (as 'snapflow render --fleet' does) and compare, per
cluster, through the cluster's kubeContext, what is deployed with what is rendered: current, out of date
(another snapflow.io/render-hash), missing (rendered, not deployed) and unknown (a Snapflow object the
fleet file does not render). A cluster that cannot be read is reported on its own line; the others are
still shown. Exit status 0 when every cluster is current, 1 otherwise, 2 for a bad fleet file.

examples:
  snapflow fleet status examples/fleet/fleet.yaml
  snapflow fleet status fleet.yaml --kubeconfig ~/.kube/fleet --output json
"""


def configure(parser):
    sub = parser.add_subparsers(dest="fleet_command", metavar="SUBCOMMAND")
    sub.required = True
    status = sub.add_parser(
        "status",
        help="per cluster: current, out of date, missing and unknown objects",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    status.add_argument("fleet", metavar="FLEET", help="fleet file (YAML)")
    status.add_argument(
        "--kubeconfig",
        metavar="FILE",
        help="kubeconfig holding the clusters' contexts (default: a cluster's own, then $KUBECONFIG)",
    )
    status.add_argument("--output", choices=("text", "json"), default="text", help="text (default) or json")


def run(args) -> int:
    return policy_errors_as_lines(lambda: _run(args))


def _run(args) -> int:
    from workflows.fleetdef.model import load_fleet
    from workflows.fleetdef.status import fleet_status

    fleet = load_fleet(args.fleet)
    print_warnings(fleet.warnings)
    statuses = fleet_status(fleet, args.kubeconfig)
    if args.output == "json":
        print(json.dumps({"fleet": fleet.name, "clusters": [s.to_dict() for s in statuses]}, indent=2))
    else:
        for status in statuses:
            for line in status.lines():
                print(line)
    out_of_sync = [s.name for s in statuses if not s.in_sync]
    if out_of_sync:
        print(f"not current: {', '.join(out_of_sync)}", file=sys.stderr)
        return 1
    return 0
