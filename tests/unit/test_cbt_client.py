"""The SnapshotMetadata client (steps.drivers.cbt): discovery of the SnapshotMetadataService object, an
audience-bound token from TokenRequest, real gRPC over TLS to a test service, and validation of what the
service streams (a lying, failing or broken service gives one clear line, never a traceback)."""

from __future__ import annotations

import base64
import importlib
import os
import sys
from pathlib import Path

import pytest

from steps.drivers import cbt
from steps.drivers import cbt_messages as msg
from steps.drivers.kube import KubeClient
from tests.fakes.snapshot_metadata import FakeSnapshotMetadata

DRIVER = "hostpath.csi.k8s.io"
BS = 64 * 1024
SIZE = 4 * 1024 * 1024


@pytest.fixture
def kube(kube_server):
    kube_server.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "app"}})
    kube_server.create(
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "snapflow-mover", "namespace": "app"},
        }
    )
    client = KubeClient(api=kube_server.api_client())
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def service(kube_server):
    with FakeSnapshotMetadata(kube_server, DRIVER, block_size=BS) as sms:
        yield sms


def _image(path: Path, writes: dict[int, bytes], size: int = SIZE) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
        for off, data in writes.items():
            f.seek(off)
            f.write(data)
    return path


@pytest.fixture
def images(tmp_path):
    base = _image(tmp_path / "base.img", {0: b"a" * 100, 10 * BS: os.urandom(3 * BS)})
    target = _image(
        tmp_path / "target.img",
        {
            0: b"a" * 100,
            10 * BS: base.read_bytes()[10 * BS : 13 * BS],
            11 * BS + 5: b"changed",
            40 * BS: b"new",
        },
    )
    return base, target


def _request(base_handle: str | None = None) -> cbt.CbtRequest:
    return cbt.CbtRequest(DRIVER, "app", "snap-2", "snapflow-mover", base_snapshot_handle=base_handle)


def test_allocated_ranges_come_from_the_service_over_tls_with_an_audience_bound_token(kube, service, images):
    # GIVEN a published service and a snapshot whose data sits in three extents
    target = images[1]
    service.add_snapshot("app", "snap-2", "handle-2", target)
    # WHEN the client discovers it, gets a token and asks for the allocated ranges
    ranges = cbt.ranges_for(kube, _request(), capacity=SIZE, timeout=10)
    # THEN the ranges are the data blocks, merged, and the token was accepted for the service's audience only
    assert ranges.kind == "allocated" and ranges.block_type == "FIXED_LENGTH" and ranges.block_size == BS
    assert ranges.capacity == SIZE
    assert ranges.extents == [(0, BS), (10 * BS, 3 * BS), (40 * BS, BS)]
    assert ranges.ranges == 5
    ((method, req),) = service.calls
    assert method == "allocated" and req.namespace == "app" and req.snapshot_name == "snap-2"
    assert req.security_token.startswith("tr-app-snapflow-mover-")
    issued = kube.api.configuration  # the token is not the API server's: it does not authenticate there
    assert req.security_token != issued.api_key.get("authorization", "")
    assert req.security_token not in service.kube.identities
    assert service.kube.issued_tokens[req.security_token].audiences == [service.audience]
    assert not service.rejected


def test_delta_names_the_base_by_its_handle_and_returns_the_changed_blocks(kube, service, images):
    base, target = images
    service.add_snapshot("app", "snap-1", "handle-1", base)
    service.add_snapshot("app", "snap-2", "handle-2", target)
    ranges = cbt.ranges_for(kube, _request("handle-1"), capacity=SIZE, timeout=10)
    assert ranges.kind == "delta"
    assert ranges.extents == [(11 * BS, BS), (40 * BS, BS)]
    assert service.calls[0][1].base_snapshot_id == "handle-1"
    assert service.calls[0][1].target_snapshot_name == "snap-2"


def test_variable_length_extents_are_accepted(kube, kube_server, images):
    target = images[1]
    with FakeSnapshotMetadata(kube_server, DRIVER, block_size=BS, variable=True, max_results=1) as sms:
        sms.add_snapshot("app", "snap-2", "handle-2", target)
        ranges = cbt.ranges_for(kube, _request(), capacity=SIZE, timeout=10)
    assert ranges.block_type == "VARIABLE_LENGTH" and ranges.block_size is None
    assert ranges.extents == [(0, BS), (10 * BS, 3 * BS), (40 * BS, BS)]
    assert ranges.messages == 3


