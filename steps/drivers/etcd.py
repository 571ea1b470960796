"""A client of etcd's JSON gateway (the v3 API over HTTP/1.1 on the client port) with client TLS.

Provides :class:`EtcdEndpoint` (where etcd is and the certificate files to use), :class:`EtcdClient`
(the connection check, ``/version``, the member list, the status of the member, and the snapshot
stream) and :func:`stage_snapshot`, which writes a checked snapshot and its description into a scratch
directory for the copy engine. Called by the ``etcd-snapshot`` command.

Why a handshake of our own: etcd's tools report a refused client certificate, an unknown CA or a wrong
host name only as "context deadline exceeded". :meth:`EtcdClient.check_connection` connects, does the
TLS handshake and sends one request itself, and turns each failure into one line naming its cause:
a closed port, a name that does not resolve, a server certificate from another CA or for another host,
a missing or refused client certificate, or a port that does not speak TLS.

The snapshot stream (``POST /v3/maintenance/snapshot``) is a sequence of JSON objects, one a line,
``{"result": {"blob": BASE64, "remaining_bytes": N, "header": {...}, "version": ...}}``, or
``{"error": {...}}``. The bytes of the blobs form the snapshot file, whose last 32 bytes are the SHA-256
of everything before them: :meth:`EtcdClient.stream_snapshot` checks that digest as the bytes arrive.
etcd 3.5 and later put the revision of the snapshot in the first response's header; etcd 3.4 sends no
header, and the revision is then read from the file with the etcd tool (``snapshot status``).

Errors: :class:`~steps.errors.UsageError` for a certificate file that does not load,
:class:`~steps.errors.TemporaryError` for an etcd that cannot be reached or an interrupted stream,
:class:`~steps.errors.PermanentError` for a TLS refusal, and :class:`~steps.errors.IntegrityError` for a
snapshot whose digest does not match. Each names the endpoint; none shows a key's content.
"""

from __future__ import annotations

import binascii
import hashlib
import http.client
import io
import json
import os
import shutil
import socket
import ssl
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

from steps.errors import IntegrityError, PermanentError, TemporaryError, UsageError

DIGEST_SIZE = 32
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 60.0
SNAPSHOT_FILE = "snapshot.db"
DESCRIPTION_FILE = "etcd.json"
DESCRIPTION_FORMAT = 1
_COPY_BUFFER = 1 << 20

# OpenSSL's verify codes of a server certificate (X509_V_ERR_*)
_UNKNOWN_ISSUER = {2, 18, 19, 20, 21}
_EXPIRED, _NOT_YET_VALID = 10, 9
_WRONG_HOST = {62, 64}


@dataclass(frozen=True)
class EtcdEndpoint:
    """Where etcd's client port is and how to prove who we are: ``url`` is ``https://HOST:PORT`` (or
    ``http://`` for an etcd without TLS); ``cacert`` the CA bundle that signed the server certificate;
    ``cert`` / ``key`` the client certificate and its key (PEM files, e.g. a mounted Secret or the
    control-plane node's ``/etc/kubernetes/pki/etcd`` files). ``server_name`` replaces the host name the
    server certificate is checked against (for an address the certificate does not name)."""

    url: str
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None
    server_name: str | None = None
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT

    @property
    def tls(self) -> bool:
        return self.url.startswith("https://")

    def host_port(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        if parts.scheme not in ("https", "http") or not parts.hostname or parts.path not in ("", "/"):
            raise UsageError(f"--etcd: expected https://HOST:PORT (etcd's client URL), got {self.url!r}")
        try:
            port = parts.port or 2379
        except ValueError:
            raise UsageError(
                f"--etcd: expected https://HOST:PORT with a port number, got {self.url!r}"
            ) from None
        return parts.hostname, port


@dataclass
class SnapshotStream:
    """What :meth:`EtcdClient.stream_snapshot` received: ``size`` bytes (digest included), the SHA-256 of
    the whole file, the header of the first response (``{}`` from etcd 3.4) and the server version the
    stream named (``None`` before etcd 3.5)."""

    size: int
    sha256: str
    header: dict = field(default_factory=dict)
    version: str | None = None


def _read_pem(path: str, option: str) -> None:
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 20)
    except OSError as err:
        raise UsageError(f"{option}: cannot read {path!r} ({err.strerror})") from None
    if b"-----BEGIN " not in head:
        raise UsageError(f"{option}: {path!r} is not a PEM file (expected '-----BEGIN ...')")


