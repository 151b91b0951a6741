"""Kafka's primitive field encoders: unsigned varints and (compact, nullable) strings.

Shared by the hand-written hot-path response encoders and the coordinators' record formats.
"""

from __future__ import annotations

import struct
from typing import Final

_INT16: Final = struct.Struct(">h")
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
