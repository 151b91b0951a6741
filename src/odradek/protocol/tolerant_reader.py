"""Read kio entities safely and the way the Kafka protocol requires.

kio 0.6.5's native reader has two gaps that matter for a broker facing arbitrary clients:

- it raises `KeyError('Unknown tagged field tag: N')` when a newer client sends a tagged field
  kio's schema does not know, although KIP-482 says a reader must skip it;
- it allocates an array's capacity from the length prefix before reading any item, so a few
  bytes claiming a 4-billion-item compact array abort the whole process (Rust `rust_oom`,
  "memory allocation of 35493994624 bytes failed"), which no `except` can catch.

`read_entity` therefore walks a schema's array-bearing structs in Python, checking every array
length against the bytes that remain, and hands the array-free parts (most leaves, request
headers, ApiVersions) to kio's native reader, which is safe for them. A `records` field (a
Produce request's batches) is not copied: the walker reads it as a read-only memoryview into
the caller's buffer, which kio's native reader would copy into a new bytes object (a whole
extra copy of every produced byte). When the native reader
meets an unknown tag, that struct is re-read by the Python walker, which skips the tag. Every
decoding failure becomes `RemoteProtocolError`: the peer sent bytes we cannot parse, so the
broker closes the connection.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import MISSING, Field, fields
from functools import cache
from typing import Any, Final, TypeAlias, TypeVar

from kio._kio_native import get_field_reader, get_reader
from kio.serial import entity_reader
from kio.serial._implicit_defaults import get_tagged_field_default
from kio.serial._introspect import (
    EntityField,
    EntityTupleField,
    PrimitiveTupleField,
    classify_field,
    get_field_tag,
    get_schema_field_type,
    is_optional,
)
from kio.serial.errors import SerialError
from kio.serial.readers import (
    read_compact_array_length,
    read_int8,
    read_legacy_array_length,
    read_unsigned_varint,
)
from kio.static.protocol import Entity

__all__ = ["RemoteProtocolError", "read_entity"]

E = TypeVar("E", bound=Entity)

# A reader takes (buffer, offset) and returns (value, bytes consumed), as kio's do.
_Reader: TypeAlias = Callable[[bytes | memoryview, int], tuple[Any, int]]

_INT32: Final = struct.Struct(">i")

# What a malformed buffer can make kio's readers or our walker raise.
_DECODE_ERRORS: Final = (
    SerialError,
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    OverflowError,
    struct.error,
    UnicodeDecodeError,
)


class RemoteProtocolError(Exception):
    """The peer sent bytes that do not decode as the expected Kafka message."""


def read_entity(
    entity_type: type[E], buffer: bytes | bytearray | memoryview, offset: int = 0
) -> tuple[E, int]:
    """Decode `entity_type` at `offset`; return (entity, bytes consumed)."""
    if not isinstance(buffer, bytes):
        # kio's native reader refuses writable buffers; a read-only view avoids a copy.
        buffer = memoryview(buffer).toreadonly()
    try:
        entity, size = _reader(entity_type)(buffer, offset)
    except _DECODE_ERRORS as error:
        raise RemoteProtocolError(f"cannot decode {entity_type.__name__}: {error}") from error
    return entity, size


def _is_unknown_tag(error: KeyError) -> bool:
    return bool(error.args) and str(error.args[0]).startswith("Unknown tagged field")


def _is_records(field: Field[Any]) -> bool:
    return field.metadata.get("kafka_type") == "records"


@cache
def _needs_walker(entity_type: type[Entity]) -> bool:
    """Whether kio's native reader could be made to allocate from an untrusted length, or
    would copy a records field."""
    for field in fields(entity_type):
        if _is_records(field):
            return True
        field_class = classify_field(field)
        if isinstance(field_class, PrimitiveTupleField | EntityTupleField):
            return True
        if isinstance(field_class, EntityField) and _needs_walker(field_class.type_):
            return True
    return False


@cache
def _reader(entity_type: type[Entity]) -> _Reader:
    walker = _walker(entity_type)
    if _needs_walker(entity_type):
        return walker
    native: _Reader = entity_reader(entity_type)

    def read_natively(buffer: bytes | memoryview, offset: int) -> tuple[Any, int]:
        try:
            return native(buffer, offset)
        except KeyError as error:
            if not _is_unknown_tag(error):
                raise
        return walker(buffer, offset)

    return read_natively


def _skip_tagged_fields(
    buffer: bytes | memoryview,
    position: int,
    tagged_readers: dict[int, tuple[str, _Reader]],
    values: dict[str, Any],
) -> int:
    """Read a tagged-field section at `position`; return the position after it."""
    count, size = read_unsigned_varint(buffer, position)
    position += size
    for _ in range(count):
        tag, size = read_unsigned_varint(buffer, position)
        position += size
        length, size = read_unsigned_varint(buffer, position)
        position += size
        end = position + length
        if end > len(buffer):
            raise ValueError(f"tagged field {tag} runs past the buffer")
        known = tagged_readers.get(tag)
        if known is not None:
            name, reader = known
            # Read from a slice so a field cannot claim bytes beyond its declared size.
            value, consumed = reader(buffer[position:end], 0)
            if consumed != length:
                raise ValueError(f"tagged field {tag} declared {length} bytes, used {consumed}")
            values[name] = value
        position = end
    return position


def _array_reader(item_reader: _Reader, flexible: bool, nullable: bool) -> _Reader:
    def read_array(buffer: bytes | memoryview, offset: int) -> tuple[Any, int]:
        if flexible:
            length, position_delta = read_compact_array_length(buffer, offset)
        else:
            legacy_length, position_delta = read_legacy_array_length(buffer, offset)
            length = None if legacy_length == -1 else legacy_length
        if length is None:
            if not nullable:
                raise ValueError("null array for a non-nullable field")
            return None, position_delta
        if length < 0:
            raise ValueError(f"negative array length {length}")
        position = offset + position_delta
        # Every item takes at least one byte: refuse lengths the buffer cannot hold before
        # looping over them.
        if length > len(buffer) - position:
            raise ValueError(f"array of {length} items in {len(buffer) - position} bytes")
        items = []
        for _ in range(length):
            item, size = item_reader(buffer, position)
            items.append(item)
            position += size
        return tuple(items), position - offset

    return read_array


def _records_reader(flexible: bool, nullable: bool) -> _Reader:
    """A records field (nullable bytes: int32 length, or compact uvarint length + 1, then the
    bytes) as a memoryview slice of `buffer`, without copying the bytes; None for null."""

    def read_records(buffer: bytes | memoryview, offset: int) -> tuple[Any, int]:
        if flexible:
            length_plus_one, size = read_unsigned_varint(buffer, offset)
            length = length_plus_one - 1
        else:
            (length,) = _INT32.unpack_from(buffer, offset)
            size = 4
        if length == -1:
            if not nullable:
                raise ValueError("null records for a non-nullable field")
            return None, size
        if length < 0:
            raise ValueError(f"negative records length {length}")
        start = offset + size
        if start + length > len(buffer):
            raise ValueError(f"records of {length} bytes run past the buffer")
        return memoryview(buffer)[start : start + length], size + length

    return read_records


def _nullable_entity_reader(inner: _Reader) -> _Reader:
    # KIP-893: a nullable struct is prefixed with an int8, -1 for null and 1 otherwise.
    def read_nullable(buffer: bytes | memoryview, offset: int) -> tuple[Any, int]:
        marker, size = read_int8(buffer, offset)
        if marker == -1:
            return None, size
        if marker != 1:
            raise ValueError(f"bad nullable struct marker {marker}")
        value, inner_size = inner(buffer, offset + size)
        return value, size + inner_size

    return read_nullable


def _field_reader(entity_type: type[Entity], field: Field[Any], is_tagged: bool) -> _Reader:
    flexible = entity_type.__flexible__
    if _is_records(field):
        return _records_reader(flexible, is_optional(field))
    field_class = classify_field(field)
    if isinstance(field_class, EntityField):
        inner = _reader(field_class.type_)
        # Tagged structs carry no null marker: their absence is the null.
        return _nullable_entity_reader(inner) if is_optional(field) and not is_tagged else inner
    if isinstance(field_class, EntityTupleField):
        return _array_reader(_reader(field_class.type_), flexible, is_optional(field))
    if isinstance(field_class, PrimitiveTupleField):
        item_reader: _Reader = get_reader(get_schema_field_type(field), flexible, False)
        return _array_reader(item_reader, flexible, is_optional(field))
    is_request_header = entity_type.__name__ == "RequestHeader"
    reader: _Reader = get_field_reader(entity_type, field, is_request_header, is_tagged)
    return reader


@cache
def _walker(entity_type: type[Entity]) -> _Reader:
    regular: list[tuple[str, _Reader]] = []
    tagged: dict[int, tuple[str, _Reader]] = {}
    tagged_defaults: dict[str, Any] = {}
    for field in fields(entity_type):
        tag = get_field_tag(field)
        if tag is None:
            regular.append((field.name, _field_reader(entity_type, field, is_tagged=False)))
        else:
            tagged[int(tag)] = (field.name, _field_reader(entity_type, field, is_tagged=True))
            tagged_defaults[field.name] = (
                field.default if field.default is not MISSING else get_tagged_field_default(field)
            )
    flexible = entity_type.__flexible__

    def read(buffer: bytes | memoryview, offset: int) -> tuple[Any, int]:
        values: dict[str, Any] = {}
        position = offset
        for name, reader in regular:
            values[name], size = reader(buffer, position)
            position += size
        if flexible:
            values.update(tagged_defaults)
            if buffer[position] == 0:
                # No tagged fields, the common case: skip the general path.
                position += 1
            else:
                position = _skip_tagged_fields(buffer, position, tagged, values)
        return entity_type(**values), position - offset

    return read
