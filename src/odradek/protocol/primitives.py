"""Kafka's primitive fields: encoders for unsigned varints and (compact, nullable) strings, and
`FieldReader`, a bounded cursor that reads fixed-width ints, uuids, varints, compact strings and
tagged-field sections back.

Shared by the hand-written hot-path response encoders, the coordinators' record formats, the
controller's metadata records and the dynamic-config store.
"""

from __future__ import annotations

import struct
import uuid
from typing import ClassVar, Final

_INT8: Final = struct.Struct(">b")
_INT16: Final = struct.Struct(">h")
_UINT16: Final = struct.Struct(">H")
_INT32: Final = struct.Struct(">i")
_INT64: Final = struct.Struct(">q")
_NULL_INT16: Final = _INT16.pack(-1)
_COMPACT_NULL: Final = b"\x00"
_SMALL_UNSIGNED_VARINTS: Final = tuple(bytes((value,)) for value in range(128))


def unsigned_varint(value: int) -> bytes:
    if value < 0x80:
        return _SMALL_UNSIGNED_VARINTS[value]
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def string(value: str) -> bytes:
    """int16 length, then UTF-8."""
    encoded = value.encode()
    return _INT16.pack(len(encoded)) + encoded


def nullable_string(value: str | None) -> bytes:
    return _NULL_INT16 if value is None else string(value)


def compact_string(value: str) -> bytes:
    """Unsigned varint length + 1, then UTF-8."""
    encoded = value.encode()
    return unsigned_varint(len(encoded) + 1) + encoded


def compact_nullable_string(value: str | None) -> bytes:
    return _COMPACT_NULL if value is None else compact_string(value)


class FieldReader:
    """Reads Kafka's primitive fields from one record's bytes, never past their end.

    Every failure (a field past the end, a varint longer than ``UNSIGNED_VARINT_MAX_BYTES``, a
    string that is not UTF-8) raises ``ERROR``, which a record format sets to its own exception
    class so its callers catch one type. Ints are big-endian; compact lengths are unsigned
    varint length + 1, 0 meaning null (KIP-482).
    """

    ERROR: ClassVar[type[ValueError]] = ValueError
    #: Kafka's ByteUtils.readUnsignedVarint reads at most 5 bytes (a 32-bit value).
    UNSIGNED_VARINT_MAX_BYTES: ClassVar[int] = 5

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.position = 0

    def take(self, size: int) -> bytes:
        end = self.position + size
        if size < 0 or end > len(self.data):
            raise self.ERROR("field runs past the end of the record")
        chunk = self.data[self.position : end]
        self.position = end
        return chunk

    def remaining(self) -> int:
        return len(self.data) - self.position

    def int8(self) -> int:
        value: int = _INT8.unpack(self.take(1))[0]
        return value

    def int16(self) -> int:
        value: int = _INT16.unpack(self.take(2))[0]
        return value

    def uint16(self) -> int:
        value: int = _UINT16.unpack(self.take(2))[0]
        return value

    def int32(self) -> int:
        value: int = _INT32.unpack(self.take(4))[0]
        return value

    def int64(self) -> int:
        value: int = _INT64.unpack(self.take(8))[0]
        return value

    def uuid(self) -> uuid.UUID:
        return uuid.UUID(bytes=self.take(16))

    def unsigned_varint(self) -> int:
        value = 0
        for shift in range(0, 7 * self.UNSIGNED_VARINT_MAX_BYTES, 7):
            byte = self.take(1)[0]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
        raise self.ERROR(f"unsigned varint longer than {self.UNSIGNED_VARINT_MAX_BYTES} bytes")

    def compact_length(self) -> int:
        """The length of a compact string, bytes or array; -1 for null."""
        return self.unsigned_varint() - 1

    def utf8(self, size: int) -> str:
        try:
            return self.take(size).decode()
        except UnicodeDecodeError as error:
            raise self.ERROR("string is not UTF-8") from error

    def compact_nullable_string(self) -> str | None:
        length = self.compact_length()
        return None if length < 0 else self.utf8(length)

    def compact_string(self) -> str:
        value = self.compact_nullable_string()
        if value is None:
            raise self.ERROR("null where a string is required")
        return value

    def tagged_fields(self) -> dict[int, bytes]:
        """A tagged-field section: tag -> raw bytes (unknown tags are the caller's to skip)."""
        fields = {}
        for _ in range(self.unsigned_varint()):
            tag = self.unsigned_varint()
            fields[tag] = self.take(self.unsigned_varint())
        return fields
