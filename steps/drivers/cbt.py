"""Changed-block tracking: the ranges of a block volume snapshot that hold data, or that changed since a
base snapshot, from the Kubernetes SnapshotMetadata service (KEP-3314, the ``external-snapshot-metadata``
sidecar of a CSI driver).

Provides :func:`discover` (the driver's ``SnapshotMetadataService`` object: address, audience, CA),
:func:`request_token` (a ServiceAccount token for that audience through TokenRequest),
:class:`SnapshotMetadataClient` (a TLS gRPC channel; :meth:`~SnapshotMetadataClient.allocated` and
:meth:`~SnapshotMetadataClient.delta` stream the metadata into a validated :class:`Ranges`) and
:func:`ranges_for` (all three in one call), and :func:`snapshot_of_clone` (which snapshot a copy pod
reads, with its driver and handle, from the clone prepare-clone made). Called by the copy of a block volume
(:mod:`steps.repository.block_delta`).

Nothing the service sends is trusted: the stream must keep one block metadata type and one capacity,
ranges must be sorted, non-overlapping and inside the volume, fixed-length blocks one sane size. Any
problem (no service, no token, TLS, a gRPC error, a broken promise of the stream) is a
:class:`CbtUnavailable` with a one-line reason, after which the caller reads the whole volume. The
security token never appears in an error or a log line.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from . import cbt_messages as msg

API_VERSION = "cbt.storage.k8s.io/v1alpha1"
KIND = "SnapshotMetadataService"
TOKEN_SECONDS = 600  # the shortest lifetime a TokenRequest allows: the token is used at once
MIN_BLOCK = 512
MAX_BLOCK = 64 * 1024 * 1024
MAX_EXTENTS = 4_000_000  # beyond this many separate extents a full read is cheaper than the bookkeeping
STREAM_RETRIES = 2  # resumptions (from the end of the last range) after the stream broke off


class CbtUnavailable(Exception):
    """Changed-block metadata cannot be used for this copy; the message is one line naming why."""


@dataclass(frozen=True)
class ServiceInfo:
    driver: str
    address: str  # host:port
    audience: str
    ca_cert: bytes  # PEM


@dataclass
class Ranges:
    """Validated metadata of one call: ``extents`` are sorted, non-overlapping ``(offset, length)`` pairs
    inside ``capacity``, adjacent ranges merged."""

    kind: str  # "allocated" or "delta"
    block_type: str  # FIXED_LENGTH or VARIABLE_LENGTH
    capacity: int
    block_size: int | None = None  # for FIXED_LENGTH
    extents: list[tuple[int, int]] = field(default_factory=list)
    messages: int = 0
    ranges: int = 0  # as sent, before merging

    @property
    def bytes(self) -> int:
        return sum(n for _, n in self.extents)


class RangeValidator:
    """Checks one stream of responses as it arrives and merges its ranges (so memory grows with the number
    of separate extents, not with the number of blocks sent)."""

    def __init__(self, kind: str, expected_capacity: int | None = None, max_extents: int = MAX_EXTENTS):
        self.kind = kind
        self.expected_capacity = expected_capacity
        self.max_extents = max_extents
        self.result: Ranges | None = None
        self._type: int | None = None
        self._end = 0  # end of the last range accepted
        self._resumed_at: int | None = None

    def _fail(self, what: str) -> CbtUnavailable:
        return CbtUnavailable(f"SnapshotMetadata {self.kind} stream: {what}")

    def resume_from(self, offset: int) -> None:
        """The stream is asked again from ``offset`` (the end of the last range): the plugin may round the
        offset down, so ranges before it are clipped, not rejected."""
        self._resumed_at = offset

    def feed(self, resp: msg.MetadataResponse) -> None:
        t, cap = resp.block_metadata_type, resp.volume_capacity_bytes
        if t not in (msg.FIXED_LENGTH, msg.VARIABLE_LENGTH):
            raise self._fail(f"block_metadata_type {t} is not FIXED_LENGTH or VARIABLE_LENGTH")
        if self.result is None:
            if cap <= 0:
                raise self._fail(f"volume_capacity_bytes {cap} is not positive")
            if self.expected_capacity is not None and cap != self.expected_capacity:
                raise self._fail(
                    f"volume_capacity_bytes {cap} differs from the volume's size {self.expected_capacity}"
                )
            self._type = t
            self.result = Ranges(self.kind, msg.BLOCK_METADATA_TYPES[t], cap)
        r = self.result
        if t != self._type:
            raise self._fail("block_metadata_type changed within the stream")
        if cap != r.capacity:
            raise self._fail(f"volume_capacity_bytes changed within the stream ({r.capacity} then {cap})")
        r.messages += 1
        for b in resp.block_metadata:
            off, size = b.byte_offset, b.size_bytes
            if off < 0 or size <= 0:
                raise self._fail(
                    f"range ({off}, {size}) has a negative offset or a size that is not positive"
                )
            if off + size > r.capacity:
                raise self._fail(f"range ({off}, {size}) ends past the volume's capacity {r.capacity}")
            if t == msg.FIXED_LENGTH:
                if r.block_size is None:
                    if size < MIN_BLOCK or size > MAX_BLOCK or size & (size - 1):
                        raise self._fail(
                            f"block size {size} is not a power of two between {MIN_BLOCK} and {MAX_BLOCK}"
                        )
                    r.block_size = size
                elif size != r.block_size:
                    raise self._fail(f"FIXED_LENGTH block of {size} bytes after blocks of {r.block_size}")
                if off % r.block_size:
                    raise self._fail(f"FIXED_LENGTH block at {off} is not aligned to {r.block_size}")
            if self._resumed_at is not None and off < self._resumed_at:
                cut = min(self._resumed_at, off + size)
                size -= cut - off
                off = cut
                if size <= 0:
                    continue
            if off < self._end:
                raise self._fail(
                    f"range ({off}, {size}) overlaps or precedes the previous range ending at {self._end}"
                )
            r.ranges += 1
            if r.extents and r.extents[-1][0] + r.extents[-1][1] == off:
                last = r.extents[-1]
                r.extents[-1] = (last[0], last[1] + size)
            else:
                if len(r.extents) >= self.max_extents:
                    raise self._fail(f"more than {self.max_extents} separate extents")
                r.extents.append((off, size))
            self._end = off + size
        self._resumed_at = None if resp.block_metadata else self._resumed_at

    @property
    def end(self) -> int:
        return self._end

    def finish(self) -> Ranges:
        if self.result is None:
            raise self._fail("ended without a response (no capacity, no block metadata type)")
        return self.result


# -- discovery and authentication ------------------------------------------------------------------------


def discover(kube, driver: str) -> ServiceInfo:
    """The ``SnapshotMetadataService`` named after the CSI driver (cluster-scoped); ``kube`` is a
    :class:`steps.drivers.kube.KubeClient`."""
    from .kube import KubeError

    try:
        obj = kube.get_or_none(API_VERSION, KIND, driver)
    except KubeError as err:
        raise CbtUnavailable(f"{KIND} {driver!r}: {err}") from None
    if obj is None:
        raise CbtUnavailable(
            f"no {KIND} {driver!r} in the cluster (the CSI driver offers no changed-block tracking)"
        )
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    address, audience, ca = spec.get("address"), spec.get("audience"), spec.get("caCert")
    for name, value in (("address", address), ("audience", audience), ("caCert", ca)):
        if not isinstance(value, str) or not value:
            raise CbtUnavailable(f"{KIND} {driver!r}: spec.{name} is missing (expected a non-empty string)")
    if "://" in address or ":" not in address:
        raise CbtUnavailable(f"{KIND} {driver!r}: spec.address {address!r} is not host:port")
    try:
        pem = base64.b64decode(ca, validate=True)
    except ValueError:
        raise CbtUnavailable(f"{KIND} {driver!r}: spec.caCert is not base64") from None
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        raise CbtUnavailable(f"{KIND} {driver!r}: spec.caCert holds no PEM certificate")
    return ServiceInfo(driver, address, audience, pem)


def request_token(kube, namespace: str, service_account: str, audience: str) -> str:
    """A token of the ServiceAccount bound to ``audience`` (TokenRequest, the shortest lifetime)."""
    from .kube import KubeError

    body = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"audiences": [audience], "expirationSeconds": TOKEN_SECONDS},
    }
    path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token"
    try:
        answer = kube.request(
            "POST", path, body=body, what=f"token of ServiceAccount {namespace}/{service_account}"
        )
    except KubeError as err:
        raise CbtUnavailable(
            f"TokenRequest for ServiceAccount {namespace}/{service_account}: {err}"
        ) from None
    token = (answer.get("status") or {}).get("token") if isinstance(answer, dict) else None
    if not isinstance(token, str) or not token:
        raise CbtUnavailable(
            f"TokenRequest for ServiceAccount {namespace}/{service_account}: no token in the answer"
        )
    return token


@dataclass(frozen=True)
class CopiedSnapshot:
    """The VolumeSnapshot a copy pod reads (through its clone) and what its bound content says: the CSI
    driver and the snapshot's handle (the base of the next copy's delta)."""

    namespace: str
    name: str
    driver: str
    handle: str


def snapshot_of_clone(kube, namespace: str, claim: str) -> CopiedSnapshot:
    """The VolumeSnapshot the clone claim ``claim`` in ``namespace`` was provisioned from (see
    :func:`snapshot_of_named`). Used when the copy is told only the namespace (the rendered workflow:
    prepare-clone named the clone after the backup and volume, in the app's or the mover namespace)."""
    from .kube import KubeError
    from .kube_objects import dig

    try:
        pvc = kube.get_or_none("v1", "PersistentVolumeClaim", claim, namespace)
    except KubeError as err:
        raise CbtUnavailable(f"clone {namespace}/{claim}: {err}") from None
    source = dig(pvc, "spec", "dataSource") if pvc else None
    if not isinstance(source, dict) or source.get("kind") != "VolumeSnapshot" or not source.get("name"):
        raise CbtUnavailable(f"PersistentVolumeClaim {namespace}/{claim}: not a clone of a VolumeSnapshot")
    return snapshot_of_named(kube, namespace, str(source["name"]))


def snapshot_of_named(kube, namespace: str, name: str) -> CopiedSnapshot:
    """VolumeSnapshot ``namespace/name`` with the driver and snapshot handle of its bound
    VolumeSnapshotContent. The content must point back at that snapshot: a content bound elsewhere, or
    one without a driver or handle, is :class:`CbtUnavailable` (the copy then reads in full)."""
    from .kube import KubeError
    from .kube_objects import dig
    from .snapshot_wait import SNAPSHOT_API

    try:
        snap = kube.get_or_none(SNAPSHOT_API, "VolumeSnapshot", name, namespace)
        bound = dig(snap, "status", "boundVolumeSnapshotContentName") if snap else None
        if not isinstance(bound, str) or not bound:
            raise CbtUnavailable(f"VolumeSnapshot {namespace}/{name}: not bound to a VolumeSnapshotContent")
        content = kube.get_or_none(SNAPSHOT_API, "VolumeSnapshotContent", bound, None)
    except KubeError as err:
        raise CbtUnavailable(f"VolumeSnapshot {namespace}/{name}: {err}") from None
    if content is None:
        raise CbtUnavailable(
            f"VolumeSnapshotContent {bound} (of VolumeSnapshot {namespace}/{name}) is missing"
        )
    ref = dig(content, "spec", "volumeSnapshotRef") or {}
    if ref.get("namespace") != namespace or ref.get("name") != name:
        raise CbtUnavailable(
            f"VolumeSnapshotContent {bound} is bound to {ref.get('namespace')}/{ref.get('name')}, "
            f"not to VolumeSnapshot {namespace}/{name}"
        )
    driver = dig(content, "spec", "driver")
    handle = dig(content, "status", "snapshotHandle") or dig(content, "spec", "source", "snapshotHandle")
    if not isinstance(driver, str) or not driver or not isinstance(handle, str) or not handle:
        raise CbtUnavailable(f"VolumeSnapshotContent {bound}: no driver or snapshotHandle")
    return CopiedSnapshot(namespace, name, driver, handle)


# -- the gRPC client -------------------------------------------------------------------------------------


class SnapshotMetadataClient:
    """One TLS channel to a SnapshotMetadata service. Use as a context manager."""

    def __init__(
        self, info: ServiceInfo, token: str, namespace: str, timeout: float = 300.0, max_results: int = 0
    ):
        import grpc

        self.info, self._token, self.namespace = info, token, namespace
        self.timeout, self.max_results = timeout, max_results
        creds = grpc.ssl_channel_credentials(root_certificates=info.ca_cert)
        self._channel = grpc.secure_channel(info.address, creds)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> SnapshotMetadataClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, path: str, make: Callable[[int], object], validator: RangeValidator) -> Ranges:
        import grpc

        call = self._channel.unary_stream(
            path, request_serializer=lambda m: m.encode(), response_deserializer=msg.MetadataResponse.decode
        )
        attempt = 0
        while True:
            start = validator.end
            stream = call(make(start), timeout=self.timeout)
            try:
                for resp in stream:
                    validator.feed(resp)
                return validator.finish()
            except grpc.RpcError as err:
                code = err.code() if hasattr(err, "code") else None
                detail = (err.details() if hasattr(err, "details") else "") or ""
                resumable = (
                    code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL) and validator.result
                )
                if resumable and attempt < STREAM_RETRIES:
                    attempt += 1
                    validator.resume_from(validator.end)
                    continue
                name = code.name if code is not None else "UNKNOWN"
                detail = detail.replace(self._token, "<token>").splitlines()[0] if detail else ""
                raise CbtUnavailable(
                    f"SnapshotMetadata {validator.kind} call to {self.info.address} failed: {name}"
                    + (f" ({detail})" if detail else "")
                ) from None
            except msg.MessageError as err:
                raise CbtUnavailable(
                    f"SnapshotMetadata {validator.kind} stream: undecodable response ({err})"
                ) from None
            finally:
                with contextlib.suppress(Exception):
                    stream.cancel()

    def allocated(self, snapshot_name: str, capacity: int | None = None) -> Ranges:
        """The allocated ranges of the VolumeSnapshot ``snapshot_name``."""

        def make(start: int):
            return msg.GetMetadataAllocatedRequest(
                self._token, self.namespace, snapshot_name, start, self.max_results
            )

        return self._call(msg.GET_METADATA_ALLOCATED, make, RangeValidator("allocated", capacity))

    def delta(self, base_snapshot_id: str, target_snapshot_name: str, capacity: int | None = None) -> Ranges:
        """The ranges changed since the base snapshot (its CSI handle) in the VolumeSnapshot
        ``target_snapshot_name``."""

        def make(start: int):
            return msg.GetMetadataDeltaRequest(
                self._token, self.namespace, base_snapshot_id, target_snapshot_name, start, self.max_results
            )

        return self._call(msg.GET_METADATA_DELTA, make, RangeValidator("delta", capacity))


