"""The records of `__consumer_offsets`, in Kafka's own key and value formats.

Each key starts with an int16 version that says what the record is; the value starts with its
own int16 version. A null value is a tombstone: compaction keeps the latest record per key and
drops tombstoned keys, so keys must be exactly one per thing (offset, group).

Written here:
  OffsetCommitKey v1          group, topic, partition       OffsetCommitValue v3
  GroupMetadataKey v2         group                         GroupMetadataValue v3
  ConsumerGroupMetadataKey v3 group                         ConsumerGroupMetadataValue v0

  ConsumerGroupMemberMetadataKey v5          group, member  ConsumerGroupMemberMetadataValue v0
  ConsumerGroupTargetAssignmentMetadataKey v6 group          ...TargetAssignmentMetadataValue v0
  ConsumerGroupTargetAssignmentMemberKey v7   group, member  ...TargetAssignmentMemberValue v0
  ConsumerGroupCurrentMemberAssignmentKey v8  group, member  ...CurrentMemberAssignmentValue v0

The KIP-848 values are flexible versions (see `consumer_records`): a consumer group, its
members (also classic-protocol members of a migrated group, with their ClassicMemberMetadata),
target and current assignments all survive a restart. ConsumerGroupPartitionMetadata (v4) is
not written (Kafka 4.1 replaced it by a hash); other key versions are skipped on replay.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from odradek.protocol.primitives import FieldReader, nullable_string, string

OFFSET_COMMIT_KEY_VERSION = 1
GROUP_METADATA_KEY_VERSION = 2
CONSUMER_GROUP_METADATA_KEY_VERSION = 3
CONSUMER_GROUP_MEMBER_METADATA_KEY_VERSION = 5
CONSUMER_GROUP_TARGET_ASSIGNMENT_METADATA_KEY_VERSION = 6
CONSUMER_GROUP_TARGET_ASSIGNMENT_MEMBER_KEY_VERSION = 7
CONSUMER_GROUP_CURRENT_MEMBER_ASSIGNMENT_KEY_VERSION = 8
OFFSET_COMMIT_VALUE_VERSION = 3
GROUP_METADATA_VALUE_VERSION = 3
CONSUMER_GROUP_METADATA_VALUE_VERSION = 0

_INT16 = struct.Struct(">h")
_INT32 = struct.Struct(">i")
_INT64 = struct.Struct(">q")


class RecordFormatError(ValueError):
    """A key or value that does not parse; replay skips it with a warning."""


def partition_for(group_id: str, partitions: int) -> int:
    """Kafka's `Utils.abs(groupId.hashCode) % partitions` (Java's String.hashCode, UTF-16)."""
    value = 0
    encoded = group_id.encode("utf-16-be")
    for index in range(0, len(encoded), 2):
        value = (31 * value + ((encoded[index] << 8) | encoded[index + 1])) & 0xFFFFFFFF
    if value >= 0x80000000:
        value -= 0x100000000
    magnitude = 0 if value == -(2**31) else abs(value)
    return magnitude % partitions


@dataclass(frozen=True, slots=True)
class CoordinatorRecord:
    """One record for a `__consumer_offsets` partition; value None is a tombstone."""

    partition: int
    key: bytes
    value: bytes | None


# -- primitive writers and a reader ---------------------------------------------------------


def _bytes(value: bytes) -> bytes:
    return _INT32.pack(len(value)) + value


class Reader(FieldReader):
    """Reads Kafka's classic (non-flexible) fields; raises RecordFormatError past the end.

    The flexible ones (compact strings, varints, tagged fields) come from `FieldReader`."""

    ERROR = RecordFormatError

    def nullable_string(self) -> str | None:
        length = self.int16()
        return None if length < 0 else self.utf8(length)

    def string(self) -> str:
        value = self.nullable_string()
        if value is None:
            raise RecordFormatError("null where a string is required")
        return value

    def bytes_(self) -> bytes:
        length = self.int32()
        return b"" if length < 0 else self.take(length)


# -- keys ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OffsetKey:
    group_id: str
    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class GroupKey:
    group_id: str


@dataclass(frozen=True, slots=True)
class ConsumerGroupKey:
    group_id: str


@dataclass(frozen=True, slots=True)
class MemberKey:
    """ConsumerGroupMemberMetadataKey."""

    group_id: str
    member_id: str


@dataclass(frozen=True, slots=True)
class TargetAssignmentEpochKey:
    """ConsumerGroupTargetAssignmentMetadataKey."""

    group_id: str


@dataclass(frozen=True, slots=True)
class TargetAssignmentKey:
    """ConsumerGroupTargetAssignmentMemberKey."""

    group_id: str
    member_id: str


@dataclass(frozen=True, slots=True)
class CurrentAssignmentKey:
    """ConsumerGroupCurrentMemberAssignmentKey."""

    group_id: str
    member_id: str


Key = (
    OffsetKey
    | GroupKey
    | ConsumerGroupKey
    | MemberKey
    | TargetAssignmentEpochKey
    | TargetAssignmentKey
    | CurrentAssignmentKey
)

_MEMBER_KEY_VERSIONS: dict[type, int] = {
    MemberKey: CONSUMER_GROUP_MEMBER_METADATA_KEY_VERSION,
    TargetAssignmentKey: CONSUMER_GROUP_TARGET_ASSIGNMENT_MEMBER_KEY_VERSION,
    CurrentAssignmentKey: CONSUMER_GROUP_CURRENT_MEMBER_ASSIGNMENT_KEY_VERSION,
}


def encode_key(key: Key) -> bytes:
    if isinstance(key, OffsetKey):
        return (
            _INT16.pack(OFFSET_COMMIT_KEY_VERSION)
            + string(key.group_id)
            + string(key.topic)
            + _INT32.pack(key.partition)
        )
    if isinstance(key, GroupKey):
        return _INT16.pack(GROUP_METADATA_KEY_VERSION) + string(key.group_id)
    if isinstance(key, ConsumerGroupKey):
        return _INT16.pack(CONSUMER_GROUP_METADATA_KEY_VERSION) + string(key.group_id)
    if isinstance(key, TargetAssignmentEpochKey):
        return _INT16.pack(CONSUMER_GROUP_TARGET_ASSIGNMENT_METADATA_KEY_VERSION) + string(
            key.group_id
        )
    return (
        _INT16.pack(_MEMBER_KEY_VERSIONS[type(key)]) + string(key.group_id) + string(key.member_id)
    )


def decode_key(data: bytes) -> Key | None:
    """The key, or None for a record type this coordinator does not keep."""
    reader = Reader(data)
    version = reader.int16()
    if version in (0, 1):
        return OffsetKey(reader.string(), reader.string(), reader.int32())
    if version == GROUP_METADATA_KEY_VERSION:
        return GroupKey(reader.string())
    if version == CONSUMER_GROUP_METADATA_KEY_VERSION:
        return ConsumerGroupKey(reader.string())
    if version == CONSUMER_GROUP_MEMBER_METADATA_KEY_VERSION:
        return MemberKey(reader.string(), reader.string())
    if version == CONSUMER_GROUP_TARGET_ASSIGNMENT_METADATA_KEY_VERSION:
        return TargetAssignmentEpochKey(reader.string())
    if version == CONSUMER_GROUP_TARGET_ASSIGNMENT_MEMBER_KEY_VERSION:
        return TargetAssignmentKey(reader.string(), reader.string())
    if version == CONSUMER_GROUP_CURRENT_MEMBER_ASSIGNMENT_KEY_VERSION:
        return CurrentAssignmentKey(reader.string(), reader.string())
    return None


# -- values ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OffsetValue:
    offset: int
    leader_epoch: int
    metadata: str
    commit_timestamp: int


def encode_offset_value(value: OffsetValue) -> bytes:
    return (
        _INT16.pack(OFFSET_COMMIT_VALUE_VERSION)
        + _INT64.pack(value.offset)
        + _INT32.pack(value.leader_epoch)
        + string(value.metadata)
        + _INT64.pack(value.commit_timestamp)
    )


def decode_offset_value(data: bytes) -> OffsetValue:
    reader = Reader(data)
    version = reader.int16()
    offset = reader.int64()
    leader_epoch = -1
    if version >= 3:
        leader_epoch = reader.int32()
    metadata = reader.string()
    commit_timestamp = reader.int64()
    # v1 carries an expire timestamp after the commit timestamp; it is not used.
    return OffsetValue(offset, leader_epoch, metadata, commit_timestamp)


@dataclass(frozen=True, slots=True)
class MemberValue:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    rebalance_timeout_ms: int
    session_timeout_ms: int
    subscription: bytes
    assignment: bytes


@dataclass(frozen=True, slots=True)
class GroupValue:
    protocol_type: str
    generation: int
    protocol: str | None
    leader: str | None
    current_state_timestamp: int
    members: tuple[MemberValue, ...]


def encode_group_value(value: GroupValue) -> bytes:
    parts = [
        _INT16.pack(GROUP_METADATA_VALUE_VERSION),
        string(value.protocol_type),
        _INT32.pack(value.generation),
        nullable_string(value.protocol),
        nullable_string(value.leader),
        _INT64.pack(value.current_state_timestamp),
        _INT32.pack(len(value.members)),
    ]
    for member in value.members:
        parts += [
            string(member.member_id),
            nullable_string(member.group_instance_id),
            string(member.client_id),
            string(member.client_host),
            _INT32.pack(member.rebalance_timeout_ms),
            _INT32.pack(member.session_timeout_ms),
            _bytes(member.subscription),
            _bytes(member.assignment),
        ]
    return b"".join(parts)


def decode_group_value(data: bytes) -> GroupValue:
    reader = Reader(data)
    version = reader.int16()
    if version > GROUP_METADATA_VALUE_VERSION:
        raise RecordFormatError(f"GroupMetadataValue v{version} is not known")
    protocol_type = reader.string()
    generation = reader.int32()
    protocol = reader.nullable_string()
    leader = reader.nullable_string()
    current_state_timestamp = reader.int64() if version >= 2 else -1
    members = []
    for _ in range(reader.int32()):
        member_id = reader.string()
        instance_id = reader.nullable_string() if version >= 3 else None
        client_id = reader.string()
        client_host = reader.string()
        rebalance_timeout = reader.int32() if version >= 1 else -1
        session_timeout = reader.int32()
        subscription = reader.bytes_()
        assignment = reader.bytes_()
        if rebalance_timeout < 0:
            rebalance_timeout = session_timeout
        members.append(
            MemberValue(
                member_id,
                instance_id,
                client_id,
                client_host,
                rebalance_timeout,
                session_timeout,
                subscription,
                assignment,
            )
        )
    return GroupValue(
        protocol_type, generation, protocol, leader, current_state_timestamp, tuple(members)
    )


def encode_consumer_group_value(epoch: int) -> bytes:
    # A flexible version: the struct ends with an empty tagged-field section.
    return _INT16.pack(CONSUMER_GROUP_METADATA_VALUE_VERSION) + _INT32.pack(epoch) + b"\x00"


def decode_consumer_group_value(data: bytes) -> int:
    reader = Reader(data)
    reader.int16()
    return reader.int32()


def read_subscribed_topics(subscription: bytes) -> tuple[str, ...]:
    """The topics of a classic ConsumerProtocolSubscription (every version starts with them)."""
    try:
        reader = Reader(subscription)
        reader.int16()
        count = reader.int32()
        if count < 0 or count > len(subscription):
            return ()
        return tuple(reader.string() for _ in range(count))
    except RecordFormatError:
        return ()
