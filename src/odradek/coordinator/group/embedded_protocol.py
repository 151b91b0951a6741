"""Kafka's ConsumerProtocol: the bytes classic consumers embed in JoinGroup and SyncGroup.

A classic consumer's JoinGroup protocol metadata is a ConsumerProtocolSubscription and its
SyncGroup assignment a ConsumerProtocolAssignment (protocol type "consumer"). The coordinator
reads them only to move a group between the classic and the KIP-848 consumer protocol (KIP-848
"Online migration"), and writes an assignment for a classic member of a consumer group.

  Subscription  version int16, topics [string], user_data nullable bytes,
                v1+ owned_partitions [topic string, partitions [int32]], v2+ generation_id
                int32, v3+ rack_id nullable string
  Assignment    version int16, assigned_partitions [topic string, partitions [int32]],
                user_data nullable bytes
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from odradek.coordinator.group.records import Reader, RecordFormatError
from odradek.protocol.primitives import string

PROTOCOL_TYPE = "consumer"
HIGHEST_VERSION = 3

_INT16 = struct.Struct(">h")
_INT32 = struct.Struct(">i")

TopicPartitionNames = dict[str, frozenset[int]]


class MalformedProtocolError(ValueError):
    """Subscription or assignment bytes that do not parse (Kafka's SchemaException)."""


@dataclass(frozen=True, slots=True)
class Subscription:
    version: int
    topics: tuple[str, ...]
    user_data: bytes | None
    owned_partitions: TopicPartitionNames
    generation_id: int
    rack_id: str | None


def _partitions(reader: Reader) -> TopicPartitionNames:
    count = reader.int32()
    if count < 0:
        return {}
    partitions: dict[str, frozenset[int]] = {}
    for _ in range(count):
        topic = reader.string()
        numbers = reader.int32()
        partitions[topic] = partitions.get(topic, frozenset()) | frozenset(
            reader.int32() for _ in range(max(numbers, 0))
        )
    return partitions


def _nullable_bytes(reader: Reader) -> bytes | None:
    length = reader.int32()
    return None if length < 0 else reader.take(length)


def decode_subscription(data: bytes) -> Subscription:
    """A ConsumerProtocolSubscription of any version (fields of later versions are skipped).
    Raises MalformedProtocolError."""
    try:
        reader = Reader(data)
        version = reader.int16()
        if version < 0:
            raise MalformedProtocolError(f"subscription version {version}")
        count = reader.int32()
        topics = tuple(reader.string() for _ in range(max(count, 0)))
        user_data = _nullable_bytes(reader)
        owned: TopicPartitionNames = {}
        generation_id = -1
        rack_id = None
        if version >= 1:
            owned = _partitions(reader)
        if version >= 2:
            generation_id = reader.int32()
        if version >= 3:
            rack_id = reader.nullable_string()
    except RecordFormatError as error:
        raise MalformedProtocolError(str(error)) from error
    return Subscription(version, topics, user_data, owned, generation_id, rack_id)


def subscription_version(data: bytes) -> int:
    """The version a classic member's subscription was written with (its assignment is
    written back with the same version, as Kafka's ConsumerProtocol.deserializeVersion)."""
    if len(data) < 2:
        return 0
    version: int = _INT16.unpack_from(data)[0]
    return min(max(version, 0), HIGHEST_VERSION)


def decode_assignment(data: bytes) -> TopicPartitionNames:
    """The partitions of a ConsumerProtocolAssignment; empty bytes are an empty assignment
    (a member that joined but never synced). Raises MalformedProtocolError, also for user
    data a custom assignor put there (it would be lost, as Kafka refuses)."""
    if not data:
        return {}
    try:
        reader = Reader(data)
        reader.int16()
        partitions = _partitions(reader)
        user_data = _nullable_bytes(reader) if reader.remaining() else None
    except RecordFormatError as error:
        raise MalformedProtocolError(str(error)) from error
    if user_data:
        raise MalformedProtocolError("user data from a custom assignor would be lost")
    return partitions


def encode_assignment(partitions: TopicPartitionNames, version: int) -> bytes:
    """A ConsumerProtocolAssignment (topics and partitions sorted, no user data)."""
    parts = [_INT16.pack(version), _INT32.pack(len(partitions))]
    for topic in sorted(partitions):
        numbers = sorted(partitions[topic])
        parts += [string(topic), _INT32.pack(len(numbers))]
        parts += [_INT32.pack(number) for number in numbers]
    parts.append(_INT32.pack(-1))
    return b"".join(parts)


def encode_subscription(
    topics: tuple[str, ...],
    owned: TopicPartitionNames | None = None,
    version: int = 1,
) -> bytes:
    """A ConsumerProtocolSubscription (v0-v1, for tests and tools)."""
    parts = [_INT16.pack(version), _INT32.pack(len(topics))]
    parts += [string(topic) for topic in topics]
    parts.append(_INT32.pack(-1))
    if version >= 1:
        owned = owned or {}
        parts.append(_INT32.pack(len(owned)))
        for topic in sorted(owned):
            numbers = sorted(owned[topic])
            parts += [string(topic), _INT32.pack(len(numbers))]
            parts += [_INT32.pack(number) for number in numbers]
    return b"".join(parts)
