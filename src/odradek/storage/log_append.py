"""The append side of a partition log: batch checks, control batches, append results.

Kafka splits this between LogValidator (leader: check and assign offsets) and
UnifiedLog.analyzeAndValidateRecords (follower: the batches keep the leader's offsets and
epochs, and are checked for CRC and growing offsets only). Here live the pure parts both
`PartitionLog.append` and `PartitionLog.append_as_follower` use; the writes themselves stay
in the log (log.py), which owns segments and offsets.

No record is decoded except a control batch's single record (the COMMIT/ABORT marker type and
coordinator epoch, as Kafka's EndTransactionMarker.deserialize reads it).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import crc32c

from odradek.protocol.record_batch import (
    LOG_OVERHEAD,
    BatchHeader,
    Record,
    decode_records,
    encode_batch,
    read_batch_header,
)
from odradek.storage._batch import ATTRIBUTES_POSITION, BATCH_HEADER_SIZE, MAGIC
from odradek.storage.errors import CorruptRecord, OffsetsOutOfOrder, RecordBatchTooLarge
from odradek.storage.log_types import AppendInfo, LogConfig
from odradek.storage.producer_state import BatchMetadata
from odradek.storage.segment import LogSegment

__all__ = [
    "CONTROL_TYPE_ABORT",
    "CONTROL_TYPE_COMMIT",
    "append_info",
    "check_replicated_batches",
    "duplicate_info",
    "encode_marker_batch",
    "measure",
    "parse_marker",
    "should_roll",
]

# A control record: key = version i16 (0) + type i16 (0 ABORT, 1 COMMIT);
# value = version i16 (0) + coordinator epoch i32 (Kafka's EndTransactionMarker).
_CONTROL_KEY = struct.Struct(">hh")
_MARKER_VALUE = struct.Struct(">hi")
CONTROL_TYPE_ABORT = 0
CONTROL_TYPE_COMMIT = 1
_MINIMUM_BATCH_LENGTH = BATCH_HEADER_SIZE - LOG_OVERHEAD
_BATCH_PREFIX = struct.Struct(">qi")


def encode_marker_batch(
    producer_id: int,
    producer_epoch: int,
    commit: bool,
    coordinator_epoch: int,
    timestamp_ms: int,
    partition_leader_epoch: int,
) -> bytes:
    """A control batch holding one COMMIT or ABORT marker (base offset 0, to be patched)."""
    control_type = CONTROL_TYPE_COMMIT if commit else CONTROL_TYPE_ABORT
    return encode_batch(
        [
            Record(
                key=_CONTROL_KEY.pack(0, control_type),
                value=_MARKER_VALUE.pack(0, coordinator_epoch),
                timestamp=timestamp_ms,
            )
        ],
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=-1,
        is_transactional=True,
        is_control=True,
        partition_leader_epoch=partition_leader_epoch,
    )


def parse_marker(batch: bytes | memoryview) -> tuple[int, int] | None:
    """(control type, coordinator epoch) of a control batch, None when it holds no marker.

    A marker without a readable value has coordinator epoch -1.
    """
    records = decode_records(batch)
    if not records or records[0].key is None or len(records[0].key) < _CONTROL_KEY.size:
        return None
    _, control_type = _CONTROL_KEY.unpack_from(records[0].key)
    value = records[0].value
    coordinator_epoch = (
        _MARKER_VALUE.unpack_from(value)[1]
        if value is not None and len(value) >= _MARKER_VALUE.size
        else -1
    )
    return control_type, coordinator_epoch


def measure(
    records: bytes | memoryview, headers: Sequence[BatchHeader], max_message_bytes: int
) -> tuple[int, int, int]:
    """(total bytes, offsets, records) of a leader append's batches.

    Raises RecordBatchTooLarge for a batch over `max_message_bytes` and ValueError when the
    headers do not describe `records`.
    """
    if not headers:
        raise ValueError("append needs at least one batch")
    total_size = 0
    offset_count = 0
    message_count = 0
    for header in headers:
        size = header.batch_length + LOG_OVERHEAD
        if size > max_message_bytes:
            raise RecordBatchTooLarge(
                f"batch of {size} bytes exceeds max.message.bytes {max_message_bytes}"
            )
        total_size += size
        offset_count += header.last_offset_delta + 1
        message_count += header.records_count
    if total_size != len(records):
        raise ValueError(f"headers describe {total_size} bytes, records hold {len(records)}")
    return total_size, offset_count, message_count


def check_replicated_batches(
    records: bytes | memoryview, log_end_offset: int
) -> tuple[list[BatchHeader], int]:
    """The complete batches of a replica fetch response and the bytes they take.

    UnifiedLog.analyzeAndValidateRecords for a follower: every batch must be a v2 batch with
    a sane length and a valid CRC (else CorruptRecord), the first must start at or after
    `log_end_offset` (a compacted leader log may skip offsets) and each must start after the
    previous one ends (else OffsetsOutOfOrder). Trailing bytes that do not make a complete
    batch (a fetch cut at its byte limit) are left out, as Kafka trims them.
    """
    view = memoryview(records)
    end = len(view)
    headers: list[BatchHeader] = []
    position = 0
    next_offset = log_end_offset
    while end - position >= LOG_OVERHEAD:
        base_offset, batch_length = _BATCH_PREFIX.unpack_from(view, position)
        if batch_length < _MINIMUM_BATCH_LENGTH:
            raise CorruptRecord(f"batch at byte {position} has length {batch_length}")
        size = batch_length + LOG_OVERHEAD
        if size > end - position:
            break
        header = read_batch_header(view, position)
        if header.magic != MAGIC:
            raise CorruptRecord(f"batch at offset {base_offset} has magic {header.magic}")
        if header.last_offset_delta < 0:
            raise CorruptRecord(f"batch at offset {base_offset} has a negative offset delta")
        if crc32c.crc32c(view[position + ATTRIBUTES_POSITION : position + size]) != header.crc:
            raise CorruptRecord(f"CRC mismatch in the batch at offset {base_offset}")
        if base_offset < next_offset:
            if headers:
                message = (
                    f"out of order offsets: batch at {base_offset} follows one ending at "
                    f"{next_offset - 1}"
                )
            else:
                message = f"first offset {base_offset} is below the log end offset {log_end_offset}"
            raise OffsetsOutOfOrder(message, base_offset, log_end_offset)
        headers.append(header)
        next_offset = header.next_offset
        position += size
    return headers, position


def append_info(
    headers: Sequence[BatchHeader],
    first_offset: int,
    last_offset: int,
    log_append_time_ms: int | None,
    log_start_offset: int,
    base_offsets: Sequence[int] | None = None,
) -> AppendInfo:
    """The AppendInfo of batches written from `first_offset` (or at `base_offsets`, as a
    follower writes them): the largest timestamp and the base offset of its batch."""
    if log_append_time_ms is not None:
        max_timestamp, offset_of_max_timestamp = log_append_time_ms, first_offset
    else:
        max_timestamp, offset_of_max_timestamp = -1, -1
        base_offset = first_offset
        for number, header in enumerate(headers):
            if base_offsets is not None:
                base_offset = base_offsets[number]
            if header.max_timestamp > max_timestamp:
                max_timestamp, offset_of_max_timestamp = header.max_timestamp, base_offset
            base_offset += header.last_offset_delta + 1
    return AppendInfo(
        first_offset=first_offset,
        last_offset=last_offset,
        max_timestamp=max_timestamp,
        offset_of_max_timestamp=offset_of_max_timestamp,
        log_append_time_ms=-1 if log_append_time_ms is None else log_append_time_ms,
        log_start_offset=log_start_offset,
    )


def duplicate_info(
    batch: BatchMetadata, log_append_time: bool, log_start_offset: int
) -> AppendInfo:
    """The AppendInfo of a retried batch found in producer state: its original offsets."""
    return AppendInfo(
        first_offset=batch.first_offset,
        last_offset=batch.last_offset,
        max_timestamp=batch.max_timestamp,
        offset_of_max_timestamp=batch.first_offset,
        log_append_time_ms=batch.max_timestamp if log_append_time else -1,
        log_start_offset=log_start_offset,
        duplicate=True,
    )


def should_roll(
    segment: LogSegment, config: LogConfig, append_size: int, last_offset: int, now_ms: int
) -> bool:
    """Whether an append of `append_size` bytes ending at `last_offset` needs a new active
    segment (Kafka's LogSegment.shouldRoll): never for an empty one; when the segment would
    pass segment.bytes, is older than segment.ms (from its rolling base, ms), its offset
    index is full (segment.index.bytes) or `last_offset` does not fit its relative offsets.
    """
    if segment.size == 0:
        return False
    return (
        segment.size + append_size > config.segment_bytes
        or (
            segment.rolling_base_ms is not None
            and now_ms - segment.rolling_base_ms > config.segment_ms
        )
        or len(segment.offset_index) >= max(config.segment_index_bytes // 8, 1)
        or not segment.can_hold_offset(last_offset)
    )
