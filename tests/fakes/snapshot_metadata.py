"""A SnapshotMetadata gRPC service for tests, as a CSI driver's ``external-snapshot-metadata`` sidecar
serves it: real gRPC over TLS on a port the OS chooses, certificates made for the test, clients
authenticated with TokenReview against the fake Kubernetes API server (audience-bound tokens).

Snapshots are image files registered by a test (``add_snapshot(namespace, name, handle, path)``); the
allocated ranges are the image's data extents (SEEK_DATA / SEEK_HOLE) rounded to blocks, the delta
between two snapshots the blocks whose bytes differ. ``behaviour`` makes the service lie or fail:

* ``honest`` - true ranges;
* ``lie`` - leaves out every other changed block (a service that loses writes);
* ``fail`` - FAILED_PRECONDITION at once (changed-block tracking not enabled);
* ``break`` - sends one message and then aborts with UNAVAILABLE, every time;
* ``break-once`` - the same, once: the next call (resumed from an offset) works;
* ``overlap`` - ranges out of order; ``beyond`` - a range past the capacity;
* ``capacity`` - a capacity that changes mid-stream.

Example::

    with FakeSnapshotMetadata(kube_server, "hostpath.csi.k8s.io") as sms:
        sms.add_snapshot("app", "snap-1", "handle-1", image_path)
        info = steps.drivers.cbt.discover(kube, "hostpath.csi.k8s.io")
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
import stat
import threading
from concurrent import futures
from pathlib import Path

import grpc

from steps.drivers import cbt_messages as msg


def make_tls(hosts: list[str]) -> tuple[bytes, bytes, bytes]:
    """(CA certificate, server certificate, server key), PEM, made for this test only."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test snapshot-metadata CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return ca.public_bytes(pem), cert.public_bytes(pem), key_pem


def data_extents(path: Path) -> list[tuple[int, int]]:
    """The data extents of a (possibly sparse) file."""
    out = []
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
        if stat.S_ISBLK(os.fstat(fd).st_mode):  # a device has no holes to find: all of it
            return [(0, size)] if size else []
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            out.append((start, end - start))
            pos = end
    finally:
        os.close(fd)
    return out