def test_a_stream_that_breaks_once_is_resumed_from_the_last_range(kube, kube_server, images):
    target = images[1]
    with FakeSnapshotMetadata(kube_server, DRIVER, block_size=BS, max_results=2) as sms:
        sms.add_snapshot("app", "snap-2", "handle-2", target)
        sms.behaviour = "break-once"
        ranges = cbt.ranges_for(kube, _request(), capacity=SIZE, timeout=10)
    assert ranges.extents == [(0, BS), (10 * BS, 3 * BS), (40 * BS, BS)]
    assert [c[1].starting_offset for c in sms.calls] == [0, 11 * BS]


@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [
        ("fail", "failed: FAILED_PRECONDITION (changed block tracking is not enabled)"),
        ("break", "failed: UNAVAILABLE"),
        ("overlap", "overlaps or precedes the previous range"),
        ("beyond", "ends past the volume's capacity"),
        ("capacity", "volume_capacity_bytes changed within the stream"),
    ],
)
def test_a_failing_or_lying_stream_is_one_clear_line(kube, kube_server, images, behaviour, expected):
    target = images[1]
    with FakeSnapshotMetadata(kube_server, DRIVER, block_size=BS, max_results=2) as sms:
        sms.add_snapshot("app", "snap-2", "handle-2", target)
        sms.behaviour = behaviour
        with pytest.raises(cbt.CbtUnavailable) as caught:
            cbt.ranges_for(kube, _request(), capacity=SIZE, timeout=10)
        token = sms.calls[0][1].security_token
    text = str(caught.value)
    assert expected in text and "\n" not in text
    assert token not in text


def test_a_capacity_other_than_the_devices_is_refused(kube, service, images):
    service.add_snapshot("app", "snap-2", "handle-2", images[1])
    with pytest.raises(cbt.CbtUnavailable, match="differs from the volume's size 1234"):
        cbt.ranges_for(kube, _request(), capacity=1234, timeout=10)


def test_no_service_object_means_no_changed_block_tracking(kube, kube_server):
    kube_server.register_kind("cbt.storage.k8s.io", "v1alpha1", "SnapshotMetadataService", namespaced=False)
    with pytest.raises(cbt.CbtUnavailable, match=r"no SnapshotMetadataService 'hostpath\.csi\.k8s\.io'"):
        cbt.ranges_for(kube, _request(), timeout=10)


def test_a_service_object_with_a_wrong_ca_fails_the_tls_handshake(kube, kube_server, images):
    from tests.fakes.snapshot_metadata import make_tls

    other_ca, _, _ = make_tls(["127.0.0.1"])
    with FakeSnapshotMetadata(kube_server, DRIVER, block_size=BS, publish=False) as sms:
        sms.add_snapshot("app", "snap-2", "handle-2", images[1])
        kube_server.register_kind(
            "cbt.storage.k8s.io", "v1alpha1", "SnapshotMetadataService", namespaced=False
        )
        kube_server.create(
            {
                "apiVersion": "cbt.storage.k8s.io/v1alpha1",
                "kind": "SnapshotMetadataService",
                "metadata": {"name": DRIVER},
                "spec": {
                    "address": sms.address,
                    "audience": sms.audience,
                    "caCert": base64.b64encode(other_ca).decode(),
                },
            }
        )
        with pytest.raises(cbt.CbtUnavailable, match="failed: UNAVAILABLE"):
            cbt.ranges_for(kube, _request(), timeout=10)
        assert not sms.calls  # the handshake failed before any request


def test_a_token_for_another_audience_is_rejected_by_the_service(kube, kube_server, images):
    with FakeSnapshotMetadata(kube_server, DRIVER, block_size=BS, publish=False) as sms:
        sms.add_snapshot("app", "snap-2", "handle-2", images[1])
        kube_server.register_kind(
            "cbt.storage.k8s.io", "v1alpha1", "SnapshotMetadataService", namespaced=False
        )
        kube_server.create(
            {
                "apiVersion": "cbt.storage.k8s.io/v1alpha1",
                "kind": "SnapshotMetadataService",
                "metadata": {"name": DRIVER},
                "spec": {
                    "address": sms.address,
                    "audience": "someone-else",
                    "caCert": base64.b64encode(sms.ca).decode(),
                },
            }
        )
        with pytest.raises(cbt.CbtUnavailable, match="UNAUTHENTICATED"):
            cbt.ranges_for(kube, _request(), timeout=10)
        assert sms.rejected == ["token audiences is invalid for the target audiences"]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"audience": "a", "caCert": "x"}, "spec.address is missing"),
        ({"address": "https://x:1", "audience": "a", "caCert": "eA=="}, "is not host:port"),
        ({"address": "x:1", "audience": "a", "caCert": "not base64!"}, "spec.caCert is not base64"),
        ({"address": "x:1", "audience": "a", "caCert": "eA=="}, "holds no PEM certificate"),
    ],
)
def test_a_malformed_service_object_is_named(kube, kube_server, spec, expected):
    kube_server.register_kind("cbt.storage.k8s.io", "v1alpha1", "SnapshotMetadataService", namespaced=False)
    kube_server.create(
        {
            "apiVersion": "cbt.storage.k8s.io/v1alpha1",
            "kind": "SnapshotMetadataService",
            "metadata": {"name": DRIVER},
            "spec": spec,
        }
    )
    with pytest.raises(cbt.CbtUnavailable, match=expected):
        cbt.discover(kube, DRIVER)


