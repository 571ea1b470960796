"""``freeze``: quiesce every target and hold until SIGTERM, a release file or the deadline."""

from __future__ import annotations

NAME = "freeze"
HELP = "quiesce every target and hold until SIGTERM, a release file or the deadline"
DESCRIPTION = """\
Quiesces every target of the plan and holds. Writes --ready-file (JSON: when each target was
quiesced) once everything is held, then waits for SIGTERM/SIGINT, for --release-file to appear, or
for the deadline (--deadline, else the plan's freeze.deadline_s), checking the holds every keepalive.
Then releases and writes --result (JSON: timeline; PostgreSQL backup mode adds the backup_label).

A freeze failure on one target releases the targets already frozen and exits 4. A hold lost while
waiting exits 4. If this process is killed, the database session limits, the paired hooks' watcher and
`thaw` release the application.

examples:
  python -m steps freeze --plan plan.json --ready-file /tmp/ready --release-file /tmp/release --result r.json
"""


def configure(parser) -> None:
    parser.add_argument("--plan", required=True, help="plan JSON file")
    parser.add_argument("--ready-file", help="written (JSON) once every target is quiesced")
    parser.add_argument("--release-file", help="release when this file appears")
    parser.add_argument("--result", help="write the result (JSON) here after the release")
    parser.add_argument("--deadline", type=float, help="seconds to hold at most (default: the plan's)")
    parser.add_argument("--backup-id", default="manual", help="labels the hold (PostgreSQL backup label)")


def run(args) -> int:
    import dataclasses
    import json

    from steps.commands._quiesce_common import check_not_frozen
    from steps.drivers import files
    from steps.drivers.files import check_output_path, load_plan
    from steps.errors import ConsistencyError, UsageError
    from steps.quiesce.hold import failure, hold

    plan = load_plan(args.plan)
    if args.deadline is not None:
        if args.deadline <= 0:
            raise UsageError(f"--deadline: expected a positive number of seconds, got {args.deadline:g}")
        plan = dataclasses.replace(plan, freeze=dataclasses.replace(plan.freeze, deadline_s=args.deadline))
    # Bad paths are refused before anything is frozen, not found out while the application waits.
    for option, path in (("--ready-file", args.ready_file), ("--result", args.result)):
        if path:
            check_output_path(option, path)
            check_not_frozen(option, path, plan)
    if args.release_file:
        check_output_path("--release-file", args.release_file)
        if files.lexists(args.release_file):
            raise UsageError(
                f"--release-file: {args.release_file} already exists (the hold would end at once); "
                "expected a path that appears only to release"
            )

    result = hold(
        plan,
        args.backup_id,
        ready_file=args.ready_file,
        release_file=args.release_file,
        result_file=args.result,
    )
    print(json.dumps(result, sort_keys=True))
    problem = failure(result)
    if problem:
        raise ConsistencyError(problem)
    return 0
