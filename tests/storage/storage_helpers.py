"""Helpers for storage tests: build batches with the protocol layer's encoder."""

from __future__ import annotations

from odradek.protocol.record_batch import (
    BatchHeader,
    Record,
    crc_is_valid,
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
