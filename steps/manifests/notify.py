"""finalize's notifications: post the backup's outcome to the targets subscribed to it, never changing
that outcome.

:func:`notify` takes the ``--notify`` specs, the finalize summary and the plan; every target that
listens for the event (``commit`` when the backup was committed, else ``failure``) gets one message,
targets side by side, each bounded by :mod:`steps.drivers.webhooks` (attempts and a total deadline).
A target that cannot be reached, refuses, or whose spec or files are wrong is one log line (its name,
the URL's scheme and host, the reason; never a key or a URL's path or query) and is counted as failed.
The counts go into finalize's summary and, when the plan names a repository, into the backup's
``notifications`` run record; a record that cannot be stored is one more log line, nothing else.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from steps.manifests.notifications import (
    Target,
    build_body,
    event_data,
    event_of,
    headers,
    parse_arg,
    url_problem,
    where,
)

RUN_RECORD = "notifications"


def _deliver(target: Target, event: str, data: dict) -> dict:
    from steps.drivers.webhooks import post, read_key_file
    from steps.errors import SnapflowError

    out: dict = {"name": target.name, "format": target.format, "ok": False, "attempts": 0}
    try:
        url = target.url or read_key_file(str(target.url_file), f"notification {target.name}: url").decode()
        out["to"] = where(url)
        why = url_problem(url, literal=False)
        if why:
            raise SnapflowError(f"notification {target.name}: url: {why}")
        key = (
            read_key_file(target.secret_file, f"notification {target.name}: secret")
            if target.secret_file
            else None
        )
        body = build_body(target.format, data)
        sent = post(url, body, headers(event, data["delivery"], body, key), ca_file=target.ca_file)
    except (SnapflowError, UnicodeDecodeError) as err:
        out["error"] = " ".join(str(err).split())[:300]
        return out
    out.update(ok=sent.ok, status=sent.status, attempts=sent.attempts, seconds=sent.seconds)
    if not sent.ok:
        out["error"] = sent.error
    return out


def notify(specs: list[str], summary: dict, plan, log: Callable[[str], None]) -> dict:
    """Send the event of ``summary`` to every target of ``specs`` listening for it; returns the counts
    (``event``, ``sent``, ``failed``, per target ``targets``). Never raises (but for an interrupt)."""
    try:
        return _notify(specs, summary, plan, log)
    except Exception as err:  # a notification never changes the backup's outcome
        log(f"finalize: notifications failed: {type(err).__name__}")
        return {
            "event": event_of(summary),
            "sent": 0,
            "failed": len(specs),
            "targets": [],
            "error": type(err).__name__,
        }


def _notify(specs: list[str], summary: dict, plan, log: Callable[[str], None]) -> dict:
    from steps.errors import SnapflowError

    event = event_of(summary)
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    delivery = uuid.uuid4().hex
    data = event_data(event, summary, plan, now, delivery)
    results: list[dict] = []
    targets: list[Target] = []
    for i, spec in enumerate(specs):
        try:
            target = parse_arg(spec)
        except SnapflowError as err:
            results.append(
                {"name": _name_of(spec) or f"#{i + 1}", "ok": False, "attempts": 0, "error": str(err)}
            )
            continue
        if event in target.on:
            targets.append(target)
    if targets:
        with ThreadPoolExecutor(max_workers=min(8, len(targets)), thread_name_prefix="notify") as pool:
            results += list(pool.map(lambda t: _deliver(t, event, data), targets))
    for r in results:
        if not r["ok"]:
            to = f" ({r['to']})" if r.get("to") else ""
            log(
                f"finalize: notification {r['name']}{to}: {event} not delivered after {r['attempts']} attempt(s):"
                f" {r.get('error')}"
            )
    counts = {
        "event": event,
        "delivery": delivery,
        "sent": sum(1 for r in results if r["ok"]),
        "failed": sum(1 for r in results if not r["ok"]),
        "targets": results,
    }
    if results and getattr(plan, "repository", None) is not None and summary.get("backup_id"):
        _record(plan, summary["backup_id"], {"time": now, **counts}, log)
    return counts


def _name_of(spec: str) -> str | None:
    import json

    try:
        name = json.loads(spec).get("name")
    except (ValueError, AttributeError):
        return None
    return name if isinstance(name, str) and name.isprintable() and len(name) <= 64 else None


def _record(plan, backup_id: str, data: dict, log: Callable[[str], None]) -> None:
    """The backup's ``notifications`` run record; one log line when it cannot be stored."""
    from steps.errors import SnapflowError
    from steps.repository.opener import open_repository
    from steps.repository.records import save_run_record

    try:
        save_run_record(
            open_repository(plan.repository.url, plan.repository.endpoint), backup_id, RUN_RECORD, data
        )
    except (SnapflowError, OSError) as err:
        log(f"finalize: the notifications run record was not stored: {' '.join(str(err).split())[:200]}")
