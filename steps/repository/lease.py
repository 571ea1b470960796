"""One prune at a time per repository, whoever runs it (Argo's mutexes only reach one namespace).

Two prunes at once could lose data: one sweeping candidates while the other compacts the index from an
older listing leaves an index file that names deleted packs, and a writer that loads it deduplicates
against blobs that are gone. So a prune that deletes anything first takes the repository's *prune
lease*:

1. it writes a ``prune-lease`` record (encrypted like every record; the store's Last-Modified of that
   first object is the lease's acquisition time, in the store's clock);
2. once the store's clock has passed the second of that record, it lists the lease records: a lease is live while its newest record is younger than ``LEASE_TTL``;
   of the live leases the one acquired first (ties: the lower lease ID) holds it. Any two prunes that
   both wrote before either listed see each other and agree on the holder; one that lists before the
   other writes is seen by it. A prune that does not hold the lease deletes its record and stops with
   a temporary error (exit 75: the prune workflow retries later);
3. the holder rewrites its record every ``HEARTBEAT`` (carrying its acquisition time, so it stays
   first) and checks, before every deletion, that a rewrite succeeded within ``LEASE_TTL / 2``:
   otherwise others may already consider the lease expired, and it stops;
4. at the end, success or failure, it deletes its records. A prune killed with SIGKILL leaves a record
   that others ignore once it is ``LEASE_TTL`` old, or at once on the same host when its process is
   gone (a pod's host name is its own, so in a cluster that is the TTL).

Dry runs and ``forget`` (which deletes records only) take no lease.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from steps.errors import TemporaryError

from .repo import Repository

LEASE_KIND = "prune-lease"
LEASE_TTL = timedelta(minutes=5)
HEARTBEAT = timedelta(minutes=1)


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


class PruneLease:
    def __init__(self, repo: Repository, run_id: str = "", sleep: Callable[[float], None] = time.sleep):
        self.repo = repo
        self._sleep = sleep
        self.id = uuid.uuid4().hex
        self.run_id = run_id
        self.acquired: datetime | None = None
        self._records: list[str] = []
        self._renewed = 0.0  # time.monotonic() of the last record written
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # -- steps (separate so that tests can interleave two contenders) ---------------------------
    def write(self) -> None:
        data = {
            "lease": self.id,
            "acquired": _iso(self.acquired) if self.acquired else None,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "run": self.run_id,
        }
        rid = self.repo.save_record(LEASE_KIND, data)
        with self._lock:
            self._records.append(rid)
            self._renewed = time.monotonic()
        if self.acquired is None:
            info = self.repo.store.stat(f"{LEASE_KIND}/{rid}")
            self.acquired = (
                info.last_modified if info and info.last_modified else self.repo.store.server_time()
            )

    def holder(self) -> dict | None:
        """The live lease that holds the repository (``{"lease", "acquired", "host", "run", "expires"}``)."""
        now = self.repo.store.server_time()
        live: dict[str, dict] = {}
        for rec in self.repo.list_records(LEASE_KIND):
            if rec.modified is None or rec.modified + LEASE_TTL <= now:
                continue
            lease = str(rec.data.get("lease", rec.id))
            acquired = _parse(rec.data.get("acquired")) or rec.modified
            seen = live.get(lease)
            if seen is None:
                live[lease] = seen = {"lease": lease, "acquired": acquired, "newest": rec.modified}
            seen["acquired"] = min(seen["acquired"], acquired)
            if rec.modified >= seen["newest"]:
                seen.update(
                    newest=rec.modified,
                    host=rec.data.get("host"),
                    pid=rec.data.get("pid"),
                    run=rec.data.get("run"),
                )
        here = socket.gethostname()
        for lease, seen in list(live.items()):
            if lease != self.id and seen.get("host") == here and not _alive(seen.get("pid")):
                del live[lease]  # its prune died on this host (killed): no need to wait for the TTL
        if not live:
            return None
        first = min(live.values(), key=lambda v: (v["acquired"], v["lease"]))
        first["expires"] = first["newest"] + LEASE_TTL
        return first

    # -- use ------------------------------------------------------------------------------------
    def acquire(self) -> PruneLease:
        self.write()
        return self.settle()

    def settle(self) -> PruneLease:
        """After :meth:`write`: hold the lease (and keep renewing it), or withdraw and raise. It first
        waits until the store's clock has passed the time of its record by the resolution of
        Last-Modified (a second on S3): a contender that wrote within that second is then listed too,
        and both break the tie the same way."""
        try:
            assert self.acquired is not None
            resolution = self.repo.store.time_resolution
            until = self.acquired + resolution
            while resolution and (now := self.repo.store.server_time()) <= until:
                self._sleep(max(0.05, (until - now).total_seconds()))
            held = self.holder()
        except BaseException:
            self.release()
            raise
        if held is None or held["lease"] != self.id:
            self.release()
            who = (
                f"a prune on {held.get('host') or 'an unknown host'} (run {held.get('run') or '?'}) since"
                f" {_iso(held['acquired'])}; its lease expires at {_iso(held['expires'])} unless renewed"
                if held
                else "a prune whose lease could not be read"
            )
            raise TemporaryError(f"prune: {self.repo.url} is being pruned by {who}; try again later")
        self._thread = threading.Thread(target=self._heartbeat, name="prune-lease", daemon=True)
        self._thread.start()
        return self

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT.total_seconds()):
            try:
                with self._lock:
                    old = list(self._records)
                self.write()
                for rid in old:
                    self.repo.store.delete(f"{LEASE_KIND}/{rid}")
                with self._lock:
                    self._records = [r for r in self._records if r not in old]
            except Exception:  # check() stops the prune if renewals keep failing
                continue

    def check(self) -> None:
        """Raise unless the lease was renewed recently enough that nobody considers it expired."""
        with self._lock:
            age = time.monotonic() - self._renewed
        if age > LEASE_TTL.total_seconds() / 2:
            raise TemporaryError(
                f"prune: its lease on {self.repo.url} was last renewed {age:.0f} s ago; stopping before"
                " deleting anything"
            )

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        with self._lock:
            records, self._records = self._records, []
        for rid in records:
            try:
                self.repo.store.delete(f"{LEASE_KIND}/{rid}")
            except Exception:  # an undeleted record expires after LEASE_TTL
                continue

    def __enter__(self) -> PruneLease:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _alive(pid) -> bool:
    """Whether process ``pid`` of this host exists (unknown: assume it does)."""
    if not isinstance(pid, int) or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by another user
        return True
    return True


def _parse(value) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
