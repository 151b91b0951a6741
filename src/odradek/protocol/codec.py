"""Framing and request/response envelopes: bytes in, typed requests out, responses to bytes.

A Kafka frame is a big-endian i32 size followed by that many bytes. A request starts with a
header (api key, api version, correlation id, client id, and from flexible versions on, tagged
fields); the body is decoded with kio's schema for that API version. kio imports one module per
schema version, so modules are loaded lazily, the first time a version is seen.
"""

from __future__ import annotations

import datetime
import functools
import io
import struct
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from kio.index import load_payload_module
from kio.serial import entity_writer
from kio.static.constants import EntityType

from odradek.protocol.api_keys import ApiKey
from odradek.protocol.tolerant_reader import RemoteProtocolError, read_entity

_REQUEST_HEADER_FIXED = struct.Struct(">hhih")
_INT32 = struct.Struct(">i")


@dataclass(frozen=True, slots=True)
class RequestHeader:
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    flexible: bool
    # Where the request came from, as Kafka reports it in group descriptions ("/127.0.0.1");
    # filled in by the connection, not read from the frame.
    client_host: str = ""


@functools.cache
def request_module(api_key: int, api_version: int) -> ModuleType:
    return load_payload_module(api_key, api_version, EntityType.request)


@functools.cache
def response_module(api_key: int, api_version: int) -> ModuleType:
    return load_payload_module(api_key, api_version, EntityType.response)


@functools.cache
def request_type(api_key: int, api_version: int) -> type[Any]:
    module = request_module(api_key, api_version)
    return _payload_type(module, EntityType.request)


@functools.cache
def response_type(api_key: int, api_version: int) -> type[Any]:
    module = response_module(api_key, api_version)
    return _payload_type(module, EntityType.response)


def _payload_type(module: ModuleType, entity_type: EntityType) -> type[Any]:
    for value in vars(module).values():
        if isinstance(value, type) and getattr(value, "__type__", None) is entity_type:
            return value
    raise LookupError(f"no {entity_type.name} type in {module.__name__}")


def is_flexible(api_key: int, api_version: int) -> bool:
    flexible: bool = request_type(api_key, api_version).__flexible__
    return flexible


def read_unsigned_varint(buffer: bytes | bytearray | memoryview, position: int) -> tuple[int, int]:
    """Return (value, new position); raise RemoteProtocolError past the end or past 5 bytes."""
    value = 0
    shift = 0
    while True:
        if position >= len(buffer) or shift > 28:
            raise RemoteProtocolError("malformed unsigned varint")
        byte = buffer[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7


def skip_tagged_fields(buffer: bytes | bytearray | memoryview, position: int) -> int:
    count, position = read_unsigned_varint(buffer, position)
    for _ in range(count):
        _tag, position = read_unsigned_varint(buffer, position)
        size, position = read_unsigned_varint(buffer, position)
        position += size
        if position > len(buffer):
            raise RemoteProtocolError("tagged field runs past the end of the frame")
    return position


def read_request_header(
    frame: bytes | bytearray | memoryview, flexible_for: Any = None, client_host: str = ""
) -> tuple[RequestHeader, int]:
    """Parse the request header; return it and the position where the body starts.

    `flexible_for(api_key, api_version) -> bool | None` says whether the header is v2 (flexible);
    None means the version is unknown to us, and the body is not read.
    """
    if len(frame) < _REQUEST_HEADER_FIXED.size:
        raise RemoteProtocolError(f"request of {len(frame)} bytes is shorter than a header")
    api_key, api_version, correlation_id, client_id_length = _REQUEST_HEADER_FIXED.unpack_from(
        frame, 0
    )
    position = _REQUEST_HEADER_FIXED.size
    client_id: str | None = None
    if client_id_length >= 0:
        end = position + client_id_length
        if end > len(frame):
            raise RemoteProtocolError("client id runs past the end of the frame")
        try:
            client_id = str(frame[position:end], "utf-8")
        except UnicodeDecodeError as error:
            raise RemoteProtocolError("client id is not UTF-8") from error
        position = end
    flexible = bool(flexible_for(api_key, api_version)) if flexible_for is not None else False
    if flexible:
        position = skip_tagged_fields(frame, position)
    header = RequestHeader(api_key, api_version, correlation_id, client_id, flexible, client_host)
    return header, position


def read_request_body(
    header: RequestHeader, frame: bytes | bytearray | memoryview, position: int
) -> Any:
    entity_type = request_type(header.api_key, header.api_version)
    entity, _size = read_entity(entity_type, frame, position)
    return entity


@functools.cache
def _field_kinds(entity_type: Any) -> dict[str, str]:
    return {
        name: str(field.metadata.get("kafka_type", ""))
        for name, field in entity_type.__dataclass_fields__.items()
        if not name.startswith("__")
    }


def make(entity_type: Any, **values: Any) -> Any:
    """Build a kio entity of any version from the union of fields across versions.

    Handlers are written once against field names; a field the version does not have is
    dropped, and millisecond integers become the timedelta kio wants for duration fields.
    """
    kinds = _field_kinds(entity_type)
    arguments: dict[str, Any] = {}
    for name, value in values.items():
        kind = kinds.get(name)
        if kind is None:
            continue
        if kind.startswith("timedelta") and isinstance(value, int):
            arguments[name] = datetime.timedelta(milliseconds=value)
        elif name == "error_message" and isinstance(value, str) and not entity_type.__flexible__:
            arguments[name] = _fit_legacy_string(value)
        else:
            arguments[name] = value
    return entity_type(**arguments)


# A non-flexible (legacy) string carries an int16 length: at most this many UTF-8 bytes.
MAX_LEGACY_STRING_BYTES = 2**15 - 1


def _fit_legacy_string(text: str) -> str:
    """`text` cut to what a legacy string can carry. An error message that quotes a client's
    32767-byte name would otherwise fail to encode and cost the client its connection."""
    encoded = text.encode()
    if len(encoded) <= MAX_LEGACY_STRING_BYTES:
        return text
    return encoded[:MAX_LEGACY_STRING_BYTES].decode(errors="ignore")


def nested(module: ModuleType, name: str) -> type[Any]:
    """A nested schema class of a versioned kio module, by its Kafka name."""
    entity_type: type[Any] = getattr(module, name)
    return entity_type


def encode_entity(entity: Any) -> bytes:
    buffer = io.BytesIO()
    entity_writer(type(entity))(buffer, entity)
    return buffer.getvalue()


def response_header_bytes(header: RequestHeader) -> bytes:
    """Response header v1 (with an empty tagged-field section) for flexible requests, else v0.

    ApiVersions is the exception: its response header is always v0, so a client that does not
    yet know the broker's versions can read it.
    """
    if header.flexible and header.api_key != ApiKey.API_VERSIONS:
        return _INT32.pack(header.correlation_id) + b"\x00"
    return _INT32.pack(header.correlation_id)


def frame_response(
    header: RequestHeader, body: list[bytes | memoryview]
) -> list[bytes | memoryview]:
    """Prefix a response body (a list of buffers, never joined) with its size and header."""
    head = response_header_bytes(header)
    size = len(head) + sum(len(part) for part in body)
    return [_INT32.pack(size) + head, *body]
