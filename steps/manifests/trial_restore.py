"""The restore test of ``check --restore-test``: the newest committed backup (of one app, when named;
without backups the newest snapshot) restored into scratch space, each volume's size compared with its
snapshot's, then an optional command run there with ``$SNAPFLOW_RESTORE_DIR`` naming the directory;
the scratch space is removed unless kept. :func:`record_restore_test` stores the outcome as the run
record ``restore-test`` of the backup tested (what ``snapflow exporter``'s restore-test metrics and the
``SnapflowRestoreTestStale`` alert read).
"""

from __future__ import annotations

import errno

from steps import runtime
from steps.progress import human_bytes


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
    from steps.repository.records import referenced_snapshots
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


RECORD_PROBLEMS = 20  # problems kept in the run record (the report names them all)


def record_restore_test(repo, result: dict) -> str | None:
    """Store ``result`` of :func:`restore_test` as the run record ``restore-test`` of the backup it
    restored: ``{"name": "restore-test", "backup_id", "time", "ok", "app", "duration_s", "volumes",
    "problems", "check_exit"}``, ``app`` being the tested backup record's. Returns the record's ID; None
    when no committed backup was tested (nothing to store it under)."""
    from steps.repository.records import save_run_record, utc_now_iso

    backup_id = result.get("backup_id")
    if not backup_id:
        return None
    backups = repo.list_records("backups", key=backup_id)
    app = backups[-1].data.get("app") if backups else None
    fields = {
        "time": utc_now_iso(),
        "ok": bool(result.get("ok")),
        "app": app if isinstance(app, dict) else None,
        "duration_s": result.get("duration_s"),
        "volumes": [
            {k: v.get(k) for k in ("name", "snapshot", "files", "bytes")} for v in result.get("volumes") or ()
        ],
        "problems": list(result.get("problems") or ())[:RECORD_PROBLEMS],
    }
    if result.get("check_command") is not None:
        fields["check_exit"] = result["check_command"].get("exit")
    return save_run_record(repo, backup_id, "restore-test", fields)


def _out_of_space(err: BaseException | None) -> bool:
    """Whether ``err`` (or what caused it) is ENOSPC: the scratch space ran full."""
    seen = 0
    while err is not None and seen < 10:
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            return True
        err, seen = err.__cause__ or err.__context__, seen + 1
    return False
