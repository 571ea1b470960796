"""The snapshot driver interface: cut point-in-time copies of a plan's volumes.

``consistent-point`` calls :meth:`SnapshotDriver.cut` while the application is held and
:meth:`SnapshotDriver.wait_ready` after the release: a cut must be quick (it sits inside the freeze
window), readiness (a CSI snapshot's upload, a copy's fsync) may take long and never holds the app.

Every :class:`CutResult` carries the cut time *as the storage recorded it* (a btrfs subvolume's
creation time, a VolumeSnapshotContent's creationTime) because a driver retry can cut later than
asked; the verdict compares it with the quiesce and release times taken with :meth:`SnapshotDriver.now`,
the same clock, after :meth:`SnapshotDriver.settle`. A cut that is not atomic (a file-by-file copy) reports the interval it spanned.

Drivers: ``local`` (:mod:`steps.drivers.snapshot_local`), ``csi`` (Kubernetes VolumeSnapshots).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from steps.plan import Plan, Volume


@dataclass
class CutResult:
    """One volume's cut. ``atomic``: the whole volume was captured at ``cut_time``; otherwise the copy
    ran from ``started`` to ``finished`` and ``deferred`` lists sub-paths copied later (after a hook's
    stop, e.g. PostgreSQL's pg_wal)."""

    volume: str
    snapshot: str
    atomic: bool
    cut_time: float | None
    started: float
    finished: float
    handle: dict[str, Any] = field(default_factory=dict)
    deferred: list[str] = field(default_factory=list)
    deferred_copied: float | None = None
    ready: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "volume": self.volume,
            "snapshot": self.snapshot,
            "atomic": self.atomic,
            "cut_time": self.cut_time,
            "started": self.started,
            "finished": self.finished,
            "deferred": list(self.deferred),
            "deferred_copied": self.deferred_copied,
            "ready": self.ready,
            **({"handle": self.handle} if self.handle else {}),
        }


class SnapshotDriver(ABC):
    """Cuts volumes; one instance per consistent-point run."""

    name = "abstract"

    def now(self) -> float:
        """The clock the storage stamps its cut times with (seconds since the epoch)."""
        return time.time()

    def settle(self, after: float) -> None:
        """Make sure a cut started from now on is stamped later than ``after`` by the storage (a
        file system whose clock lags the fine clock by a tick waits out that tick)."""
        return None

    @abstractmethod
    def is_atomic(self, volumes: list[Volume]) -> bool:
        """True when :meth:`cut` will capture each of ``volumes`` atomically and, for several volumes,
        all of them at one instant (a group snapshot); hooks choose their method from it."""

    @abstractmethod
    def cut(
        self, volumes: list[Volume], labels: dict[str, str], defer: dict[str, list[str]] | None = None
    ) -> list[CutResult]:
        """Cut every volume now, in order; ``defer`` maps a volume name to sub-paths a non-atomic cut
        must leave out (they are copied by :meth:`copy_deferred` after the hook stopped)."""

    def copy_deferred(self, result: CutResult) -> None:
        """Copy the sub-paths left out by a non-atomic cut (no-op for atomic cuts)."""
        if result.deferred:
            raise NotImplementedError(f"{self.name}: deferred copies are not supported")

    @abstractmethod
    def wait_ready(self, results: list[CutResult], timeout: float) -> None:
        """Block until every cut is durable/usable; raise TemporaryError on timeout."""

    def delete(self, result: CutResult) -> None:  # pragma: no cover - optional
        raise NotImplementedError


def open_snapshot_driver(plan: Plan, **options: Any) -> SnapshotDriver:
    """The driver the plan names (``snapshot.driver``)."""
    if plan.snapshot.driver == "local":
        from steps.drivers.snapshot_local import LocalSnapshotDriver

        return LocalSnapshotDriver(**options)
    if plan.snapshot.driver == "csi":
        try:
            from steps.drivers.snapshot_csi import CsiSnapshotDriver  # type: ignore[import-not-found]
        except ImportError:
            from steps.errors import UsageError

            raise UsageError("snapshot.driver: 'csi' is not available in this build") from None
        return CsiSnapshotDriver(plan, **options)
    from steps.errors import UsageError

    raise UsageError(f"snapshot.driver: unknown driver {plan.snapshot.driver!r}")
