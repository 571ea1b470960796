"""A small client of the OCI Distribution API (Harbor, distribution, any OCI registry). Called by
``registry-backup`` and ``registry-restore``.

Provides :class:`RegistryEndpoint` (where and how to connect), :func:`read_password_file` and
:class:`RegistryClient` (manifests, blobs, tags, the catalog; pull and push). References and media types
are in :mod:`steps.drivers.registry_reference`; staging images on disk in
:mod:`steps.drivers.registry_stage`; pushing a staged backup in :mod:`steps.drivers.registry_push`.

What it guarantees:

- every manifest and blob read is checked against its digest while it streams, before anything uses
  it; blobs go to a file, never into memory; manifests are kept as the registry served them and pushed
  back byte for byte, with the media type they were served with;
- the CA bundle given is the only one trusted for the registry and its token realm (the environment's
  ``SSL_CERT_FILE`` or ``REQUESTS_CA_BUNDLE`` play no part: this client is built on :mod:`http.client`
  and :mod:`ssl`); a blob download redirected to another host, which gets no credentials, may also be
  served under the system's CAs;
- credentials go only to the registry's own host and to the token realm it names: a redirect to
  another host (a blob served from object storage) is followed without them, and never from https
  down to http;
- Bearer tokens are fetched per scope (``repository:NAME:pull`` or ``repository:NAME:pull,push``), so a
  token granted for pulling is never presented for a push.

Errors: an unreachable registry is a :class:`~steps.errors.TemporaryError`; refused credentials, an
unknown CA, a digest that does not match, a manifest that is not JSON or refers to itself are
:class:`~steps.errors.PermanentError` or :class:`~steps.errors.IntegrityError`; every message is one line
naming the registry (and the repository and digest concerned).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import re
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode, urljoin, urlsplit

from steps.drivers.registry_reference import (
    _DIGEST,
    _REPO_NAME,
    _TAG,
    ACCEPT,
    DEFAULT_CHUNK,
    MANIFEST_TYPES,
    MAX_MANIFEST_BYTES,
    OCI_INDEX,
    OCI_MANIFEST,
    READ_SIZE,
)
from steps.errors import IntegrityError, PermanentError, TemporaryError, UsageError, printable

MAX_REDIRECTS = 5


@dataclass
class RegistryEndpoint:
    """Where the registry is and how to talk to it. ``password`` is never shown."""

    url: str
    ca_file: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    connect_timeout: float = 10.0
    read_timeout: float = 60.0

    def __post_init__(self) -> None:
        parts = urlsplit(self.url.rstrip("/"))
        if parts.scheme not in ("https", "http") or not parts.hostname or parts.path not in ("", "/"):
            raise UsageError(f"--registry: expected https://HOST[:PORT], got {printable(self.url)!r}")
        if parts.username or parts.password:
            raise UsageError(
                "--registry: credentials do not belong in the URL (use --username/--password-file)"
            )
        self.url = f"{parts.scheme}://{parts.netloc}"
        if self.ca_file is not None and not os.path.isfile(self.ca_file):
            raise UsageError(f"--ca: {self.ca_file!r} is not a file")

    @property
    def host(self) -> str:
        return urlsplit(self.url).netloc


def read_password_file(path: str) -> str:
    """The password or token in ``path`` (a mounted Secret), without its trailing newline."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"--password-file: cannot read {path!r} ({err.__class__.__name__})") from None


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    return (
        parts.scheme,
        (parts.hostname or "").lower(),
        parts.port or (443 if parts.scheme == "https" else 80),
    )


def _challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.strip().partition(" ")
    params = dict((k.lower(), v) for k, v in re.findall(r'([A-Za-z_]+)="([^"]*)"', rest))
    return scheme.lower(), params


def _next_link(header: str | None) -> str | None:
    match = re.search(r'<([^>]+)>\s*;\s*rel="?next"?', header or "")
    return match.group(1) if match else None