def _certificate(path: str):
    """The first certificate of a PEM file, parsed (None when it does not parse)."""
    from cryptography import x509

    try:
        with open(path, "rb") as f:
            return x509.load_pem_x509_certificate(f.read())
    except (OSError, ValueError):
        return None


def _names_of(der: bytes) -> list[str]:
    from cryptography import x509

    try:
        cert = x509.load_der_x509_certificate(der)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return []
    return [f"DNS:{n}" for n in sans.get_values_for_type(x509.DNSName)] + [
        f"IP:{n}" for n in sans.get_values_for_type(x509.IPAddress)
    ]


class EtcdClient:
    """The JSON gateway of one etcd member (see the module). Every call opens its own connection."""

    def __init__(self, endpoint: EtcdEndpoint):
        self.endpoint = endpoint
        self.host, self.port = endpoint.host_port()
        self.where = f"etcd at {endpoint.url}"
        self._context = self._make_context() if endpoint.tls else None

    # -- TLS -----------------------------------------------------------------------------------------

    def _make_context(self) -> ssl.SSLContext:
        ep = self.endpoint
        if bool(ep.cert) != bool(ep.key):
            raise UsageError("--cert and --key: give both (the client certificate and its key) or neither")
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        if ep.cacert:
            _read_pem(ep.cacert, "--cacert")
            try:
                ctx.load_verify_locations(cafile=ep.cacert)
            except ssl.SSLError:
                raise UsageError(f"--cacert: {ep.cacert!r} holds no usable CA certificate") from None
        if ep.cert and ep.key:
            _read_pem(ep.cert, "--cert")
            _read_pem(ep.key, "--key")
            try:
                ctx.load_cert_chain(ep.cert, ep.key)
            except ssl.SSLError as err:
                if "KEY_VALUES_MISMATCH" in str(err):
                    raise UsageError(
                        f"--key: {ep.key!r} is not the key of the certificate --cert {ep.cert!r}"
                    ) from None
                raise UsageError(
                    f"--cert/--key: {ep.cert!r} and {ep.key!r} are not a PEM certificate and its unencrypted key"
                ) from None
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

    def _server_name(self) -> str:
        return self.endpoint.server_name or self.host

    def _connect(self) -> socket.socket:
        ep = self.endpoint
        try:
            sock = socket.create_connection((self.host, self.port), timeout=ep.connect_timeout)
        except socket.gaierror as err:
            raise TemporaryError(
                f"{self.where}: host name {self.host!r} does not resolve ({err.strerror})"
            ) from None
        except ConnectionRefusedError:
            raise TemporaryError(
                f"{self.where}: connection refused (nothing listens on port {self.port}: is etcd running there?)"
            ) from None
        except TimeoutError:
            raise TemporaryError(
                f"{self.where}: no answer within {ep.connect_timeout:g} s (a wrong address, or a firewall)"
            ) from None
        except OSError as err:
            raise TemporaryError(f"{self.where}: cannot connect ({err.strerror or err})") from None
        sock.settimeout(ep.read_timeout)
        if self._context is None:
            return sock
        try:
            return self._context.wrap_socket(sock, server_hostname=self._server_name())
        except BaseException as err:
            sock.close()
            raise self._tls_error(err) from None

    def _peer_names(self) -> list[str]:
        """The names in the server certificate, read by a handshake that does not check it."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        try:
            with (
                socket.create_connection(
                    (self.host, self.port), timeout=self.endpoint.connect_timeout
                ) as sock,
                ctx.wrap_socket(sock, server_hostname=self._server_name()) as tls,
            ):
                der = tls.getpeercert(binary_form=True)
        except (OSError, ssl.SSLError):
            return []
        return _names_of(der) if der else []

    def _client_cert_problem(self) -> str:
        """Why etcd may have refused our client certificate, as far as the files tell."""
        from cryptography import x509
        from cryptography.x509.oid import ExtendedKeyUsageOID

        ep = self.endpoint
        cert = _certificate(ep.cert or "")
        if cert is None:
            return "it does not parse"
        now = datetime.now(UTC)
        if cert.not_valid_after_utc < now:
            return f"it expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        if cert.not_valid_before_utc > now:
            return f"it is valid only from {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
        try:
            usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            if ExtendedKeyUsageOID.CLIENT_AUTH not in usages:
                return "it is not for client authentication (its extended key usage lacks clientAuth)"
        except x509.ExtensionNotFound:
            pass
        ca = _certificate(ep.cacert) if ep.cacert else None
        issuer = cert.issuer.rfc4514_string()
        if ca is not None and cert.issuer != ca.subject:
            return (
                f"it was issued by {issuer!r}, not by the etcd CA of --cacert ({ca.subject.rfc4514_string()!r});"
                " etcd accepts client certificates of its --trusted-ca-file"
            )
        return f"it was issued by {issuer!r}, which etcd's --trusted-ca-file does not hold"

    def _tls_error(self, err: BaseException, during: str = "the TLS handshake") -> Exception:
        ep = self.endpoint
        if isinstance(err, ssl.SSLCertVerificationError):
            code = err.verify_code
            if code in _WRONG_HOST:
                names = self._peer_names()
                named = f" (it names {', '.join(names)})" if names else ""
                return PermanentError(
                    f"{self.where}: the server certificate is not valid for {self._server_name()!r}{named}; connect"
                    " by a name it holds, or give --server-name"
                )
            if code in _UNKNOWN_ISSUER:
                ca = f"--cacert {ep.cacert!r}" if ep.cacert else "the system's CA bundle (no --cacert given)"
                return PermanentError(
                    f"{self.where}: the server certificate is not signed by the CA in {ca} (unknown CA)"
                )
            if code in (_EXPIRED, _NOT_YET_VALID):
                return PermanentError(f"{self.where}: the server certificate is expired or not yet valid")
            return PermanentError(f"{self.where}: the server certificate was refused ({err.verify_message})")
        if isinstance(err, ssl.SSLError):
            reason = err.reason or ""
            if reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"):
                return PermanentError(
                    f"{self.where}: the port does not speak TLS (an http:// client URL, or not etcd's client port?)"
                )
            if "ALERT" in reason or reason in ("CERTIFICATE_REQUIRED",):
                if not ep.cert:
                    return PermanentError(
                        f"{self.where}: etcd requires a client certificate (it has --client-cert-auth); give"
                        " --cert and --key"
                    )
                return PermanentError(
                    f"{self.where}: etcd refused the client certificate --cert {ep.cert!r}:"
                    f" {self._client_cert_problem()}"
                )
            return PermanentError(f"{self.where}: TLS failed ({reason or err})")
        if isinstance(err, TimeoutError):
            return TemporaryError(f"{self.where}: no answer within {ep.read_timeout:g} s during {during}")
        if isinstance(err, ConnectionResetError | BrokenPipeError | EOFError):
            return TemporaryError(f"{self.where}: the connection was closed during {during}")
        if isinstance(err, OSError):
            return TemporaryError(f"{self.where}: {err.strerror or err}")
        return err if isinstance(err, Exception) else TemporaryError(f"{self.where}: interrupted")

    # -- HTTP ----------------------------------------------------------------------------------------

    def _open(self, method: str, path: str, body: dict | None) -> http.client.HTTPResponse:
        sock = self._connect()
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.endpoint.read_timeout)
        conn.sock = sock
        try:
            payload = None if body is None else json.dumps(body).encode()
            headers = {"Content-Type": "application/json"} if payload is not None else {}
            conn.request(method, path, body=payload, headers=headers)
            resp = conn.getresponse()
        except ssl.SSLError as err:
            conn.close()
            raise self._tls_error(err, f"the request {path}") from None
        except (http.client.HTTPException, OSError) as err:
            conn.close()
            if self._context is None and isinstance(
                err, ConnectionResetError | http.client.RemoteDisconnected
            ):
                raise PermanentError(
                    f"{self.where}: the server closed the connection without an answer (if etcd serves TLS on"
                    " this port, use https://)"
                ) from None
            if isinstance(err, ConnectionResetError):
                raise self._tls_error(err, f"the request {path}") from None
            raise TemporaryError(f"{self.where}: {path}: no valid HTTP answer ({err})") from None
        if resp.status != 200:
            text = resp.read(4096)
            conn.close()
            raise self._http_error(path, resp.status, text)
        resp._snapflow_conn = conn  # closed with the response
        return resp

    def _http_error(self, path: str, status: int, text: bytes) -> Exception:
        message = ""
        try:
            data = json.loads(text)
            message = str(data.get("message") or data.get("error") or "")
        except (ValueError, AttributeError):
            message = text[:200].decode("utf-8", "replace")
        detail = f": {message.strip()}" if message.strip() else ""
        if status == 404:
            return PermanentError(
                f"{self.where}: {path} not found (HTTP 404): not etcd's v3 client port{detail}"
            )
        if status in (401, 403):
            return PermanentError(f"{self.where}: {path} refused (HTTP {status}){detail}")
        if status >= 500:
            return TemporaryError(f"{self.where}: {path} failed (HTTP {status}){detail}")
        return PermanentError(f"{self.where}: {path} failed (HTTP {status}){detail}")

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        resp = self._open(method, path, body)
        try:
            data = resp.read()
        except (OSError, http.client.HTTPException) as err:
            raise TemporaryError(f"{self.where}: {path}: the answer was cut off ({err})") from None
        finally:
            resp._snapflow_conn.close()
        try:
            out = json.loads(data)
        except ValueError:
            raise PermanentError(
                f"{self.where}: {path}: the answer is not JSON (is this etcd's client port?)"
            ) from None
        if not isinstance(out, dict):
            raise PermanentError(f"{self.where}: {path}: expected a JSON object")
        return out

    # -- the API -------------------------------------------------------------------------------------

    def check_connection(self) -> dict:
        """Connect, shake hands and read ``/version``: ``{"etcdserver": ..., "etcdcluster": ...}``."""
        out = self.call("GET", "/version")
        if "etcdserver" not in out:
            raise PermanentError(
                f"{self.where}: /version does not name an etcd server (is this etcd's client port?)"
            )
        return out

    def status(self) -> dict:
        return self.call("POST", "/v3/maintenance/status", {})

    def member_list(self) -> dict:
        """``{"cluster_id", "member_id", "members": [{"id", "name", "peer_urls", "client_urls", "learner"}]}``
        with the IDs in hexadecimal, as etcd's tools show them."""
        out = self.call("POST", "/v3/cluster/member/list", {})
        header = out.get("header") or {}
        members = [
            {
                "id": _hex_id(m.get("ID")),
                "name": m.get("name", ""),
                "peer_urls": list(m.get("peerURLs") or []),
                "client_urls": list(m.get("clientURLs") or []),
                "learner": bool(m.get("isLearner", False)),
            }
            for m in out.get("members") or []
        ]
        return {
            "cluster_id": _hex_id(header.get("cluster_id")),
            "member_id": _hex_id(header.get("member_id")),
            "members": members,
        }

    def stream_snapshot(
        self, write: Callable[[bytes], object], progress: Callable[[int, int], None] | None = None
    ) -> SnapshotStream:
        """Stream the member's snapshot into ``write``, checking its trailing SHA-256 as it arrives.
        ``progress(received, remaining)`` is called after each chunk. Raises before returning when the
        stream is cut, carries an error, or ends with a digest that does not match."""
        path = "/v3/maintenance/snapshot"
        resp = self._open("POST", path, {})
        # large reads: the response's own readline peeks at the socket a few KiB at a time
        reader = io.BufferedReader(resp, _COPY_BUFFER)
        hasher, whole = hashlib.sha256(), hashlib.sha256()
        tail = b""
        size, remaining = 0, None
        header: dict = {}
        version = None
        try:
            while True:
                try:
                    line = reader.readline()
                except ssl.SSLError as err:
                    raise self._tls_error(err, "the snapshot stream") from None
                except (OSError, http.client.HTTPException) as err:
                    raise TemporaryError(
                        f"{self.where}: the snapshot stream was cut after {size} bytes ({err})"
                    ) from None
                if not line:
                    break
                if not line.strip():
                    continue
                try:
                    msg = json.loads(line)
                except ValueError:
                    raise TemporaryError(
                        f"{self.where}: the snapshot stream was cut after {size} bytes (a partial message)"
                    ) from None
                if "error" in msg:
                    err = msg["error"] or {}
                    text = err.get("message") or err.get("error") or json.dumps(err)[:200]
                    raise PermanentError(f"{self.where}: the snapshot failed: {text}")
                result = msg.get("result") or {}
                if not header and result.get("header"):
                    header = dict(result["header"])
                if version is None and result.get("version"):
                    version = str(result["version"])
                try:
                    blob = binascii.a2b_base64(result.get("blob", ""), strict_mode=True)
                except (binascii.Error, ValueError):
                    raise IntegrityError(
                        f"{self.where}: the snapshot stream holds a chunk that is not base64"
                    ) from None
                remaining = int(result.get("remaining_bytes") or 0)
                if not blob:
                    continue
                whole.update(blob)
                write(blob)
                size += len(blob)
                # every byte but the last 32 of the whole stream is hashed: hold back the newest 32
                joined = tail + blob
                hasher.update(joined[:-DIGEST_SIZE])
                tail = joined[-DIGEST_SIZE:]
                if progress is not None:
                    progress(size, remaining)
        finally:
            resp._snapflow_conn.close()
        if size <= DIGEST_SIZE:
            raise IntegrityError(
                f"{self.where}: the snapshot stream ended after {size} bytes, before any data"
            )
        if remaining:
            raise TemporaryError(
                f"{self.where}: the snapshot stream was cut after {size} bytes ({remaining} more were announced)"
            )
        if hasher.digest() != tail:
            raise IntegrityError(
                f"{self.where}: the snapshot's SHA-256 does not match its trailing digest ({size} bytes received):"
                " the stream was altered or damaged; nothing was stored"
            )
        return SnapshotStream(size, whole.hexdigest(), header, version)


