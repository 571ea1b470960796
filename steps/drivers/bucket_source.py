"""A bucket protected as a source: any S3-compatible endpoint with credentials of its own.

Provides :class:`BucketAccess` (endpoint, bucket, prefix and where the keys come from: environment
variable *names* or files, never values on a command line), :class:`BucketObject` (one listed object
or version) and :class:`BucketClient`: listing with versions, streamed reads that hand back the
object's content type and user metadata, and writes with both (multipart above ``part_size``). The
client counts the object reads it made (``reads``), so a caller can show what an incremental run
spared. Called by the ``bucket-backup`` and ``bucket-restore`` commands.

Every error names the source (``bucket ENDPOINT/BUCKET``) and is one line: an endpoint that does not
answer is a :class:`~steps.errors.StoreUnavailable` (worth retrying), refused credentials or a missing
bucket a :class:`~steps.errors.PermanentError`.
"""

from __future__ import annotations

import os
import random
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

from steps.errors import PermanentError, StoreUnavailable, UsageError

T = TypeVar("T")

DEFAULT_PART_SIZE = 16 * 1024 * 1024  # objects above it are written in parts of this size
_META_PREFIX = "x-amz-meta-"


@dataclass(frozen=True)
class BucketAccess:
    """Where a bucket is and how to sign for it. ``access_key_env``/``secret_key_env`` name environment
    variables; ``access_key_file``/``secret_key_file`` name files (a mounted Secret's keys)."""

    endpoint: str
    bucket: str
    prefix: str = ""
    access_key_env: str | None = None
    secret_key_env: str | None = None
    access_key_file: str | None = None
    secret_key_file: str | None = None
    region: str | None = None
    ca_bundle: str | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    retries: int = 3

    @property
    def where(self) -> str:
        return f"bucket {self.endpoint.rstrip('/')}/{self.bucket}"

    def credentials(self, role: str) -> tuple[str, str] | None:
        """(access key, secret key), or None for anonymous access when nothing is named."""

        def one(env_name: str | None, file_name: str | None, what: str, option: str) -> str | None:
            if env_name and file_name:
                raise UsageError(f"--{role}-{option}-env/--{role}-{option}-file: give one of them, not both")
            if env_name:
                value = os.environ.get(env_name, "")
                if not value.strip():
                    raise UsageError(
                        f"--{role}-{option}-env: the environment variable {env_name} holding the {what} is"
                        " not set or empty"
                    )
                return value.strip()
            if file_name:
                try:
                    with open(file_name, encoding="utf-8") as f:
                        value = f.read().strip()
                except (OSError, UnicodeDecodeError) as err:
                    reason = getattr(err, "strerror", None) or type(err).__name__
                    raise UsageError(
                        f"--{role}-{option}-file: cannot read {file_name!r} ({reason})"
                    ) from None
                if not value:
                    raise UsageError(f"--{role}-{option}-file: {file_name!r} is empty, expected the {what}")
                return value
            return None

        access = one(self.access_key_env, self.access_key_file, "access key ID", "access-key")
        secret = one(self.secret_key_env, self.secret_key_file, "secret access key", "secret-key")
        if (access is None) != (secret is None):
            raise UsageError(
                f"--{role}-access-key-*/--{role}-secret-key-*: give both the access key and the secret key,"
                " or neither (anonymous access)"
            )
        return (access, secret) if access is not None else None


@dataclass
class BucketObject:
    """One object (or, when versions are listed, one version or delete marker) as the listing shows it."""

    key: str
    size: int
    etag: str
    last_modified: datetime | None
    version_id: str | None = None
    is_latest: bool = True
    delete_marker: bool = False

    @property
    def last_modified_iso(self) -> str | None:
        if self.last_modified is None:
            return None
        return self.last_modified.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class ObjectRead:
    """An open object: ``readinto`` its body, then ``close``. Headers give its content type and metadata."""

    response: object
    content_type: str | None
    metadata: dict[str, str] = field(default_factory=dict)

    def readinto(self, view) -> int:
        return self.response.readinto(view)

    def close(self) -> None:
        try:
            self.response.close()
            self.response.release_conn()
        except Exception:
            pass


def _etag(value) -> str:
    return (value or "").strip().strip('"')


