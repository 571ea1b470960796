"""Helpers shared by the ``freeze``, ``thaw`` and ``consistent-point`` commands."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from steps.errors import SnapflowError, UsageError
from steps.plan import Plan


def write_json_atomic(path: str | os.PathLike, data: dict[str, Any]) -> None:
    """Write JSON via a temporary file and a rename, so readers never see half a file."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_output_path(option: str, path: str | os.PathLike) -> None:
    """Refuse (UsageError naming ``option``) a file path that could not be written: an existing
    directory, or a location whose nearest existing ancestor is not a writable directory (missing
    directories below that one are created on write)."""
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{option}: {p} is a directory; expected a file path")
    ancestor = p.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UsageError(f"{option}: {ancestor} is not a directory, so {p} cannot be created")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UsageError(f"{option}: directory {ancestor} is not writable")


def check_not_frozen(option: str, path: str | os.PathLike, plan: Plan) -> None:
    """Refuse (UsageError naming ``option``) a path on a file system the plan's fsfreeze hooks freeze:
    the holder never writes there (the write would sleep uninterruptibly until the thaw)."""
    from steps.quiesce.consistent_point import fsfreeze_mounts

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
    from steps.drivers.objectstore import open_store
    from steps.repository.repo import Repository
    from steps.secrets import repository_password

    assert plan.repository is not None
    try:
        repo = Repository.open(
            open_store(plan.repository.url, plan.repository.endpoint), repository_password()
        )
        return repo.save_record("runs", {"name": name, "backup_id": backup_id, **record}, key=backup_id)
    except SnapflowError as err:
        # The app is already released; a retry would quiesce again, so this is not retryable here.
        raise SnapflowError(f"the {name} record could not be stored in {plan.repository.url}: {err}") from err
