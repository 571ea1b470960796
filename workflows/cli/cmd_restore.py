"""snapflow restore: restore a volume of a policy from its repository into a local directory."""

from __future__ import annotations

NAME = "restore"
HELP = "restore a snapshot of a policy's volume into a local directory (--local)"
DESCRIPTION = """\
Run the policy's restore pipeline on this machine: the restore step writes the snapshot into --target
(a new or empty directory), byte- and metadata-identical. 'latest' is the newest committed backup of
the policy's app; an ID must name a committed snapshot of it. When the backup was a copy made in
PostgreSQL backup mode, the stored backup_label is written into the restored data directory (an
atomic snapshot gets none: crash recovery on first start).

examples:
  snapflow restore policy.yaml --snapshot latest --target /srv/restore --local
  snapflow restore policy.yaml --snapshot 3f2a9c1e --target /srv/restore --local
  snapflow restore policy.yaml --snapshot latest --restore-volume wal --target /srv/restore-wal --local
"""


def configure(parser):
    from workflows.cli.cmd_run import add_local_arguments

    add_local_arguments(parser)
    parser.add_argument("--snapshot", required=True, metavar="ID", help="snapshot ID, prefix, or 'latest'")
    parser.add_argument("--target", required=True, metavar="DIR", help="directory to restore into")
    parser.add_argument(
        "--restore-volume",
        metavar="NAME",
        help="with 'latest': which volume of the policy to restore (needed when it has several)",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON summary on stdout")


def run(args) -> int:
    from workflows.cli._common import policy_errors_as_lines

    return policy_errors_as_lines(lambda: _run(args))


def _run(args) -> int:
    import json
    import sys

    from workflows.cli.cmd_run import load_policy, make_view, settings_from
    from workflows.local.local_restore import restore_local

    policy = load_policy(args)
    result, choice, notes = restore_local(
        policy,
        args.snapshot,
        args.target,
        volume=args.restore_volume,
        settings=settings_from(args),
        view=make_view(args),
    )
    for note in notes:
        print(note, file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(
            json.dumps(
                {
                    "status": result.status,
                    "snapshot": choice.snapshot_id,
                    "volume": choice.volume,
                    "backup_id": choice.backup_id,
                    "target": args.target,
                    "notes": notes,
                },
                sort_keys=True,
            )
        )
    return result.exit_code()
