"""The S3 object store: any S3-compatible server (AWS S3, MinIO, SeaweedFS, ...) through the ``minio`` client.

Provides :class:`S3Settings` (endpoint, region, path style, CA bundle, credentials and the connection
limits, from the environment: ``SNAPFLOW_S3_*``, ``AWS_*``) and :class:`S3Store`. Short explicit
timeouts and bounded retries: a server that accepts connections and never answers costs at most
``SNAPFLOW_S3_RETRY_SECONDS``, a transfer that keeps moving is never cut off. Versioned buckets and
S3 Object Lock are supported as :class:`~steps.drivers.objectstore.ObjectStore` describes. Opened by
:func:`steps.drivers.objectstore.open_store` for ``s3://`` URLs.
"""

from __future__ import annotations

import functools
import math
import os
import random
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from steps import runtime
from steps.drivers.objectstore import (
    ObjectInfo,
    ObjectLock,
    ObjectLocked,
    ObjectNotFound,
    ObjectStore,
    Retention,
)
from steps.drivers.repourl import check_endpoint, format_repo_url
from steps.errors import PermanentError, StoreUnavailable, UsageError

T = TypeVar("T")

# Defaults that make a server which accepts connections but never answers fail within 30 s: each
# read (and each block of a request body written) may wait READ_TIMEOUT, a retry starts only when it
# can still finish within RETRY_SECONDS of the first attempt. Transfers that keep moving are never cut.
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 10.0
DEFAULT_RETRIES = 4
DEFAULT_RETRY_SECONDS = 30.0

CONNECTION_ENV = {
    runtime.S3_CONNECT_TIMEOUT: "connect_timeout",
    runtime.S3_READ_TIMEOUT: "read_timeout",
    runtime.S3_RETRY_SECONDS: "retry_seconds",
}


def _seconds(name: str, raw, allow_zero: bool = False) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = float("nan")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        more = "a number of seconds >= 0" if allow_zero else "a number of seconds > 0"
        raise UsageError(f"{name}: expected {more}, got {raw!r}")
    return value


@dataclass(frozen=True)
class S3Settings:
    """How to reach an S3 server. Secrets come from the environment, never from arguments.

    ``connect_timeout``: seconds to open a connection (and for a TLS handshake); ``read_timeout``: how
    long one read of a response, or one 64 KiB block of a request body, may wait; ``retries``: attempts
    after the first; ``retry_seconds``: a retry is started only when it can end (connect plus read
    timeout) within this many seconds of the first attempt, so one call that gets no answer fails
    within it.
    """

    endpoint: str  # URL, e.g. http://127.0.0.1:8333 or https://s3.eu-west-1.amazonaws.com
    region: str | None = None
    path_style: bool = True
    ca_bundle: str | None = None
    insecure_skip_verify: bool = False
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT
    retries: int = DEFAULT_RETRIES  # attempts after the first
    backoff: float = 0.5  # first back-off in seconds, doubled each time, with jitter
    max_pool: int = 16
    object_lock: ObjectLock | None = None  # retention sent with every PUT
    retry_seconds: float = DEFAULT_RETRY_SECONDS

    DEFAULT_ENDPOINT_ENV = runtime.S3_ENDPOINT

    @classmethod
    def from_env(cls, endpoint: str | None = None, **overrides) -> S3Settings:
        env = os.environ
        field = "--endpoint" if endpoint else cls.DEFAULT_ENDPOINT_ENV
        endpoint = endpoint or env.get(cls.DEFAULT_ENDPOINT_ENV)
        if not endpoint:
            raise UsageError(
                f"--endpoint or {cls.DEFAULT_ENDPOINT_ENV}: expected the S3 server URL, got nothing"
            )
        endpoint = check_endpoint(endpoint, field)
        kw: dict = {}
        if env.get(runtime.S3_REGION) or env.get(runtime.AWS_REGION):
            kw["region"] = env.get(runtime.S3_REGION) or env.get(runtime.AWS_REGION)
        if env.get(runtime.S3_PATH_STYLE):
            kw["path_style"] = env[runtime.S3_PATH_STYLE].lower() not in ("0", "false", "no")
        if env.get(runtime.S3_CA_BUNDLE) or env.get(runtime.AWS_CA_BUNDLE):
            name = runtime.S3_CA_BUNDLE if env.get(runtime.S3_CA_BUNDLE) else runtime.AWS_CA_BUNDLE
            kw["ca_bundle"] = env[name]
            if not os.path.isfile(kw["ca_bundle"]) or not os.access(kw["ca_bundle"], os.R_OK):
                raise UsageError(f"{name}: expected a readable PEM file, got {kw['ca_bundle']!r}")
        for name, attr in CONNECTION_ENV.items():
            if env.get(name):
                kw[attr] = _seconds(name, env[name], allow_zero=attr == "retry_seconds")
        if env.get(runtime.S3_RETRIES):
            raw = env[runtime.S3_RETRIES]
            if not raw.strip().isdigit() or int(raw) > 100:
                raise UsageError(f"{runtime.S3_RETRIES}: expected a whole number from 0 to 100, got {raw!r}")
            kw["retries"] = int(raw)
        lock = ObjectLock.from_env()
        if lock is not None:
            kw["object_lock"] = lock
        kw.update({k: v for k, v in overrides.items() if v is not None})
        return cls(endpoint=endpoint, **kw)


