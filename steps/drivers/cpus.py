"""How many CPUs this process may really use, and the thread counts derived from it.

Provides :func:`available_cpus`, :func:`cgroup_cpu_limit` and :func:`default_threads`. Called by the copy
engine (file workers), the upload pipeline (uploaders) and the restorer (connections).

``os.cpu_count()`` in a container returns the node's CPUs, not the pod's. The usable count is the
smallest of: the CPUs in the affinity mask (``os.sched_getaffinity``, which cpusets narrow), and the
CPU quota of the process's cgroup and of every cgroup above it, rounded up (cgroup v2 ``cpu.max``
``"QUOTA PERIOD"``, or v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``; ``max`` or ``-1`` is no limit).
The file paths are arguments, so the parsing is tested on crafted files.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = "/sys/fs/cgroup"
PROC_CGROUP = "/proc/self/cgroup"

# Thread counts per purpose: (per CPU, at least, at most). Chosen from measurements on 2 CPUs
# (docs/performance.md, "Threads from the CPUs available"): file workers hash and compress, so more
# than one per CPU only adds lock hand-offs; uploaders mostly wait for the object store; a restore's
# connections also decrypt and create files, and 6 (the former default) on 2 CPUs were slower than 2.
FORMULAS = {
    "file_workers": (1.0, 1, 8),
    "uploaders": (1.0, 2, 8),
    "restore_connections": (1.0, 2, 8),
    "restore_creators": (1.0, 1, 4),
}


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _v2_limit(text: str | None) -> float | None:
    """CPUs allowed by a cgroup v2 ``cpu.max`` (``"max 100000"`` or ``"150000 100000"``); None: none."""
    if not text:
        return None
    parts = text.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    try:
        quota, period = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _v1_limit(directory: Path) -> float | None:
    quota, period = _read(directory / "cpu.cfs_quota_us"), _read(directory / "cpu.cfs_period_us")
    try:
        q, p = int(quota or ""), int(period or "")
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def _ancestors(root: Path, rel: str) -> list[Path]:
    """``root/rel`` and each directory above it up to ``root``."""
    parts = [p for p in rel.split("/") if p and p not in (".", "..")]
    return [root.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]


def cgroup_cpu_limit(root: str | Path = CGROUP_ROOT, proc_cgroup: str | Path = PROC_CGROUP) -> float | None:
    """The CPU quota (in CPUs, possibly fractional) of this process's cgroup and the cgroups above it,
    the tightest one; None when no quota is set or nothing can be read."""
    root = Path(root)
    lines = _read(Path(proc_cgroup))
    if lines is None:
        return None
    limits: list[float] = []
    for line in lines.splitlines():
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        _hier, controllers, rel = fields
        if controllers == "":  # cgroup v2: one unified hierarchy
            limits += [v for d in _ancestors(root, rel) if (v := _v2_limit(_read(d / "cpu.max")))]
        elif "cpu" in controllers.split(","):  # cgroup v1: the cpu controller's own hierarchy
            for mount in (controllers, "cpu,cpuacct", "cpu"):
                base = root / mount
                if base.is_dir():
                    limits += [v for d in _ancestors(base, rel) if (v := _v1_limit(d))]
                    break
    return min(limits) if limits else None


def available_cpus(
    root: str | Path = CGROUP_ROOT, proc_cgroup: str | Path = PROC_CGROUP, affinity: int | None = None
) -> int:
    """CPUs this process can use: the affinity mask narrowed by the cgroup quota, rounded up, >= 1."""
    if affinity is None:
        try:
            affinity = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            affinity = os.cpu_count() or 1
    count = max(1, affinity)
    limit = cgroup_cpu_limit(root, proc_cgroup)
    if limit is not None:
        count = min(count, max(1, math.ceil(limit)))
    return count


def default_threads(purpose: str, cpus: int | None = None) -> int:
    """The default thread count for ``purpose`` (a key of :data:`FORMULAS`) on ``cpus`` CPUs (by
    default :func:`available_cpus`)."""
    per_cpu, low, high = FORMULAS[purpose]
    n = available_cpus() if cpus is None else cpus
    return max(low, min(high, math.ceil(per_cpu * n)))
