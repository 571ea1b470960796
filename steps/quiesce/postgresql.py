"""PostgreSQL restore rules for what a consistent point recorded (used by restore).

- ``recovery: crash`` (atomic cut): start the server on the restored data directory as it is; a
  ``backup_label`` must NOT be written (its stop location lies after the cut: "WAL ends before end of
  online backup").
- ``recovery: backup_label`` (copy in backup mode): write the stored ``backup_label`` (and
  ``tablespace_map``) into the data directory before the first start; without it a checkpoint during
  the copy yields a server that starts cleanly and serves inconsistent data.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from steps.errors import UsageError


def write_backup_label(datadir: str | os.PathLike, target_record: dict[str, Any]) -> list[str]:
    """Write ``backup_label`` (and ``tablespace_map``) from a consistent-point target record into a
    restored data directory; returns the files written. Refuses a record whose recovery is not
    ``backup_label``."""
    recovery = target_record.get("recovery", "backup_label")
    if recovery != "backup_label":
        raise UsageError(
            f"target {target_record.get('name')}: recovery is {recovery!r}; "
            "a backup_label must not be written"
        )
    label = target_record.get("backup_label")
    if not label:
        raise UsageError(f"target {target_record.get('name')}: the record carries no backup_label")
    d = Path(datadir)
    written = []
    stat = os.stat(d)
    for name, content in (("backup_label", label), ("tablespace_map", target_record.get("tablespace_map"))):
        if not content:
            continue
        path = d / name
        path.write_text(content)
        os.chmod(path, 0o600)
        try:
            os.chown(path, stat.st_uid, stat.st_gid)
        except PermissionError:
            pass
        written.append(name)
    return written
