"""The values of KIP-848's `__consumer_offsets` records, in Kafka's flexible formats.

Every value starts with its int16 version (0) and ends with a tagged-field section, as Kafka's
generated coordinator records do (compact strings and arrays, uuid topic ids):

  ConsumerGroupMemberMetadataValue      instance id, rack id, client id and host, subscribed
                                        topic names and regex, rebalance timeout, server
                                        assignor; tag 0: ClassicMemberMetadata (a nullable
                                        struct, KIP-893: int8 1 then session timeout and
                                        supported protocols) for a classic-protocol member
  ConsumerGroupTargetAssignmentMember   [topic id, [partition]]
  ConsumerGroupTargetAssignmentMetadata assignment epoch
  ConsumerGroupCurrentMemberAssignment  member epoch, previous member epoch, state (int8),
                                        assigned and pending-revocation [topic id, [partition]]
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass

from odradek.coordinator.group.records import Reader, RecordFormatError
from odradek.protocol.primitives import compact_nullable_string, compact_string, unsigned_varint

VALUE_VERSION = 0
_INT8 = struct.Struct(">b")
_INT16 = struct.Struct(">h")
_INT32 = struct.Struct(">i")
_NO_TAGGED_FIELDS = b"\x00"
CLASSIC_MEMBER_METADATA_TAG = 0

Partitions = dict[uuid.UUID, frozenset[int]]

# MemberState's int8 values in ConsumerGroupCurrentMemberAssignmentValue (Kafka's MemberState).
MEMBER_STATE_UNREVOKED_PARTITIONS = 0
MEMBER_STATE_UNRELEASED_PARTITIONS = 1
MEMBER_STATE_STABLE = 2


@dataclass(frozen=True, slots=True)
class ClassicMemberMetadata:
    """What a classic-protocol member of a consumer group joined with."""

    session_timeout_ms: int
    protocols: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True)
class MemberMetadataValue:
    instance_id: str | None
    rack_id: str | None
    client_id: str
    client_host: str
    subscribed_topic_names: tuple[str, ...]
    subscribed_topic_regex: str | None
    rebalance_timeout_ms: int
    server_assignor: str | None
    classic: ClassicMemberMetadata | None


@dataclass(frozen=True, slots=True)
class CurrentAssignmentValue:
    member_epoch: int
    previous_member_epoch: int
    state: int
    assigned: Partitions
    pending_revocation: Partitions


# -- flexible writers and readers --------------------------------------------------------------


def _compact_bytes(value: bytes) -> bytes:
    return unsigned_varint(len(value) + 1) + value


def _partitions(partitions: Partitions) -> bytes:
    parts = [unsigned_varint(len(partitions) + 1)]
    for topic_id in sorted(partitions):
        numbers = sorted(partitions[topic_id])
        parts += [topic_id.bytes, unsigned_varint(len(numbers) + 1)]
        parts += [_INT32.pack(number) for number in numbers]
        parts.append(_NO_TAGGED_FIELDS)
    return b"".join(parts)


class _FlexibleReader(Reader):
    def compact_bytes(self) -> bytes:
        length = self.compact_length()
        return b"" if length < 0 else self.take(length)

    def partitions(self) -> Partitions:
        partitions: dict[uuid.UUID, frozenset[int]] = {}
        for _ in range(max(self.compact_length(), 0)):
            topic_id = self.uuid()
            numbers = frozenset(self.int32() for _ in range(max(self.compact_length(), 0)))
            self.tagged_fields()
            if numbers:
                partitions[topic_id] = partitions.get(topic_id, frozenset()) | numbers
        return partitions


def _reader(data: bytes) -> _FlexibleReader:
    reader = _FlexibleReader(data)
    version = reader.int16()
    if version != VALUE_VERSION:
        raise RecordFormatError(f"KIP-848 record value v{version} is not known")
    return reader


# -- ConsumerGroupMemberMetadataValue ----------------------------------------------------------


def _classic_metadata(classic: ClassicMemberMetadata) -> bytes:
    parts = [_INT8.pack(1), _INT32.pack(classic.session_timeout_ms)]
    parts.append(unsigned_varint(len(classic.protocols) + 1))
    for name, metadata in classic.protocols:
        parts += [compact_string(name), _compact_bytes(metadata), _NO_TAGGED_FIELDS]
    parts.append(_NO_TAGGED_FIELDS)
    return b"".join(parts)


def encode_member_value(value: MemberMetadataValue) -> bytes:
    parts = [
        _INT16.pack(VALUE_VERSION),
        compact_nullable_string(value.instance_id),
        compact_nullable_string(value.rack_id),
        compact_string(value.client_id),
        compact_string(value.client_host),
        unsigned_varint(len(value.subscribed_topic_names) + 1),
        *(compact_string(name) for name in value.subscribed_topic_names),
        compact_nullable_string(value.subscribed_topic_regex),
        _INT32.pack(value.rebalance_timeout_ms),
        compact_nullable_string(value.server_assignor),
    ]
    if value.classic is None:
        parts.append(_NO_TAGGED_FIELDS)
    else:
        classic = _classic_metadata(value.classic)
        parts += [
            unsigned_varint(1),
            unsigned_varint(CLASSIC_MEMBER_METADATA_TAG),
            unsigned_varint(len(classic)),
            classic,
        ]
    return b"".join(parts)


def _decode_classic_metadata(data: bytes) -> ClassicMemberMetadata | None:
    reader = _FlexibleReader(data)
    if reader.int8() < 0:
        return None
    session_timeout_ms = reader.int32()
    protocols = []
    for _ in range(max(reader.compact_length(), 0)):
        name = reader.compact_string()
        metadata = reader.compact_bytes()
        reader.tagged_fields()
        protocols.append((name, metadata))
    return ClassicMemberMetadata(session_timeout_ms, tuple(protocols))


def decode_member_value(data: bytes) -> MemberMetadataValue:
    reader = _reader(data)
    instance_id = reader.compact_nullable_string()
    rack_id = reader.compact_nullable_string()
    client_id = reader.compact_string()
    client_host = reader.compact_string()
    names = tuple(reader.compact_string() for _ in range(max(reader.compact_length(), 0)))
    regex = reader.compact_nullable_string()
    rebalance_timeout_ms = reader.int32()
    server_assignor = reader.compact_nullable_string()
    tagged = reader.tagged_fields()
    classic = None
    if CLASSIC_MEMBER_METADATA_TAG in tagged:
        classic = _decode_classic_metadata(tagged[CLASSIC_MEMBER_METADATA_TAG])
    return MemberMetadataValue(
        instance_id,
        rack_id,
        client_id,
        client_host,
        names,
        regex,
        rebalance_timeout_ms,
        server_assignor,
        classic,
    )


# -- target assignment -------------------------------------------------------------------------


def encode_target_value(partitions: Partitions) -> bytes:
    return _INT16.pack(VALUE_VERSION) + _partitions(partitions) + _NO_TAGGED_FIELDS


def decode_target_value(data: bytes) -> Partitions:
    return _reader(data).partitions()


def encode_target_epoch_value(assignment_epoch: int) -> bytes:
    return _INT16.pack(VALUE_VERSION) + _INT32.pack(assignment_epoch) + _NO_TAGGED_FIELDS


def decode_target_epoch_value(data: bytes) -> int:
    return _reader(data).int32()


# -- current member assignment -----------------------------------------------------------------


def encode_current_value(value: CurrentAssignmentValue) -> bytes:
    return b"".join(
        (
            _INT16.pack(VALUE_VERSION),
            _INT32.pack(value.member_epoch),
            _INT32.pack(value.previous_member_epoch),
            _INT8.pack(value.state),
            _partitions(value.assigned),
            _partitions(value.pending_revocation),
            _NO_TAGGED_FIELDS,
        )
    )


def decode_current_value(data: bytes) -> CurrentAssignmentValue:
    reader = _reader(data)
    member_epoch = reader.int32()
    previous_member_epoch = reader.int32()
    state = reader.int8()
    assigned = reader.partitions()
    pending = reader.partitions()
    return CurrentAssignmentValue(member_epoch, previous_member_epoch, state, assigned, pending)
