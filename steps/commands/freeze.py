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
    import os
    import signal
    import sys
    import threading
    import time

    from steps.commands._quiesce_common import check_not_frozen
    from steps.drivers import files
    from steps.drivers.files import check_output_path, load_plan, write_json_atomic
    from steps.errors import ConsistencyError, UsageError
    from steps.quiesce.consistent_point import fsfreeze_mounts, volumes_of
    from steps.quiesce.engine import Quiescer, build_hooks
    from steps.quiesce.verdict import iso

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

    def atomic(target) -> bool:
        if plan.snapshot.driver == "local":
            from steps.drivers.snapshot_local import LocalSnapshotDriver

            driver = LocalSnapshotDriver()
            driver.avoid_snapshots_under(fsfreeze_mounts(plan))  # as consistent-point would cut them
            return driver.is_atomic(volumes_of(plan, target))
        return plan.consistency == "group" or len(volumes_of(plan, target)) == 1

    hooks = build_hooks(plan, args.backup_id, atomic=atomic)
    stop = threading.Event()
    why: dict[str, str] = {}
    holding = threading.Event()

    def on_signal(signum, _frame):
        first = not stop.is_set()
        why.setdefault("by", signal.Signals(signum).name)
        stop.set()
        if first and not holding.is_set():
            # Still freezing: unwind now (the engine releases what it froze or is freezing) instead of
            # waiting for the remaining targets to freeze first.
            raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def on_event(event, _data):
        if event == "deadline":
            why.setdefault("by", "deadline")
            stop.set()

    quiescer = Quiescer(hooks, plan.freeze.deadline_s, on_event=on_event)
    released = False
    try:
        try:
            quiescer.freeze_all()  # on any failure or interruption it aborts what it froze, then raises
        except SystemExit:
            if why.get("by"):
                print(
                    f"error: interrupted by {why['by']} while freezing: the targets frozen so far "
                    "were released",
                    file=sys.stderr,
                )
            raise
        holding.set()
        print(f"freeze: {len(hooks)} target(s) held (deadline {plan.freeze.deadline_s:g} s)", file=sys.stderr)
        if args.ready_file:
            write_json_atomic(
                args.ready_file,
                {
                    "targets": [
                        {
                            "name": h.name,
                            "hook": h.target.hook,
                            "method": h.spec.get("method"),
                            "quiesced": iso(h.quiesced),
                        }
                        for h in hooks
                    ],
                    "deadline_s": plan.freeze.deadline_s,
                    "pid": os.getpid(),
                },
            )
        lost: dict[str, str] = {}
        next_check = time.monotonic() + plan.freeze.keepalive_s
        while not stop.wait(0.1):
            if args.release_file and files.exists(args.release_file):
                why.setdefault("by", "release-file")
                break
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + plan.freeze.keepalive_s
                lost = quiescer.check_all()
                if lost:
                    why.setdefault("by", "hold-lost")
                    break
        if quiescer.expired.is_set():  # the deadline already aborted every hold
            errors = [f"target {h.name} ({h.target.hook}): {h.thaw_error}" for h in hooks if h.thaw_error]
        else:
            errors = quiescer.release_all()
        released = True
    except OSError as err:  # e.g. the ready file could not be written: released (below), then reported
        raise ConsistencyError(f"freeze: {err}") from err
    finally:
        if not released:  # whatever went wrong while holding, the application is released first
            quiescer.release_all()
    result = {
        "released_by": why.get("by", "release"),
        "targets": [],
        "lost": lost,
        "errors": errors,
    }
    for h in hooks:
        t = {
            "name": h.name,
            "hook": h.target.hook,
            "method": h.spec.get("method"),
            "recovery": h.spec.get("recovery"),
            "quiesced": iso(h.quiesced),
            "released": iso(h.released),
            "released_by": h.released_by,
            "window_ms": None
            if h.quiesced is None or h.released is None
            else round((h.released - h.quiesced) * 1000, 3),
        }
        t.update({k: v for k, v in h.info.items() if v})
        result["targets"].append(t)
    if args.result:
        write_json_atomic(args.result, result)
    print(json.dumps(result, sort_keys=True))
    if lost or errors:
        raise ConsistencyError("; ".join([f"target {n}: {r}" for n, r in lost.items()] + errors))
    return 0
