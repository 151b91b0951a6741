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
from typing import ClassVar, Final

from odradek.protocol.primitives import unsigned_varint

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


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.position = 0

    def _take(self, size: int) -> bytes:
        end = self.position + size
        if size < 0 or end > len(self.data):
            raise RecordFormatError("field runs past the end of the record")
        chunk = self.data[self.position : end]
        self.position = end
        return chunk

    def int8(self) -> int:
        value: int = _INT8.unpack(self._take(1))[0]
        return value

    def int16(self) -> int:
        value: int = _INT16.unpack(self._take(2))[0]
        return value

    def uint16(self) -> int:
        value: int = _UINT16.unpack(self._take(2))[0]
        return value

    def int32(self) -> int:
        value: int = _INT32.unpack(self._take(4))[0]
        return value

    def int64(self) -> int:
        value: int = _INT64.unpack(self._take(8))[0]
        return value

    def boolean(self) -> bool:
        value = self.int8()
        if value not in (0, 1):
            raise RecordFormatError(f"boolean byte {value}")
        return value == 1

    def uuid_value(self) -> uuid.UUID:
        return uuid.UUID(bytes=self._take(16))

    def uvarint(self) -> int:
        value = 0
        shift = 0
        while True:
            byte = self._take(1)[0]
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7
            if shift > 63:
                raise RecordFormatError("unsigned varint longer than 10 bytes")

    def nullable_string(self) -> str | None:
        length = self.uvarint()
        if length == 0:
            return None
        try:
            return self._take(length - 1).decode()
        except UnicodeDecodeError as error:
            raise RecordFormatError("string is not UTF-8") from error

    def string(self) -> str:
        value = self.nullable_string()
        if value is None:
            raise RecordFormatError("null where a string is required")
        return value

    def nullable_int32_array(self) -> tuple[int, ...] | None:
        length = self.uvarint()
        if length == 0:
            return None
        return tuple(self.int32() for _ in range(length - 1))

    def int32_array(self) -> tuple[int, ...]:
        values = self.nullable_int32_array()
        if values is None:
            raise RecordFormatError("null where an array is required")
        return values

    def count(self) -> int:
        length = self.uvarint()
        if length == 0:
            raise RecordFormatError("null where an array is required")
        return length - 1

    def skip_tagged_fields(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()
            self._take(self.uvarint())

    def end(self) -> None:
        if self.position != len(self.data):
            raise RecordFormatError(f"{len(self.data) - self.position} bytes after the record")


# -- per-record field layouts ------------------------------------------------------------------


def _write_register_broker(out: _Writer, record: RegisterBrokerRecord) -> None:
    out.int32(record.broker_id)
    out.int64(record.broker_epoch)
    out.uuid_value(record.incarnation_id)
    out.count(len(record.end_points))
    for endpoint in record.end_points:
        out.string(endpoint.name)
        out.string(endpoint.host)
        out.uint16(endpoint.port)
        out.int16(endpoint.security_protocol)
    out.count(len(record.features))
    for feature in record.features:
        out.string(feature.name)
        out.int16(feature.min_supported_version)
        out.int16(feature.max_supported_version)
    out.string(record.rack)
    out.boolean(record.fenced)
    out.boolean(record.in_controlled_shutdown)


def _read_register_broker(source: _Reader) -> RegisterBrokerRecord:
    broker_id = source.int32()
    broker_epoch = source.int64()
    incarnation_id = source.uuid_value()
    end_points = tuple(
        BrokerEndpoint(source.string(), source.string(), source.uint16(), source.int16())
        for _ in range(source.count())
    )
    features = tuple(
        BrokerFeature(source.string(), source.int16(), source.int16())
        for _ in range(source.count())
    )
    return RegisterBrokerRecord(
        broker_id=broker_id,
        broker_epoch=broker_epoch,
        incarnation_id=incarnation_id,
        end_points=end_points,
        features=features,
        rack=source.nullable_string(),
        fenced=source.boolean(),
        in_controlled_shutdown=source.boolean(),
    )


def _write_unregister_broker(out: _Writer, record: UnregisterBrokerRecord) -> None:
    out.int32(record.broker_id)
    out.int64(record.broker_epoch)


def _read_unregister_broker(source: _Reader) -> UnregisterBrokerRecord:
    return UnregisterBrokerRecord(broker_id=source.int32(), broker_epoch=source.int64())


def _write_topic(out: _Writer, record: TopicRecord) -> None:
    out.string(record.name)
    out.uuid_value(record.topic_id)


def _read_topic(source: _Reader) -> TopicRecord:
    return TopicRecord(name=source.string(), topic_id=source.uuid_value())


def _write_partition(out: _Writer, record: PartitionRecord) -> None:
    out.uuid_value(record.topic_id)
    out.int32(record.partition_id)
    out.int32_array(record.replicas)
    out.int32_array(record.isr)
    out.int32(record.leader)
    out.int8(record.leader_recovery_state)
    out.int32(record.leader_epoch)
    out.int32(record.partition_epoch)


def _read_partition(source: _Reader) -> PartitionRecord:
    return PartitionRecord(
        topic_id=source.uuid_value(),
        partition_id=source.int32(),
        replicas=source.int32_array(),
        isr=source.int32_array(),
        leader=source.int32(),
        leader_recovery_state=source.int8(),
        leader_epoch=source.int32(),
        partition_epoch=source.int32(),
    )


def _write_config(out: _Writer, record: ConfigRecord) -> None:
    out.int8(record.resource_type)
    out.string(record.resource_name)
    out.string(record.name)
    out.string(record.value)


def _read_config(source: _Reader) -> ConfigRecord:
    return ConfigRecord(
        resource_type=source.int8(),
        resource_name=source.string(),
        name=source.string(),
        value=source.nullable_string(),
    )


def _write_partition_change(out: _Writer, record: PartitionChangeRecord) -> None:
    out.uuid_value(record.topic_id)
    out.int32(record.partition_id)
    out.int32_array(record.isr)
    out.int32(record.leader)
    out.int32_array(record.replicas)
    out.int8(record.leader_recovery_state)


def _read_partition_change(source: _Reader) -> PartitionChangeRecord:
    return PartitionChangeRecord(
        topic_id=source.uuid_value(),
        partition_id=source.int32(),
        isr=source.nullable_int32_array(),
        leader=source.int32(),
        replicas=source.nullable_int32_array(),
        leader_recovery_state=source.int8(),
    )


def _write_remove_topic(out: _Writer, record: RemoveTopicRecord) -> None:
    out.uuid_value(record.topic_id)


def _read_remove_topic(source: _Reader) -> RemoveTopicRecord:
    return RemoveTopicRecord(topic_id=source.uuid_value())


def _write_feature_level(out: _Writer, record: FeatureLevelRecord) -> None:
    out.string(record.name)
    out.int16(record.feature_level)


def _read_feature_level(source: _Reader) -> FeatureLevelRecord:
    return FeatureLevelRecord(name=source.string(), feature_level=source.int16())


def _write_producer_ids(out: _Writer, record: ProducerIdsRecord) -> None:
    out.int32(record.broker_id)
    out.int64(record.broker_epoch)
    out.int64(record.next_producer_id)


def _read_producer_ids(source: _Reader) -> ProducerIdsRecord:
    return ProducerIdsRecord(
        broker_id=source.int32(), broker_epoch=source.int64(), next_producer_id=source.int64()
    )


def _write_registration_change(out: _Writer, record: BrokerRegistrationChangeRecord) -> None:
    out.int32(record.broker_id)
    out.int64(record.broker_epoch)
    out.int8(record.fenced)
    out.int8(record.in_controlled_shutdown)


def _read_registration_change(source: _Reader) -> BrokerRegistrationChangeRecord:
    return BrokerRegistrationChangeRecord(
        broker_id=source.int32(),
        broker_epoch=source.int64(),
        fenced=source.int8(),
        in_controlled_shutdown=source.int8(),
    )


_WRITERS: dict[type, Callable[[_Writer, object], None]] = {
    RegisterBrokerRecord: _write_register_broker,  # type: ignore[dict-item]
    UnregisterBrokerRecord: _write_unregister_broker,  # type: ignore[dict-item]
    TopicRecord: _write_topic,  # type: ignore[dict-item]
    PartitionRecord: _write_partition,  # type: ignore[dict-item]
    ConfigRecord: _write_config,  # type: ignore[dict-item]
    PartitionChangeRecord: _write_partition_change,  # type: ignore[dict-item]
    RemoveTopicRecord: _write_remove_topic,  # type: ignore[dict-item]
    FeatureLevelRecord: _write_feature_level,  # type: ignore[dict-item]
    ProducerIdsRecord: _write_producer_ids,  # type: ignore[dict-item]
    BrokerRegistrationChangeRecord: _write_registration_change,  # type: ignore[dict-item]
}

#: (record type, version) -> reader. A new version adds a row here; old rows stay readable.
_READERS: dict[tuple[int, int], Callable[[_Reader], MetadataRecord]] = {
    (RegisterBrokerRecord.API_KEY, 0): _read_register_broker,
    (UnregisterBrokerRecord.API_KEY, 0): _read_unregister_broker,
    (TopicRecord.API_KEY, 0): _read_topic,
    (PartitionRecord.API_KEY, 0): _read_partition,
    (ConfigRecord.API_KEY, 0): _read_config,
    (PartitionChangeRecord.API_KEY, 0): _read_partition_change,
    (RemoveTopicRecord.API_KEY, 0): _read_remove_topic,
    (FeatureLevelRecord.API_KEY, 0): _read_feature_level,
    (ProducerIdsRecord.API_KEY, 0): _read_producer_ids,
    (BrokerRegistrationChangeRecord.API_KEY, 1): _read_registration_change,
}


def encode_record(record: MetadataRecord) -> bytes:
    """The bytes of one metadata record for the controller's log (see the module docstring)."""
    out = _Writer()
    out.uvarint(FRAME_VERSION)
    out.uvarint(record.API_KEY)
    out.uvarint(record.VERSION)
    _WRITERS[type(record)](out, record)
    out.uvarint(0)  # no tagged fields
    return b"".join(out.parts)


def decode_record(data: bytes) -> MetadataRecord:
    """One metadata record from its bytes.

    Raises RecordFormatError for a frame version, record type or record version this code does
    not know, or for bytes that do not parse.
    """
    source = _Reader(bytes(data))
    frame_version = source.uvarint()
    if frame_version != FRAME_VERSION:
        raise RecordFormatError(f"unknown frame version {frame_version}")
    api_key = source.uvarint()
    version = source.uvarint()
    reader = _READERS.get((api_key, version))
    if reader is None:
        raise RecordFormatError(f"unknown metadata record type {api_key} version {version}")
    try:
        record = reader(source)
    except struct.error as error:  # pragma: no cover - _take guards every read
        raise RecordFormatError(str(error)) from error
    source.skip_tagged_fields()
    source.end()
    return record