def _size(path: Path) -> int:
    """The size of an image file or a block device."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


class FakeSnapshotMetadata:
    def __init__(
        self,
        kube,
        driver: str,
        *,
        audience: str | None = None,
        block_size: int = 64 * 1024,
        variable: bool = False,
        max_results: int = 64,
        publish: bool = True,
    ):
        self.kube, self.driver = kube, driver
        self.audience = audience or f"{driver}-snapshot-metadata"
        self.block_size, self.variable, self.max_results = block_size, variable, max_results
        self.publish = publish
        self.behaviour = "honest"
        self.snapshots: dict[tuple[str, str], Path] = {}
        self.handles: dict[str, Path] = {}
        self.known_deltas: dict[tuple[str, str, str], list[tuple[int, int]]] = {}
        self.calls: list[tuple[str, object]] = []
        self.rejected: list[str] = []
        self._broke_once = False
        self._lock = threading.Lock()
        self.ca, cert, key = make_tls(["127.0.0.1", "localhost"])
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handlers = {
            "GetMetadataAllocated": grpc.unary_stream_rpc_method_handler(
                self._allocated,
                request_deserializer=msg.GetMetadataAllocatedRequest.decode,
                response_serializer=lambda m: m.encode(),
            ),
            "GetMetadataDelta": grpc.unary_stream_rpc_method_handler(
                self._delta,
                request_deserializer=msg.GetMetadataDeltaRequest.decode,
                response_serializer=lambda m: m.encode(),
            ),
        }
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(msg.SERVICE, handlers),))
        creds = grpc.ssl_server_credentials([(key, cert)])
        self.port = self._server.add_secure_port("127.0.0.1:0", creds)
        self.address = f"127.0.0.1:{self.port}"

    # -- life cycle ---------------------------------------------------------------------------------------
    def start(self) -> FakeSnapshotMetadata:
        self._server.start()
        if self.publish:
            self.kube.register_kind(
                "cbt.storage.k8s.io", "v1alpha1", "SnapshotMetadataService", namespaced=False, status=False
            )
            self.kube.create(
                {
                    "apiVersion": "cbt.storage.k8s.io/v1alpha1",
                    "kind": "SnapshotMetadataService",
                    "metadata": {"name": self.driver},
                    "spec": {
                        "address": self.address,
                        "audience": self.audience,
                        "caCert": base64.b64encode(self.ca).decode(),
                    },
                }
            )
        return self

    def stop(self) -> None:
        self._server.stop(grace=None).wait(5)

    def __enter__(self) -> FakeSnapshotMetadata:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def add_snapshot(self, namespace: str, name: str, handle: str, image: Path) -> None:
        self.snapshots[(namespace, name)] = Path(image)
        self.handles[handle] = Path(image)

    def add_known_delta(
        self, base_handle: str, namespace: str, target_name: str, ranges: list[tuple[int, int]]
    ) -> None:
        """Serve these changed ranges between the two snapshots instead of comparing their images (a bench
        with known writes to a large device)."""
        self.known_deltas[(base_handle, namespace, target_name)] = sorted(ranges)

    # -- the service --------------------------------------------------------------------------------------
    def _authenticate(self, token: str, namespace: str, context) -> None:
        from kubernetes import client

        api = client.AuthenticationV1Api(self.kube.api_client())
        try:
            review = api.create_token_review({"spec": {"token": token, "audiences": [self.audience]}})
        finally:
            api.api_client.close()
        if not review.status.authenticated:
            self.rejected.append(review.status.error or "not authenticated")
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "token not accepted for this audience")
        if not namespace:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "namespace is required")

    def _blocks(self, extents: list[tuple[int, int]], size: int) -> list[tuple[int, int]]:
        bs = self.block_size
        blocks: list[int] = []
        for off, n in extents:
            first, last = off // bs, (off + n - 1) // bs
            for b in range(first, last + 1):
                if not blocks or blocks[-1] < b:
                    blocks.append(b)
        out = [(b * bs, min(bs, size - b * bs)) for b in blocks]
        if self.variable:
            merged: list[tuple[int, int]] = []
            for off, n in out:
                if merged and merged[-1][0] + merged[-1][1] == off:
                    merged[-1] = (merged[-1][0], merged[-1][1] + n)
                else:
                    merged.append((off, n))
            return merged
        return out

    def _changed(self, base: Path, target: Path) -> list[tuple[int, int]]:
        bs = self.block_size
        out = []
        with open(base, "rb") as a, open(target, "rb") as b:
            off = 0
            while True:
                x, y = a.read(bs), b.read(bs)
                if not x and not y:
                    break
                if x != y:
                    out.append((off, max(len(x), len(y))))
                off += bs
        return out

    def _stream(self, ranges: list[tuple[int, int]], size: int, start: int, max_results: int, context):
        behaviour = self.behaviour
        if behaviour == "fail":
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "changed block tracking is not enabled")
        if behaviour == "lie":
            ranges = ranges[::2]
        if behaviour == "overlap" and len(ranges) >= 2:
            ranges = [ranges[1], ranges[0], *ranges[2:]]
        if behaviour == "beyond":
            ranges = [*ranges, (size, self.block_size)]
        ranges = [r for r in ranges if r[0] + r[1] > start]
        kind = msg.VARIABLE_LENGTH if self.variable else msg.FIXED_LENGTH
        per = max_results if max_results > 0 else self.max_results
        for sent, i in enumerate(range(0, max(len(ranges), 1), per)):
            part = ranges[i : i + per]
            cap = size + (self.block_size if behaviour == "capacity" and sent else 0)
            yield msg.MetadataResponse(kind, cap, [msg.BlockMetadata(o, n) for o, n in part])
            if behaviour == "break" or (behaviour == "break-once" and not self._broke_once):
                with self._lock:
                    self._broke_once = True
                context.abort(grpc.StatusCode.UNAVAILABLE, "connection to the SP service lost")

    def _allocated(self, req: msg.GetMetadataAllocatedRequest, context):
        self.calls.append(("allocated", req))
        self._authenticate(req.security_token, req.namespace, context)
        image = self.snapshots.get((req.namespace, req.snapshot_name))
        if image is None:
            context.abort(
                grpc.StatusCode.NOT_FOUND, f"snapshot {req.namespace}/{req.snapshot_name} not found"
            )
        size = _size(image)
        ranges = self._blocks(data_extents(image), size)
        yield from self._stream(ranges, size, req.starting_offset, req.max_results, context)

    def _delta(self, req: msg.GetMetadataDeltaRequest, context):
        self.calls.append(("delta", req))
        self._authenticate(req.security_token, req.namespace, context)
        base = self.handles.get(req.base_snapshot_id)
        target = self.snapshots.get((req.namespace, req.target_snapshot_name))
        if base is None or target is None:
            context.abort(grpc.StatusCode.NOT_FOUND, "base or target snapshot not found")
        size = _size(target)
        known = self.known_deltas.get((req.base_snapshot_id, req.namespace, req.target_snapshot_name))
        changed = self._blocks(known, size) if known is not None else self._changed(base, target)
        if self.variable:
            changed = self._blocks(changed, size)
        yield from self._stream(changed, size, req.starting_offset, req.max_results, context)