_SEND_BLOCK = 64 * 1024


def _wait_delivered(sock, timeout: float) -> None:
    """Wait until the peer acknowledged every byte written to ``sock`` (Linux: the TIOCOUTQ of a TCP
    socket), failing with TimeoutError when that count does not go down for ``timeout`` seconds; stop
    waiting as soon as the peer starts answering.

    Without this the read timeout of the response would start while megabytes still sit in the kernel's
    send buffer, and a slow link would time out a request whose body is still moving."""
    try:
        import fcntl
        import select
        import struct
        import termios

        request = termios.TIOCOUTQ
    except (ImportError, AttributeError):  # not Linux: the read timeout alone applies
        return

    def unsent() -> int:
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), request, b"\0\0\0\0"))[0]

    try:
        left = unsent()
    except OSError:
        return
    poller = select.poll()  # (select.select fails on descriptors above 1023)
    poller.register(sock.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
    moved = time.monotonic()
    pause = 0.001
    while left > 0:
        if poller.poll(pause * 1000):
            return  # an answer (or the connection's end) is there: the response reader takes over
        pause = min(pause * 2, 0.05)
        now_left = unsent()
        if now_left < left:
            left, moved = now_left, time.monotonic()
        elif time.monotonic() - moved > timeout:
            raise TimeoutError(f"the request body did not move for {timeout:g} s ({left} bytes unsent)")


@functools.cache
def _pool_classes(write_timeout: float) -> dict:
    """urllib3 pool classes whose connections write a request body in blocks of 64 KiB, each allowed
    ``write_timeout`` seconds, then wait (as long as it keeps moving) until the body has left the send
    buffer: a slow upload that keeps moving is not cut off, a stalled one is.

    (Python's ``sendall`` applies a socket's timeout to the whole buffer: an 8 MiB pack would have to
    be sent within the connect timeout.)"""
    from urllib3 import connection, connectionpool

    class _BlockSend:
        def send(self, data):
            if self.sock is None or not isinstance(data, (bytes, bytearray, memoryview)):
                return super().send(data)
            view = memoryview(data).cast("B")
            if len(view) <= _SEND_BLOCK:
                return super().send(data)
            sock = self.sock
            previous = sock.gettimeout()
            sock.settimeout(write_timeout)
            try:
                for start in range(0, len(view), _SEND_BLOCK):
                    super().send(view[start : start + _SEND_BLOCK])
                _wait_delivered(sock, write_timeout)
            finally:
                if self.sock is sock:
                    sock.settimeout(previous)

    # named as urllib3's own classes: their names appear in error messages
    class HTTPConnection(_BlockSend, connection.HTTPConnection):
        pass

    class HTTPSConnection(_BlockSend, connection.HTTPSConnection):
        pass

    class HTTPConnectionPool(connectionpool.HTTPConnectionPool):
        ConnectionCls = HTTPConnection

    class HTTPSConnectionPool(connectionpool.HTTPSConnectionPool):
        ConnectionCls = HTTPSConnection

    return {"http": HTTPConnectionPool, "https": HTTPSConnectionPool}


def _pool_manager(settings: S3Settings, ca_certs: str | None, verify: bool = True):
    import urllib3

    timeout = urllib3.Timeout(connect=settings.connect_timeout, read=settings.read_timeout)
    tls = {"cert_reqs": "CERT_REQUIRED" if verify else "CERT_NONE", "ca_certs": ca_certs}
    http = urllib3.PoolManager(timeout=timeout, maxsize=settings.max_pool, retries=False, **tls)
    http.pool_classes_by_scheme = _pool_classes(settings.read_timeout)
    return http


def _credentials_provider(settings: S3Settings):
    """Static keys from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, else web identity (IRSA) or instance role
    (fetched with the same timeouts as the store's own requests, and no retries of their own)."""
    from minio.credentials import EnvAWSProvider, IamAwsProvider

    env = os.environ
    if env.get(runtime.AWS_ACCESS_KEY_ID) and env.get(runtime.AWS_SECRET_ACCESS_KEY):
        return EnvAWSProvider()
    if env.get(runtime.AWS_WEB_IDENTITY_TOKEN_FILE) and env.get(runtime.AWS_ROLE_ARN):
        import certifi

        token = env[runtime.AWS_WEB_IDENTITY_TOKEN_FILE]
        if not os.path.isfile(token) or not os.access(token, os.R_OK):
            raise UsageError(
                f"{runtime.AWS_WEB_IDENTITY_TOKEN_FILE}: expected a readable web identity token file, got {token!r}"
            )

        return IamAwsProvider(http_client=_pool_manager(settings, certifi.where()))
    return None  # anonymous requests (a public bucket)


_MIN_PART = 5 * 1024 * 1024  # S3's smallest multipart part; below it one PUT carries the object


class S3Store(ObjectStore):
    """An S3 bucket and prefix. Every call has explicit timeouts and a bounded number of retries."""

    time_resolution = timedelta(seconds=1)

    _TRANSIENT_CODES = {
        "SlowDown",
        "InternalError",
        "ServiceUnavailable",
        "RequestTimeout",
        "XMinioServerNotInitialized",
    }

    def __init__(self, settings: S3Settings, bucket: str, prefix: str = ""):
        import certifi
        from minio import Minio

        self.settings = settings
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        endpoint = check_endpoint(settings.endpoint, "endpoint")
        parsed = urllib.parse.urlsplit(endpoint)
        self.url = format_repo_url("s3", bucket, self.prefix.rstrip("/"))
        if parsed.scheme == "https":
            http = _pool_manager(
                settings, settings.ca_bundle or certifi.where(), verify=not settings.insecure_skip_verify
            )
        else:
            http = _pool_manager(settings, None)
        self.client = Minio(
            parsed.netloc,
            secure=parsed.scheme == "https",
            region=settings.region,
            credentials=_credentials_provider(settings),
            http_client=http,
        )
        if settings.path_style:
            self.client.disable_virtual_style_endpoint()
        else:
            self.client.enable_virtual_style_endpoint()

    # -- retries ---------------------------------------------------------------------------------
    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """``fn()`` with bounded retries of transient failures: at most ``retries`` more attempts, each
        started only when it can end within ``retry_seconds`` of the first (see :class:`S3Settings`)."""
        import urllib3
        from minio.error import InvalidResponseError, S3Error, ServerError

        settings = self.settings
        allowed = settings.retries + 1
        worst_attempt = settings.connect_timeout + settings.read_timeout
        started = time.monotonic()
        delay = settings.backoff
        last: Exception | None = None
        attempts = 0
        while True:
            attempts += 1
            try:
                return fn()
            except S3Error as err:
                if err.code in ("NoSuchKey", "NoSuchVersion"):
                    raise ObjectNotFound(what) from None
                if err.code not in self._TRANSIENT_CODES:
                    raise _s3_error(err, what, self) from None
                last = err
            except ServerError as err:
                last = err
            except InvalidResponseError as err:  # not an S3 answer: a web server, a proxy's error page
                status = getattr(err, "_code", None)
                if not isinstance(status, int) or not (status >= 500 or status in (408, 429)):
                    raise PermanentError(
                        f"object store {settings.endpoint} answered {what} with {_not_s3(err)}, not an S3"
                        " response (is the endpoint an S3 server?)"
                    ) from None
                last = err  # a gateway in front of a server that is down: worth retrying
            except (urllib3.exceptions.HTTPError, OSError) as err:
                last = err
            pause = delay * (0.5 + random.random())
            elapsed = time.monotonic() - started
            if attempts >= allowed or elapsed + pause + worst_attempt > settings.retry_seconds:
                break
            time.sleep(pause)
            delay *= 2
        reason = type(last).__name__ if last else "error"
        detail = _not_s3(last) if isinstance(last, InvalidResponseError) else str(last or "")
        detail = " ".join(detail.split())[:200]
        raise StoreUnavailable(
            f"object store {settings.endpoint} did not answer {what} after {attempts} attempt"
            f"{'s' if attempts != 1 else ''} in {time.monotonic() - started:.0f} s ({reason}: {detail})"
        )

    def _k(self, key: str) -> str:
        return self.prefix + key

    # -- interface ----------------------------------------------------------------------------------
    def ensure_container(self, object_lock=None):
        def make():
            if not self.client.bucket_exists(self.bucket):
                self.client.make_bucket(self.bucket, object_lock=object_lock is not None)
            if object_lock is not None:
                from minio.commonconfig import COMPLIANCE, GOVERNANCE
                from minio.objectlockconfig import DAYS, ObjectLockConfig

                days = max(1, round(object_lock.days))
                mode = COMPLIANCE if object_lock.mode == "compliance" else GOVERNANCE
                self.client.set_object_lock_config(self.bucket, ObjectLockConfig(mode, days, DAYS))

        self._call(f"create bucket {self.bucket}", make)

    @property
    def object_lock(self):
        return self.settings.object_lock

    def put(self, key, data):
        import io

        retention = None
        lock = self.settings.object_lock
        if lock is not None:
            from minio.commonconfig import COMPLIANCE, GOVERNANCE
            from minio.retention import Retention as MinioRetention

            retention = MinioRetention(COMPLIANCE if lock.mode == "compliance" else GOVERNANCE, lock.until())
        self._call(
            f"PUT {key}",
            lambda: self.client.put_object(
                self.bucket,
                self._k(key),
                io.BytesIO(data),
                len(data),
                part_size=max(len(data), _MIN_PART),
                retention=retention,
            ),
        )

    def get(self, key, version_id=None):
        def fetch():
            resp = self.client.get_object(self.bucket, self._k(key), version_id=version_id)
            try:
                return resp.read()
            finally:
                resp.close()
                resp.release_conn()

        return self._call(f"GET {key}", fetch)

    def get_range(self, key, offset, length, version_id=None):
        if length <= 0:
            return b""

        def fetch():
            resp = self.client.get_object(
                self.bucket, self._k(key), offset=offset, length=length, version_id=version_id
            )
            try:
                return resp.read()
            finally:
                resp.close()
                resp.release_conn()

        return self._call(f"GET {key} [{offset}:{offset + length}]", fetch)

    def stat(self, key):
        def head():
            try:
                st = self.client.stat_object(self.bucket, self._k(key))
            except ObjectNotFound:
                return None
            return ObjectInfo(key, st.size, st.last_modified, st.version_id)

        try:
            return self._call(f"HEAD {key}", head)
        except ObjectNotFound:
            return None

    def list(self, prefix=""):
        def page():
            return [
                ObjectInfo(o.object_name[len(self.prefix) :], o.size, o.last_modified)
                for o in self.client.list_objects(self.bucket, prefix=self._k(prefix), recursive=True)
                if not o.is_dir
            ]

        yield from sorted(self._call(f"LIST {prefix or '/'}", page), key=lambda i: i.key)

    def list_versions(self, prefix=""):
        def page():
            return [
                ObjectInfo(
                    o.object_name[len(self.prefix) :],
                    o.size or 0,
                    o.last_modified,
                    o.version_id,
                    is_delete_marker=bool(o.is_delete_marker),
                    is_latest=str(o.is_latest).lower() == "true",
                )
                for o in self.client.list_objects(
                    self.bucket, prefix=self._k(prefix), recursive=True, include_version=True
                )
                if not o.is_dir
            ]

        yield from self._call(f"LIST VERSIONS {prefix or '/'}", page)

    def delete(self, key, version_id=None):
        what = f"DELETE {key}" + (f" version {version_id}" if version_id else "")
        try:
            self._call(
                what, lambda: self.client.remove_object(self.bucket, self._k(key), version_id=version_id)
            )
        except PermanentError as err:
            if version_id and "AccessDenied" in str(err):
                raise ObjectLocked(
                    f"object store refused {what}: the version is locked (Object Lock) or these credentials"
                    " may not delete versions"
                ) from None
            raise

    def versioning_enabled(self):
        cached = getattr(self, "_versioning", None)
        if cached is None:
            try:
                status = self._call(
                    f"GET versioning of {self.bucket}",
                    lambda: self.client.get_bucket_versioning(self.bucket).status,
                )
            except PermanentError:  # may not read it (s3:GetBucketVersioning): behave as without versions
                status = None
            cached = self._versioning = status == "Enabled"
        return cached

    def get_retention(self, key, version_id=None):
        from minio.error import S3Error

        def fetch():
            try:
                r = self.client.get_object_retention(self.bucket, self._k(key), version_id=version_id)
            except S3Error as err:
                if err.code in (
                    "InvalidRequest",
                    "ObjectLockConfigurationNotFoundError",
                    "NoSuchObjectLockConfiguration",
                ):
                    return None
                raise
            if r is None or not r.mode or not r.retain_until_date:
                return None
            return Retention(str(r.mode).lower(), r.retain_until_date.astimezone(UTC))

        return self._call(f"GET retention of {key}", fetch)

    def set_retention(self, key, version_id, retention):
        from minio.commonconfig import COMPLIANCE, GOVERNANCE
        from minio.retention import Retention as MinioRetention

        config = MinioRetention(COMPLIANCE if retention.mode == "compliance" else GOVERNANCE, retention.until)
        what = f"PUT retention of {key}"
        try:
            self._call(
                what,
                lambda: self.client.set_object_retention(
                    self.bucket, self._k(key), config, version_id=version_id
                ),
            )
        except PermanentError as err:
            if "AccessDenied" in str(err):
                raise ObjectLocked(
                    f"object store refused {what}: a retention cannot be shortened, or these credentials may"
                    " not set retention (s3:PutObjectRetention)"
                ) from None
            raise

    def server_time(self):
        """The server's clock: the Date header of a HEAD request (no write), else the Last-Modified of a
        tiny object written for the purpose."""
        from email.utils import parsedate_to_datetime

        from minio.error import S3Error

        def head():
            try:
                st = self.client.stat_object(self.bucket, self._k("config"))
            except S3Error as err:
                if err.code in ("NoSuchKey", "NoSuchVersion", "ResourceNotFound"):
                    return None
                raise
            return (st.metadata or {}).get("Date") or (st.metadata or {}).get("date")

        try:
            date = self._call("HEAD config", head)
        except ObjectNotFound:
            date = None
        if date:
            try:
                return parsedate_to_datetime(date).astimezone(UTC)
            except (TypeError, ValueError):
                pass
        key = f"locks/clock-{os.getpid()}-{threading.get_ident()}-{random.getrandbits(32):08x}"
        self.put(key, b"")
        try:
            info = self.stat(key)
        finally:
            self.delete(key)
        if not info or not info.last_modified:
            return datetime.now(UTC)
        return info.last_modified.astimezone(UTC)


def _not_s3(err) -> str:
    """'HTTP 502 (text/html)' for a minio InvalidResponseError (its body is a web page: left out)."""
    return f"HTTP {getattr(err, '_code', '?')} ({getattr(err, '_content_type', None) or 'no content type'})"


def _s3_error(err, what: str, store: S3Store):
    from steps.errors import PermanentError

    code = getattr(err, "code", "error")
    if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return PermanentError(
            f"object store refused {what}: {code} (check {runtime.AWS_ACCESS_KEY_ID}/{runtime.AWS_SECRET_ACCESS_KEY}"
            " and the bucket policy)"
        )
    if code == "NoSuchBucket":
        return PermanentError(
            f"bucket {store.bucket!r} does not exist at {store.settings.endpoint} (run init first)"
        )
    return PermanentError(f"object store refused {what}: {code}: {getattr(err, 'message', '')}")