@dataclass(frozen=True)
class CbtRequest:
    """What the copy of a block volume needs to ask the service: the driver, the snapshot (namespace and
    VolumeSnapshot name), the ServiceAccount to get a token for, and the base snapshot's CSI handle for
    an incremental (None: the allocated ranges)."""

    driver: str
    namespace: str
    snapshot_name: str
    service_account: str
    service_account_namespace: str | None = None
    base_snapshot_handle: str | None = None


def ranges_for(kube, req: CbtRequest, capacity: int | None = None, timeout: float = 300.0) -> Ranges:
    """Discover, authenticate and stream in one call; :class:`CbtUnavailable` on any problem."""
    info = discover(kube, req.driver)
    token = request_token(
        kube, req.service_account_namespace or req.namespace, req.service_account, info.audience
    )
    try:
        with SnapshotMetadataClient(info, token, req.namespace, timeout=timeout) as client:
            if req.base_snapshot_handle:
                return client.delta(req.base_snapshot_handle, req.snapshot_name, capacity)
            return client.allocated(req.snapshot_name, capacity)
    except CbtUnavailable:
        raise
    except Exception as err:  # channel set-up (bad CA, address) and anything grpc raises outside a call
        raise CbtUnavailable(
            f"SnapshotMetadata service {info.address}: {type(err).__name__}: {err}".replace(
                token, "<token>"
            ).splitlines()[0]
        ) from None


def merge_extents(extents: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, merged copies of (offset, length) pairs that may overlap (for callers combining sets)."""
    out: list[tuple[int, int]] = []
    for off, n in sorted(e for e in extents if e[1] > 0):
        if out and off <= out[-1][0] + out[-1][1]:
            last = out[-1]
            out[-1] = (last[0], max(last[1], off + n - last[0]))
        else:
            out.append((off, n))
    return out
