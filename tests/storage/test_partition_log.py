"""PartitionLog append and read: offsets, segment rolls, fetch limits, timestamps."""

from __future__ import annotations

from pathlib import Path

import pytest
from storage_helpers import append, make_batch, read_everything, small_config

from odradek.protocol.record_batch import (
    TIMESTAMP_LOG_APPEND_TIME,
    crc_is_valid,
    decode_records,
    iter_batch_headers,
    read_batch_header,
)
from odradek.storage import OffsetOutOfRange, PartitionLog, RecordBatchTooLarge


def test_empty_log_offsets(log_dir: Path) -> None:
    log = PartitionLog.open(log_dir, small_config(), now_ms=0)
    assert (log.log_start_offset, log.log_end_offset, log.high_watermark) == (0, 0, 0)
    assert log.read(0, 1000, 0, min_one_batch=True).records == b""
    assert (log_dir / "00000000000000000000.log").exists()
    log.close()


def test_offsets_are_assigned_from_the_log_end_offset(log_dir: Path) -> None:
    log = PartitionLog.open(log_dir, small_config(), now_ms=0)
    first = append(log, make_batch(3), make_batch(2))
    second = append(log, make_batch(1))
    assert (first.first_offset, first.last_offset) == (0, 4)
    assert (second.first_offset, second.last_offset) == (5, 5)
    assert log.log_end_offset == 6
    assert first.log_append_time_ms == -1
    assert [h.base_offset for h in read_everything(log)] == [0, 3, 5]
    log.close()


def test_round_trip_across_segment_rolls(log_dir: Path) -> None:
    log = PartitionLog.open(log_dir, small_config(segment_bytes=2000), now_ms=0)
    batches = [make_batch(2, value_size=100, tag=i) for i in range(60)]
    for batch in batches:
        append(log, batch)
    assert len(log.segment_base_offsets()) > 5
    assert len(list(log_dir.glob("*.log"))) == len(log.segment_base_offsets())
    headers = read_everything(log)
    assert [h.base_offset for h in headers] == list(range(0, 120, 2))
    # Every fetch offset, including ones inside a batch, finds the batch holding it.
    for offset in range(120):
        result = log.read(offset, 1, 120, min_one_batch=True)
        header = read_batch_header(bytes(result.records))
        assert header.base_offset <= offset <= header.last_offset
        assert result.first_offset == header.base_offset
        records = decode_records(bytes(result.records))
        assert records[0].value is not None
        assert records[0].value.startswith(f"{offset // 2}:".encode())
    log.close()


