"""Helpers for storage tests: build batches with the protocol layer's encoder."""

from __future__ import annotations

from odradek.protocol.record_batch import (
    BatchHeader,
    Record,
    crc_is_valid,
    decode_batches,
    encode_batch,
    iter_batch_headers,
)
from odradek.storage.log import AppendInfo, LogConfig, PartitionLog


def make_batch(count: int = 1, value_size: int = 10, timestamp: int = 1_000, tag: int = 0) -> bytes:
    """One uncompressed batch of `count` records; values carry `tag` so batches differ."""
    value = (f"{tag}:".encode() + b"x" * value_size)[:value_size]
    return encode_batch(
        [Record(key=None, value=value, timestamp=timestamp + i) for i in range(count)]
    )


def headers_of(records: bytes) -> list[BatchHeader]:
    return [header for _, header in iter_batch_headers(records)]


def append(log: PartitionLog, *batches: bytes, now_ms: int = 1_000) -> AppendInfo:
    records = b"".join(batches)
    return log.append(records, headers_of(records), now_ms)


def read_everything(log: PartitionLog) -> list[BatchHeader]:
    """Every batch from the log start offset to the log end offset, in order, CRC-checked."""
    headers: list[BatchHeader] = []
    offset = log.log_start_offset
    while offset < log.log_end_offset:
        result = log.read(offset, 1 << 20, log.log_end_offset, min_one_batch=True)
        data = bytes(result.records)
        assert data, f"nothing read at {offset}"
        for position, header in iter_batch_headers(data):
            assert crc_is_valid(data, position, header)
            if header.last_offset >= offset:
                headers.append(header)
        offset = headers[-1].next_offset
    return headers


def small_config(**changes: int | str) -> LogConfig:
    defaults: dict[str, int | str] = {"segment_bytes": 4096, "index_interval_bytes": 256}
    defaults.update(changes)
    return LogConfig(**defaults)  # type: ignore[arg-type]


def idempotent_batch(
    producer_id: int,
    producer_epoch: int,
    base_sequence: int,
    count: int = 1,
    transactional: bool = False,
    timestamp: int = 1_000,
    tag: int = 0,
) -> bytes:
    """A batch from an idempotent (or transactional) producer."""
    return encode_batch(
        [
            Record(key=None, value=f"{tag}:{i}".encode(), timestamp=timestamp + i)
            for i in range(count)
        ],
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
        is_transactional=transactional,
    )


def keyed_batch(
    items: list[tuple[bytes | None, bytes | None]],
    timestamp: int = 1_000,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    transactional: bool = False,
    compression: int = 0,
) -> bytes:
    """One batch of (key, value) records; a None value is a tombstone."""
    return encode_batch(
        [Record(key=key, value=value, timestamp=timestamp) for key, value in items],
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
        is_transactional=transactional,
        compression=compression,
    )


def read_records(
    log: PartitionLog, max_offset: int | None = None
) -> list[tuple[BatchHeader, Record]]:
    """Every record from the log start offset, with its batch header (control batches too)."""
    end = log.log_end_offset if max_offset is None else max_offset
    out: list[tuple[BatchHeader, Record]] = []
    offset = log.log_start_offset
    while offset < end:
        result = log.read(offset, 1 << 20, end, min_one_batch=True)
        data = bytes(result.records)
        if not data:
            break
        next_offset = offset
        for header, records in decode_batches(data):
            for record in records:
                if record.offset >= offset:
                    out.append((header, record))
            next_offset = max(next_offset, header.next_offset)
        offset = next_offset
    return out
