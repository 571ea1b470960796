"""snapflow run: run a policy's pipeline on this machine (each step a local process)."""

from __future__ import annotations

NAME = "run"
HELP = "run a policy's backup (or init, check, prune; a source's restore) pipeline here, step by step"
DESCRIPTION = """\
Run the same pipeline the Argo WorkflowTemplate runs - same steps, dependencies, freeze scope,
retries (exit code 75 only) and the finalizer that always runs - with each step as a local process
(python -m steps ...), for a policy whose volumes are local directories (spec.volumes[].path) and whose
hooks run locally (spec.quiesce[].local: true). A cluster policy runs locally when --volume maps each
of its volumes to a directory. Shows each step live and, at the end, a timeline with the freeze window.

A policy with spec.source (etcd, registry, bucket) runs its pipelines from this machine: the source is
reached at the address the policy names (an etcd member on the node's own address: 127.0.0.1), each
Secret the policy names is a directory holding one file per key (--secret NAME=DIR), a hostPath is that
path here. Its restore is the restore pipeline with the restore workflow's parameters
(--pipeline restore -p NAME=VALUE).

The repository password comes from SNAPFLOW_PASSWORD or SNAPFLOW_PASSWORD_FILE (or --password-file);
S3 keys from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY. Exit status 0 only when the backup was
committed; otherwise the exit code of the first failed step (130 after Ctrl-C).

examples:
  snapflow run policy.yaml --local --pipeline init        # create the repository once
  snapflow run policy.yaml --local                         # back up
  snapflow run policy.yaml --local -p read-data-percent=100
  snapflow run policy.yaml --local --pipeline check -p restore-test=true   # with spec.verify.restoreTest
  snapflow run examples/postgresql-statefulset.yaml --local --volume data=/srv/pgdata \\
      --hook-param orders-db-0.port=5433 --hook-param orders-db-0.password_file=/etc/pg/password
  snapflow run examples/sources/bucket.yaml --local --secret uploads-reader=/etc/snapflow/uploads-reader
  snapflow run examples/sources/bucket.yaml --local --secret uploads-reader=/etc/snapflow/uploads-reader \\
      --pipeline restore -p target-bucket=shop-uploads-restored -p dry-run=false
"""


def add_local_arguments(parser) -> None:
    parser.add_argument("policy", metavar="POLICY", help="policy file (YAML)")
    parser.add_argument("--local", action="store_true", help="run on this machine (required)")
    parser.add_argument("--name", help="the policy to run when the file holds several")
    parser.add_argument(
        "--volume", action="append", metavar="NAME=DIR", help="use local directory DIR for volume NAME"
    )
    parser.add_argument(
        "--hook-param", action="append", metavar="TARGET.KEY=VALUE", help="set a hook parameter of a target"
    )
    parser.add_argument("--password-file", metavar="FILE", help="repository password file")
    parser.add_argument(
        "--state-dir", metavar="DIR", help="logs and state of local runs (default: ~/.local/state/snapflow)"
    )
    parser.add_argument(
        "--snapshot-dir", metavar="DIR", help="where local snapshots go (default: next to each volume)"
    )
    parser.add_argument("--plain", action="store_true", help="no live redrawing, one line per event")


def configure(parser):
    add_local_arguments(parser)
    parser.add_argument(
        "--pipeline",
        default="backup",
        choices=("backup", "init", "check", "prune", "restore"),
        help="default: backup (restore: a policy with spec.source; an app's volumes: snapflow restore --local)",
    )
    parser.add_argument(
        "--secret",
        action="append",
        metavar="NAME=DIR",
        help="Secret NAME of the policy's source as directory DIR, one file per key (repeatable)",
    )
    parser.add_argument(
        "-p", "--parameter", action="append", default=[], metavar="NAME=VALUE", help="pipeline parameter"
    )
    parser.add_argument("--backup-id", metavar="ID", help="run ID (default: <pipeline>-<policy>-<random>)")
    parser.add_argument("--json", action="store_true", help="print the run summary as JSON on stdout")


def settings_from(args):
    import os
    from pathlib import Path

    from steps.api import UsageError, runtime
    from workflows.local.runner import RunSettings, default_state_dir
    from workflows.local.source_files import parse_secret_dirs

    env = {}
    if args.password_file:
        if not os.path.isfile(args.password_file):
            raise UsageError(f"--password-file: {args.password_file} is not a readable file")
        env[runtime.PASSWORD_FILE] = os.path.abspath(args.password_file)
    return RunSettings(
        state_dir=Path(args.state_dir) if args.state_dir else default_state_dir(),
        env=env,
        snapshot_dir=os.path.abspath(args.snapshot_dir) if args.snapshot_dir else None,
        secret_dirs=parse_secret_dirs(getattr(args, "secret", None)),
    )


def load_policy(args):
    from steps.api import UsageError
    from workflows.local.local_policy import load_local_policy

    if not args.local:
        raise UsageError("--local: required (to run in a cluster, render the policy and use snapflow submit)")
    return load_local_policy(args.policy, name=args.name, volumes=args.volume, hook_params=args.hook_param)


def make_view(args):
    import sys

    from workflows.local.view import TerminalView

    stream = sys.stderr if getattr(args, "json", False) else sys.stdout
    return TerminalView(stream, tty=False if args.plain else None)


def run(args) -> int:
    from workflows.cli._common import policy_errors_as_lines

    return policy_errors_as_lines(lambda: _run(args))


def _run(args) -> int:
    import dataclasses
    import json

    from steps.api import UsageError
    from workflows.local.runner import run_local

    policy = load_policy(args)
    if args.pipeline == "restore" and policy.spec.source is None:
        raise UsageError(
            "--pipeline restore: restores a policy's source (spec.source); restore an app's volume with "
            "snapflow restore POLICY --local --snapshot ID --target DIR"
        )
    params = {}
    for raw in args.parameter:
        key, sep, value = raw.partition("=")
        if not sep or not key:
            raise UsageError(f"-p: expected NAME=VALUE, got {raw!r}")
        params[key] = value
    settings = dataclasses.replace(settings_from(args), params=params, backup_id=args.backup_id)
    result = run_local(policy, args.pipeline, settings, make_view(args))
    if args.json:
        print(json.dumps(result.to_dict(), sort_keys=True))
    return result.exit_code()