def test_read_respects_max_bytes_and_returns_whole_batches(log_dir: Path) -> None:
    log = PartitionLog.open(log_dir, small_config(segment_bytes=1 << 20), now_ms=0)
    batch_size = len(make_batch(1, value_size=50))
    for i in range(20):
        append(log, make_batch(1, value_size=50, tag=i))
    result = log.read(0, batch_size * 3 + batch_size // 2, 20, min_one_batch=False)
    assert len(result.records) == batch_size * 3
    result = log.read(5, batch_size * 100, 20, min_one_batch=False)
    assert len(result.records) == batch_size * 15
    assert result.first_offset == 5
    log.close()


def test_read_stops_at_max_offset(log_dir: Path) -> None:
    log = PartitionLog.open(log_dir, small_config(segment_bytes=1 << 20), now_ms=0)
    for i in range(10):
        append(log, make_batch(2, tag=i))
    result = log.read(0, 1 << 20, 7, min_one_batch=True)
    bases = [h.base_offset for _, h in iter_batch_headers(bytes(result.records))]
    assert bases == [0, 2, 4, 6]  # the batch holding 6 starts below 7 and comes whole
    assert log.read(8, 1 << 20, 8, min_one_batch=True).records == b""
    log.close()


def test_min_one_batch_returns_a_batch_larger_than_max_bytes(log_dir: Path) -> None:
    log = PartitionLog.open(log_dir, small_config(segment_bytes=1 << 20), now_ms=0)
    big = make_batch(1, value_size=5000)
    append(log, big)
    append(log, make_batch(1))
    assert log.read(0, 100, 2, min_one_batch=False).records == b""
    result = log.read(0, 100, 2, min_one_batch=True)
    assert len(result.records) == len(big)
    assert result.first_offset == 0
    log.close()


def test_read_crosses_into_the_next_segment(log_dir: Path) -> None:
    log = PartitionLog.open(log_dir, small_config(segment_bytes=600), now_ms=0)
    for i in range(6):
        append(log, make_batch(1, value_size=200, tag=i))
    bases = log.segment_base_offsets()
    assert len(bases) >= 3
    result = log.read(bases[1], 1 << 20, 6, min_one_batch=False)
    assert result.first_offset == bases[1]
    log.close()


def test_offset_out_of_range(log_dir: Path) -> None:
    log = PartitionLog.open(log_dir, small_config(), now_ms=0)
    append(log, make_batch(3))
    with pytest.raises(OffsetOutOfRange) as raised:
        log.read(4, 100, 3, min_one_batch=True)
    assert (raised.value.log_start_offset, raised.value.log_end_offset) == (0, 3)
    assert log.read(3, 100, 3, min_one_batch=True).records == b""  # the LEO itself is fine
    log.delete_records_before(2)
    with pytest.raises(OffsetOutOfRange):
        log.read(1, 100, 3, min_one_batch=True)
    log.close()


def test_batch_larger_than_max_message_bytes_is_refused(log_dir: Path) -> None:
    log = PartitionLog.open(log_dir, small_config(max_message_bytes=500), now_ms=0)
    with pytest.raises(RecordBatchTooLarge):
        append(log, make_batch(1, value_size=1000))
    assert log.log_end_offset == 0
    log.close()


def test_partition_leader_epoch_is_written(log_dir: Path) -> None:
    log = PartitionLog.open(log_dir, small_config(), now_ms=0)
    batch = make_batch(1)
    log.append(batch, [read_batch_header(batch)], now_ms=0, partition_leader_epoch=7)
    data = bytes(log.read(0, 1000, 1, min_one_batch=True).records)
    header = read_batch_header(data)
    assert header.partition_leader_epoch == 7
    assert crc_is_valid(data, 0, header)
    log.close()


def test_log_append_time_rewrites_max_timestamp_and_crc(log_dir: Path) -> None:
    config = small_config(message_timestamp_type="LogAppendTime")
    log = PartitionLog.open(log_dir, config, now_ms=0)
    info = append(log, make_batch(2, timestamp=5), make_batch(1, timestamp=6), now_ms=99_000)
    assert info.log_append_time_ms == 99_000
    assert (info.max_timestamp, info.offset_of_max_timestamp) == (99_000, 0)
    data = bytes(log.read(0, 10_000, 3, min_one_batch=True).records)
    for position, header in iter_batch_headers(data):
        assert header.timestamp_type == TIMESTAMP_LOG_APPEND_TIME
        assert header.max_timestamp == 99_000
        assert crc_is_valid(data, position, header)
    log.close()


def test_segment_ms_rolls_by_time(log_dir: Path) -> None:
    log = PartitionLog.open(log_dir, small_config(segment_ms=1000), now_ms=0)
    append(log, make_batch(1), now_ms=10_000)
    append(log, make_batch(1), now_ms=10_500)
    assert log.segment_base_offsets() == [0]
    append(log, make_batch(1), now_ms=11_001)
    assert log.segment_base_offsets() == [0, 2]
    log.close()


def test_append_info_reports_max_timestamp(log_dir: Path) -> None:
    log = PartitionLog.open(log_dir, small_config(), now_ms=0)
    info = append(log, make_batch(2, timestamp=500), make_batch(3, timestamp=400))
    assert (info.max_timestamp, info.offset_of_max_timestamp) == (501, 0)
    log.close()


def test_high_watermark_is_clamped_and_persisted(log_dir: Path) -> None:
    log = PartitionLog.open(log_dir, small_config(), now_ms=0)
    append(log, make_batch(5))
    log.high_watermark = 100
    assert log.high_watermark == 5
    log.high_watermark = 3
    log.close()
    reopened = PartitionLog.open(log_dir, small_config(), now_ms=0)
    assert reopened.high_watermark == 3
    reopened.close()


def test_large_catch_up_read_returns_one_buffer(log_dir: Path) -> None:
    log = PartitionLog.open(log_dir, small_config(segment_bytes=64 << 20), now_ms=0)
    batch = make_batch(10, value_size=100_000)
    for _ in range(20):
        append(log, batch)
    result = log.read(0, 1 << 30, log.log_end_offset, min_one_batch=True)
    assert len(result.records) == 20 * len(batch)
    result = log.read(95, 5 * len(batch) + 10, log.log_end_offset, min_one_batch=True)
    assert len(result.records) == 5 * len(batch)
    assert result.first_offset == 90
    log.close()
