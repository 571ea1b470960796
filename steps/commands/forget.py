"""``forget``: remove restore points (by rule or by name) without freeing their data (prune does)."""

from __future__ import annotations

from steps.commands._repo import CONNECTION_EPILOG, add_repo_args
from steps.commands._retention import add_rule_args

NAME = "forget"
HELP = "remove backups or snapshots by retention rule or by ID (their data is freed by prune)"
DESCRIPTION = """Remove committed backups (backup record first, then its snapshot and run records) and
plain snapshots, chosen by retention rules (--keep-*) or named with --backup-id / --snapshot. The data
they used is freed by the next prune runs (two-phase, after the grace period). --dry-run lists every
restore point with the rules that keep it and changes nothing.

Rules are not applied around damage: a backup or snapshot record that does not open (it may be a
restore point the rules would keep) or a committed backup naming a snapshot record that is gone makes
forget with --keep-* exit 3, naming the object key; `repair records` fixes or removes a damaged record,
`forget --backup-id ID` removes a broken backup (every object in its groups, damaged ones included).
Forgetting by name goes on whatever else is damaged.

examples:
  python -m steps forget --repo s3://backups/shop --backup-id backup-orders-db-x7k2q
  python -m steps forget --repo s3://backups/shop --keep-last 3 --app orders-db --dry-run
"""


def configure(parser):
    add_repo_args(parser)
    add_rule_args(parser)
    parser.add_argument(
        "--backup-id", action="append", default=[], metavar="ID", help="forget this backup (repeatable)"
    )
    parser.add_argument(
        "--snapshot",
        action="append",
        default=[],
        metavar="ID",
        help="forget this snapshot of no backup (ID or unique prefix; repeatable)",
    )
    parser.add_argument("--dry-run", action="store_true", help="change nothing; list what would go")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.epilog = CONNECTION_EPILOG


def run(args) -> int:
    from steps.commands._retention import filters_from_args, rules_from_args, run_and_report
    from steps.errors import UsageError
    from steps.repository.pruner import PruneOptions, forget

    rules = rules_from_args(args)
    if rules.empty and not args.backup_id and not args.snapshot:
        raise UsageError("forget: expected --backup-id, --snapshot or at least one --keep-* rule")
    opts = PruneOptions(
        rules=None if rules.empty else rules,
        timezone=args.timezone,
        filters=filters_from_args(args),
        forget_backups=list(args.backup_id),
        forget_snapshots=list(args.snapshot),
        dry_run=args.dry_run,
    )
    from steps.commands.audit_trail import audited_retention

    return run_and_report(args, NAME, audited_retention("forget", forget), opts)
