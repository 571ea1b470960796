"""snapflow preflight: check a live cluster (and the repository) for policies before their first backup."""

from __future__ import annotations

NAME = "preflight"
HELP = "check a live cluster for policies: snapshot classes, RBAC, Pod Security, repository"
DESCRIPTION = """\
Check, against the cluster of your kubeconfig, what each policy's workflows need, one line per check
(ok / warn / FAIL):

  api             the Kubernetes API answers
  namespace       the policy's namespace exists
  snapshot-api    the VolumeSnapshot API is served (and a VolumeGroupSnapshot API for consistency: group)
  snapshot-class  every PVC's CSI driver has the policy's VolumeSnapshotClass (else a default one),
                  and a VolumeGroupSnapshotClass for consistency: group
  rbac            each backup step's ServiceAccount may do what that step does (access reviews)
  rbac-restore    the restore ServiceAccount may do what restore-app does in the policy's namespace
  rbac-movers     with spec.movers: prepare-clone and finalize may bind snapshots, make clones and
                  clean them up in the mover namespace
  secrets         with spec.movers: the repository's Secrets (with their keys) and CA bundle are in the
                  mover namespace, where the step pods mount them
  pod-security    the namespace's enforced Pod Security level admits the step pods
  repository      the repository answers and the password opens a key (only when SNAPFLOW_PASSWORD
                  or SNAPFLOW_PASSWORD_FILE is set here; the S3 keys come from AWS_ACCESS_KEY_ID and
                  AWS_SECRET_ACCESS_KEY)

Run it as a cluster administrator after `kubectl apply -k` of the rendered manifests: the access checks
are SubjectAccessReviews. Exit status 0 when nothing failed (warnings do not fail), 3 when a check
failed, 2 for a bad policy.

examples:
  snapflow preflight policies/orders-db.yaml
  snapflow preflight policies/*.yaml --context prod-eu --json
  SNAPFLOW_PASSWORD_FILE=~/.snapflow/shop AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... \\
      snapflow preflight policies/orders-db.yaml
  snapflow preflight policies/orders-db.yaml --current-identity --skip-repository   # may I run it?
"""


def configure(parser):
    parser.add_argument("policies", nargs="+", metavar="POLICY", help="policy file (YAML)")
    parser.add_argument(
        "--name", metavar="[NS/]NAME", help="check only this policy of the files (default: every one)"
    )
    who = parser.add_mutually_exclusive_group()
    who.add_argument(
        "--service-account",
        default="",
        metavar="NS/NAME",
        help="check every backup step's RBAC for this one ServiceAccount (default: each step's rendered "
        "account, or the policy's configured one)",
    )
    who.add_argument(
        "--current-identity",
        action="store_true",
        help="check RBAC for the identity of the kubeconfig instead of the ServiceAccounts",
    )
    parser.add_argument("--skip-repository", action="store_true", help="do not open the repository")
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")
    parser.add_argument(
        "--kubeconfig", metavar="FILE", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)"
    )
    parser.add_argument("--context", metavar="NAME", help="kubeconfig context (default: the current one)")


def run(args) -> int:
    from workflows.cli._common import policy_errors_as_lines

    return policy_errors_as_lines(lambda: _run(args))


def _selected(loaded, name: str | None):
    from steps.errors import UsageError

    if not name:
        return [item.policy for item in loaded]
    ns, _, policy_name = name.rpartition("/")
    chosen = [
        item.policy
        for item in loaded
        if item.policy.name == policy_name and (not ns or item.policy.namespace == ns)
    ]
    if not chosen:
        known = ", ".join(f"{i.policy.namespace}/{i.policy.name}" for i in loaded)
        raise UsageError(f"--name: no policy {name!r} in the given files (policies: {known})")
    if len(chosen) > 1:
        raise UsageError(f"--name: {name!r} is ambiguous; give NAMESPACE/NAME")
    return chosen


def _run(args) -> int:
    import json

    from steps.api import KubeClient, KubeSettings
    from steps.errors import PermanentError, UsageError
    from workflows.cluster_preflight import preflight_policy
    from workflows.policy import load_policies

    if args.service_account and "/" not in args.service_account:
        raise UsageError(f"--service-account: expected NAMESPACE/NAME, got {args.service_account!r}")
    policies = _selected(load_policies(args.policies), args.name)
    local = [f"{p.namespace}/{p.name}" for p in policies if p.is_local]
    if local:
        raise UsageError(
            f"{', '.join(local)}: local paths run with the local runner; nothing to check in a cluster"
        )
    results = []
    with KubeClient(KubeSettings.from_env(args.kubeconfig, args.context)) as client:
        for policy in policies:
            results.append(
                preflight_policy(
                    client,
                    policy,
                    service_account=args.service_account,
                    current_identity=args.current_identity,
                    repository=not args.skip_repository,
                )
            )
    if args.json:
        print(
            json.dumps(
                {"ok": not any(r.failed for r in results), "policies": [r.to_dict() for r in results]},
                sort_keys=True,
            )
        )
    else:
        for result in results:
            print(f"policy {result.policy.namespace}/{result.policy.name}:")
            for line in result.lines():
                print(f"  {line}")
    failed = [(r, c) for r in results for c in r.failed]
    if failed:
        shown = "; ".join(
            f"{r.policy.namespace}/{r.policy.name} {c['check']}: {c['message']}" for r, c in failed[:3]
        )
        raise PermanentError(f"preflight: {len(failed)} check(s) failed: {shown}")
    return 0
