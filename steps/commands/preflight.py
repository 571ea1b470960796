"""``preflight``: check a live cluster (and the repository) before the first backup of a plan."""

from __future__ import annotations

from steps.commands._kube import KUBE_EPILOG, add_kube_args
from steps.manifests.cluster_checks import preflight

NAME = "preflight"
HELP = "check the cluster and repository for a plan: snapshot classes, RBAC, Pod Security, repository key"
DESCRIPTION = """Checks, for the plan's namespace and volumes, one line each (ok / warn / FAIL):

  api             the Kubernetes API answers
  namespace       the namespace exists
  snapshot-api    the VolumeSnapshot API is served (and a VolumeGroupSnapshot API for consistency: group)
  snapshot-class  every PVC's CSI driver has a VolumeSnapshotClass (the plan's class, else a default one),
                  and a VolumeGroupSnapshotClass for consistency: group
  rbac            the identity the steps run as (--service-account NS/NAME, else the current one) may do
                  what capture, consistent-point, prepare-clone and finalize do
  pod-security    the namespace's enforced Pod Security level admits the restore mover pod (the plan
                  holds no workflow: `snapflow preflight POLICY` checks every workflow pod too)
  repository      the repository answers and the password opens a key

Exits 3 when any check fails (warnings do not fail).

examples:
  python -m steps preflight --plan plan.json
  python -m steps preflight --plan plan.json --service-account shop/snapflow-db --json
"""


def configure(parser):
    parser.add_argument("--plan", required=True, metavar="FILE", help="plan JSON file")
    parser.add_argument(
        "--service-account",
        default="",
        metavar="NS/NAME",
        help="check RBAC for this ServiceAccount (default: the identity of this process)",
    )
    parser.add_argument(
        "--group-snapshot-class",
        default="",
        metavar="NAME",
        help="VolumeGroupSnapshotClass for consistency: group (default: the plan's, else the driver's default)",
    )
    parser.add_argument("--skip-repository", action="store_true", help="do not open the repository")
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")
    add_kube_args(parser)
    parser.epilog = KUBE_EPILOG


def run(args) -> int:
    import json

    from steps.commands._kube import kube_client
    from steps.drivers.files import load_plan
    from steps.errors import PermanentError, UsageError

    if args.service_account and "/" not in args.service_account:
        raise UsageError(f"--service-account: expected NAMESPACE/NAME, got {args.service_account!r}")
    plan = load_plan(args.plan)
    with kube_client(args) as client:
        checks = preflight(
            client,
            plan,
            service_account=args.service_account,
            group_class=args.group_snapshot_class,
            repository=not args.skip_repository,
        )
    if args.json:
        print(json.dumps({"ok": not checks.failed, "checks": checks.items}, sort_keys=True))
    else:
        for c in checks.items:
            print(
                f"{ {'ok': 'ok  ', 'warn': 'warn', 'fail': 'FAIL'}[c['status']] } {c['check']:<15} {c['message']}"
            )
    if checks.failed:
        raise PermanentError(
            f"preflight: {len(checks.failed)} check(s) failed: "
            + "; ".join(f"{c['check']}: {c['message']}" for c in checks.failed[:3])
        )
    return 0