def first_answering(clients: list[EtcdClient]) -> tuple[EtcdClient, dict]:
    """The first client whose member answers :meth:`EtcdClient.check_connection`, and its version.
    A member that cannot be reached (:class:`~steps.errors.TemporaryError`) is passed over; any other
    failure (a refused certificate, ...) stops at once, since the other members share the certificates.
    When none answers: the one error of a single member, or one line naming each."""
    failures: list[TemporaryError] = []
    for client in clients:
        try:
            return client, client.check_connection()
        except TemporaryError as err:
            failures.append(err)
    if len(failures) == 1:
        raise failures[0]
    raise TemporaryError(f"no etcd member answered: {'; '.join(str(f) for f in failures)}")


def _hex_id(value) -> str:
    """etcd's 64-bit IDs come as decimal strings from the gateway; its tools show them in hex."""
    try:
        return f"{int(value):x}"
    except (TypeError, ValueError):
        return ""


def check_snapshot_file(path: str, description: dict | None = None) -> int:
    """The size of a snapshot file whose trailing SHA-256 matches the rest and, given the snapshot's
    ``etcd.json``, whose size and SHA-256 are the ones recorded there (IntegrityError otherwise)."""
    name = os.path.basename(path)
    hasher, whole = hashlib.sha256(), hashlib.sha256()
    try:
        size = os.path.getsize(path)
    except OSError:
        raise IntegrityError(f"{name}: the etcd snapshot holds no such file") from None
    if size <= DIGEST_SIZE:
        raise IntegrityError(f"{name}: {size} bytes is too small for an etcd snapshot")
    left = size - DIGEST_SIZE
    with open(path, "rb") as f:
        while left:
            chunk = f.read(min(_COPY_BUFFER, left))
            if not chunk:
                raise IntegrityError(f"{name}: shorter than it was a moment ago")
            hasher.update(chunk)
            whole.update(chunk)
            left -= len(chunk)
        digest = f.read(DIGEST_SIZE)
        whole.update(digest)
    if hasher.digest() != digest:
        raise IntegrityError(f"{name}: the snapshot's SHA-256 does not match its trailing digest")
    if description is not None and (description.get("size"), description.get("sha256")) != (
        size,
        whole.hexdigest(),
    ):
        raise IntegrityError(
            f"{name}: {size} bytes with SHA-256 {whole.hexdigest()[:16]}..., but {DESCRIPTION_FILE} records"
            f" {description.get('size')} bytes with {str(description.get('sha256'))[:16]}..."
        )
    return size


