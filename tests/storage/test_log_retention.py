"""Retention by time and size, DeleteRecords, and ListOffsets lookups by timestamp."""

from __future__ import annotations

from pathlib import Path

import pytest
from storage_helpers import append, make_batch, read_everything, small_config

from odradek.protocol.record_batch import (
    COMPRESSION_GZIP,
    COMPRESSION_LZ4,
    COMPRESSION_NONE,
    COMPRESSION_SNAPPY,
    COMPRESSION_ZSTD,
    Record,
    encode_batch,
)
from odradek.storage import LogConfig, PartitionLog, log_config_from_overrides

ALL_CODECS = [
    COMPRESSION_NONE,
    COMPRESSION_GZIP,
    COMPRESSION_SNAPPY,
    COMPRESSION_LZ4,
    COMPRESSION_ZSTD,
]


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
    # Far in the future, everything goes, the active segment too: an empty one is rolled.
    log.enforce_retention(now_ms=10**9)
    assert log.segment_base_offsets() == [80]
    assert (log.log_start_offset, log.log_end_offset, log.size_in_bytes) == (80, 80, 0)
    assert append(log, make_batch(1)).first_offset == 80
    log.close()


def _one_segment_log(log_dir: Path, **config: int | str) -> PartitionLog:
    """Ten records stamped 1_000 in the active (only) segment, all below the high watermark."""
    log = PartitionLog.open(log_dir, small_config(**config), now_ms=0)
    for i in range(10):
        append(log, make_batch(1, tag=i, timestamp=1_000))
    log.high_watermark = log.log_end_offset
    return log


def test_time_retention_deletes_an_expired_active_segment(log_dir: Path) -> None:
    # retention.ms=1500, ten records, then wait (issue 9, item 3): earliest = latest = 10.
    log = _one_segment_log(log_dir, retention_ms=1_500)
    assert log.enforce_retention(now_ms=2_500) == 0  # not expired yet
    assert log.enforce_retention(now_ms=2_501) > 0
    assert (log.log_start_offset, log.log_end_offset) == (10, 10)
    assert log.segment_base_offsets() == [10]
    assert log.read(10, 1 << 20, 10, min_one_batch=True).records == b""
    # The rolled segment is empty: nothing more to delete, no roll after roll.
    assert log.enforce_retention(now_ms=10**9) == 0
    assert log.segment_base_offsets() == [10]
    assert append(log, make_batch(1, timestamp=10**9)).first_offset == 10
    log.close()
    reopened = PartitionLog.open(log_dir, small_config(retention_ms=1_500), now_ms=0)
    assert (reopened.log_start_offset, reopened.log_end_offset) == (10, 11)
    reopened.close()


def test_active_segment_is_kept_above_the_high_watermark(log_dir: Path) -> None:
    log = _one_segment_log(log_dir, retention_ms=1_500, retention_bytes=0)
    log.high_watermark = 9  # the last record is not replicated yet
    assert log.enforce_retention(now_ms=10**9) == 0
    assert log.log_start_offset == 0
    log.high_watermark = 10
    assert log.enforce_retention(now_ms=10**9) > 0
    assert log.log_start_offset == 10
    log.close()


def test_size_retention_deletes_the_active_segment_only_when_it_fits_the_excess(
    log_dir: Path,
) -> None:
    log = _one_segment_log(log_dir, retention_ms=-1, retention_bytes=1)
    size = log.size_in_bytes
    assert log.enforce_retention(now_ms=0) == 0  # without it the log would be under 1 byte
    log.update_config(small_config(retention_ms=-1, retention_bytes=0))
    assert log.enforce_retention(now_ms=0) == size
    assert (log.log_start_offset, log.log_end_offset, log.size_in_bytes) == (10, 10, 0)
    log.close()


def test_a_never_expiring_record_keeps_its_segment_and_those_after_it(log_dir: Path) -> None:
    future = 10**12
    log = PartitionLog.open(log_dir, small_config(segment_bytes=200, retention_ms=1_500), now_ms=0)
    for timestamp in (1_000, 1_000, future, 1_000, 1_000):
        append(log, make_batch(1, value_size=100, timestamp=timestamp))
    log.high_watermark = log.log_end_offset
    segments = log.segment_base_offsets()
    assert segments == [0, 1, 2, 3, 4]
    log.enforce_retention(now_ms=10**9)
    # Oldest first, stopping at the segment whose record is stamped in the future.
    assert log.segment_base_offsets() == [2, 3, 4]
    assert log.log_start_offset == 2
    log.close()
    # The same when that record sits in the active segment among expired ones.
    other = PartitionLog.open(log_dir.parent / "other-0", small_config(retention_ms=0), now_ms=0)
    append(other, make_batch(1, timestamp=1_000), make_batch(1, timestamp=future))
    other.high_watermark = other.log_end_offset
    assert other.enforce_retention(now_ms=10**9) == 0
    assert other.log_start_offset == 0
    other.close()


