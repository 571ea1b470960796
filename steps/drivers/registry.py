"""A small client of the OCI Distribution API (Harbor, distribution, any OCI registry), and the staging
of images on local disk. Called by ``registry-backup`` and ``registry-restore``.

Provides :class:`RegistryEndpoint` (where and how to connect), :class:`RegistryClient` (manifests,
blobs, tags, the catalog; pull and push), :func:`parse_reference` and :func:`collect` (an image and
every manifest and blob below it).

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
import shutil
import socket
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode, urljoin, urlsplit

from steps.errors import IntegrityError, PermanentError, TemporaryError, UsageError, printable

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, DOCKER_LIST)
ACCEPT = ", ".join(MANIFEST_TYPES)

MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # what distribution itself accepts
MAX_DEPTH = 8  # an index of indexes of ... deeper than this is refused
MAX_REDIRECTS = 5
READ_SIZE = 1024 * 1024
DEFAULT_CHUNK = 64 * 1024 * 1024

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_REPO_NAME = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def check_digest(value: str, what: str) -> str:
    if not _DIGEST.fullmatch(value or ""):
        raise IntegrityError(
            f"{what}: expected a digest sha256:<64 hex digits>, got {printable(str(value))!r}"
        )
    return value


def check_repository_name(value: str, what: str) -> str:
    if len(value) > 255 or not _REPO_NAME.fullmatch(value):
        raise UsageError(f"{what}: expected a repository name (lower-case path), got {printable(value)!r}")
    return value


def check_tag(value: str, what: str) -> str:
    if not _TAG.fullmatch(value):
        raise UsageError(f"{what}: expected a tag ([A-Za-z0-9_.-], at most 128), got {printable(value)!r}")
    return value


@dataclass(frozen=True)
class Reference:
    """``host/repository[:tag][@digest]``; ``host`` may be empty (the registry given elsewhere)."""

    host: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    def __str__(self) -> str:
        text = f"{self.host}/{self.repository}" if self.host else self.repository
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse_reference(text: str, what: str = "--image") -> Reference:
    """An image reference as Kubernetes reports it (``imageID``: ``docker-pullable://HOST/REPO@DIGEST``
    too) or as written in a pod spec."""
    raw = text.strip()
    for prefix in ("docker-pullable://", "docker://", "containerd://"):
        if raw.startswith(prefix):
            raw = raw[len(prefix) :]
    name, _, digest = raw.partition("@")
    tag = None
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, _, tag = name.rpartition(":")
    host = ""
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        host, name = first, rest
    if not name:
        raise UsageError(f"{what}: expected [HOST/]REPOSITORY[:TAG][@sha256:DIGEST], got {printable(text)!r}")
    check_repository_name(name, what)
    if tag is not None:
        check_tag(tag, what)
    if digest:
        if not _DIGEST.fullmatch(digest):
            raise UsageError(
                f"{what}: expected a digest sha256:<64 hex digits> after '@', got {printable(text)!r}"
            )
    elif tag is None:
        tag = "latest"
    return Reference(host, name, tag, digest or None)


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


# ---------------------------------------------------------------------------------------- the image graph


def children_of(doc: dict, media_type: str) -> tuple[list[dict], list[dict]]:
    """``(manifests, blobs)`` a manifest refers to: an index's manifests; an image manifest's config,
    layers (and the subject it points at, another manifest)."""
    manifests: list[dict] = []
    blobs: list[dict] = []
    if media_type in INDEX_TYPES:
        manifests = [m for m in doc.get("manifests") or [] if isinstance(m, dict)]
    else:
        config = doc.get("config")
        if isinstance(config, dict):
            blobs.append(config)
        blobs.extend(m for m in doc.get("layers") or [] if isinstance(m, dict))
        # foreign (non-distributable) layers live elsewhere and are not the registry's to serve
        blobs = [b for b in blobs if not b.get("urls")]
    if isinstance(doc.get("subject"), dict):
        manifests.append(doc["subject"])
    return manifests, blobs


def manifest_children(data: bytes, media_type: str) -> tuple[list[str], list[tuple[str, int | None]]]:
    doc = json.loads(data)
    manifests, blobs = children_of(doc, media_type)
    return [m.get("digest") for m in manifests], [(b.get("digest"), b.get("size")) for b in blobs]


# ------------------------------------------------------------------------------------------- staging

DESCRIPTION_FILE = "registry.json"
MANIFEST_DIR = "manifests"
BLOB_DIR = "blobs"


def scratch_dir(scratch: str | None, prefix: str) -> str:
    """A new private directory under ``scratch`` (default: the system's temporary directory)."""
    if scratch is not None and not os.path.isdir(scratch):
        raise UsageError(f"--scratch: {scratch!r} is not a directory")
    path = tempfile.mkdtemp(prefix=prefix, dir=scratch)
    os.chmod(path, 0o700)
    return path


def remove_dir(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def staged_path(base: str, kind: str, digest: str) -> str:
    algorithm, _, hexdigest = digest.partition(":")
    return os.path.join(base, kind, algorithm, hexdigest)


@dataclass
class Stage:
    """What :func:`stage_images` put into its directory, and the statistics a summary shows."""

    dir: str
    repositories: dict[str, dict] = field(
        default_factory=dict
    )  # name → {"tags": {tag: digest}, "digests": [...]}
    manifests: dict[str, dict] = field(default_factory=dict)  # digest → {"media_type", "size"}
    blobs: dict[str, dict] = field(default_factory=dict)  # digest → {"size"}
    image_bytes: int = 0  # the sum of every image's size (what a copy without sharing would hold)

    def describe(self, registry: str, time: str, selection: dict) -> dict:
        return {
            "kind": "registry",
            "format": 1,
            "registry": registry,
            "time": time,
            "selection": selection,
            "repositories": self.repositories,
            "manifests": self.manifests,
            "blobs": self.blobs,
            "manifest_count": len(self.manifests),
            "blob_count": len(self.blobs),
            "blob_bytes": sum(b["size"] for b in self.blobs.values()),
            "image_bytes": self.image_bytes,
        }


def _fsync_write(path: str, data: bytes) -> None:
    with open(path, "xb") as f:
        f.write(data)


def stage_images(client: RegistryClient, roots: list[tuple[str, str]], workdir: str, progress=None) -> Stage:
    """Every manifest and blob below ``roots`` (``(repository, tag or digest)``) into ``workdir``:
    manifests as served, blobs streamed to files, each checked against its digest; a blob or manifest
    shared by several images (or repositories) is fetched once."""
    stage = Stage(workdir)
    for kind in (MANIFEST_DIR, BLOB_DIR):
        os.makedirs(os.path.join(workdir, kind, "sha256"), exist_ok=True)

    def visit(repository: str, ref: str, path: tuple[str, ...]) -> tuple[str, int]:
        """Fetch manifest ``ref`` and what it refers to; returns its digest and the image's size."""
        if len(path) > MAX_DEPTH:
            raise IntegrityError(
                f"{client.where}: manifest {repository}@{ref}: nested deeper than {MAX_DEPTH}"
            )
        data, media_type, digest = client.get_manifest(repository, ref)
        if digest in path:
            raise IntegrityError(
                f"{client.where}: manifest {repository}@{digest} refers to itself (through"
                f" {len(path) - path.index(digest)} level(s)); nothing was stored"
            )
        doing = f"manifest {repository}@{digest}"
        doc = json.loads(data)
        manifests, blobs = children_of(doc, media_type)
        total = len(data)
        for child in manifests:
            child_digest = check_digest(child.get("digest"), f"{client.where}: {doing}: a child manifest")
            if child_digest == digest or child_digest in path:
                raise IntegrityError(
                    f"{client.where}: {doing} refers to itself ({child_digest}); nothing was stored"
                )
            if child_digest in stage.manifests and child_digest not in path:
                total += stage.manifests[child_digest]["image_bytes"]
                continue
            _, size = visit(repository, child_digest, (*path, digest))
            total += size
        for blob in blobs:
            blob_digest = check_digest(blob.get("digest"), f"{client.where}: {doing}: a blob")
            size = blob.get("size")
            if not isinstance(size, int) or size < 0:
                raise IntegrityError(f"{client.where}: {doing}: blob {blob_digest} has no valid size")
            total += size
            if blob_digest in stage.blobs:
                continue
            target = staged_path(workdir, BLOB_DIR, blob_digest)
            got = client.blob_to_file(repository, blob_digest, target, size)
            stage.blobs[blob_digest] = {"size": got}
            if progress is not None:
                progress.add(got)
        if digest not in stage.manifests:
            _fsync_write(staged_path(workdir, MANIFEST_DIR, digest), data)
            stage.manifests[digest] = {"media_type": media_type, "size": len(data), "image_bytes": total}
        return digest, total

    for repository, ref in roots:
        entry = stage.repositories.setdefault(repository, {"tags": {}, "digests": []})
        digest, total = visit(repository, ref, ())
        stage.image_bytes += total
        if ref.startswith("sha256:"):
            if digest not in entry["digests"]:
                entry["digests"].append(digest)
        else:
            entry["tags"][ref] = digest
    return stage


def write_description(workdir: str, desc: dict) -> None:
    with open(os.path.join(workdir, DESCRIPTION_FILE), "w", encoding="utf-8") as f:
        json.dump(desc, f, indent=1, sort_keys=True)


def read_password_file(path: str) -> str:
    """The password or token in ``path`` (a mounted Secret), without its trailing newline."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"--password-file: cannot read {path!r} ({err.__class__.__name__})") from None


def read_stage(workdir: str, where: str) -> dict:
    """The description of a restored stage, checked enough that nothing outside it is named."""
    path = os.path.join(workdir, DESCRIPTION_FILE)
    try:
        with open(path, "rb") as f:
            desc = json.loads(f.read())
    except (OSError, ValueError) as err:
        raise IntegrityError(f"{where}: {DESCRIPTION_FILE} is missing or not JSON ({err})") from None
    if not isinstance(desc, dict) or desc.get("kind") != "registry" or desc.get("format") != 1:
        raise IntegrityError(f"{where}: {DESCRIPTION_FILE} is not a registry backup of format 1")
    for name, entry in (desc.get("repositories") or {}).items():
        check_repository_name(name, f"{where}: repository")
        for tag, digest in (entry.get("tags") or {}).items():
            check_tag(tag, f"{where}: tag of {name}")
            check_digest(digest, f"{where}: tag {name}:{tag}")
        for digest in entry.get("digests") or []:
            check_digest(digest, f"{where}: image of {name}")
    for digest, meta in (desc.get("manifests") or {}).items():
        check_digest(digest, f"{where}: manifest")
        if meta.get("media_type") not in MANIFEST_TYPES:
            raise IntegrityError(f"{where}: manifest {digest} has an unknown media type")
    for digest in desc.get("blobs") or {}:
        check_digest(digest, f"{where}: blob")
    return desc


def file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(READ_SIZE):
            h.update(data)
    return "sha256:" + h.hexdigest()


@dataclass
class PushStats:
    blobs_pushed: int = 0
    blobs_present: int = 0
    blobs_mounted: int = 0
    bytes_pushed: int = 0
    manifests_pushed: int = 0
    tags: int = 0


def push_stage(
    client: RegistryClient,
    workdir: str,
    desc: dict,
    rename,
    chunk_size: int = DEFAULT_CHUNK,
    where: str = "snapshot",
) -> PushStats:
    """Push a restored stage to ``client``'s registry: for each repository (renamed by ``rename``), the
    blobs it needs (skipped when the registry has them, mounted when another repository of this push
    has them), then its manifests children first, byte for byte, then its tags. Every manifest and
    blob of the stage is checked against its digest before the first push, so a damaged backup
    changes nothing in the registry."""
    stats = PushStats()
    manifests = desc.get("manifests") or {}
    checked: set[str] = set()
    pushed_in: dict[str, str] = {}  # blob digest → a target repository that has it

    def local(kind: str, digest: str) -> str:
        path = staged_path(workdir, kind, digest)
        if digest not in checked:
            if not os.path.isfile(path):
                raise IntegrityError(f"{where}: {kind[:-1]} {digest} is missing from the backup")
            if file_digest(path) != digest:
                raise IntegrityError(
                    f"{where}: {kind[:-1]} {digest} read back from the repository does not match its digest;"
                    " nothing was pushed"
                )
            checked.add(digest)
        return path

    def manifest_of(digest: str) -> tuple[bytes, str, list[str], list[tuple[str, int | None]]]:
        meta = manifests.get(digest)
        if meta is None:
            raise IntegrityError(f"{where}: manifest {digest} is missing from the backup")
        with open(local(MANIFEST_DIR, digest), "rb") as f:
            data = f.read(MAX_MANIFEST_BYTES + 1)
        try:
            children, blobs = manifest_children(data, meta["media_type"])
        except (ValueError, AttributeError):
            raise IntegrityError(f"{where}: manifest {digest} is not a JSON object") from None
        for child in children:
            check_digest(child, f"{where}: a child of manifest {digest}")
        for blob, _size in blobs:
            check_digest(blob, f"{where}: a blob of manifest {digest}")
        return data, meta["media_type"], children, blobs

    def push_tree(target: str | None, done: set[str], digest: str, path: tuple[str, ...]) -> None:
        """Push ``digest`` and what it refers to into ``target``; with ``target`` None, only check them."""
        if digest in done:
            return
        if digest in path or len(path) > MAX_DEPTH:
            raise IntegrityError(f"{where}: manifest {digest} refers to itself")
        data, media_type, children, blobs = manifest_of(digest)
        for child in children:
            push_tree(target, done, child, (*path, digest))
        for blob, _size in blobs:
            if blob in done:
                continue
            if target is None:
                local(BLOB_DIR, blob)
            elif client.blob_exists(target, blob):
                stats.blobs_present += 1
            elif (mounted := blob in pushed_in and client.mount_blob(target, blob, pushed_in[blob])) is True:
                stats.blobs_mounted += 1
            else:
                file = local(BLOB_DIR, blob)
                client.push_blob(target, blob, file, chunk_size, mounted or None)
                stats.blobs_pushed += 1
                stats.bytes_pushed += os.path.getsize(file)
            if target is not None:
                pushed_in.setdefault(blob, target)
            done.add(blob)
        if target is not None:
            client.put_manifest(target, digest, data, media_type)
            stats.manifests_pushed += 1
        done.add(digest)

    repositories = sorted((desc.get("repositories") or {}).items())
    for check_only in (True, False):
        for source, entry in repositories:
            target = None if check_only else rename(source)
            done: set[str] = set()
            for digest in entry.get("digests") or []:
                push_tree(target, done, digest, ())
            for tag, digest in sorted((entry.get("tags") or {}).items()):
                push_tree(target, done, digest, ())
                if target is not None:
                    data, media_type, _, _ = manifest_of(digest)
                    client.put_manifest(target, tag, data, media_type)
                    stats.tags += 1
    return stats