@dataclass
class StagedSnapshot:
    """A checked snapshot in a scratch directory of its own: ``dir`` holds ``snapshot.db`` and, once
    :meth:`describe` wrote it, ``etcd.json``. :meth:`remove` deletes the directory and releases its
    lock."""

    dir: str
    stream: SnapshotStream
    lock_fd: int | None = None

    @property
    def db(self) -> str:
        return os.path.join(self.dir, SNAPSHOT_FILE)

    def describe(self, description: dict) -> None:
        with open(os.path.join(self.dir, DESCRIPTION_FILE), "w") as f:
            json.dump(description, f, indent=2, sort_keys=True)
            f.write("\n")

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        if self.lock_fd is not None:
            _unlock(f"{self.dir}.lock", self.lock_fd)
            self.lock_fd = None


def _staging_dir(scratch: str | None, name: str) -> tuple[str, int]:
    """``SCRATCH/NAME``, created empty and private, and the descriptor of ``SCRATCH/NAME.lock`` locked
    for this process. The path is the same for every snapshot of a cluster, so that the repository
    sees one source (one retention group); the lock keeps two snapshots of the cluster on this machine
    apart, and a directory left by an interrupted one is removed."""
    base = scratch if scratch is not None else tempfile.gettempdir()
    if not os.path.isdir(base):
        raise UsageError(f"--scratch: {base!r} is not a directory")
    path = os.path.join(os.path.abspath(base), name)
    fd = _lock(f"{path}.lock")
    try:
        if os.path.lexists(path):
            if os.path.islink(path) or not os.path.isdir(path):
                raise UsageError(f"--scratch: {path!r} is in the way (not a directory left by etcd-snapshot)")
            shutil.rmtree(path)
        os.mkdir(path, 0o700)
    except OSError as err:
        _unlock(f"{path}.lock", fd)
        raise UsageError(f"--scratch: cannot create {path!r} ({err.strerror})") from None
    except BaseException:
        _unlock(f"{path}.lock", fd)
        raise
    return path, fd


