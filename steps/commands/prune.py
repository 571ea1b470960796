"""``prune``: apply the retention rules and free the data nothing references any more, without a lock."""

from __future__ import annotations

from steps import runtime
from steps.commands._repo import CONNECTION_EPILOG, add_repo_args
from steps.commands._retention import add_rule_args

NAME = "prune"
HELP = "forget backups outside the retention rules and free unreferenced data (lock-free)"
DESCRIPTION = """Forget the committed backups (and plain snapshots) that no retention rule keeps, then
free the data nothing references any more — safely while backups run:

  * candidates marked by an earlier run are swept once their grace period has passed in the object
    store's clock, after a fresh check that nothing references them; index first (with supersedes),
    then packs, then old index files;
  * new candidates are marked: unused packs, unindexed packs older than the grace period, packs whose
    unused share is above --repack-unused (their live blobs are rewritten first), and snapshots of
    backups that stayed uncommitted for the grace period. Copies that start later do not deduplicate
    against them; copies older than the grace period refuse to commit.
  * with Object Lock (--lock-mode/--lock-days, or SNAPFLOW_OBJECT_LOCK_MODE/_DAYS), the retention of
    everything kept backups need is extended; on a versioned bucket, old versions of what prune deleted
    are removed once their retention expired, and objects deleted by anyone else are reported.

The grace period must be longer than the longest backup. --dry-run changes nothing and lists every
restore point with the rules that keep it. A prune killed at any moment leaves a valid repository.

examples:
  python -m steps prune --repo s3://backups/shop --keep-last 7 --keep-daily 14 --keep-monthly 12 --dry-run
  python -m steps prune --repo s3://backups/shop --keep-daily 7 --app orders-db --timezone Europe/Berlin
"""


def configure(parser):
    add_repo_args(parser)
    add_rule_args(parser)
    parser.add_argument("--dry-run", action="store_true", help="change nothing; list what would happen")
    parser.add_argument(
        "--grace",
        metavar="DURATION",
        help="time between marking and deleting, in the store's clock; longer than the longest backup"
        " (default $SNAPFLOW_PRUNE_GRACE or 24h)",
    )
    parser.add_argument(
        "--repack-unused",
        metavar="PERCENT",
        default="30",
        help="rewrite packs with more than this share unused (default 30; 'off' never repacks)",
    )
    parser.add_argument(
        "--lock-mode", metavar="MODE", help="Object Lock mode to extend: governance|compliance"
    )
    parser.add_argument("--lock-days", metavar="DAYS", help="keep what kept backups need locked this long")
    parser.add_argument(
        "--wait", action="store_true", help="wait out the grace period and sweep this run's candidates too"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.epilog = (
        CONNECTION_EPILOG
        + """\
  SNAPFLOW_PRUNE_GRACE (default grace), SNAPFLOW_OBJECT_LOCK_MODE, SNAPFLOW_OBJECT_LOCK_DAYS
"""
    )


def options_from_args(args):
    import os
    from datetime import timedelta

    from steps.commands._repo import parse_percent
    from steps.commands._retention import filters_from_args, parse_duration, rules_from_args
    from steps.drivers.objectstore import ObjectLock
    from steps.repository.pruner import DEFAULT_GRACE, PruneOptions

    rules = rules_from_args(args)
    grace_raw = args.grace or os.environ.get(runtime.PRUNE_GRACE)
    grace = (
        timedelta(seconds=parse_duration(grace_raw, "--grace" if args.grace else runtime.PRUNE_GRACE))
        if grace_raw
        else DEFAULT_GRACE
    )
    raw = str(args.repack_unused).strip().lower()
    repack = None if raw in ("off", "none", "no") else parse_percent(raw, "--repack-unused") / 100
    if args.lock_mode or args.lock_days:
        lock = ObjectLock.parse(args.lock_mode, args.lock_days, "--lock-mode/--lock-days")
    else:
        lock = ObjectLock.from_env()
    return PruneOptions(
        rules=rules,
        timezone=args.timezone,
        filters=filters_from_args(args),
        grace=grace,
        repack_unused=repack,
        dry_run=args.dry_run,
        lock=lock,
        wait=args.wait,
    )


def run(args) -> int:
    from steps.commands._retention import run_and_report
    from steps.commands.audit_trail import audited_retention
    from steps.repository.pruner import prune

    return run_and_report(args, NAME, audited_retention("prune", prune), options_from_args(args))
