"""``consistent-point``: freeze every target, cut every volume, check the hold, release — one process."""

from __future__ import annotations

NAME = "consistent-point"
HELP = "quiesce every target, cut every volume, release; print the timeline and the consistency verdict"
DESCRIPTION = """\
Quiesces every target of the plan (all pods or containers of a multi-replica app), cuts every volume
through the plan's snapshot driver, checks that every hold is still in force, releases, and prints the
timeline (quiesced, cut, released, window in ms) with the verdict: app-consistent only if
quiesced <= cut <= released for every volume (cut time as the storage recorded it), otherwise
crash-consistent (or inconsistent for a torn copy), with the reasons.

The record goes to --out, to stdout, and - when the plan names a repository - into the repository as
the run record `consistent-point` of the backup. Never retried automatically once it quiesced: every
failure after the freeze exits 4.

examples:
  python -m steps consistent-point --plan plan.json --backup-id backup-orders-db-x7k2p --out cp.json
"""


def configure(parser) -> None:
    parser.add_argument("--plan", required=True, help="plan JSON file")
    parser.add_argument("--backup-id", required=True, help="backup ID (the workflow name)")
    parser.add_argument("--out", help="write the record (JSON) to this file too")


def run(args) -> int:
    import json
    import signal
    import sys

    from steps.commands._quiesce_common import check_not_frozen, store_run_record
    from steps.drivers.files import check_output_path, load_plan, write_json_atomic
    from steps.drivers.snapshot import open_snapshot_driver
    from steps.quiesce.cut import run_consistent_point

    interrupted: list[str] = []

    def terminate(signum, _frame):
        # SystemExit unwinds through the engine, which releases every hold before the exit. Only the
        # first signal does: a second one must not cut that release short.
        if interrupted:
            return
        interrupted.append(signal.Signals(signum).name)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)
    plan = load_plan(args.plan)
    if args.out:
        check_output_path("--out", args.out)  # refused before anything is frozen
        check_not_frozen("--out", args.out, plan)
    options = {"local_dir": plan.snapshot.local_dir} if plan.snapshot.driver == "local" else {}
    driver = open_snapshot_driver(plan, **options)
    try:
        record = run_consistent_point(
            plan, args.backup_id, driver, log=lambda m: print(f"consistent-point: {m}", file=sys.stderr)
        )
    except SystemExit:
        if interrupted:
            print(
                f"error: interrupted by {interrupted[0]}: the consistent point was abandoned, "
                "its holds aborted and nothing recorded",
                file=sys.stderr,
            )
        raise
    text = json.dumps(record, indent=2, sort_keys=True)
    if args.out:
        write_json_atomic(args.out, record)
    print(text)
    if plan.repository is not None:
        store_run_record(plan, args.backup_id, "consistent-point", record)
    print(f"consistent-point: {record['verdict']} (window {record['freeze_window_ms']} ms)", file=sys.stderr)
    return 0
