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

import threading
import time
import uuid
from collections.abc import Callable
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
AT_ONCE = 8  # targets posted to side by side
HARD_LIMIT_S = 40.0  # a target's delivery given up after this long (the sender's deadline is 30 s)


def _deliver(target: Target, event: str, data: dict, out: dict) -> None:
    """Post to ``target``, filling ``out`` as it goes (``to`` once the URL is known); never raises."""
    out.update(name=target.name, format=target.format, ok=False, attempts=0)
    try:
        _post_to(target, event, data, out)
    except Exception as err:  # a bug here is one target's failure, not finalize's
        out.update(ok=False, error=f"unexpected {type(err).__name__}")


def _post_to(target: Target, event: str, data: dict, out: dict) -> None:
    from steps.drivers.webhooks import post, read_key_file
    from steps.errors import SnapflowError

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
        return
    out.update(ok=sent.ok, status=sent.status, attempts=sent.attempts, seconds=sent.seconds)
    if not sent.ok:
        out["error"] = sent.error


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
    results += _side_by_side(targets, event, data)
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


def _side_by_side(targets: list[Target], event: str, data: dict) -> list[dict]:
    """Every target's delivery, up to :data:`AT_ONCE` at a time, each in a daemon thread given up after
    :data:`HARD_LIMIT_S` (a receiver that trickles its answer byte by byte could outlast the sender's own
    deadline, which bounds each wait, not their sum); finalize never waits for one any longer."""
    results: list[dict] = []
    for start in range(0, len(targets), AT_ONCE):
        batch: list[tuple[Target, dict]] = [(target, {}) for target in targets[start : start + AT_ONCE]]
        threads = [
            threading.Thread(
                target=_deliver, args=(t, event, data, out), name=f"notify-{t.name}", daemon=True
            )
            for t, out in batch
        ]
        for thread in threads:
            thread.start()
        end = time.monotonic() + HARD_LIMIT_S
        for thread in threads:
            thread.join(max(0.0, end - time.monotonic()))
        for thread, (target, out) in zip(threads, batch, strict=True):
            if not thread.is_alive():
                results.append(dict(out))
                continue
            # still waiting: given up (the daemon thread ends with the process)
            late = {"name": target.name, "format": target.format, "ok": False, "attempts": 1}
            late.update({k: out[k] for k in ("to",) if k in out})
            late["error"] = f"no answer within {HARD_LIMIT_S:.0f} s"
            results.append(late)
    return results


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
    except SnapflowError as err:
        log(f"finalize: the notifications run record was not stored: {' '.join(str(err).split())[:200]}")
    except Exception as err:  # the counts stay in the summary whatever the repository does
        log(f"finalize: the notifications run record was not stored: {type(err).__name__}")
