"""The steps' side of the audit trail: who is acting, and one call per action that appends its record.

Who: in a workflow, the identity Argo's labels on the Workflow give (the pipeline passes
``workflows.argoproj.io/creator``, ``creator-email``, ``creator-preferred-username`` and, for scheduled
runs, ``workflows.argoproj.io/cron-workflow`` as the variables named in :mod:`steps.runtime`). Anyone
allowed to create Workflows can set those labels, so they are recorded as *claimed*. Outside a workflow,
the local user and host.

Each acting step calls one of these after (or around) its action: :func:`record` (any action),
:func:`run_audited` (a call whose failure is recorded too), :func:`audited_retention` (prune and
forget), :func:`commit_audited` (finalize's commit), :func:`record_check` and :func:`record_restore`.
Appending never fails the action it records: a record that cannot be stored is a warning (the action
happened; ``snapflow audit verify`` reports a commit without its record). Not a command (no ``NAME``).
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from steps import runtime
from steps.errors import SnapflowError, UsageError

T = TypeVar("T")


def _value(env: Mapping[str, str], name: str) -> str | None:
    """A variable's value; an Argo expression left unresolved (the label was not set) counts as unset."""
    value = (env.get(name) or "").strip()
    return value if value and not value.startswith("{{") else None


def who(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The acting identity: ``{"kind": "cron" | "argo" | "local", ...}``."""
    env = os.environ if env is None else env
    workflow = _value(env, runtime.ARGO_WORKFLOW_NAME)
    cron = _value(env, runtime.AUDIT_CRON_WORKFLOW)
    if cron:
        return {"kind": "cron", "cron_workflow": cron, "workflow": workflow}
    creator = {
        "creator": _value(env, runtime.AUDIT_CREATOR),
        "email": _value(env, runtime.AUDIT_CREATOR_EMAIL),
        "username": _value(env, runtime.AUDIT_CREATOR_USERNAME),
    }
    if workflow or any(creator.values()):
        return {
            "kind": "argo",
            "claimed": True,
            **{k: v for k, v in creator.items() if v},
            "workflow": workflow,
        }
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid {os.getuid()}"
    return {"kind": "local", "user": user, "uid": os.getuid(), "host": os.uname().nodename}


def _writable(repo):
    """The repository to append to: a repository opened ``--as-of`` a past time is a read-only view,
    but the restore it serves is recorded in the repository as it is now."""
    inner = getattr(repo.store, "inner", None)
    if inner is None:
        return repo
    from steps.repository.repo import Repository

    return Repository(inner, repo.keys, repo.config, repo.key_id)


def record(
    repo, action: str, *, what: dict | None = None, app: dict | None = None, result: str = "ok"
) -> str | None:
    """Append the audit record of ``action``; its ID, or None (with a warning) when it could not be stored."""
    from steps.commands._repo import warn
    from steps.repository.audit import append

    try:
        return append(_writable(repo), action, who=who(), what=what, app=app, result=result).id
    except Exception as err:  # the action happened; a trail that cannot be appended to must not hide it
        warn(f"audit: the record of {action} was not stored in the audit trail: {err}")
        return None


def _failure(err: Exception) -> str:
    return "refused" if isinstance(err, UsageError) else "failed"


def run_audited(
    repo,
    action: str,
    what: dict,
    call: Callable[[], T],
    *,
    app: dict | None = None,
    describe: Callable[[T], tuple[dict, dict | None, str]] | None = None,
) -> T:
    """``call()``, recorded: its failure (``failed``, or ``refused`` for a usage error) and re-raised, or
    its result (``describe(result)`` gives more ``what``, the app and the result; else a non-zero exit
    code is ``partial``)."""
    try:
        out = call()
    except SnapflowError as err:
        record(repo, action, what={**what, "error": str(err)[:500]}, app=app, result=_failure(err))
        raise
    result = "ok"
    if describe is not None:
        more, found_app, result = describe(out)
        what, app = {**what, **more}, found_app or app
    elif isinstance(out, int) and out != 0:
        result = "partial"
        what = {**what, "exit": out}
    record(repo, action, what=what, app=app, result=result)
    return out


def audited(repo, action: str, what: dict, function: Callable[..., T], describe=None) -> Callable[..., T]:
    """``function``, recorded when called (:func:`run_audited`)."""

    def call(*args, **kwargs) -> T:
        return run_audited(repo, action, what, lambda: function(*args, **kwargs), describe=describe)

    return call


def commit_audited(repo, plan, backup_id: str, commit: Callable[[], tuple[str | None, list[str], bool]]):
    """Finalize's commit (``commit()``), recorded: ``ok`` with the record's ID when it committed,
    ``refused`` with the reasons when it did not, ``failed`` when it stopped on an error; a backup
    committed before is not recorded again."""
    app = plan.app.to_dict()
    try:
        out = commit()
    except SnapflowError as err:
        what = {"backup_id": backup_id, "error": str(err)[:500]}
        record(repo, "backup.commit", what=what, app=app, result=_failure(err))
        raise
    rid, problems, already = out
    if not already:
        what = {"backup_id": backup_id, "record": rid, "problems": problems[:20]}
        record(repo, "backup.commit", what=what, app=app, result="ok" if rid else "refused")
    return out


def audited_retention(action: str, operation):
    """``operation`` (prune or forget, called as ``operation(repo, opts, log=...)``), recorded with what it
    removed; a dry run removes nothing and is not recorded. Prune's Object Lock extension is recorded as
    its own action, and the records it writes are locked as long as what it kept."""

    def run(repo, opts, log):
        if getattr(opts, "dry_run", False):
            return operation(repo, opts, log=log)
        try:
            report = operation(repo, opts, log=log)
        except SnapflowError as err:
            record(repo, action, what={"error": str(err)[:500]}, result=_failure(err))
            raise
        ids = [record(repo, action, what=_removed(report))]
        locks = report.locks or {}
        if locks.get("extended"):
            what = {k: locks.get(k) for k in ("checked", "extended", "held", "until")}
            ids.append(
                record(
                    repo, "object-lock.extend", what=what, result="partial" if locks.get("failed") else "ok"
                )
            )
        lock = getattr(opts, "lock", None)
        if lock is not None and report.locks is not None:
            _lock(repo, [i for i in ids if i], lock)
        return report

    return run


def _lock(repo, ids: list[str], lock) -> None:
    """Give the records a retention of ``lock``'s period from now, like everything prune just kept."""
    from steps.commands._repo import warn
    from steps.repository.object_lock import extend_locks

    store = _writable(repo).store
    report = extend_locks(store, [f"audit/{i}" for i in ids], lock, store.server_time())
    for failed in report.failed:
        warn(f"audit: the record was not locked: {failed}")


def _removed(report) -> dict:
    sweep, mark = report.sweep or {}, report.mark or {}
    return {
        "forgotten_backups": list(report.forgotten_backups)[:1000],
        "forgotten_snapshots": list(report.forgotten_snapshots)[:1000],
        "packs_deleted": sweep.get("packs_deleted", 0),
        "bytes_freed": sweep.get("bytes_freed", 0),
        "snapshots_deleted": sweep.get("snapshots_deleted", 0),
        "packs_marked": sum(mark.get(k, 0) for k in ("packs_unused", "packs_unindexed", "packs_repacked")),
        "versions_deleted": (report.versions or {}).get("versions_deleted", 0),
    }


def restored(done) -> tuple[dict, dict | None, str]:
    """``describe`` of a volume restore: the snapshot, its backup and app, what was written."""
    snap, stats = done.snap, done.stats
    d = snap.data
    app = {k: d.get(k) for k in ("cluster", "namespace") if d.get(k)}
    if d.get("app"):
        app["name"] = d.get("app")
    what = {
        "snapshot": snap.id,
        "backup_id": snap.backup_id,
        "volume": d.get("volume"),
        "files": stats.files,
        "bytes": stats.bytes_total,
        "damaged_skipped": len(stats.damaged),
    }
    return what, app or None, "partial" if stats.damaged else "ok"


def record_check(repo, report, read_data_percent: float) -> None:
    """The result of ``check``: what it found, and the backup its restore test restored."""
    what: dict[str, Any] = {
        "ok": report.ok,
        "problems": len(report.problems),
        "tampering": len(report.tampering),
        "first_problems": (report.problems + report.tampering)[:5],
        "snapshots": report.snapshots,
        "backups": report.backups,
        "read_data_percent": read_data_percent,
    }
    rt = report.restore_test
    if rt is not None:
        what["restore_test"] = {"ok": rt.get("ok"), "backup_id": rt.get("backup_id")}
    record(repo, "check", what=what, result="ok" if report.ok else "failed")


def restore_app_what(args, restore_id: str) -> dict:
    """What a ``restore-app`` restores, and into where."""
    keys = (
        "backup",
        "app",
        "source_namespace",
        "target_namespace",
        "phase",
        "mover",
        "mover_namespace",
        "dry_run",
    )
    what = {k: getattr(args, k, None) for k in keys if getattr(args, k, None) not in (None, "", [])}
    return {**what, "restore_id": restore_id}