class BucketClient:
    """S3 calls on one bucket with bounded retries; errors name the bucket and are one line."""

    _TRANSIENT = {"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout"}

    def __init__(self, access: BucketAccess, role: str = "source"):
        import certifi
        import urllib3
        from minio import Minio
        from minio.credentials import StaticProvider

        from steps.drivers.repourl import check_endpoint

        self.access = access
        self.role = role
        endpoint = check_endpoint(access.endpoint, f"--{role}-endpoint")
        parsed = urllib.parse.urlsplit(endpoint)
        keys = access.credentials(role)
        timeout = urllib3.Timeout(connect=access.connect_timeout, read=access.read_timeout)
        tls = {}
        if parsed.scheme == "https":
            tls = {"cert_reqs": "CERT_REQUIRED", "ca_certs": access.ca_bundle or certifi.where()}
        http = urllib3.PoolManager(timeout=timeout, maxsize=16, retries=False, **tls)
        self.client = Minio(
            parsed.netloc,
            secure=parsed.scheme == "https",
            region=access.region,
            credentials=StaticProvider(*keys) if keys else None,
            http_client=http,
        )
        self.client.disable_virtual_style_endpoint()
        self.prefix = access.prefix
        self._lock = threading.Lock()
        self.reads = 0  # object GETs made (an incremental run's unchanged objects add none)
        self.writes = 0

    @property
    def where(self) -> str:
        return self.access.where

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        import urllib3
        from minio.error import InvalidResponseError, S3Error, ServerError

        attempts = 0
        delay = 0.3
        while True:
            attempts += 1
            try:
                return fn()
            except ValueError as err:  # the client refuses a name it cannot send (a '.' or '..' segment)
                raise PermanentError(f"{self.where}: {what}: {err}") from None
            except S3Error as err:
                if err.code not in self._TRANSIENT:
                    raise self._refused(err, what) from None
                last: Exception = err
            except (ServerError, InvalidResponseError) as err:
                status = getattr(err, "_code", None) or getattr(err, "_status_code", None)
                if isinstance(err, InvalidResponseError) and isinstance(status, int) and status < 500:
                    raise PermanentError(
                        f"{self.where}: {what} answered HTTP {status}, not an S3 response (is the endpoint an S3"
                        " server?)"
                    ) from None
                last = err
            except (urllib3.exceptions.HTTPError, OSError) as err:
                last = err
            if attempts > self.access.retries:
                detail = " ".join(str(last).split())[:160]
                raise StoreUnavailable(
                    f"{self.where}: {what} got no answer after {attempts} attempts ({type(last).__name__}:"
                    f" {detail})"
                )
            time.sleep(delay * (0.5 + random.random()))
            delay *= 2

    def _refused(self, err, what: str) -> PermanentError:
        code = getattr(err, "code", "error")
        if code == "NoSuchBucket":
            return PermanentError(f"{self.where}: the bucket {self.access.bucket!r} does not exist")
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled"):
            return PermanentError(
                f"{self.where}: {what} refused: {code} (check the credentials given with --{self.role}-access-key-*"
                f" and --{self.role}-secret-key-*, and the bucket policy)"
            )
        if code in ("NoSuchKey", "NoSuchVersion"):
            return PermanentError(f"{self.where}: {what}: the object is gone ({code}); run again")
        message = " ".join(str(getattr(err, "message", "") or "").split())[:160]
        return PermanentError(f"{self.where}: {what} refused: {code}: {message}")

    # -- bucket ---------------------------------------------------------------------------------------
    def check_bucket(self) -> None:
        """Fails with one line when the bucket is missing, the endpoint does not answer or the keys are refused."""
        if not self._call("HEAD bucket", lambda: self.client.bucket_exists(self.access.bucket)):
            raise PermanentError(f"{self.where}: the bucket {self.access.bucket!r} does not exist")

    def versioning_status(self) -> str:
        """The bucket's versioning: ``Enabled``, ``Suspended`` or ``Off`` (never enabled)."""
        status = self._call(
            "GET versioning", lambda: self.client.get_bucket_versioning(self.access.bucket).status
        )
        return status if status in ("Enabled", "Suspended") else "Off"

    def versioning_enabled(self) -> bool:
        """Whether the bucket keeps versions (Enabled or Suspended: old versions may exist either way)."""
        return self.versioning_status() in ("Enabled", "Suspended")

    def make_bucket(self, versioned: bool = False) -> None:
        """Create the bucket when missing; ``versioned``: with versioning enabled (an existing bucket's
        versioning is left as it is)."""

        def make():
            if self.client.bucket_exists(self.access.bucket):
                return
            self.client.make_bucket(self.access.bucket)
            if versioned:
                from minio.commonconfig import ENABLED
                from minio.versioningconfig import VersioningConfig

                self.client.set_bucket_versioning(self.access.bucket, VersioningConfig(ENABLED))

        self._call("create bucket", make)

    # -- listing --------------------------------------------------------------------------------------
    def list(self, versions: bool = False) -> list[BucketObject]:
        """Every object under the prefix (with ``versions``: every version and delete marker, newest
        first per key), in the order of the server's listing. A listing that breaks off is listed again."""

        def listing():
            return [
                BucketObject(
                    key=o.object_name,
                    size=int(o.size or 0),
                    etag=_etag(o.etag),
                    last_modified=o.last_modified,
                    version_id=o.version_id if versions else None,
                    is_latest=(str(o.is_latest).lower() == "true") if versions else True,
                    delete_marker=bool(o.is_delete_marker),
                )
                for o in self.client.list_objects(
                    self.access.bucket, prefix=self.prefix or None, recursive=True, include_version=versions
                )
                if not (o.is_dir and (o.size or 0) == 0 and not o.etag and not o.last_modified)
            ]

        return self._call("LIST VERSIONS" if versions else "LIST", listing)

    # -- reads and writes -----------------------------------------------------------------------------
    def open(self, obj: BucketObject) -> ObjectRead:
        """The object's body as a stream, with its content type and user metadata from the response."""

        def get():
            return self.client.get_object(self.access.bucket, obj.key, version_id=obj.version_id)

        response = self._call(f"GET {obj.key!r}", get)
        with self._lock:
            self.reads += 1
        headers = response.headers
        metadata = {
            k[len(_META_PREFIX) :].lower(): v
            for k, v in headers.items()
            if k.lower().startswith(_META_PREFIX)
        }
        return ObjectRead(response, headers.get("Content-Type"), metadata)

    def stat(self, key: str) -> BucketObject | None:
        from minio.error import S3Error

        def head():
            try:
                st = self.client.stat_object(self.access.bucket, key)
            except S3Error as err:
                if err.code in ("NoSuchKey", "NoSuchVersion"):
                    return None
                raise
            return BucketObject(key, int(st.size or 0), _etag(st.etag), st.last_modified, st.version_id)

        return self._call(f"HEAD {key!r}", head)

    def head_metadata(self, key: str) -> tuple[str | None, dict[str, str]]:
        """(content type, user metadata) of the current object ``key``."""
        st = self._call(f"HEAD {key!r}", lambda: self.client.stat_object(self.access.bucket, key))
        meta = {
            k[len(_META_PREFIX) :].lower(): v
            for k, v in (st.metadata or {}).items()
            if k.lower().startswith(_META_PREFIX)
        }
        return st.content_type, meta

    def write(
        self,
        key: str,
        stream,
        size: int,
        content_type: str | None,
        metadata: dict[str, str],
        part_size: int = DEFAULT_PART_SIZE,
    ) -> None:
        """Write ``size`` bytes read from ``stream`` (``read(n)``) as ``key``; above ``part_size`` in parts
        (streamed, one part in memory at a time). Not retried: a stream cannot be read twice."""
        from minio.error import S3Error

        headers = {f"{_META_PREFIX}{k}": v for k, v in metadata.items()}
        try:
            self.client.put_object(
                self.access.bucket,
                key,
                stream,
                size,
                content_type=content_type or "application/octet-stream",
                metadata=headers or None,
                part_size=max(part_size, 5 * 1024 * 1024),
                num_parallel_uploads=1,
            )
        except S3Error as err:
            raise self._refused(err, f"PUT {key!r}") from None
        except ValueError as err:
            raise PermanentError(f"{self.where}: PUT {key!r}: {err}") from None
        with self._lock:
            self.writes += 1

    def delete(self, key: str) -> None:
        self._call(f"DELETE {key!r}", lambda: self.client.remove_object(self.access.bucket, key))
