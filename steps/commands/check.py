"""``check``: scheduled check of the whole repository, a rotating read-back of its data, a restore test."""

from __future__ import annotations

from steps.commands._repo import (
    CONNECTION_EPILOG,
    add_repo_args,
    open_repository,
    parse_percent,
    print_json,
    problems_summary,
    warn,
)
from steps.manifests.trial_restore import record_restore_test, restore_test

NAME = "check"
HELP = "check the whole repository; read back a rotating share of its data; optional restore test"
DESCRIPTION = """Check every index file, record and snapshot of the repository (trees well formed -
entry names are names, not paths -, indexed blobs, file sizes that add up, packs present with their
recorded size, backup records naming existing snapshots). A damaged snapshot, backup or run record (it
does not authenticate, or its bytes do not match its name) is a problem named by its key; a damaged tree
names the snapshot, the tree and the entry. A prune may run meanwhile: what it deletes is checked again
against a fresh view, so a snapshot it forgot or a blob it moved is not a problem. With --read-data
PERCENT, read back that share of ALL packs - names against bytes, headers against the index, every blob
decrypted and rehashed - continuing where the previous check stopped (keyed rotation, position kept in
the repository), so that every pack is read once every 100/PERCENT checks. On a versioned bucket it
reports objects deleted or replaced outside Snapflow (restore --as-of reads their older versions).

With --restore-test, the newest committed backup (every volume, one folder each, and its manifests) is
restored into --scratch - the newest of one app with --app/--namespace/--cluster - and the optional
--restore-check command runs there (SNAPFLOW_RESTORE_DIR names the directory; the app's own check, e.g.
a file that must exist). The outcome is stored as the run record "restore-test" of the backup tested
(time, ok, app, volumes, problems), which snapflow exporter's restore-test metrics read; a test that
found no committed backup stores none. Exit 3 names every problem found.

examples:
  python -m steps check --repo s3://backups/shop --read-data 5
  python -m steps check --repo s3://backups/shop --restore-test --scratch /scratch \\
      --restore-check 'test -s "$SNAPFLOW_RESTORE_DIR/data/PG_VERSION"'
  python -m steps check --repo s3://backups/shop --restore-test --app orders-db --namespace shop --json
"""


def configure(parser):
    add_repo_args(parser)
    parser.add_argument(
        "--read-data",
        metavar="PERCENT",
        default="0",
        help="share of all packs to read back, continuing the rotation (0-100)",
    )
    parser.add_argument(
        "--restore-test", action="store_true", help="restore the newest backup into --scratch"
    )
    parser.add_argument(
        "--scratch", metavar="DIR", help="empty space for the restore test (default: a temporary directory)"
    )
    parser.add_argument(
        "--restore-check", metavar="COMMAND", help="shell command run after the restore test (exit 0 = ok)"
    )
    parser.add_argument(
        "--restore-check-timeout", metavar="SECONDS", default="600", help="limit of --restore-check"
    )
    parser.add_argument("--keep-scratch", action="store_true", help="leave the restored files in --scratch")
    parser.add_argument("--app", metavar="NAME", help="restore test: the newest backup of this app only")
    parser.add_argument("--namespace", metavar="NS", help="restore test: of an app in this namespace only")
    parser.add_argument("--cluster", metavar="NAME", help="restore test: of an app in this cluster only")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.epilog = CONNECTION_EPILOG


def run(args) -> int:
    import sys

    from steps.errors import IntegrityError, SnapflowError, UsageError
    from steps.progress import Progress
    from steps.repository.blob_sink import tune_malloc
    from steps.repository.checker import check_repository

    percent = parse_percent(args.read_data, "--read-data")
    try:
        timeout = float(args.restore_check_timeout)
    except ValueError:
        raise UsageError(
            f"--restore-check-timeout: expected a number of seconds, got {args.restore_check_timeout!r}"
        ) from None
    if args.restore_check and not args.restore_test:
        raise UsageError("--restore-check: needs --restore-test")
    app = {
        k: v for k, v in (("name", args.app), ("namespace", args.namespace), ("cluster", args.cluster)) if v
    }
    if app and not args.restore_test:
        raise UsageError(
            "--app/--namespace/--cluster: choose the backup of the restore test, need --restore-test"
        )
    tune_malloc()
    repo = open_repository(args)
    with Progress("check", enabled=percent > 0, unit="packs") as progress:
        report = check_repository(repo, percent, progress)
    if args.restore_test:
        report.restore_test = restore_test(
            repo, args.scratch, args.restore_check, timeout, args.keep_scratch, app or None
        )
        report.problems.extend(f"restore test: {p}" for p in report.restore_test["problems"])
        try:
            report.restore_test["run_record"] = record_restore_test(repo, report.restore_test)
        except SnapflowError as err:  # the finding stands; the exporter will call the test stale
            report.restore_test["run_record"] = None
            report.warnings.append(f"restore test: its result was not stored in the repository: {err}")
        report.warnings.extend(f"restore test: {w}" for w in report.restore_test["warnings"])
    from steps.commands.audit_trail import record_check

    record_check(repo, report, percent)
    for w in report.warnings[:50]:
        warn(w)
    if args.json:
        print_json(report.to_dict())
    else:
        for p in report.problems:
            print(f"problem: {p}")
        for t in report.tampering[:100]:
            print(f"tampering: {t}")
        rd = report.read_data
        print(
            f"{report.snapshots} snapshot(s), {report.backups} backup(s), {report.index_files} index file(s),"
            f" {report.packs} pack(s) ({report.unindexed_packs} unindexed); read back {rd['packs_read']} of"
            f" {rd['packs_total']} packs ({rd['bytes_read']} bytes), {rd['rounds_completed']} full rotation(s):"
            f" {'ok' if report.ok else f'{len(report.problems) + len(report.tampering)} problem(s)'}"
        )
        if report.restore_test is not None:
            rt = report.restore_test
            print(
                f"restore test: {'ok' if rt['ok'] else 'FAILED'}"
                + (f" (backup {rt.get('backup_id')})" if rt.get("backup_id") else "")
                + f", {sum(v['files'] for v in rt.get('volumes', []))} files",
                file=sys.stdout,
            )
    if not report.ok:
        raise IntegrityError(f"check failed: {problems_summary(report.problems + report.tampering)}")
    return 0