class Response:
    """An open response; read its body with :meth:`read` or :meth:`stream`, then :meth:`close`."""

    def __init__(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse, url: str):
        self.conn, self.resp, self.url = conn, resp, url
        self.status = resp.status
        self.headers = resp.headers

    def read(self, limit: int) -> bytes:
        data = self.resp.read(limit + 1)
        if len(data) > limit:
            raise IntegrityError(f"{self.url}: response larger than {limit} bytes")
        return data

    def stream(self) -> Iterator[bytes]:
        while True:
            data = self.resp.read(READ_SIZE)
            if not data:
                return
            yield data

    def close(self) -> None:
        self.conn.close()


class RegistryClient:
    """One registry. Not thread-safe: each thread makes its own."""

    def __init__(self, endpoint: RegistryEndpoint):
        self.endpoint = endpoint
        self.where = f"registry {endpoint.host}"
        self._context = None
        self._storage_context = None
        self._basic = False  # the registry asked for Basic credentials
        self._tokens: dict[str, str] = {}  # scope → Bearer token
        self._challenge: dict[str, str] | None = None  # the Bearer challenge's realm and service
        self.token_scopes: list[str] = []  # every scope a token was asked for, in order

    # ---------------------------------------------------------------------------------------- transport

    def _ssl_context(self) -> ssl.SSLContext:
        if self._context is None:
            try:
                if self.endpoint.ca_file:
                    # only the given bundle: create_default_context loads no default paths when given one
                    self._context = ssl.create_default_context(cafile=self.endpoint.ca_file)
                else:
                    self._context = ssl.create_default_context()
            except (ssl.SSLError, OSError) as err:
                raise UsageError(
                    f"--ca: cannot read {self.endpoint.ca_file!r} as a PEM CA bundle ({err})"
                ) from None
        return self._context

    def _redirect_context(self) -> ssl.SSLContext:
        """For a blob download redirected to another host (object storage behind the registry), which
        gets no credentials and whose bytes are checked against their digest: the system's CAs and the
        given bundle."""
        if self._storage_context is None:
            context = ssl.create_default_context()
            if self.endpoint.ca_file:
                self._ssl_context()  # a bundle that does not load is named first
                context.load_verify_locations(cafile=self.endpoint.ca_file)
            self._storage_context = context
        return self._storage_context

    def _connect(self, url: str, redirected: bool = False) -> http.client.HTTPConnection:
        scheme, host, port = _origin(url)
        if scheme == "https":
            conn = http.client.HTTPSConnection(
                host,
                port,
                timeout=self.endpoint.connect_timeout,
                context=self._redirect_context() if redirected else self._ssl_context(),
                blocksize=READ_SIZE,
            )
        else:
            conn = http.client.HTTPConnection(
                host, port, timeout=self.endpoint.connect_timeout, blocksize=READ_SIZE
            )
        return conn

    def _send(self, method: str, url: str, headers: dict, body=None, redirected: bool = False) -> Response:
        conn = self._connect(url, redirected)
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        try:
            conn.connect()
            conn.sock.settimeout(self.endpoint.read_timeout)
            conn.request(method, target, body=body, headers=headers)
            resp = conn.getresponse()
        except ssl.SSLCertVerificationError as err:
            conn.close()
            reason = err.verify_message or str(err)
            raise PermanentError(
                f"{self.where}: the TLS certificate of {parts.netloc} is not trusted ({reason}); give the CA that"
                " signed it with --ca"
            ) from None
        except ssl.SSLError as err:
            conn.close()
            raise PermanentError(
                f"{self.where}: TLS handshake with {parts.netloc} failed ({err.reason or err})"
            ) from None
        except TimeoutError:
            conn.close()
            raise TemporaryError(
                f"{self.where}: {parts.netloc} did not answer in time ({method} {parts.path})"
            ) from None
        except socket.gaierror as err:
            conn.close()
            raise TemporaryError(f"{self.where}: cannot resolve {parts.hostname} ({err.strerror})") from None
        except (ConnectionError, OSError, http.client.HTTPException) as err:
            conn.close()
            text = getattr(err, "strerror", None) or str(err) or type(err).__name__
            raise TemporaryError(f"{self.where}: cannot reach {parts.netloc} ({text})") from None
        return Response(conn, resp, url)

    def _fail(self, resp: Response, doing: str) -> None:
        """Raise the error ``resp`` (not 2xx) means."""
        try:
            body = resp.read(64 * 1024)
        except Exception:
            body = b""
        resp.close()
        detail = ""
        try:
            errors = json.loads(body).get("errors") or []
            detail = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors if isinstance(e, dict))
        except (ValueError, AttributeError):
            pass
        detail = f" ({printable(detail[:200])})" if detail else ""
        status = resp.status
        if status in (401, 403):
            raise PermanentError(
                f"{self.where}: {doing}: access refused (HTTP {status}), check the credentials{detail}"
            )
        if status == 404:
            raise PermanentError(f"{self.where}: {doing}: not found (HTTP 404){detail}")
        if status == 429 or status >= 500:
            raise TemporaryError(f"{self.where}: {doing}: HTTP {status}{detail}")
        raise PermanentError(f"{self.where}: {doing}: HTTP {status}{detail}")

    # --------------------------------------------------------------------------------------------- auth

    def _basic_header(self) -> str:
        creds = f"{self.endpoint.username or ''}:{self.endpoint.password or ''}".encode()
        return "Basic " + base64.b64encode(creds).decode()

    def _auth_header(self, scope: str) -> str | None:
        if scope in self._tokens:
            return "Bearer " + self._tokens[scope]
        if self._challenge is not None:
            return "Bearer " + self._fetch_token(scope)
        if self._basic:
            return self._basic_header()
        return None

    def _fetch_token(self, scope: str) -> str:
        realm = self._challenge.get("realm", "")
        if urlsplit(realm).scheme not in ("https", "http") or (
            urlsplit(realm).scheme == "http" and urlsplit(self.endpoint.url).scheme == "https"
        ):
            raise PermanentError(
                f"{self.where}: refuses to send credentials to the token realm {printable(realm)!r}"
            )
        # a mount reads from a second repository: its scopes are joined by a space in ours
        params = [("service", self._challenge["service"])] if self._challenge.get("service") else []
        params += [("scope", s) for s in scope.split(" ")]
        url = realm + ("&" if "?" in realm else "?") + urlencode(params)
        headers = {"Accept": "application/json"}
        if self.endpoint.username:
            headers["Authorization"] = self._basic_header()
        self.token_scopes.append(scope)
        resp = self._send("GET", url, headers)
        if resp.status != 200:
            self._fail(resp, f"token for {scope}")
        try:
            data = json.loads(resp.read(1024 * 1024))
            token = data.get("token") or data.get("access_token")
        except (ValueError, AttributeError):
            token = None
        finally:
            resp.close()
        if not isinstance(token, str) or not token:
            raise PermanentError(
                f"{self.where}: the token server {urlsplit(realm).netloc} answered without a token"
            )
        self._tokens[scope] = token
        return token

    def request(
        self,
        method: str,
        url: str,
        scope: str,
        headers: dict | None = None,
        body=None,
        follow: bool = False,
        doing: str = "",
    ) -> Response:
        """``method`` on ``url`` (a path on the registry or a full URL) with the credentials of ``scope``;
        answers one authentication challenge; follows redirects when ``follow`` (without credentials
        to another host)."""
        url = urljoin(self.endpoint.url + "/", url)
        base_headers = dict(headers or {})
        for attempt in range(2):
            sent = dict(base_headers)
            auth = self._auth_header(scope) if scope else None
            if auth:
                sent["Authorization"] = auth
            if hasattr(body, "seek"):
                body.seek(0)
            resp = self._send(method, url, sent, body)
            if resp.status == 401 and attempt == 0:
                challenge = resp.headers.get("WWW-Authenticate", "")
                resp.close()
                kind, params = _challenge(challenge)
                if kind == "bearer" and params.get("realm"):
                    self._challenge = params
                    self._tokens.pop(scope, None)
                    continue
                if kind == "basic" and self.endpoint.username and not self._basic:
                    self._basic = True
                    continue
                raise PermanentError(
                    f"{self.where}: {doing or method + ' ' + urlsplit(url).path}: access refused (HTTP 401),"
                    " check the credentials"
                )
            break
        hops = 0
        while follow and resp.status in (301, 302, 303, 307, 308):
            location = resp.headers.get("Location")
            resp.close()
            hops += 1
            if not location or hops > MAX_REDIRECTS:
                raise PermanentError(
                    f"{self.where}: {doing}: too many redirects or a redirect without Location"
                )
            target = urljoin(url, location)
            if urlsplit(target).scheme not in ("https", "http") or (
                urlsplit(url).scheme == "https" and urlsplit(target).scheme == "http"
            ):
                raise PermanentError(
                    f"{self.where}: {doing}: refuses a redirect from https to {printable(urlsplit(target).scheme)!r}"
                )
            hop_headers = dict(base_headers)
            same_origin = _origin(target) == _origin(self.endpoint.url)
            if same_origin:
                auth = self._auth_header(scope) if scope else None
                if auth:
                    hop_headers["Authorization"] = auth
            url = target
            resp = self._send("GET", url, hop_headers, redirected=not same_origin)
        return resp

    # ---------------------------------------------------------------------------------------- reading

    def get_manifest(self, repository: str, ref: str) -> tuple[bytes, str, str]:
        """``(bytes, media_type, digest)`` of the manifest ``ref`` (a tag or a digest) of ``repository``:
        the bytes verbatim, checked against the digest asked for (or the one the registry names)."""
        scope = f"repository:{repository}:pull"
        doing = (
            f"manifest {repository}:{ref}"
            if not ref.startswith("sha256:")
            else f"manifest {repository}@{ref}"
        )
        resp = self.request(
            "GET",
            f"/v2/{repository}/manifests/{quote(ref, safe=':')}",
            scope,
            {"Accept": ACCEPT},
            follow=True,
            doing=doing,
        )
        if resp.status != 200:
            self._fail(resp, doing)
        try:
            data = resp.read(MAX_MANIFEST_BYTES)
        finally:
            resp.close()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        expected = ref if ref.startswith("sha256:") else resp.headers.get("Docker-Content-Digest")
        if expected and expected != digest:
            raise IntegrityError(
                f"{self.where}: {doing}: its bytes have digest {digest}, not {printable(expected)}; nothing was stored"
            )
        try:
            doc = json.loads(data)
            if not isinstance(doc, dict):
                raise ValueError("not an object")
        except ValueError:
            raise IntegrityError(
                f"{self.where}: {doing}: the manifest is not a JSON object; nothing was stored"
            ) from None
        media_type = (resp.headers.get("Content-Type") or "").split(";")[0].strip()
        if media_type not in MANIFEST_TYPES:
            media_type = doc.get("mediaType") if doc.get("mediaType") in MANIFEST_TYPES else media_type
        if media_type not in MANIFEST_TYPES:
            if doc.get("schemaVersion") == 2 and "layers" in doc:
                media_type = OCI_MANIFEST
            elif doc.get("schemaVersion") == 2 and "manifests" in doc:
                media_type = OCI_INDEX
            else:
                raise IntegrityError(
                    f"{self.where}: {doing}: unsupported manifest type {printable(media_type or 'none')!r}"
                    " (schema 1 and unknown types are not backed up)"
                )
        return data, media_type, digest

    def manifest_digest(self, repository: str, tag: str) -> str | None:
        """The digest tag ``tag`` of ``repository`` points to, from a HEAD (no body); None when the
        registry does not name a well-formed one (the caller then GETs the manifest)."""
        doing = f"manifest {repository}:{tag}"
        resp = self.request(
            "HEAD",
            f"/v2/{repository}/manifests/{quote(tag, safe=':')}",
            f"repository:{repository}:pull",
            {"Accept": ACCEPT},
            follow=False,
            doing=doing,
        )
        resp.close()
        if resp.status != 200:
            return None
        named = (resp.headers.get("Docker-Content-Digest") or "").strip()
        return named if _DIGEST.fullmatch(named) else None

    def blob_to_file(self, repository: str, digest: str, path: str, size: int | None = None) -> int:
        """Stream blob ``digest`` into a new file ``path`` checking its digest (and ``size`` when
        known); the file is removed when they do not match. Returns the size."""
        doing = f"blob {repository}@{digest}"
        resp = self.request(
            "GET",
            f"/v2/{repository}/blobs/{digest}",
            f"repository:{repository}:pull",
            follow=True,
            doing=doing,
        )
        if resp.status != 200:
            self._fail(resp, doing)
        h, n = hashlib.sha256(), 0
        try:
            with open(path, "xb") as f:
                try:
                    for data in resp.stream():
                        h.update(data)
                        n += len(data)
                        if size is not None and n > size:
                            break
                        f.write(data)
                except (TimeoutError, OSError, http.client.HTTPException) as err:
                    if (
                        isinstance(err, OSError)
                        and err.errno is not None
                        and not isinstance(err, ConnectionError)
                    ):
                        raise PermanentError(f"--scratch: cannot write {path!r} ({err.strerror})") from None
                    raise TemporaryError(f"{self.where}: {doing}: the download broke off ({err})") from None
        except BaseException:
            resp.close()
            _unlink(path)
            raise
        resp.close()
        got = "sha256:" + h.hexdigest()
        if got != digest or (size is not None and n != size):
            _unlink(path)
            what = f"{n} bytes with digest {got}" if got != digest else f"{n} bytes, not {size}"
            raise IntegrityError(f"{self.where}: {doing}: the registry served {what}; nothing was stored")
        return n

    def list_tags(self, repository: str, page: int = 100) -> list[str]:
        """Every tag of ``repository``, page by page (``n``/``last`` and the ``Link`` header)."""
        url = f"/v2/{repository}/tags/list?n={page}"
        tags: list[str] = []
        for _ in range(100000):
            resp = self.request("GET", url, f"repository:{repository}:pull", doing=f"tags of {repository}")
            if resp.status == 404:
                resp.close()
                return tags
            if resp.status != 200:
                self._fail(resp, f"tags of {repository}")
            try:
                doc = json.loads(resp.read(8 * 1024 * 1024))
            except ValueError:
                raise IntegrityError(f"{self.where}: the tag list of {repository} is not JSON") from None
            finally:
                resp.close()
            if not isinstance(doc, dict):
                raise IntegrityError(f"{self.where}: the tag list of {repository} is not a JSON object")
            new = [t for t in (doc.get("tags") or []) if isinstance(t, str) and _TAG.fullmatch(t)]
            tags.extend(new)
            link = _next_link(resp.headers.get("Link"))
            if not link or not new:
                break
            url = link
        return sorted(set(tags))

    def catalog(self, page: int = 100) -> list[str]:
        """Every repository of the registry (``/v2/_catalog``, paginated)."""
        url = f"/v2/_catalog?n={page}"
        names: list[str] = []
        for _ in range(100000):
            resp = self.request("GET", url, "registry:catalog:*", doing="catalog")
            if resp.status != 200:
                self._fail(resp, "catalog (listing repositories)")
            try:
                doc = json.loads(resp.read(16 * 1024 * 1024))
            except ValueError:
                raise IntegrityError(f"{self.where}: the catalog is not JSON") from None
            finally:
                resp.close()
            new = [
                r for r in (doc.get("repositories") or []) if isinstance(r, str) and _REPO_NAME.fullmatch(r)
            ]
            names.extend(new)
            link = _next_link(resp.headers.get("Link"))
            if not link or not new:
                break
            url = link
        return sorted(set(names))

    # ---------------------------------------------------------------------------------------- writing

    def _push_scope(self, repository: str) -> str:
        return f"repository:{repository}:pull,push"

    def blob_exists(self, repository: str, digest: str) -> bool:
        resp = self.request(
            "HEAD",
            f"/v2/{repository}/blobs/{digest}",
            self._push_scope(repository),
            follow=False,
            doing=f"blob {repository}@{digest}",
        )
        resp.close()
        if resp.status in (200, 307, 302):
            return True
        if resp.status == 404:
            return False
        self._fail(resp, f"blob {repository}@{digest}")
        return False

    def mount_blob(self, repository: str, digest: str, source: str) -> bool | str:
        """Cross-repository mount of ``digest`` from ``source``: True when mounted; else the upload
        session the registry opened instead (its Location, for :meth:`push_blob` to continue, as the
        spec asks), or False when it opened none."""
        scope = f"{self._push_scope(repository)} repository:{source}:pull"
        query = urlencode({"mount": digest, "from": source})
        resp = self.request(
            "POST",
            f"/v2/{repository}/blobs/uploads/?{query}",
            scope,
            {"Content-Length": "0"},
            body=b"",
            doing=f"mount {digest} into {repository}",
        )
        resp.close()
        if resp.status == 201:
            return True
        if resp.status == 202 and resp.headers.get("Location"):
            return resp.headers["Location"]
        if resp.status in (401, 403, 404):
            return False
        self._fail(resp, f"mount {digest} into {repository}")
        return False

    def push_blob(
        self,
        repository: str,
        digest: str,
        path: str,
        chunk_size: int = DEFAULT_CHUNK,
        location: str | None = None,
    ) -> None:
        """Upload the file ``path`` as blob ``digest``: in one PUT when it fits in ``chunk_size``, else
        in PATCH chunks; the registry checks the digest too. ``location``: an upload session already
        open (a mount the registry answered with one)."""
        scope = self._push_scope(repository)
        doing = f"push blob {repository}@{digest}"
        size = os.path.getsize(path)
        if location is None:
            resp = self.request(
                "POST",
                f"/v2/{repository}/blobs/uploads/",
                scope,
                {"Content-Length": "0"},
                body=b"",
                doing=doing,
            )
            resp.close()
            if resp.status != 202 or not resp.headers.get("Location"):
                self._fail(resp, doing)
            location = resp.headers["Location"]
        with open(path, "rb") as f:
            offset = 0
            if size > chunk_size:
                while offset < size:
                    length = min(chunk_size, size - offset)
                    headers = {
                        "Content-Type": "application/octet-stream",
                        "Content-Length": str(length),
                        "Content-Range": f"{offset}-{offset + length - 1}",
                    }
                    body = _FileBody(f, offset, length)
                    resp = self.request("PATCH", location, scope, headers, body=body, doing=doing)
                    resp.close()
                    if resp.status != 202 or not resp.headers.get("Location"):
                        self._fail(resp, doing)
                    location = resp.headers["Location"]
                    offset += length
                body, length = b"", 0
            else:
                body, length = _FileBody(f, 0, size), size
            sep = "&" if "?" in location else "?"
            headers = {"Content-Type": "application/octet-stream", "Content-Length": str(length)}
            resp = self.request(
                "PUT",
                f"{location}{sep}digest={quote(digest, safe=':')}",
                scope,
                headers,
                body=body,
                doing=doing,
            )
            resp.close()
        if resp.status != 201:
            self._fail(resp, doing)
        named = resp.headers.get("Docker-Content-Digest")
        if named and named != digest:
            raise IntegrityError(f"{self.where}: {doing}: the registry stored it as {printable(named)}")

    def put_manifest(self, repository: str, ref: str, data: bytes, media_type: str) -> None:
        """Push manifest bytes verbatim under ``ref`` (a tag or their digest)."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        doing = (
            f"push manifest {repository}:{ref}"
            if not ref.startswith("sha256:")
            else f"push manifest {repository}@{ref}"
        )
        headers = {"Content-Type": media_type, "Content-Length": str(len(data))}
        resp = self.request(
            "PUT",
            f"/v2/{repository}/manifests/{quote(ref, safe=':')}",
            self._push_scope(repository),
            headers,
            body=data,
            doing=doing,
        )
        resp.close()
        if resp.status != 201:
            self._fail(resp, doing)
        named = resp.headers.get("Docker-Content-Digest")
        if named and named != digest:
            raise IntegrityError(
                f"{self.where}: {doing}: the registry stored it as {printable(named)}, not {digest}"
            )


class _FileBody:
    """``length`` bytes of a file from ``start``, given to http.client as a body (read 1 MiB at a time,
    never whole); a retry after an authentication challenge sends them again from ``start``."""

    def __init__(self, f, start: int, length: int):
        self.f, self.start, self.left = f, start, length
        self.length = length

    def seek(self, _pos: int) -> None:
        self.f.seek(self.start)
        self.left = self.length

    def read(self, n: int = -1) -> bytes:
        want = READ_SIZE if n is None or n < 0 else min(n, READ_SIZE)
        data = self.f.read(min(want, self.left))
        self.left -= len(data)
        return data


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
