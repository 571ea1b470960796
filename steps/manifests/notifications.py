"""Notifications of a backup's outcome: what a notification target is, and the messages posted to it.

A target (``spec.notifications[]`` of a policy, ``finalize --notify SPEC`` at run time) is a
:class:`Target`: a name, the URL (a literal, or a file holding it: a mounted Secret's key), the message
format (``json``, ``slack`` or ``teams``), the events it gets (``commit``, ``failure``), and optional
files holding the HMAC key and a CA bundle. :func:`spec_problems` is the one check of a target, used by
the policy (lint, render) and by finalize; :func:`parse_target` builds a target from the JSON finalize
is given.

:func:`build_body` makes the exact bytes posted for an event, :func:`signature` the value of the
:data:`SIGNATURE_HEADER` over them (HMAC-SHA256, ``sha256=`` and the hex digest, as GitHub's webhooks).
Nothing here reads a file or opens a connection (the sender is :mod:`steps.drivers.webhooks`); no
secret is ever part of a message.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import urllib.parse
from dataclasses import dataclass

from steps.drivers.webhooks import forbidden_address
from steps.errors import UsageError

FORMATS = ("json", "slack", "teams")
EVENTS = ("commit", "failure")
SIGNATURE_HEADER = "X-Snapflow-Signature-256"
EVENT_HEADER = "X-Snapflow-Event"
DELIVERY_HEADER = "X-Snapflow-Delivery"
NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$")
SPEC_FIELDS = ("name", "url", "url_file", "format", "on", "secret_file", "ca_file")
MAX_PROBLEMS = 5  # problems quoted in a message (each cut to MAX_PROBLEM chars)
MAX_PROBLEM = 300


@dataclass(frozen=True)
class Target:
    name: str
    format: str
    on: tuple[str, ...]
    url: str | None = None  # a literal URL (no credentials, no query)
    url_file: str | None = None  # a file holding the URL (a mounted Secret key)
    secret_file: str | None = None  # a file holding the HMAC key
    ca_file: str | None = None  # a CA bundle for an https URL

    def spec(self) -> dict:
        """The JSON object finalize's ``--notify`` takes (no secret in it: files are named, not read)."""
        out = {"name": self.name, "format": self.format, "on": list(self.on)}
        for key in ("url", "url_file", "secret_file", "ca_file"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        return out


def url_problem(url: str, literal: bool) -> str | None:
    """Why ``url`` cannot be posted to, or None. A ``literal`` URL (written in a policy, so in rendered
    manifests) may hold no credentials: no user or password, no query string, no fragment."""
    if not isinstance(url, str) or not url or any(c.isspace() for c in url):
        return "expected an http:// or https:// URL without spaces"
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 (a bad port raises)
    except ValueError:
        return "expected an http:// or https:// URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "expected an http:// or https:// URL with a host"
    if forbidden_address(parts.hostname):
        return f"expected a receiver's address: {parts.hostname} is {forbidden_address(parts.hostname)}"
    if literal and (parts.username is not None or parts.password is not None):
        return "expected no user or password in the URL (give a URL with credentials in a Secret: urlSecret)"
    if literal and (parts.query or parts.fragment or "?" in url):
        return "expected no query string in a literal URL (it often holds a token: give the URL in a Secret, urlSecret)"
    return None


def spec_problems(spec: dict) -> list[tuple[str, str]]:
    """(field, what was expected) for each problem of a notification target given as a mapping with
    :data:`SPEC_FIELDS` (finalize's ``--notify``; the policy maps its fields onto these)."""
    problems: list[tuple[str, str]] = []
    if not isinstance(spec, dict):
        return [("", "expected a mapping")]
    for key in spec:
        if key not in SPEC_FIELDS:
            problems.append((str(key), f"unknown field (expected one of: {', '.join(SPEC_FIELDS)})"))
    name = spec.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        problems.append(("name", "expected a name of lowercase letters, digits and '-' (at most 32)"))
    fmt = spec.get("format", "json")
    if fmt not in FORMATS:
        problems.append(("format", f"expected one of {', '.join(FORMATS)}, got {fmt!r}"))
    on = spec.get("on", list(EVENTS))
    if (
        not isinstance(on, list | tuple)
        or not on
        or any(e not in EVENTS for e in on)
        or len(set(on)) != len(on)
    ):
        problems.append(("on", f"expected a list of distinct events from {', '.join(EVENTS)}"))
    url, url_file = spec.get("url"), spec.get("url_file")
    if (url is None) == (url_file is None):
        problems.append(("url", "expected exactly one of a literal URL and a URL from a Secret"))
    elif url is not None:
        why = url_problem(url, literal=True)
        if why:
            problems.append(("url", why))
        elif fmt in ("slack", "teams"):
            problems.append(
                (
                    "url",
                    f"expected the URL of a {fmt} webhook in a Secret (urlSecret): the URL itself is its key",
                )
            )
    for key in ("url_file", "secret_file", "ca_file"):
        value = spec.get(key)
        if value is not None and (not isinstance(value, str) or not value.startswith("/")):
            problems.append((key, "expected an absolute file path"))
    if isinstance(url, str) and url.startswith("http://") and spec.get("ca_file"):
        problems.append(("ca_file", "expected an https:// URL with a CA bundle"))
    return problems


def parse_target(spec: dict, where: str = "--notify") -> Target:
    """The target of a checked spec; one :class:`UsageError` line for the first problem."""
    problems = spec_problems(spec)
    if problems:
        field_name, why = problems[0]
        raise UsageError(f"{where}: {field_name}: {why}" if field_name else f"{where}: {why}")
    return Target(
        name=spec["name"],
        format=spec.get("format", "json"),
        on=tuple(spec.get("on", EVENTS)),
        url=spec.get("url"),
        url_file=spec.get("url_file"),
        secret_file=spec.get("secret_file"),
        ca_file=spec.get("ca_file"),
    )


def parse_arg(text: str) -> Target:
    """A target from the JSON object of one ``--notify`` option."""
    try:
        spec = json.loads(text)
    except ValueError:
        raise UsageError(
            "--notify: expected a JSON object with name, url or url_file, format and on"
        ) from None
    return parse_target(spec)


# -- messages --------------------------------------------------------------------------------------------


def event_of(summary: dict) -> str:
    """``commit`` when finalize committed the backup, else ``failure``."""
    return "commit" if summary.get("committed") else "failure"


def event_data(event: str, summary: dict, plan, time: str, delivery: str) -> dict:
    """The facts a message tells (no secret: names, IDs, outcome and the problems' one-line reasons)."""
    problems = [str(p)[:MAX_PROBLEM] for p in (summary.get("problems") or [])][:MAX_PROBLEMS]
    if summary.get("error"):
        problems.insert(0, str(summary["error"])[:MAX_PROBLEM])
    source = getattr(plan, "source", None)
    app = getattr(plan, "app", None)
    return {
        "event": event,
        "delivery": delivery,
        "time": time,
        "backup_id": summary.get("backup_id"),
        "workflow_status": summary.get("workflow_status"),
        "committed": bool(summary.get("committed")),
        "record": summary.get("record"),
        "cluster": getattr(app, "cluster", None),
        "namespace": getattr(app, "namespace", None),
        "policy": getattr(app, "policy", None) or None,
        "app": None if source is not None else getattr(app, "name", None),
        "source": None if source is None else f"{source.kind}/{source.name}",
        "problems": problems[:MAX_PROBLEMS],
    }


def _headline(data: dict) -> str:
    what = data["source"] or f"{data['namespace']}/{data['app']}"
    if data["event"] == "commit":
        return f"Backup {data['backup_id']} of {what} committed"
    return f"Backup {data['backup_id']} of {what} FAILED (workflow {data['workflow_status']}, not committed)"


def build_body(fmt: str, data: dict) -> bytes:
    """The exact bytes posted in ``fmt`` (``json``: the facts; ``slack``: an incoming-webhook message;
    ``teams``: a message with an Adaptive Card, as Teams' workflow webhooks take)."""
    headline = _headline(data)
    facts = [
        (k, str(data[k]))
        for k in ("cluster", "policy", "backup_id", "workflow_status", "record", "time")
        if data.get(k) is not None
    ]
    if fmt == "json":
        body: dict = {"snapflow": 1, **data, "summary": headline}
    elif fmt == "slack":
        lines = [f"*{headline}*"] + [f"{k}: `{v}`" for k, v in facts] + [f"> {p}" for p in data["problems"]]
        body = {
            "text": headline,
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}}],
        }
    elif fmt == "teams":
        card = {
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "type": "AdaptiveCard",
            "version": "1.4",
            "body": [
                {"type": "TextBlock", "text": headline, "weight": "Bolder", "wrap": True,
                 "color": "Good" if data["event"] == "commit" else "Attention"},
                {"type": "FactSet", "facts": [{"title": k, "value": v} for k, v in facts]},
                *({"type": "TextBlock", "text": p, "wrap": True} for p in data["problems"]),
            ],
        }  # fmt: skip
        body = {
            "type": "message",
            "summary": headline,
            "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive", "content": card}],
        }
    else:
        raise UsageError(f"notification format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def signature(key: bytes, body: bytes) -> str:
    """The :data:`SIGNATURE_HEADER` value: ``sha256=`` and the hex HMAC-SHA256 of the exact body."""
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def headers(event: str, delivery: str, body: bytes, key: bytes | None) -> dict[str, str]:
    out = {"Content-Type": "application/json", EVENT_HEADER: event, DELIVERY_HEADER: delivery}
    if key is not None:
        out[SIGNATURE_HEADER] = signature(key, body)
    return out


def where(url: str) -> str:
    """What a log line may name of a URL: its scheme and host (the path of a Slack or Teams webhook is
    its key, a query string may hold a token)."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(unparsable URL)"
    return f"{parts.scheme}://{host}{port}"