def test_empty_cleanup_policy_keeps_everything_but_delete_records(log_dir: Path) -> None:
    # cleanup.policy="" (Kafka: delete with infinite retention): no time or size
    # retention and no compaction; DeleteRecords still moves the log start offset.
    for value in ("", " , "):
        parsed = log_config_from_overrides(LogConfig(), {"cleanup.policy": value})
        assert parsed.cleanup_policy == ""
        assert not parsed.deletes
        assert not parsed.compacts
    log = _log_with_segments(log_dir, retention_ms=0, retention_bytes=0, cleanup_policy="")
    segments = log.segment_base_offsets()
    size = log.size_in_bytes
    assert log.enforce_retention(now_ms=10**12) == 0
    assert not log.clean(now_ms=10**12, force=True).cleaned
    assert log.size_in_bytes == size
    assert log.delete_records_before(segments[2] + 1) == segments[2] + 1
    assert log.segment_base_offsets() == segments[2:]
    assert log.enforce_retention(now_ms=10**12) == 0
    assert log.log_start_offset == segments[2] + 1
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
    # Batch i holds offsets 2i, 2i+1 with timestamps 1000i, 1000i + 1: the answer is the
    # record, not the batch.
    assert log.offset_for_timestamp(0) == (0, 0)
    assert log.offset_for_timestamp(5_001) == (11, 5_001)
    assert log.offset_for_timestamp(5_002) == (12, 6_000)
    assert log.offset_for_timestamp(39_001) == (79, 39_001)
    assert log.offset_for_timestamp(39_002) is None
    for i in range(40):
        assert log.offset_for_timestamp(1_000 * i) == (2 * i, 1_000 * i)
        assert log.offset_for_timestamp(1_000 * i + 1) == (2 * i + 1, 1_000 * i + 1)
    log.delete_records_before(11)
    assert log.offset_for_timestamp(0) == (11, 5_001)
    log.delete_records_before(12)
    assert log.offset_for_timestamp(5_001) == (12, 6_000)
    log.close()


def test_offset_for_timestamp_with_out_of_order_timestamps(log_dir: Path) -> None:
    log = PartitionLog.open(log_dir, small_config(), now_ms=0)
    for timestamp in (100, 300, 200, 400):
        append(log, make_batch(1, timestamp=timestamp))
    assert log.offset_for_timestamp(150) == (1, 300)
    assert log.offset_for_timestamp(250) == (1, 300)
    assert log.offset_for_timestamp(350) == (3, 400)
    log.close()


def _timed_batch(timestamps: list[int], compression: int = COMPRESSION_NONE) -> bytes:
    return encode_batch(
        [Record(key=None, value=b"v%d" % i, timestamp=t) for i, t in enumerate(timestamps)],
        compression=compression,
    )


@pytest.mark.parametrize("compression", ALL_CODECS)
def test_offset_for_timestamp_finds_the_record_inside_a_batch(
    log_dir: Path, compression: int
) -> None:
    # One batch of four records stamped T+2, T+4, T+6, T+8 (issue 9, item 2).
    t = 1_700_000_000_000
    log = PartitionLog.open(log_dir, small_config(), now_ms=0)
    append(log, _timed_batch([t + 2, t + 4, t + 6, t + 8], compression))
    expected = {1: 0, 2: 0, 3: 1, 4: 1, 5: 2, 6: 2, 7: 3, 8: 3}
    for delta, offset in expected.items():
        assert log.offset_for_timestamp(t + delta) == (offset, t + 2 * (offset + 1)), delta
    assert log.offset_for_timestamp(t + 9) is None  # beyond every record
    # Records inside a later batch, after out-of-order ones: the first at or after the target.
    append(log, _timed_batch([t + 20, t + 5, t + 30], compression))
    assert log.offset_for_timestamp(t + 9) == (4, t + 20)
    assert log.offset_for_timestamp(t + 21) == (6, t + 30)
    assert log.offset_for_timestamp(t + 31) is None
    log.close()


def test_offset_for_timestamp_with_log_append_time(log_dir: Path) -> None:
    config = small_config(message_timestamp_type="LogAppendTime")
    log = PartitionLog.open(log_dir, config, now_ms=0)
    append(log, _timed_batch([1, 2, 3]), now_ms=10_000)
    append(log, _timed_batch([1, 2, 3], COMPRESSION_ZSTD), now_ms=20_000)
    # Every record of a batch carries the broker's time: the batch's first record answers.
    assert log.offset_for_timestamp(5_000) == (0, 10_000)
    assert log.offset_for_timestamp(10_001) == (3, 20_000)
    assert log.offset_for_timestamp(20_001) is None
    assert log.max_timestamp_offset() == (3, 20_000)
    log.delete_records_before(4)
    assert log.offset_for_timestamp(10_001) == (4, 20_000)
    log.close()


def test_max_timestamp_offset(log_dir: Path) -> None:
    log = PartitionLog.open(log_dir, small_config(), now_ms=0)
    assert log.max_timestamp_offset() is None
    for timestamp in (100, 900, 200):
        append(log, make_batch(3, timestamp=timestamp))
    # Batch 1 holds 900, 901, 902 at offsets 3, 4, 5: the record with 902 answers.
    assert log.max_timestamp_offset() == (5, 902)
    log.close()
    reopened = PartitionLog.open(log_dir, small_config(), now_ms=0)
    assert reopened.max_timestamp_offset() == (5, 902)
    reopened.close()


@pytest.mark.parametrize("compression", ALL_CODECS)
def test_max_timestamp_offset_inside_a_batch(log_dir: Path, compression: int) -> None:
    # One batch stamped T+10, T+30, T+20 (issue 9, item 2): the record at offset 1.
    t = 1_700_000_000_000
    log = PartitionLog.open(log_dir, small_config(segment_bytes=200), now_ms=0)
    append(log, _timed_batch([t + 10, t + 30, t + 20], compression))
    assert log.max_timestamp_offset() == (1, t + 30)
    # A tie in a later batch (and segment) does not move it: the first record carrying it.
    append(log, _timed_batch([t + 30, t + 1], compression))
    append(log, _timed_batch([t + 5, t + 6], compression))
    assert len(log.segment_base_offsets()) > 1
    assert log.max_timestamp_offset() == (1, t + 30)
    append(log, _timed_batch([t + 1, t + 2, t + 40, t + 40], compression))
    assert log.max_timestamp_offset() == (9, t + 40)
    log.close()
