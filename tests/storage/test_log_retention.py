"""Retention by time and size, DeleteRecords, and ListOffsets lookups by timestamp."""

from __future__ import annotations

from pathlib import Path

from storage_helpers import append, make_batch, read_everything, small_config

from odradek.storage import PartitionLog


def _log_with_segments(log_dir: Path, **config: int | str) -> PartitionLog:
    """40 two-record batches, batch i stamped 1_000 * i, in several small segments."""
    log = PartitionLog.open(log_dir, small_config(segment_bytes=1500, **config), now_ms=0)
    for i in range(40):
        append(log, make_batch(2, value_size=60, tag=i, timestamp=1_000 * i))
    log.high_watermark = log.log_end_offset
    return log


def test_retention_by_time_deletes_expired_segments_only(log_dir: Path) -> None:
    log = _log_with_segments(log_dir, retention_ms=10_000)
    segments_before = log.segment_base_offsets()
    assert len(segments_before) > 4
    size_before = log.size_in_bytes
    deleted = log.enforce_retention(now_ms=30_000)
    assert deleted > 0
    assert log.size_in_bytes == size_before - deleted
    # Every remaining segment but the first holds a batch newer than 20_000.
    assert log.log_start_offset == log.segment_base_offsets()[0]
    assert read_everything(log)[-1].next_offset == 80
    first_kept = read_everything(log)[0]
    assert first_kept.base_offset > 0
    for base in log.segment_base_offsets()[:1]:
        assert base == log.log_start_offset
    assert len(list(log_dir.glob("*.log"))) == len(log.segment_base_offsets())
    # Far in the future, everything but the active segment goes.
    log.enforce_retention(now_ms=10**9)
    assert len(log.segment_base_offsets()) == 1
    assert log.log_end_offset == 80
    assert append(log, make_batch(1)).first_offset == 80
    log.close()


def test_retention_unlimited_keeps_everything(log_dir: Path) -> None:
    log = _log_with_segments(log_dir, retention_ms=-1)
    assert log.enforce_retention(now_ms=10**12) == 0
    assert log.log_start_offset == 0
    log.close()


def test_retention_by_size(log_dir: Path) -> None:
    log = _log_with_segments(log_dir, retention_ms=-1, retention_bytes=3000)
    log.enforce_retention(now_ms=0)
    assert log.size_in_bytes <= 3000 + 1500
    assert log.log_start_offset > 0
    assert log.log_start_offset == log.segment_base_offsets()[0]
    assert read_everything(log)[-1].next_offset == 80
    log.close()


def test_retention_does_not_pass_the_high_watermark(log_dir: Path) -> None:
    log = _log_with_segments(log_dir, retention_ms=0)
    log.high_watermark = 4
    log.enforce_retention(now_ms=10**9)
    assert log.log_start_offset <= 4
    log.close()


def test_compact_only_topics_are_not_deleted_by_retention(log_dir: Path) -> None:
    log = _log_with_segments(log_dir, retention_ms=0, cleanup_policy="compact")
    assert log.enforce_retention(now_ms=10**9) == 0
    log.close()


def test_delete_records_before(log_dir: Path) -> None:
    log = _log_with_segments(log_dir)
    segments = log.segment_base_offsets()
    assert log.delete_records_before(segments[2] + 1) == segments[2] + 1
    assert log.log_start_offset == segments[2] + 1
    assert log.segment_base_offsets() == segments[2:]
    assert read_everything(log)[0].base_offset <= segments[2] + 1
    assert log.delete_records_before(3) == segments[2] + 1  # never moves backwards
    log.close()


def test_delete_records_up_to_the_log_end_rolls_and_empties(log_dir: Path) -> None:
    log = _log_with_segments(log_dir)
    assert log.delete_records_before(80) == 80
    assert log.segment_base_offsets() == [80]
    assert log.size_in_bytes == 0
    assert log.read(80, 1000, 80, min_one_batch=True).records == b""
    assert append(log, make_batch(1)).first_offset == 80
    log.close()
    reopened = PartitionLog.open(log_dir, small_config(segment_bytes=1500), now_ms=0)
    assert (reopened.log_start_offset, reopened.log_end_offset) == (80, 81)
    reopened.close()


def test_offset_for_timestamp(log_dir: Path) -> None:
    log = _log_with_segments(log_dir)
    # Batch i holds offsets 2i, 2i+1 with timestamps 1000i, 1000i + 1.
    assert log.offset_for_timestamp(0) == (0, 1)
    assert log.offset_for_timestamp(5_001) == (10, 5_001)
    assert log.offset_for_timestamp(5_002) == (12, 6_001)
    assert log.offset_for_timestamp(39_001) == (78, 39_001)
    assert log.offset_for_timestamp(39_002) is None
    for i in range(40):
        assert log.offset_for_timestamp(1_000 * i) == (2 * i, 1_000 * i + 1)
    log.delete_records_before(11)
    assert log.offset_for_timestamp(0) == (11, 5_001)
    log.close()


def test_offset_for_timestamp_with_out_of_order_timestamps(log_dir: Path) -> None:
    log = PartitionLog.open(log_dir, small_config(), now_ms=0)
    for timestamp in (100, 300, 200, 400):
        append(log, make_batch(1, timestamp=timestamp))
    assert log.offset_for_timestamp(150) == (1, 300)
    assert log.offset_for_timestamp(250) == (1, 300)
    assert log.offset_for_timestamp(350) == (3, 400)
    log.close()


def test_max_timestamp_offset(log_dir: Path) -> None:
    log = PartitionLog.open(log_dir, small_config(), now_ms=0)
    assert log.max_timestamp_offset() is None
    for timestamp in (100, 900, 200):
        append(log, make_batch(3, timestamp=timestamp))
    assert log.max_timestamp_offset() == (3, 902)
    log.close()
    reopened = PartitionLog.open(log_dir, small_config(), now_ms=0)
    assert reopened.max_timestamp_offset() == (3, 902)
    reopened.close()