def test_a_token_for_an_unknown_service_account_is_refused(kube, service):
    with pytest.raises(cbt.CbtUnavailable, match="TokenRequest for ServiceAccount app/nobody"):
        cbt.request_token(kube, "app", "nobody", service.audience)


@pytest.mark.parametrize(
    ("blocks", "expected"),
    [
        ([(0, 3000)], "is not a power of two"),
        ([(0, 4096), (8192, 8192)], "FIXED_LENGTH block of 8192 bytes after blocks of 4096"),
        ([(100, 4096)], "is not aligned to 4096"),
        ([(0, 0)], "size that is not positive"),
        ([(-4096, 4096)], "negative offset"),
    ],
)
def test_fixed_length_blocks_must_be_one_sane_aligned_size(blocks, expected):
    v = cbt.RangeValidator("delta", 1 << 20)
    with pytest.raises(cbt.CbtUnavailable, match=expected):
        v.feed(msg.MetadataResponse(msg.FIXED_LENGTH, 1 << 20, [msg.BlockMetadata(o, n) for o, n in blocks]))


def test_an_unknown_block_metadata_type_or_an_empty_stream_is_refused():
    v = cbt.RangeValidator("allocated")
    with pytest.raises(cbt.CbtUnavailable, match="block_metadata_type 0"):
        v.feed(msg.MetadataResponse(msg.UNKNOWN, 100, []))
    with pytest.raises(cbt.CbtUnavailable, match="ended without a response"):
        cbt.RangeValidator("allocated").finish()


def test_the_hand_written_messages_match_code_generated_from_the_proto(tmp_path):
    # GIVEN the .proto compiled by protoc (grpcio-tools)
    from grpc_tools import protoc

    proto = Path(cbt.__file__).with_name("snapshot_metadata.proto")
    rc = protoc.main(["protoc", f"-I{proto.parent}", f"--python_out={tmp_path}", proto.name])
    assert rc == 0
    sys.path.insert(0, str(tmp_path))
    try:
        gen = importlib.import_module("snapshot_metadata_pb2")
    finally:
        sys.path.remove(str(tmp_path))
    # THEN requests encode to the same bytes, and generated responses decode to the same values
    mine = msg.GetMetadataDeltaRequest("tok", "ns", "handle", "snap", 1 << 40, 7)
    theirs = gen.GetMetadataDeltaRequest(
        security_token="tok",
        namespace="ns",
        base_snapshot_id="handle",
        target_snapshot_name="snap",
        starting_offset=1 << 40,
        max_results=7,
    )
    assert mine.encode() == theirs.SerializeToString()
    assert msg.GetMetadataDeltaRequest.decode(theirs.SerializeToString()) == mine
    mine_a = msg.GetMetadataAllocatedRequest("tok", "ns", "snap", 4096, -1)
    theirs_a = gen.GetMetadataAllocatedRequest(
        security_token="tok", namespace="ns", snapshot_name="snap", starting_offset=4096, max_results=-1
    )
    assert mine_a.encode() == theirs_a.SerializeToString()
    assert msg.GetMetadataAllocatedRequest.decode(theirs_a.SerializeToString()) == mine_a
    resp = gen.GetMetadataDeltaResponse(
        block_metadata_type=gen.VARIABLE_LENGTH,
        volume_capacity_bytes=8 << 30,
        block_metadata=[
            gen.BlockMetadata(byte_offset=0, size_bytes=4096),
            gen.BlockMetadata(byte_offset=-5, size_bytes=1),
        ],
    )
    decoded = msg.MetadataResponse.decode(resp.SerializeToString())
    assert decoded.block_metadata_type == msg.VARIABLE_LENGTH and decoded.volume_capacity_bytes == 8 << 30
    assert [(b.byte_offset, b.size_bytes) for b in decoded.block_metadata] == [(0, 4096), (-5, 1)]
    assert decoded.encode() == resp.SerializeToString()
    # and unknown fields are skipped, truncated bytes refused
    assert (
        msg.MetadataResponse.decode(resp.SerializeToString() + b"\x7a\x01x").volume_capacity_bytes == 8 << 30
    )
    with pytest.raises(msg.MessageError):
        msg.MetadataResponse.decode(resp.SerializeToString()[:-1])
