"""``thaw``: release every target of a plan, idempotently (exit handler, manual use)."""

from __future__ import annotations

NAME = "thaw"
HELP = "release every target of the plan (idempotent: safe when nothing is frozen, twice, after a crash)"
DESCRIPTION = """\
Releases what a freeze of the plan may still hold, without needing the holder: ends the database
sessions that hold a lock or a backup mode (found by name), runs the unfreeze of paired hooks
(fsfreeze -u, fsyncUnlock until lockCount is 0). Safe when nothing is frozen, when run twice and after
the holder died. Exits non-zero only when a thaw itself failed; prints one JSON line per target.

examples:
  python -m steps thaw --plan plan.json
"""


def configure(parser) -> None:
    parser.add_argument("--plan", required=True, help="plan JSON file")


def run(args) -> int:
    import json

    from steps.drivers.files import load_plan
    from steps.errors import ConsistencyError
    from steps.quiesce.engine import thaw_plan

    plan = load_plan(args.plan)
    results = thaw_plan(plan)
    for r in results:
        print(json.dumps(r, sort_keys=True))
    failed = [r for r in results if r.get("error")]
    if failed:
        raise ConsistencyError("thaw failed for " + "; ".join(r["error"] for r in failed))
    return 0
