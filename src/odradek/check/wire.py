"""Just enough of Kafka's wire format for the fault proxy (sans-I/O, bytes in, bytes out).

The proxy reads the request header (to pair each response with its API and version, and a
Produce's `acks`) and rewrites the broker addresses in Metadata, FindCoordinator and
DescribeCluster responses: clients connect to the addresses those responses name, so a proxy that
did not rewrite them would be bypassed right after bootstrap. Only the fields up to the last
address are parsed; the rest of a response is copied unchanged, so unknown tagged fields and newer
versions' trailing fields pass through.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

PRODUCE = 0
METADATA = 3
FIND_COORDINATOR = 10
API_VERSIONS = 18
DESCRIBE_CLUSTER = 60

# The first version with a flexible (compact, tagged) encoding, per API.
_FIRST_FLEXIBLE = {PRODUCE: 9, METADATA: 9, FIND_COORDINATOR: 3, DESCRIBE_CLUSTER: 0}

Address = tuple[str, int]


class WireError(ValueError):
    """Bytes that are not the Kafka message they should be."""


@dataclass(frozen=True, slots=True)
class RequestHeader:
    api_key: int
    api_version: int
    correlation_id: int


def flexible(api_key: int, api_version: int) -> bool:
    first = _FIRST_FLEXIBLE.get(api_key)
    return first is not None and api_version >= first


class _Reader:
    def __init__(self, data: bytes, position: int = 0) -> None:
        self.data = data
        self.position = position

    def take(self, size: int) -> bytes:
        end = self.position + size
        if size < 0 or end > len(self.data):
            raise WireError("message ends early")
        chunk = self.data[self.position : end]
        self.position = end
        return chunk

    def int8(self) -> int:
        return int(struct.unpack(">b", self.take(1))[0])

    def int16(self) -> int:
        return int(struct.unpack(">h", self.take(2))[0])

    def int32(self) -> int:
        return int(struct.unpack(">i", self.take(4))[0])

    def uvarint(self) -> int:
        result = shift = 0
        while True:
            byte = self.take(1)[0]
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7
            if shift > 35:
                raise WireError("varint too long")

    def string(self, compact: bool) -> str | None:
        size = self.uvarint() - 1 if compact else self.int16()
        if size < 0:
            return None
        return self.take(size).decode("utf-8", "replace")

    def array_length(self, compact: bool) -> int:
        return self.uvarint() - 1 if compact else self.int32()

    def skip_tagged_fields(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()
            self.take(self.uvarint())


def encode_uvarint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_string(value: str, compact: bool) -> bytes:
    raw = value.encode()
    prefix = encode_uvarint(len(raw) + 1) if compact else struct.pack(">h", len(raw))
    return prefix + raw


def read_request_header(frame: bytes) -> RequestHeader:
    """The header of a request frame (without its 4-byte size prefix)."""
    if len(frame) < 8:
        raise WireError("request shorter than its header")
    api_key, api_version, correlation_id = struct.unpack_from(">hhi", frame)
    return RequestHeader(api_key, api_version, correlation_id)


def produce_acks(frame: bytes) -> int:
    """The `acks` of a Produce request frame (0 means the broker sends no response)."""
    header = read_request_header(frame)
    reader = _Reader(frame, 8)
    reader.string(compact=False)  # client_id: a plain nullable string in every header version
    compact = flexible(PRODUCE, header.api_version)
    if compact:
        reader.skip_tagged_fields()
    if header.api_version >= 3:
        reader.string(compact)  # transactional_id
    return reader.int16()


@dataclass(frozen=True, slots=True)
class _AddressField:
    """Where one (host, port) pair sits in a response frame."""

    host: str
    host_start: int
    host_end: int
    port: int
    port_start: int
    compact: bool


_Fields = list[_AddressField]


def _address(reader: _Reader, compact: bool) -> _AddressField:
    host_start = reader.position
    host = reader.string(compact) or ""
    host_end = reader.position
    port_start = reader.position
    port = reader.int32()
    return _AddressField(host, host_start, host_end, port, port_start, compact)


def _metadata_addresses(reader: _Reader, version: int, compact: bool) -> _Fields:
    if version >= 3:
        reader.int32()  # throttle_time_ms
    fields = []
    for _ in range(reader.array_length(compact)):
        reader.int32()  # node_id
        fields.append(_address(reader, compact))
        if version >= 1:
            reader.string(compact)  # rack
        if compact:
            reader.skip_tagged_fields()
    return fields


def _find_coordinator_addresses(reader: _Reader, version: int, compact: bool) -> _Fields:
    if version == 0:
        reader.int16()  # error_code
        reader.int32()  # node_id
        return [_address(reader, compact)]
    reader.int32()  # throttle_time_ms
    if version < 4:
        reader.int16()  # error_code
        reader.string(compact)  # error_message
        reader.int32()  # node_id
        return [_address(reader, compact)]
    fields = []
    for _ in range(reader.array_length(compact)):
        reader.string(compact)  # key
        reader.int32()  # node_id
        fields.append(_address(reader, compact))
        reader.int16()  # error_code
        reader.string(compact)  # error_message
        reader.skip_tagged_fields()
    return fields


def _describe_cluster_addresses(reader: _Reader, version: int, compact: bool) -> _Fields:
    reader.int32()  # throttle_time_ms
    reader.int16()  # error_code
    reader.string(compact)  # error_message
    if version >= 1:
        reader.int8()  # endpoint_type
    reader.string(compact)  # cluster_id
    reader.int32()  # controller_id
    fields = []
    for _ in range(reader.array_length(compact)):
        reader.int32()  # broker_id
        fields.append(_address(reader, compact))
        reader.string(compact)  # rack
        if version >= 2:
            reader.int8()  # is_fenced
        reader.skip_tagged_fields()
    return fields


_PARSERS: dict[int, Callable[[_Reader, int, bool], _Fields]] = {
    METADATA: _metadata_addresses,
    FIND_COORDINATOR: _find_coordinator_addresses,
    DESCRIBE_CLUSTER: _describe_cluster_addresses,
}

REWRITTEN_APIS = frozenset(_PARSERS)


def response_addresses(frame: bytes, api_key: int, api_version: int) -> list[Address]:
    """The broker addresses a response frame names (empty for other APIs)."""
    return [(field.host, field.port) for field in _address_fields(frame, api_key, api_version)]


def _address_fields(frame: bytes, api_key: int, api_version: int) -> _Fields:
    parser = _PARSERS.get(api_key)
    if parser is None:
        return []
    compact = flexible(api_key, api_version)
    reader = _Reader(frame, 4)  # after the correlation id
    if compact:
        reader.skip_tagged_fields()  # response header v1
    return parser(reader, api_version, compact)


def rewrite_response(
    frame: bytes, api_key: int, api_version: int, mapping: Callable[[Address], Address]
) -> bytes:
    """The response frame with every broker address replaced by `mapping(address)`."""
    fields = _address_fields(frame, api_key, api_version)
    if not fields:
        return frame
    parts = []
    cursor = 0
    for field in fields:
        host, port = mapping((field.host, field.port))
        parts.append(frame[cursor : field.host_start])
        parts.append(encode_string(host, field.compact))
        parts.append(struct.pack(">i", port))
        cursor = field.port_start + 4
    parts.append(frame[cursor:])
    return b"".join(parts)
