"""snapflow fleet: the clusters of a fleet file (``fleet status``: deployed versus rendered, and with
``--backups`` each app's newest committed backup and RPO)."""

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
still shown.

With --backups, every app the fleet file places also gets a line from its repository's records: the
newest committed backup and whether its RPO is met, late or missing (the rows of 'snapflow report
--fleet'); a repository that cannot be read is reported on its apps' lines and the others are still
read. Repository password and S3 credentials come from the environment (SNAPFLOW_PASSWORD or
SNAPFLOW_PASSWORD_FILE, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY). Exit status 0 when every cluster is
current (and, with --backups, every app's RPO is met), 1 otherwise, 2 for a bad fleet file.

examples:
  snapflow fleet status examples/fleet/fleet.yaml
  snapflow fleet status fleet.yaml --kubeconfig ~/.kube/fleet --output json
  snapflow fleet status fleet.yaml --backups
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
    status.add_argument(
        "--backups",
        action="store_true",
        help="also read each app's repository: newest committed backup and RPO (met, late, missing)",
    )
    status.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="record cache for --backups (default: $XDG_CACHE_HOME/snapflow or ~/.cache/snapflow)",
    )


def run(args) -> int:
    return policy_errors_as_lines(lambda: _run(args))


def _run(args) -> int:
    from workflows.fleetdef.model import load_fleet
    from workflows.fleetdef.status import fleet_status

    fleet = load_fleet(args.fleet)
    print_warnings(fleet.warnings)
    cache_dir = None
    if args.backups:
        from pathlib import Path

        from workflows.report.record_cache import default_cache_dir

        cache_dir = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    statuses = fleet_status(fleet, args.kubeconfig, backups=args.backups, cache_dir=cache_dir)
    if args.output == "json":
        print(json.dumps({"fleet": fleet.name, "clusters": [s.to_dict() for s in statuses]}, indent=2))
    else:
        for status in statuses:
            for line in status.lines():
                print(line)
    out_of_sync = [s.name for s in statuses if not s.in_sync]
    if out_of_sync:
        print(f"not current: {', '.join(out_of_sync)}", file=sys.stderr)
    late = [f"{s.name}/{r.namespace}/{r.app}" for s in statuses for r in s.apps or () if r.rpo != "met"]
    if late:
        print(f"RPO not met: {', '.join(late)}", file=sys.stderr)
    return 1 if out_of_sync or late else 0