def _lock(path: str) -> int:
    """An open descriptor of the lock file ``path``, locked: the file is removed when it is unlocked
    (:func:`_unlock`), so a lock taken on a file that was meanwhile removed or replaced is retried."""
    import fcntl

    for _ in range(100):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as err:
            raise UsageError(f"--scratch: cannot create {path!r} ({err.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise TemporaryError(f"--scratch: another etcd-snapshot of this cluster holds {path!r}") from None
        try:
            if os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # the holder before us removed it: take the new one
    raise TemporaryError(f"--scratch: could not lock {path!r}")


def _unlock(path: str, fd: int) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    os.close(fd)


def stage_snapshot(
    client: EtcdClient, scratch: str | None = None, progress=None, name: str = "etcd"
) -> StagedSnapshot:
    """Stream the snapshot of ``client``'s member into the directory ``NAME`` under ``scratch``
    (default: the system's temporary directory; see :func:`_staging_dir`). Nothing is left behind when
    the stream fails."""
    workdir, lock_fd = _staging_dir(scratch, name)
    staged = StagedSnapshot(workdir, SnapshotStream(0, ""), lock_fd)

    def write(data: bytes) -> None:
        try:
            f.write(data)
        except OSError as err:
            raise PermanentError(
                f"--scratch: cannot write the etcd snapshot into {workdir!r} ({err.strerror}); nothing was stored"
            ) from None

    try:
        with open(os.path.join(workdir, SNAPSHOT_FILE), "xb") as f:
            os.fchmod(f.fileno(), 0o600)
            staged.stream = client.stream_snapshot(write, progress)
            try:
                f.flush()
                os.fsync(f.fileno())
            except OSError as err:
                raise PermanentError(
                    f"--scratch: cannot write the etcd snapshot into {workdir!r} ({err.strerror}); nothing was"
                    " stored"
                ) from None
    except BaseException:
        staged.remove()
        raise
    return staged


def read_description(directory: str) -> dict:
    path = os.path.join(directory, DESCRIPTION_FILE)
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as err:
        raise PermanentError(
            f"{DESCRIPTION_FILE}: the snapshot's description does not read ({err})"
        ) from None
    if not isinstance(data, dict) or data.get("kind") != "etcd":
        raise PermanentError(f"{DESCRIPTION_FILE}: not the description of an etcd snapshot")
    return data


# A mounted Secret of type kubernetes.io/tls (with the CA under ca.crt), or kubeadm's etcd PKI directory
# (/etc/kubernetes/pki/etcd: its health-check client certificate is signed by the etcd CA).
TLS_DIR_LAYOUTS = (
    ("ca.crt", "tls.crt", "tls.key"),
    ("ca.crt", "healthcheck-client.crt", "healthcheck-client.key"),
)


def files_of_tls_dir(directory: str) -> tuple[str, str, str]:
    """``(cacert, cert, key)`` in ``directory``, in the first layout of :data:`TLS_DIR_LAYOUTS` present."""
    if not os.path.isdir(directory):
        raise UsageError(f"--tls-dir: {directory!r} is not a directory")
    for layout in TLS_DIR_LAYOUTS:
        paths = tuple(os.path.join(directory, name) for name in layout)
        if all(os.path.isfile(p) for p in paths):
            return paths  # type: ignore[return-value]
    expected = " or ".join("+".join(layout) for layout in TLS_DIR_LAYOUTS)
    raise UsageError(f"--tls-dir: {directory!r} holds neither {expected}")
