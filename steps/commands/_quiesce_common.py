"""Helpers shared by the ``freeze``, ``thaw`` and ``consistent-point`` commands."""

from __future__ import annotations

import os
from typing import Any

from steps.errors import SnapflowError, UsageError
from steps.plan import Plan


def check_not_frozen(option: str, path: str | os.PathLike, plan: Plan) -> None:
    """Refuse (UsageError naming ``option``) a path on a file system the plan's fsfreeze hooks freeze:
    the holder never writes there (the write would sleep uninterruptibly until the thaw)."""
    from steps.quiesce.cut import fsfreeze_mounts

    mounts = fsfreeze_mounts(plan)
    if not mounts:
        return
    from steps.drivers.snapshot_local import FrozenFileSystems

    mount = FrozenFileSystems(mounts).where(path)
    if mount is not None:
        raise UsageError(
            f"{option}: {path} lies on the file system that an fsfreeze hook freezes (mount {mount}), "
            "and a write there would block until the thaw; expected a path on another file system"
        )


def store_run_record(plan: Plan, backup_id: str, name: str, record: dict[str, Any]) -> str:
    """Store ``record`` as the run record ``name`` of the backup in the plan's repository."""
    from steps.repository.opener import open_repository

    assert plan.repository is not None
    try:
        repo = open_repository(plan.repository.url, plan.repository.endpoint)
        return repo.save_record("runs", {"name": name, "backup_id": backup_id, **record}, key=backup_id)
    except SnapflowError as err:
        # The app is already released; a retry would quiesce again, so this is not retryable here.
        raise SnapflowError(f"the {name} record could not be stored in {plan.repository.url}: {err}") from err
