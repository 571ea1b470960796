"""``check``: scheduled check of the whole repository, a rotating read-back of its data, a restore test."""

from __future__ import annotations

import errno

from steps import runtime
from steps.commands._repo import (
    CONNECTION_EPILOG,
    add_repo_args,
    open_repository,
    parse_percent,
    print_json,
    problems_summary,
    warn,
)
from steps.progress import human_bytes

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
a file that must exist). Exit 3 names every problem found.

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


def _of_app(record, app: dict[str, str]) -> bool:
    """Whether a backup record belongs to the app named by ``app`` ({"name": ..., "namespace": ...})."""
    have = record.data.get("app") if isinstance(record.data.get("app"), dict) else {}
    return all(have.get(key) == value for key, value in app.items())


def _describe_app(app: dict[str, str]) -> str:
    where = [f"{k} {app[k]}" for k in ("namespace", "cluster") if k in app]
    return f"app {app.get('name', '(any)')}" + (f" ({', '.join(where)})" if where else "")


def restore_test(
    repo,
    scratch: str | None,
    command: str | None,
    timeout: float,
    keep: bool,
    app: dict[str, str] | None = None,
) -> dict:
    """Restore the newest committed backup (of ``app`` when given, else of any app; without backups the
    newest snapshot) into ``scratch`` and run ``command`` there."""
    import os
    import time

    from steps.drivers import files
    from steps.repository.repo import referenced_snapshots
    from steps.repository.restorer import restore_snapshot

    t0 = time.monotonic()
    result: dict = {"ok": False, "problems": [], "warnings": []}
    snaps = {s.id: s for s in repo.list_snapshots()}
    backups = sorted(repo.list_records("backups"), key=lambda r: (str(r.data.get("time", "")), r.id))
    if app:
        result["app"] = dict(app)
        backups = [r for r in backups if _of_app(r, app)]
        if not backups:
            result["problems"].append(f"no committed backup of {_describe_app(app)} to restore")
            result["duration_s"] = round(time.monotonic() - t0, 3)
            return result
    chosen: list[tuple[str, object]] = []
    if backups:
        rec = backups[-1]
        result["backup_id"] = rec.data.get("backup_id")
        names = {}
        for v in rec.data.get("volumes") or ():
            if isinstance(v, dict) and v.get("snapshot"):
                names[v["snapshot"]] = str(v.get("name") or v.get("volume") or v["snapshot"][:8])
        for sid in sorted(referenced_snapshots(rec.data)):
            if sid not in snaps:
                result["problems"].append(f"snapshot {sid[:8]} of backup {result['backup_id']} is missing")
                continue
            if snaps[sid].tags.get("kind") == "manifests":
                chosen.append(("manifests", snaps[sid]))
            else:
                chosen.append((names.get(sid, sid[:8]), snaps[sid]))
    else:
        try:
            snap = repo.find_snapshot("latest", list(snaps.values()))
        except Exception as err:
            result["problems"].append(str(err))
            return result
        chosen.append((snap.short_id, snap))
    root, own = files.scratch_directory(scratch, "snapflow-restore-test-")
    target_root = os.path.join(root, "restore-test")
    files.remove_tree(target_root)
    result["volumes"] = []
    needed = sum(int((snap.data.get("summary") or {}).get("bytes_total") or 0) for _, snap in chosen)
    free = files.free_bytes(root)
    result["scratch"] = {"path": root, "free_bytes": free, "needed_bytes": needed}
    if needed > free:
        # Only a warning: sparse files and holes take less space than their size.
        result["warnings"].append(
            f"the scratch space {root} has {human_bytes(free)} free, the backup holds {human_bytes(needed)}"
        )
    try:
        for name, snap in chosen:
            target = os.path.join(target_root, name.replace("/", "_"))
            stats = restore_snapshot(repo, snap, target)
            expected = (snap.data.get("summary") or {}).get("bytes_total")
            entry = {"name": name, "snapshot": snap.id, "files": stats.files, "bytes": stats.bytes_total}
            if expected is not None and stats.bytes_total != expected:
                result["problems"].append(
                    f"{name}: restored {stats.bytes_total} bytes, the snapshot records {expected}"
                )
            result["volumes"].append(entry)
        if command and not result["problems"]:
            from steps.drivers.runner_local import LocalRunner

            run = LocalRunner(env={runtime.RESTORE_DIR: target_root}).run(
                ["/bin/sh", "-c", command], timeout=timeout
            )
            result["check_command"] = {"exit": run.returncode, "stderr": run.stderr.strip()[-2000:]}
            if not run.ok:
                tail = run.stderr.strip().splitlines()[-1:] or [f"exit {run.returncode}"]
                result["problems"].append(f"--restore-check failed (exit {run.returncode}): {tail[0]}")
    except Exception as err:  # a failed restore is the finding, not a crash of the check
        hint = ""
        if _out_of_space(err):
            hint = f" (the scratch space {root} is too small: the backup holds {human_bytes(needed)})"
        result["problems"].append(f"restore failed: {err}{hint}")
    finally:
        if not keep:
            files.remove_tree(target_root, ignore_errors=True)
            if own:
                files.remove_tree(root, ignore_errors=True)
    result["ok"] = not result["problems"]
    result["duration_s"] = round(time.monotonic() - t0, 3)
    return result


def _out_of_space(err: BaseException | None) -> bool:
    """Whether ``err`` (or what caused it) is ENOSPC: the scratch space ran full."""
    seen = 0
    while err is not None and seen < 10:
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            return True
        err, seen = err.__cause__ or err.__context__, seen + 1
    return False


def run(args) -> int:
    import sys

    from steps.errors import IntegrityError, UsageError
    from steps.progress import Progress
    from steps.repository.checker import check_repository
    from steps.repository.pipeline import tune_malloc

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
        report.warnings.extend(f"restore test: {w}" for w in report.restore_test["warnings"])
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
