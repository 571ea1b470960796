"""Posting a message to a webhook: bounded in attempts and in time, no redirect to another host.

:func:`post` sends the exact body with its headers and returns a :class:`Delivery` (never raises for a
receiver's failure): a connection that fails, a timeout, HTTP 429 or 5xx is tried again after a backoff
(0.5 s, 1 s, 2 s, ... with jitter) while attempts and the total deadline last; any other 4xx is final.
A redirect is followed only to the same scheme, host and port (at most 3), never elsewhere: the body
and its signature are for the host that was named. A host resolving to a link-local or cloud metadata
address is never posted to. https is verified against the CA bundle given, or
the system's. The response's body is read up to 64 KiB and dropped.

Errors are one line naming only the scheme and host of the URL (its path or query may be a key).
:func:`read_key_file` reads a mounted Secret's key (the URL or the HMAC key).
"""

from __future__ import annotations

import random
import time
import urllib.parse
from dataclasses import dataclass

from steps.errors import UsageError

MAX_REDIRECTS = 3
MAX_RESPONSE = 64 * 1024
RETRY_STATUS = {408, 429, 500, 502, 503, 504}


@dataclass
class Delivery:
    ok: bool
    status: int | None = None  # the last HTTP status, if any answer came
    attempts: int = 0
    error: str | None = None  # one line, no URL path or query, no secret
    seconds: float = 0.0


def read_key_file(path: str, what: str) -> bytes:
    """The content of a mounted Secret's key, without surrounding whitespace; one line when unreadable."""
    try:
        with open(path, "rb") as f:
            value = f.read(1024 * 1024).strip()
    except OSError as err:
        raise UsageError(f"{what}: cannot read {path!r} ({err.strerror or type(err).__name__})") from None
    if not value:
        raise UsageError(f"{what}: {path!r} is empty")
    return value


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, (parts.hostname or "").lower(), port


def _host(url: str) -> str:
    scheme, host, port = _origin(url)
    return f"{scheme}://{host}:{port}"


def post(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    ca_file: str | None = None,
    attempts: int = 4,
    deadline_s: float = 30.0,
    connect_timeout_s: float = 5.0,
    read_timeout_s: float = 10.0,
    backoff_s: float = 0.5,
) -> Delivery:
    """POST ``body`` to ``url``; at most ``attempts`` tries and ``deadline_s`` seconds in all."""
    import certifi
    import urllib3

    start = time.monotonic()
    end = start + deadline_s
    tls = {}
    if url.startswith("https://"):
        tls = {"cert_reqs": "CERT_REQUIRED", "ca_certs": ca_file or certifi.where()}
    pool = urllib3.PoolManager(retries=False, **tls)
    result = Delivery(ok=False)
    delay = backoff_s
    try:
        while result.attempts < attempts:
            left = end - time.monotonic()
            if left <= 0.05:
                result.error = result.error or "no time left"
                break
            result.attempts += 1
            retry = False
            try:
                status = _post_once(pool, url, body, headers, left, connect_timeout_s, read_timeout_s)
                result.status = status
                if 200 <= status < 300:
                    result.ok, result.error = True, None
                    break
                result.error = f"HTTP {status}"
                retry = status in RETRY_STATUS
            except _Refused as err:
                result.error = str(err)
            except urllib3.exceptions.SSLError:  # a certificate does not get better by asking again
                result.error = "TLS verification failed"
            except (urllib3.exceptions.HTTPError, OSError) as err:
                result.error = _reason(err)
                retry = True
            if not retry:
                break
            pause = delay * (0.5 + random.random())
            if time.monotonic() + pause >= end:
                break
            time.sleep(pause)
            delay *= 2
    finally:
        pool.clear()
        result.seconds = round(time.monotonic() - start, 3)
    return result


class _Refused(Exception):
    """A final failure that is not the receiver's answer (a redirect elsewhere, too many redirects)."""


def _post_once(pool, url, body, headers, left, connect_s, read_s) -> int:
    import urllib3

    target = url
    for _ in range(MAX_REDIRECTS + 1):
        _check_address(target)
        timeout = urllib3.Timeout(connect=min(connect_s, left), read=min(read_s, left), total=left)
        response = pool.request(
            "POST", target, body=body, headers=headers, redirect=False, timeout=timeout, preload_content=False
        )
        try:
            response.read(MAX_RESPONSE)
        finally:
            response.release_conn()
        if response.status not in (301, 302, 303, 307, 308):
            return response.status
        location = response.headers.get("Location") or ""
        following = urllib.parse.urljoin(target, location)
        if not location or _origin(following) != _origin(url):
            raise _Refused(
                f"HTTP {response.status} redirect to {_host(following) if location else 'nowhere'} not"
                " followed (only to the same host)"
            )
        target = following
    raise _Refused(f"more than {MAX_REDIRECTS} redirects")


# Addresses a webhook is never posted to: link-local (the cloud metadata services at 169.254.169.254 and
# fd00:ec2::254 among them, which hand out the node's credentials) and Alibaba's metadata address. A
# notification is a fixed POST whose answer is dropped, but its logged status would still tell whoever
# may write policies what listens there. Private and loopback addresses stay allowed (receivers inside
# the cluster; loopback is the finalize pod itself).
_FORBIDDEN_NETS = ("169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128", "100.100.100.200/32")


def forbidden_address(address: str) -> str | None:
    """Why a webhook must not be posted to this IP address, or None (not an IP, or allowed)."""
    import ipaddress

    try:
        ip = ipaddress.ip_address(address.strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    if getattr(ip, "ipv4_mapped", None):
        ip = ip.ipv4_mapped
    for net in _FORBIDDEN_NETS:
        if ip.version == ipaddress.ip_network(net).version and ip in ipaddress.ip_network(net):
            return "a link-local or cloud metadata address (never posted to)"
    return None


def _check_address(url: str) -> None:
    """Refuse a host that resolves to a link-local or metadata address (the name may say otherwise).
    Checked before each request; a name that changes its answer between this check and the connection
    is not caught (the receiver's name is the policy author's)."""
    import socket

    _scheme, host, port = _origin(url)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return  # the request itself says the name does not resolve
    for info in infos:
        address = str(info[4][0])
        why = forbidden_address(address)
        if why:
            raise _Refused(f"{host} resolves to {address}, {why}")


def _reason(err: Exception) -> str:
    import urllib3

    inner = getattr(err, "reason", None) or err
    if isinstance(err, urllib3.exceptions.MaxRetryError) and err.reason is not None:
        inner = err.reason
    # (urllib3's NewConnectionError is a kind of ConnectTimeoutError: asked first)
    if isinstance(inner, urllib3.exceptions.NewConnectionError | ConnectionRefusedError):
        return "connection refused or unreachable"
    if isinstance(inner, urllib3.exceptions.TimeoutError) or "timed out" in str(inner).lower():
        return "timed out"
    if isinstance(inner, urllib3.exceptions.SSLError):
        return "TLS verification failed"
    return type(inner).__name__
