"""The metadata records of the controller's log, with Kafka's names and fields, and their codec.

Each record is one frozen dataclass named as Kafka's `metadata/src/main/resources/common/metadata`
schema; its ``API_KEY`` is Kafka's record type number. Only the fields Odradek uses are kept
(no directories, no ELR, no reassignment lists).

Encoding (one record per log entry), Kafka's framing with Odradek's field layout:

    unsigned varint  frame version (1)
    unsigned varint  record type (Kafka's apiKey)
    unsigned varint  record version
    fields           fixed-width big-endian ints, bool as int8, 16-byte uuid,
                     compact strings and arrays (unsigned varint length + 1, 0 = null)
    unsigned varint  tagged-field count, then (tag, size, bytes) each; unknown tags skipped

A record of a type or version this code does not know raises RecordFormatError: replaying a log
written by a newer Odradek must stop, never silently lose a record.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

from odradek.protocol.primitives import FieldReader, unsigned_varint

FRAME_VERSION: Final = 1

#: PartitionChangeRecord.leader: the leader did not change.
NO_LEADER_CHANGE: Final = -2
#: A partition without a leader.
NO_LEADER: Final = -1
#: PartitionChangeRecord.leader_recovery_state: no change (KIP-704).
NO_LEADER_RECOVERY_CHANGE: Final = -1

_INT8 = struct.Struct(">b")
_INT16 = struct.Struct(">h")
_UINT16 = struct.Struct(">H")
_INT32 = struct.Struct(">i")
_INT64 = struct.Struct(">q")


class RecordFormatError(ValueError):
    """Bytes that are not a metadata record this code can read."""


class FencingChange:
    """BrokerRegistrationChangeRecord.fenced values (Kafka's BrokerRegistrationFencingChange)."""

    UNFENCE: Final = -1
    NONE: Final = 0
    FENCE: Final = 1


class ControlledShutdownChange:
    """BrokerRegistrationChangeRecord.in_controlled_shutdown values."""

    NONE: Final = 0
    IN_CONTROLLED_SHUTDOWN: Final = 1


class ConfigResourceType:
    """ConfigRecord.resource_type values: Kafka's ConfigResource.Type ids."""

    TOPIC: Final = 2
    BROKER: Final = 4
    GROUP: Final = 32


# -- records -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BrokerEndpoint:
    """One listener of a broker: name, host, port and Kafka's security protocol id."""

    name: str
    host: str
    port: int
    security_protocol: int


@dataclass(frozen=True, slots=True)
class BrokerFeature:
    """A feature range a broker supports."""

    name: str
    min_supported_version: int
    max_supported_version: int


@dataclass(frozen=True, slots=True)
class RegisterBrokerRecord:
    """A broker registered; its broker epoch is the offset of this record (KIP-631)."""

    API_KEY: ClassVar[int] = 0
    VERSION: ClassVar[int] = 0
    broker_id: int
    broker_epoch: int
    incarnation_id: uuid.UUID
    end_points: tuple[BrokerEndpoint, ...] = ()
    features: tuple[BrokerFeature, ...] = ()
    rack: str | None = None
    fenced: bool = True
    in_controlled_shutdown: bool = False


@dataclass(frozen=True, slots=True)
class UnregisterBrokerRecord:
    """A broker's registration was removed."""

    API_KEY: ClassVar[int] = 1
    VERSION: ClassVar[int] = 0
    broker_id: int
    broker_epoch: int


@dataclass(frozen=True, slots=True)
class TopicRecord:
    """A topic was created."""

    API_KEY: ClassVar[int] = 2
    VERSION: ClassVar[int] = 0
    name: str
    topic_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class PartitionRecord:
    """A partition's full state (on creation)."""

    API_KEY: ClassVar[int] = 3
    VERSION: ClassVar[int] = 0
    topic_id: uuid.UUID
    partition_id: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    leader: int
    leader_recovery_state: int = 0
    leader_epoch: int = 0
    partition_epoch: int = 0


@dataclass(frozen=True, slots=True)
class ConfigRecord:
    """A config set on a resource; ``value`` None deletes it (back to the default)."""

    API_KEY: ClassVar[int] = 4
    VERSION: ClassVar[int] = 0
    resource_type: int
    resource_name: str
    name: str
    value: str | None


@dataclass(frozen=True, slots=True)
class PartitionChangeRecord:
    """A change to a partition. Replaying it always bumps the partition epoch; a leader other
    than NO_LEADER_CHANGE also bumps the leader epoch. None / -2 / -1 mean "unchanged"."""

    API_KEY: ClassVar[int] = 5
    VERSION: ClassVar[int] = 0
    topic_id: uuid.UUID
    partition_id: int
    isr: tuple[int, ...] | None = None
    leader: int = NO_LEADER_CHANGE
    replicas: tuple[int, ...] | None = None
    leader_recovery_state: int = NO_LEADER_RECOVERY_CHANGE


@dataclass(frozen=True, slots=True)
class RemoveTopicRecord:
    """A topic and its partitions and configs were deleted."""

    API_KEY: ClassVar[int] = 9
    VERSION: ClassVar[int] = 0
    topic_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class FeatureLevelRecord:
    """A finalized feature level (``metadata.version`` and others)."""

    API_KEY: ClassVar[int] = 12
    VERSION: ClassVar[int] = 0
    name: str
    feature_level: int


@dataclass(frozen=True, slots=True)
class ProducerIdsRecord:
    """A producer-id block was handed to a broker; ids below ``next_producer_id`` are taken."""

    API_KEY: ClassVar[int] = 15
    VERSION: ClassVar[int] = 0
    broker_id: int
    broker_epoch: int
    next_producer_id: int


@dataclass(frozen=True, slots=True)
class BrokerRegistrationChangeRecord:
    """A registered broker was fenced, unfenced, or entered controlled shutdown."""

    API_KEY: ClassVar[int] = 17
    VERSION: ClassVar[int] = 1
    broker_id: int
    broker_epoch: int
    fenced: int = FencingChange.NONE
    in_controlled_shutdown: int = ControlledShutdownChange.NONE


MetadataRecord = (
    RegisterBrokerRecord
    | UnregisterBrokerRecord
    | TopicRecord
    | PartitionRecord
    | ConfigRecord
    | PartitionChangeRecord
    | RemoveTopicRecord
    | FeatureLevelRecord
    | ProducerIdsRecord
    | BrokerRegistrationChangeRecord
)


# -- writer and reader -------------------------------------------------------------------------


@dataclass(slots=True)
class _Writer:
    parts: list[bytes] = field(default_factory=list)

    def int8(self, value: int) -> None:
        self.parts.append(_INT8.pack(value))

    def int16(self, value: int) -> None:
        self.parts.append(_INT16.pack(value))

    def uint16(self, value: int) -> None:
        self.parts.append(_UINT16.pack(value))

    def int32(self, value: int) -> None:
        self.parts.append(_INT32.pack(value))

    def int64(self, value: int) -> None:
        self.parts.append(_INT64.pack(value))

    def boolean(self, value: bool) -> None:
        self.parts.append(b"\x01" if value else b"\x00")

    def uuid_value(self, value: uuid.UUID) -> None:
        self.parts.append(value.bytes)

    def uvarint(self, value: int) -> None:
        self.parts.append(unsigned_varint(value))

    def string(self, value: str | None) -> None:
        if value is None:
            self.uvarint(0)
            return
        encoded = value.encode()
        self.uvarint(len(encoded) + 1)
        self.parts.append(encoded)

    def int32_array(self, values: tuple[int, ...] | None) -> None:
        if values is None:
            self.uvarint(0)
            return
        self.uvarint(len(values) + 1)
        for value in values:
            self.int32(value)

    def count(self, size: int) -> None:
        self.uvarint(size + 1)


class _Reader(FieldReader):
    ERROR = RecordFormatError
    UNSIGNED_VARINT_MAX_BYTES = 10

    def boolean(self) -> bool:
        value = self.int8()
        if value not in (0, 1):
            raise RecordFormatError(f"boolean byte {value}")
        return value == 1

    def nullable_int32_array(self) -> tuple[int, ...] | None:
        length = self.unsigned_varint()
        if length == 0:
            return None
        return tuple(self.int32() for _ in range(length - 1))

    def int32_array(self) -> tuple[int, ...]:
        values = self.nullable_int32_array()
        if values is None:
            raise RecordFormatError("null where an array is required")
        return values

    def count(self) -> int:
        length = self.unsigned_varint()
        if length == 0:
            raise RecordFormatError("null where an array is required")
        return length - 1

    def end(self) -> None:
        if self.remaining():
            raise RecordFormatError(f"{self.remaining()} bytes after the record")


# -- per-record field layouts ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Field:
    """How one field is written and read back."""

    write: Callable[[_Writer, Any], None]
    read: Callable[[_Reader], Any]


#: A struct's fields in wire order: (dataclass attribute, field codec).
_Layout = tuple[tuple[str, _Field], ...]

_INT8_FIELD = _Field(_Writer.int8, _Reader.int8)
_INT16_FIELD = _Field(_Writer.int16, _Reader.int16)
_UINT16_FIELD = _Field(_Writer.uint16, _Reader.uint16)
_INT32_FIELD = _Field(_Writer.int32, _Reader.int32)
_INT64_FIELD = _Field(_Writer.int64, _Reader.int64)
_BOOLEAN_FIELD = _Field(_Writer.boolean, _Reader.boolean)
_UUID_FIELD = _Field(_Writer.uuid_value, _Reader.uuid)
_STRING_FIELD = _Field(_Writer.string, _Reader.compact_string)
_NULLABLE_STRING_FIELD = _Field(_Writer.string, _Reader.compact_nullable_string)
_INT32_ARRAY_FIELD = _Field(_Writer.int32_array, _Reader.int32_array)
_NULLABLE_INT32_ARRAY_FIELD = _Field(_Writer.int32_array, _Reader.nullable_int32_array)


def _write_fields(out: _Writer, value: object, layout: _Layout) -> None:
    for name, codec in layout:
        codec.write(out, getattr(value, name))


def _read_fields(source: _Reader, struct_type: type[Any], layout: _Layout) -> Any:
    # A dict display evaluates in order, so the fields are read in wire order.
    return struct_type(**{name: codec.read(source) for name, codec in layout})


def _struct_array(struct_type: type[Any], layout: _Layout) -> _Field:
    """A non-null compact array of structs (no tagged fields inside: Odradek's layout)."""

    def write(out: _Writer, values: tuple[object, ...]) -> None:
        out.count(len(values))
        for value in values:
            _write_fields(out, value, layout)

    def read(source: _Reader) -> tuple[object, ...]:
        return tuple(_read_fields(source, struct_type, layout) for _ in range(source.count()))

    return _Field(write, read)


#: Each record type's fields in wire order. (type, VERSION) is what a log entry names; a new
#: version of a record adds a class (or a row keyed by version) here, old rows stay readable.
_LAYOUTS: dict[type[MetadataRecord], _Layout] = {
    RegisterBrokerRecord: (
        ("broker_id", _INT32_FIELD),
        ("broker_epoch", _INT64_FIELD),
        ("incarnation_id", _UUID_FIELD),
        (
            "end_points",
            _struct_array(
                BrokerEndpoint,
                (
                    ("name", _STRING_FIELD),
                    ("host", _STRING_FIELD),
                    ("port", _UINT16_FIELD),
                    ("security_protocol", _INT16_FIELD),
                ),
            ),
        ),
        (
            "features",
            _struct_array(
                BrokerFeature,
                (
                    ("name", _STRING_FIELD),
                    ("min_supported_version", _INT16_FIELD),
                    ("max_supported_version", _INT16_FIELD),
                ),
            ),
        ),
        ("rack", _NULLABLE_STRING_FIELD),
        ("fenced", _BOOLEAN_FIELD),
        ("in_controlled_shutdown", _BOOLEAN_FIELD),
    ),
    UnregisterBrokerRecord: (("broker_id", _INT32_FIELD), ("broker_epoch", _INT64_FIELD)),
    TopicRecord: (("name", _STRING_FIELD), ("topic_id", _UUID_FIELD)),
    PartitionRecord: (
        ("topic_id", _UUID_FIELD),
        ("partition_id", _INT32_FIELD),
        ("replicas", _INT32_ARRAY_FIELD),
        ("isr", _INT32_ARRAY_FIELD),
        ("leader", _INT32_FIELD),
        ("leader_recovery_state", _INT8_FIELD),
        ("leader_epoch", _INT32_FIELD),
        ("partition_epoch", _INT32_FIELD),
    ),
    ConfigRecord: (
        ("resource_type", _INT8_FIELD),
        ("resource_name", _STRING_FIELD),
        ("name", _STRING_FIELD),
        ("value", _NULLABLE_STRING_FIELD),
    ),
    PartitionChangeRecord: (
        ("topic_id", _UUID_FIELD),
        ("partition_id", _INT32_FIELD),
        ("isr", _NULLABLE_INT32_ARRAY_FIELD),
        ("leader", _INT32_FIELD),
        ("replicas", _NULLABLE_INT32_ARRAY_FIELD),
        ("leader_recovery_state", _INT8_FIELD),
    ),
    RemoveTopicRecord: (("topic_id", _UUID_FIELD),),
    FeatureLevelRecord: (("name", _STRING_FIELD), ("feature_level", _INT16_FIELD)),
    ProducerIdsRecord: (
        ("broker_id", _INT32_FIELD),
        ("broker_epoch", _INT64_FIELD),
        ("next_producer_id", _INT64_FIELD),
    ),
    BrokerRegistrationChangeRecord: (
        ("broker_id", _INT32_FIELD),
        ("broker_epoch", _INT64_FIELD),
        ("fenced", _INT8_FIELD),
        ("in_controlled_shutdown", _INT8_FIELD),
    ),
}

#: (record type, version) -> record class.
_TYPES: dict[tuple[int, int], type[MetadataRecord]] = {
    (record_type.API_KEY, record_type.VERSION): record_type for record_type in _LAYOUTS
}


def encode_record(record: MetadataRecord) -> bytes:
    """The bytes of one metadata record for the controller's log (see the module docstring)."""
    out = _Writer()
    out.uvarint(FRAME_VERSION)
    out.uvarint(record.API_KEY)
    out.uvarint(record.VERSION)
    _write_fields(out, record, _LAYOUTS[type(record)])
    out.uvarint(0)  # no tagged fields
    return b"".join(out.parts)


def decode_record(data: bytes) -> MetadataRecord:
    """One metadata record from its bytes.

    Raises RecordFormatError for a frame version, record type or record version this code does
    not know, or for bytes that do not parse.
    """
    source = _Reader(bytes(data))
    frame_version = source.unsigned_varint()
    if frame_version != FRAME_VERSION:
        raise RecordFormatError(f"unknown frame version {frame_version}")
    api_key = source.unsigned_varint()
    version = source.unsigned_varint()
    record_type = _TYPES.get((api_key, version))
    if record_type is None:
        raise RecordFormatError(f"unknown metadata record type {api_key} version {version}")
    try:
        record: MetadataRecord = _read_fields(source, record_type, _LAYOUTS[record_type])
    except struct.error as error:  # pragma: no cover - take() guards every read
        raise RecordFormatError(str(error)) from error
    source.tagged_fields()  # none are known: all are skipped
    source.end()
    return record
