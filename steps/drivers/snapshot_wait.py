"""Waiting on the snapshot API's objects and saying in one line why they failed.

:func:`wait_objects` watches VolumeSnapshots (or VolumeGroupSnapshots) with a timeout instead of
polling, until a condition holds for each; an error the snapshotter keeps reporting fails early. A
failure or a timeout raises :class:`SnapshotFailed` with one line (:func:`describe_failure`) quoting
the snapshot's ``status.error``, its content's error, conditions and the latest Events.
:func:`parse_time` reads the snapshot API's times (RFC 3339 on snapshots, integer nanoseconds on
contents). Used by the ``csi`` snapshot driver (:mod:`steps.drivers.snapshot_csi`), the mover
namespace's binding (:mod:`steps.drivers.snapshot_mover`) and prepare-clone.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from steps.drivers.kube import KubeClient, KubeError
from steps.drivers.kube_objects import dig
from steps.errors import PermanentError, SnapflowError

SNAPSHOT_API = "snapshot.storage.k8s.io/v1"


class SnapshotFailed(PermanentError):
    """A snapshot reported an error, or was not cut / ready in time."""


class _SliceExpired(SnapflowError):
    """One slice of a wait ended; ``seen`` holds the objects as last observed."""

    def __init__(self, seen: dict[str, dict]):
        super().__init__("wait slice over")
        self.seen = seen


def parse_time(value: Any) -> float | None:
    """A snapshot time as seconds since the epoch: int nanoseconds (contents) or RFC 3339 (snapshots)."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) / 1e9
    text = str(value)
    if text.isdigit():
        return int(text) / 1e9
    frac = ""
    if "." in text:
        head, _, rest = text.partition(".")
        digits = ""
        for ch in rest:
            if ch.isdigit():
                digits += ch
            else:
                break
        frac = digits
        text = head + rest[len(digits) :]
    try:
        base = datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
    return base + (int(frac) / 10 ** len(frac) if frac else 0.0)


def describe_failure(
    client: KubeClient,
    namespace: str,
    kind: str,
    obj: dict | None,
    content: dict | None,
    name: str,
    problem: str,
) -> str:
    """One line: what failed, the snapshot's and content's errors, conditions and recent events."""
    parts = [f"{kind} {namespace}/{name} {problem}"]
    status = (obj or {}).get("status") or {}
    err = dig(status, "error", "message")
    if err:
        parts.append(f"error: {' '.join(str(err).split())}")
    cerr = dig(content or {}, "status", "error", "message")
    if cerr and cerr != err:
        parts.append(f"content error: {' '.join(str(cerr).split())}")
    conds = status.get("conditions") or []
    if conds:
        parts.append(
            "conditions: "
            + ", ".join(
                f"{c.get('type')}={c.get('status')}" + (f" ({c.get('message')})" if c.get("message") else "")
                for c in conds
            )
        )
    if obj is None:
        parts.append("the object does not exist (deleted?)")
    else:
        parts.append(
            f"readyToUse={status.get('readyToUse', False)}, creationTime={status.get('creationTime') or '-'}"
        )
    events = client.events_for(namespace, kind, name)
    parts.append("events: " + (" | ".join(events) if events else "none"))
    return "; ".join(parts)


def get_quietly(
    client: KubeClient, api_version: str, kind: str, name: str, namespace: str | None
) -> dict | None:
    try:
        return client.get_or_none(api_version, kind, name, namespace)
    except KubeError:
        return None


def failure_message(
    client: KubeClient, namespace: str, kind: str, obj: dict | None, name: str, problem: str
) -> str:
    """:func:`describe_failure` with the snapshot's content and PVC looked up."""
    content = None
    if kind == "VolumeSnapshot" and obj is not None:
        cname = dig(obj, "status", "boundVolumeSnapshotContentName")
        if cname:
            content = get_quietly(client, SNAPSHOT_API, "VolumeSnapshotContent", cname, None)
        pvc = dig(obj, "spec", "source", "persistentVolumeClaimName")
        if pvc:
            problem = f"(PVC {pvc}) {problem}"
    return describe_failure(client, namespace, kind, obj, content, name, problem)


def wait_objects(
    client: KubeClient,
    namespace: str,
    api_version: str,
    kind: str,
    names: list[str],
    done,
    timeout: float,
    problem: str,
    *,
    label_selector: str | None = None,
    error_grace_s: float = 30.0,
    overall_s: float | None = None,
) -> dict[str, dict]:
    """Watch snapshots ``names`` until ``done`` holds for each. An error the snapshotter keeps reporting
    for ``error_grace_s`` (it retries some) fails at once, anything else at ``timeout``; both raise
    :class:`SnapshotFailed` with the one-line description of :func:`describe_failure`."""
    first_error: dict[str, float] = {}

    def check(obj: dict) -> bool:
        if done(obj):
            return True
        name = obj["metadata"]["name"]
        if dig(obj, "status", "error", "message"):
            seen = first_error.setdefault(name, time.monotonic())
            if time.monotonic() - seen >= error_grace_s:
                raise SnapshotFailed(failure_message(client, namespace, kind, obj, name, "failed"))
        else:
            first_error.pop(name, None)
        return False

    deadline = time.monotonic() + timeout
    last_seen: dict[str, dict] = {}
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            for n in names:
                obj = last_seen.get(n)
                if obj is None or not done(obj):
                    raise SnapshotFailed(
                        failure_message(
                            client, namespace, kind, obj, n, f"{problem} after {overall_s or timeout:g}s"
                        )
                    )
            return last_seen
        # wake up at least every grace period, so that a lasting error is noticed without new events
        slice_s = min(remaining, error_grace_s) if error_grace_s > 0 else remaining
        try:
            return client.wait_for_all(
                api_version,
                kind,
                namespace,
                names,
                check,
                slice_s,
                label_selector=label_selector,
                on_timeout=_SliceExpired,
            )
        except _SliceExpired as over:
            last_seen = over.seen
            for obj in last_seen.values():
                check(obj)
