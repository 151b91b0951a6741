"""Hand-written encoders for the two hot responses, Produce (v3-v10) and Fetch (v4-v17).

kio encodes every other response; these two run per request, so they skip its per-field
writer dispatch. Both write the response body only (no response header), byte-identical to
`kio.serial.entity_writer` for the same version — tests/protocol/test_hot_encoders.py checks it.

A Fetch response is returned as a list of buffers in which each partition's records (a
memoryview or bytes from storage) is its own element, so the broker can hand the list to
`transport.writelines` without joining megabytes of batches into one copy.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from odradek.protocol.primitives import (
    compact_nullable_string,
    compact_string,
    nullable_string,
    string,
    unsigned_varint,
)

__all__ = [
    "FETCH_VERSIONS",
    "PRODUCE_VERSIONS",
    "EpochEndOffset",
    "FetchPartitionResult",
    "FetchResponseData",
    "FetchTopicResult",
    "LeaderIdAndEpoch",
    "NodeEndpoint",
    "ProducePartitionResult",
    "ProduceResponseData",
    "ProduceTopicResult",
    "SnapshotId",
    "encode_fetch_response",
    "encode_produce_response",
]

PRODUCE_VERSIONS: Final = range(3, 13)
FETCH_VERSIONS: Final = range(4, 18)


@dataclass(frozen=True, slots=True)
class ProducePartitionResult:
    index: int
    error_code: int
    base_offset: int
    log_append_time_ms: int = -1
    log_start_offset: int = -1
    # (batch_index, batch_index_error_message) pairs, v8+.
    record_errors: Sequence[tuple[int, str | None]] = ()
    error_message: str | None = None
    # v10+ tagged field (KIP-951), sent only with NOT_LEADER_OR_FOLLOWER.
    current_leader: LeaderIdAndEpoch | None = None


@dataclass(frozen=True, slots=True)
class ProduceTopicResult:
    name: str
    partitions: Sequence[ProducePartitionResult]


@dataclass(frozen=True, slots=True)
class NodeEndpoint:
    """KIP-951: a leader named in a NOT_LEADER_OR_FOLLOWER answer (Produce v10+, Fetch v16+)."""

    node_id: int
    host: str
    port: int
    rack: str | None = None


@dataclass(frozen=True, slots=True)
class ProduceResponseData:
    topics: Sequence[ProduceTopicResult]
    throttle_time_ms: int = 0
    node_endpoints: Sequence[NodeEndpoint] = ()


@dataclass(frozen=True, slots=True)
class EpochEndOffset:
    epoch: int = -1
    end_offset: int = -1


@dataclass(frozen=True, slots=True)
class LeaderIdAndEpoch:
    leader_id: int = -1
    leader_epoch: int = -1


@dataclass(frozen=True, slots=True)
class SnapshotId:
    end_offset: int = -1
    epoch: int = -1


@dataclass(frozen=True, slots=True)
class FetchPartitionResult:
    partition_index: int
    error_code: int
    high_watermark: int
    last_stable_offset: int = -1
    log_start_offset: int = -1
    # (producer_id, first_offset) pairs; None is sent as a null array.
    aborted_transactions: Sequence[tuple[int, int]] | None = None
    preferred_read_replica: int = -1
    records: bytes | memoryview | None = None
    # Tagged fields (v12+), sent only when set to something other than Kafka's default.
    diverging_epoch: EpochEndOffset | None = None
    current_leader: LeaderIdAndEpoch | None = None
    snapshot_id: SnapshotId | None = None


@dataclass(frozen=True, slots=True)
class FetchTopicResult:
    name: str
    topic_id: uuid.UUID | None
    partitions: Sequence[FetchPartitionResult]


@dataclass(frozen=True, slots=True)
class FetchResponseData:
    throttle_time_ms: int
    error_code: int
    session_id: int
    topics: Sequence[FetchTopicResult]
    node_endpoints: Sequence[NodeEndpoint] = ()


_INT32: Final = struct.Struct(">i")
_INT32_INT16_INT32: Final = struct.Struct(">ihi")
_INT64_INT64: Final = struct.Struct(">qq")
_PRODUCE_PARTITION_V3: Final = struct.Struct(">ihqq")
_PRODUCE_PARTITION_V5: Final = struct.Struct(">ihqqq")
_FETCH_PARTITION_V4: Final = struct.Struct(">ihqq")
_FETCH_PARTITION_V5: Final = struct.Struct(">ihqqq")
_EPOCH_END_OFFSET: Final = struct.Struct(">iqB")  # epoch, end_offset, no tagged fields
_LEADER_ID_AND_EPOCH: Final = struct.Struct(">iiB")
_SNAPSHOT_ID: Final = struct.Struct(">qiB")

_NULL_INT32: Final = _INT32.pack(-1)
_NO_TAGGED_FIELDS: Final = b"\x00"
_COMPACT_NULL: Final = b"\x00"
_ZERO_UUID: Final = bytes(16)
_SMALL_UNSIGNED_VARINTS: Final = tuple(bytes((value,)) for value in range(128))
_DEFAULT_EPOCH_END_OFFSET: Final = EpochEndOffset()
_DEFAULT_LEADER_ID_AND_EPOCH: Final = LeaderIdAndEpoch()
_DEFAULT_SNAPSHOT_ID: Final = SnapshotId()


def encode_produce_response(version: int, response: ProduceResponseData) -> bytes:
    """Encode a ProduceResponse body (v3-v12; v11 and v12 are v10's layout)."""
    if version not in PRODUCE_VERSIONS:
        raise ValueError(f"ProduceResponse v{version} is not supported")
    flexible = version >= 9
    partition_struct = _PRODUCE_PARTITION_V5 if version >= 5 else _PRODUCE_PARTITION_V3
    with_log_start_offset = version >= 5
    with_record_errors = version >= 8
    out = bytearray()
    topics = response.topics
    out += unsigned_varint(len(topics) + 1) if flexible else _INT32.pack(len(topics))
    for topic in topics:
        partitions = topic.partitions
        if flexible:
            out += compact_string(topic.name)
            out += unsigned_varint(len(partitions) + 1)
        else:
            out += string(topic.name)
            out += _INT32.pack(len(partitions))
        for partition in partitions:
            if with_log_start_offset:
                out += partition_struct.pack(
                    partition.index,
                    partition.error_code,
                    partition.base_offset,
                    partition.log_append_time_ms,
                    partition.log_start_offset,
                )
            else:
                out += partition_struct.pack(
                    partition.index,
                    partition.error_code,
                    partition.base_offset,
                    partition.log_append_time_ms,
                )
            if with_record_errors:
                record_errors = partition.record_errors
                if flexible:
                    out += unsigned_varint(len(record_errors) + 1)
                    for batch_index, message in record_errors:
                        out += _INT32.pack(batch_index)
                        out += compact_nullable_string(message)
                        out += _NO_TAGGED_FIELDS
                    out += compact_nullable_string(partition.error_message)
                    # current_leader (tag 0, v10) is only sent with NOT_LEADER_OR_FOLLOWER.
                    current_leader = partition.current_leader
                    if (
                        current_leader is None
                        or current_leader == _DEFAULT_LEADER_ID_AND_EPOCH
                        or version < 10
                    ):
                        out += _NO_TAGGED_FIELDS
                    else:
                        out += b"\x01\x00\x09"
                        out += _LEADER_ID_AND_EPOCH.pack(
                            current_leader.leader_id, current_leader.leader_epoch, 0
                        )
                else:
                    out += _INT32.pack(len(record_errors))
                    for batch_index, message in record_errors:
                        out += _INT32.pack(batch_index)
                        out += nullable_string(message)
                    out += nullable_string(partition.error_message)
        if flexible:
            out += _NO_TAGGED_FIELDS
    out += _INT32.pack(response.throttle_time_ms)
    if flexible:
        # node_endpoints (tag 0, v10) accompanies NOT_LEADER_OR_FOLLOWER.
        out += _node_endpoints_tagged_fields(response.node_endpoints if version >= 10 else ())
    return bytes(out)


def _node_endpoints_tagged_fields(endpoints: Sequence[NodeEndpoint]) -> bytes:
    """A response's tagged-field section holding only NodeEndpoints (tag 0), when any."""
    if not endpoints:
        return _NO_TAGGED_FIELDS
    body = bytearray(unsigned_varint(len(endpoints) + 1))
    for endpoint in endpoints:
        body += _INT32.pack(endpoint.node_id)
        body += compact_string(endpoint.host)
        body += _INT32.pack(endpoint.port)
        body += compact_nullable_string(endpoint.rack)
        body += _NO_TAGGED_FIELDS
    return b"\x01\x00" + unsigned_varint(len(body)) + bytes(body)


def _fetch_partition_tagged_fields(partition: FetchPartitionResult) -> bytes:
    # Tags must go in ascending order; each is (tag, size, value) and the section starts with
    # how many there are. A field equal to Kafka's default is left out, as Kafka does.
    tagged: list[bytes] = []
    diverging_epoch = partition.diverging_epoch
    if diverging_epoch is not None and diverging_epoch != _DEFAULT_EPOCH_END_OFFSET:
        tagged.append(b"\x00\x0d")
        tagged.append(_EPOCH_END_OFFSET.pack(diverging_epoch.epoch, diverging_epoch.end_offset, 0))
    current_leader = partition.current_leader
    if current_leader is not None and current_leader != _DEFAULT_LEADER_ID_AND_EPOCH:
        tagged.append(b"\x01\x09")
        tagged.append(
            _LEADER_ID_AND_EPOCH.pack(current_leader.leader_id, current_leader.leader_epoch, 0)
        )
    snapshot_id = partition.snapshot_id
    if snapshot_id is not None and snapshot_id != _DEFAULT_SNAPSHOT_ID:
        tagged.append(b"\x02\x0d")
        tagged.append(_SNAPSHOT_ID.pack(snapshot_id.end_offset, snapshot_id.epoch, 0))
    return _SMALL_UNSIGNED_VARINTS[len(tagged) // 2] + b"".join(tagged)


def encode_fetch_response(version: int, response: FetchResponseData) -> list[bytes | memoryview]:
    """Encode a FetchResponse body (v4-v17; v17 is v16) as buffers; records are never copied."""
    if version not in FETCH_VERSIONS:
        raise ValueError(f"FetchResponse v{version} is not supported")
    flexible = version >= 12
    with_log_start_offset = version >= 5
    with_session = version >= 7
    with_preferred_read_replica = version >= 11
    with_topic_id = version >= 13
    partition_struct = _FETCH_PARTITION_V5 if with_log_start_offset else _FETCH_PARTITION_V4
    pack_int32 = _INT32.pack
    pack_aborted_transaction = _INT64_INT64.pack

    buffers: list[bytes | memoryview] = []
    out = bytearray()
    if with_session:
        out += _INT32_INT16_INT32.pack(
            response.throttle_time_ms, response.error_code, response.session_id
        )
    else:
        out += pack_int32(response.throttle_time_ms)
    topics = response.topics
    out += unsigned_varint(len(topics) + 1) if flexible else pack_int32(len(topics))
    for topic in topics:
        partitions = topic.partitions
        if with_topic_id:
            out += _ZERO_UUID if topic.topic_id is None else topic.topic_id.bytes
        elif flexible:
            out += compact_string(topic.name)
        else:
            out += string(topic.name)
        out += unsigned_varint(len(partitions) + 1) if flexible else pack_int32(len(partitions))
        for partition in partitions:
            if with_log_start_offset:
                out += partition_struct.pack(
                    partition.partition_index,
                    partition.error_code,
                    partition.high_watermark,
                    partition.last_stable_offset,
                    partition.log_start_offset,
                )
            else:
                out += partition_struct.pack(
                    partition.partition_index,
                    partition.error_code,
                    partition.high_watermark,
                    partition.last_stable_offset,
                )
            aborted_transactions = partition.aborted_transactions
            if aborted_transactions is None:
                out += _COMPACT_NULL if flexible else _NULL_INT32
            elif flexible:
                out += unsigned_varint(len(aborted_transactions) + 1)
                for producer_id, first_offset in aborted_transactions:
                    out += pack_aborted_transaction(producer_id, first_offset)
                    out += _NO_TAGGED_FIELDS
            else:
                out += pack_int32(len(aborted_transactions))
                for producer_id, first_offset in aborted_transactions:
                    out += pack_aborted_transaction(producer_id, first_offset)
            if with_preferred_read_replica:
                out += pack_int32(partition.preferred_read_replica)
            records = partition.records
            if records is None:
                out += _COMPACT_NULL if flexible else _NULL_INT32
            else:
                size = records.nbytes if isinstance(records, memoryview) else len(records)
                out += unsigned_varint(size + 1) if flexible else pack_int32(size)
                if size:
                    buffers.append(bytes(out))
                    buffers.append(records)
                    out = bytearray()
            if flexible:
                if (
                    partition.diverging_epoch is None
                    and partition.current_leader is None
                    and partition.snapshot_id is None
                ):
                    out += _NO_TAGGED_FIELDS
                else:
                    out += _fetch_partition_tagged_fields(partition)
        if flexible:
            out += _NO_TAGGED_FIELDS
    if flexible:
        # node_endpoints (tag 0, v16) accompanies NOT_LEADER_OR_FOLLOWER.
        out += _node_endpoints_tagged_fields(response.node_endpoints if version >= 16 else ())
    buffers.append(bytes(out))
    return buffers
