"""The messages of the Kubernetes SnapshotMetadata gRPC API (steps/drivers/snapshot_metadata.proto),
encoded and decoded by hand in the protobuf wire format.

Provides the request and response dataclasses with ``encode()`` / ``decode(data)``, and the method
paths. Written by hand so that the step image needs only ``grpcio`` (no protobuf runtime or generated
code); a test compiles the .proto with grpcio-tools and checks both agree. Used by
:mod:`steps.drivers.cbt` (the client) and by the tests' SnapshotMetadata server.

Decoding treats the bytes as untrusted: unknown fields are skipped as protobuf requires, anything
malformed (a truncated varint or field, a wire type that does not match the field) raises
:class:`MessageError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SERVICE = "snapshotmetadata.SnapshotMetadata"
GET_METADATA_ALLOCATED = f"/{SERVICE}/GetMetadataAllocated"
GET_METADATA_DELTA = f"/{SERVICE}/GetMetadataDelta"

UNKNOWN, FIXED_LENGTH, VARIABLE_LENGTH = 0, 1, 2
BLOCK_METADATA_TYPES = {UNKNOWN: "UNKNOWN", FIXED_LENGTH: "FIXED_LENGTH", VARIABLE_LENGTH: "VARIABLE_LENGTH"}

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_U64 = (1 << 64) - 1


class MessageError(ValueError):
    """Bytes that are not a valid encoding of the expected message."""


# -- wire format ------------------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    value &= _U64  # negative int32/int64 are sent as their 64-bit two's complement
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _int_field(number: int, value: int) -> bytes:
    return _key(number, _VARINT) + _varint(value) if value else b""


def _str_field(number: int, value: str) -> bytes:
    if not value:
        return b""
    raw = value.encode()
    return _key(number, _LEN) + _varint(len(raw)) + raw


def _msg_field(number: int, raw: bytes) -> bytes:
    return _key(number, _LEN) + _varint(len(raw)) + raw


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise MessageError("truncated varint")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result & _U64, pos
        shift += 7
        if shift >= 70:
            raise MessageError("varint longer than 10 bytes")


def _signed(value: int, bits: int = 64) -> int:
    value &= (1 << bits) - 1 if bits == 32 else _U64
    return value - (1 << bits) if value >> (bits - 1) else value


def _fields(data: bytes):
    """(number, wire type, value) of every field; value is an int or the bytes of a LEN field."""
    pos, end = 0, len(data)
    while pos < end:
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise MessageError("field number 0")
        if wire == _VARINT:
            value, pos = _read_varint(data, pos)
        elif wire == _I64:
            if pos + 8 > end:
                raise MessageError("truncated fixed64 field")
            value, pos = int.from_bytes(data[pos : pos + 8], "little"), pos + 8
        elif wire == _I32:
            if pos + 4 > end:
                raise MessageError("truncated fixed32 field")
            value, pos = int.from_bytes(data[pos : pos + 4], "little"), pos + 4
        elif wire == _LEN:
            n, pos = _read_varint(data, pos)
            if pos + n > end:
                raise MessageError("truncated length-delimited field")
            value, pos = bytes(data[pos : pos + n]), pos + n
        else:
            raise MessageError(f"unsupported wire type {wire}")
        yield number, wire, value


def _expect(number: int, wire: int, wanted: int, name: str) -> None:
    if wire != wanted:
        raise MessageError(f"field {name} ({number}) has wire type {wire}, expected {wanted}")


def _text(value: bytes, name: str) -> str:
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise MessageError(f"field {name} is not UTF-8") from None


# -- messages ---------------------------------------------------------------------------------------


@dataclass
class BlockMetadata:
    byte_offset: int = 0
    size_bytes: int = 0

    def encode(self) -> bytes:
        return _int_field(1, self.byte_offset) + _int_field(2, self.size_bytes)

    @classmethod
    def decode(cls, data: bytes) -> BlockMetadata:
        out = cls()
        for number, wire, value in _fields(data):
            if number == 1:
                _expect(number, wire, _VARINT, "byte_offset")
                out.byte_offset = _signed(value)
            elif number == 2:
                _expect(number, wire, _VARINT, "size_bytes")
                out.size_bytes = _signed(value)
        return out


@dataclass
class GetMetadataAllocatedRequest:
    security_token: str = ""
    namespace: str = ""
    snapshot_name: str = ""
    starting_offset: int = 0
    max_results: int = 0

    def encode(self) -> bytes:
        return (
            _str_field(1, self.security_token)
            + _str_field(2, self.namespace)
            + _str_field(3, self.snapshot_name)
            + _int_field(4, self.starting_offset)
            + _int_field(5, self.max_results)
        )

    @classmethod
    def decode(cls, data: bytes) -> GetMetadataAllocatedRequest:
        out = cls()
        for number, wire, value in _fields(data):
            if number in (1, 2, 3):
                name = ("security_token", "namespace", "snapshot_name")[number - 1]
                _expect(number, wire, _LEN, name)
                setattr(out, name, _text(value, name))
            elif number == 4:
                _expect(number, wire, _VARINT, "starting_offset")
                out.starting_offset = _signed(value)
            elif number == 5:
                _expect(number, wire, _VARINT, "max_results")
                out.max_results = _signed(value, 32)
        return out


@dataclass
class GetMetadataDeltaRequest:
    security_token: str = ""
    namespace: str = ""
    base_snapshot_id: str = ""
    target_snapshot_name: str = ""
    starting_offset: int = 0
    max_results: int = 0

    def encode(self) -> bytes:
        return (
            _str_field(1, self.security_token)
            + _str_field(2, self.namespace)
            + _str_field(3, self.base_snapshot_id)
            + _str_field(4, self.target_snapshot_name)
            + _int_field(5, self.starting_offset)
            + _int_field(6, self.max_results)
        )

    @classmethod
    def decode(cls, data: bytes) -> GetMetadataDeltaRequest:
        out = cls()
        names = ("security_token", "namespace", "base_snapshot_id", "target_snapshot_name")
        for number, wire, value in _fields(data):
            if 1 <= number <= 4:
                _expect(number, wire, _LEN, names[number - 1])
                setattr(out, names[number - 1], _text(value, names[number - 1]))
            elif number == 5:
                _expect(number, wire, _VARINT, "starting_offset")
                out.starting_offset = _signed(value)
            elif number == 6:
                _expect(number, wire, _VARINT, "max_results")
                out.max_results = _signed(value, 32)
        return out


@dataclass
class MetadataResponse:
    """GetMetadataAllocatedResponse and GetMetadataDeltaResponse (the same fields and numbers)."""

    block_metadata_type: int = UNKNOWN
    volume_capacity_bytes: int = 0
    block_metadata: list[BlockMetadata] = field(default_factory=list)

    def encode(self) -> bytes:
        return (
            _int_field(1, self.block_metadata_type)
            + _int_field(2, self.volume_capacity_bytes)
            + b"".join(_msg_field(3, b.encode()) for b in self.block_metadata)
        )

    @classmethod
    def decode(cls, data: bytes) -> MetadataResponse:
        out = cls()
        for number, wire, value in _fields(data):
            if number == 1:
                _expect(number, wire, _VARINT, "block_metadata_type")
                out.block_metadata_type = _signed(value, 32)
            elif number == 2:
                _expect(number, wire, _VARINT, "volume_capacity_bytes")
                out.volume_capacity_bytes = _signed(value)
            elif number == 3:
                _expect(number, wire, _LEN, "block_metadata")
                out.block_metadata.append(BlockMetadata.decode(value))
        return out


GetMetadataAllocatedResponse = MetadataResponse
GetMetadataDeltaResponse = MetadataResponse
