"""LogLoader: reopening after clean and unclean shutdowns, torn tails, corrupt bytes."""

from __future__ import annotations

import os
from pathlib import Path

from storage_helpers import append, make_batch, read_everything, small_config

from odradek.storage import PartitionLog
from odradek.storage.log import CLEAN_SHUTDOWN_FILE_NAME


def _fill(log_dir: Path, batches: int, **config: int | str) -> list[int]:
    """Append `batches` two-record batches, drop the log without closing; return sizes."""
    log = PartitionLog.open(log_dir, small_config(**config), now_ms=0)
    sizes = []
    for i in range(batches):
        batch = make_batch(2, value_size=60, tag=i, timestamp=1_000 + i)
        sizes.append(len(batch))
        append(log, batch)
    log._close_segments()  # a crash: no flush, no index files, no clean-shutdown marker
    return sizes


def _active_log_file(log_dir: Path) -> Path:
    return sorted(log_dir.glob("*.log"))[-1]


def test_clean_reopen_keeps_everything(log_dir: Path) -> None:
    log = PartitionLog.open(log_dir, small_config(), now_ms=0)
    for i in range(40):
        append(log, make_batch(2, value_size=60, tag=i))
    log.close()
    assert (log_dir / CLEAN_SHUTDOWN_FILE_NAME).exists()
    reopened = PartitionLog.open(log_dir, small_config(), now_ms=0)
    assert not (log_dir / CLEAN_SHUTDOWN_FILE_NAME).exists()
    assert reopened.log_end_offset == 80
    assert reopened.recovery_point == 80
    assert len(read_everything(reopened)) == 40
    info = append(reopened, make_batch(1))
    assert info.first_offset == 80
    reopened.close()


def test_unclean_reopen_keeps_everything(log_dir: Path) -> None:
    _fill(log_dir, 40)
    log = PartitionLog.open(log_dir, small_config(), now_ms=0)
    assert log.log_end_offset == 80
    assert [h.base_offset for h in read_everything(log)] == list(range(0, 80, 2))
    log.close()


def test_truncated_mid_batch_tail_is_cut(log_dir: Path) -> None:
    sizes = _fill(log_dir, 10, segment_bytes=1 << 20)
    path = _active_log_file(log_dir)
    full = path.stat().st_size
    os.truncate(path, full - sizes[-1] // 2)
    log = PartitionLog.open(log_dir, small_config(segment_bytes=1 << 20), now_ms=0)
    assert log.log_end_offset == 18
    assert path.stat().st_size == full - sizes[-1]
    assert len(read_everything(log)) == 9
    info = append(log, make_batch(3))
    assert (info.first_offset, info.last_offset) == (18, 20)
    assert [h.base_offset for h in read_everything(log)][-2:] == [16, 18]
    log.close()


def test_corrupt_byte_cuts_from_that_batch(log_dir: Path) -> None:
    sizes = _fill(log_dir, 10, segment_bytes=1 << 20)
    path = _active_log_file(log_dir)
    corrupt_at = sum(sizes[:6]) + 70  # inside batch 6's records: only the CRC notices
    with open(path, "r+b") as file:
        file.seek(corrupt_at)
        byte = file.read(1)
        file.seek(corrupt_at)
        file.write(bytes([byte[0] ^ 0xFF]))
    log = PartitionLog.open(log_dir, small_config(segment_bytes=1 << 20), now_ms=0)
    assert log.log_end_offset == 12
    assert path.stat().st_size == sum(sizes[:6])
    assert [h.base_offset for h in read_everything(log)] == [0, 2, 4, 6, 8, 10]
    assert append(log, make_batch(1)).first_offset == 12
    log.close()


def test_torn_tail_in_an_earlier_segment_drops_later_segments(log_dir: Path) -> None:
    _fill(log_dir, 40, segment_bytes=1500)  # recovery point 0: every segment is rescanned
    segments = sorted(log_dir.glob("*.log"))
    assert len(segments) > 3
    second = segments[1]
    os.truncate(second, second.stat().st_size - 10)
    log = PartitionLog.open(log_dir, small_config(segment_bytes=1500), now_ms=0)
    assert len(log.segment_base_offsets()) == 2
    headers = read_everything(log)
    assert headers[-1].next_offset == log.log_end_offset
    assert log.log_end_offset < int(segments[2].stem)
    assert not segments[2].exists()
    log.close()


def test_index_files_are_rebuilt_when_deleted(log_dir: Path) -> None:
    log = PartitionLog.open(log_dir, small_config(index_interval_bytes=100), now_ms=0)
    for i in range(60):
        append(log, make_batch(2, value_size=60, tag=i, timestamp=10_000 + i))
    expected = [h.base_offset for h in read_everything(log)]
    log.close()
    for index in [*log_dir.glob("*.index"), *log_dir.glob("*.timeindex")]:
        index.unlink()
    reopened = PartitionLog.open(log_dir, small_config(index_interval_bytes=100), now_ms=0)
    assert reopened.log_end_offset == 120
    assert [h.base_offset for h in read_everything(reopened)] == expected
    assert reopened.offset_for_timestamp(10_030) == (59, 10_030)  # batch 29's second record
    assert (
        sorted(p.stem for p in log_dir.glob("*.index"))
        == sorted(p.stem for p in log_dir.glob("*.log"))[:-1]
    )  # inactive segments' rebuilt indexes are written back
    reopened.close()


def test_garbage_index_file_is_rebuilt(log_dir: Path) -> None:
    log = PartitionLog.open(log_dir, small_config(), now_ms=0)
    for i in range(60):
        append(log, make_batch(2, value_size=60, tag=i))
    log.close()
    for index in log_dir.glob("*.index"):
        index.write_bytes(b"\x7f" * 16)
    reopened = PartitionLog.open(log_dir, small_config(), now_ms=0)
    assert len(read_everything(reopened)) == 60
    reopened.close()


def test_clean_marker_with_corrupt_tail_still_recovers(log_dir: Path) -> None:
    sizes = _fill(log_dir, 10, segment_bytes=1 << 20)
    (log_dir / CLEAN_SHUTDOWN_FILE_NAME).touch()
    path = _active_log_file(log_dir)
    with open(path, "r+b") as file:
        file.seek(sum(sizes) - 5)
        file.write(b"\x00\x01\x02")
    log = PartitionLog.open(log_dir, small_config(segment_bytes=1 << 20), now_ms=0)
    assert log.log_end_offset == 18
    assert len(read_everything(log)) == 9
    log.close()


def test_garbage_after_the_last_batch_is_cut(log_dir: Path) -> None:
    _fill(log_dir, 5, segment_bytes=1 << 20)
    path = _active_log_file(log_dir)
    size = path.stat().st_size
    with open(path, "ab") as file:
        file.write(os.urandom(100))
    log = PartitionLog.open(log_dir, small_config(segment_bytes=1 << 20), now_ms=0)
    assert log.log_end_offset == 10
    assert path.stat().st_size == size
    log.close()


def test_flushed_prefix_is_not_rescanned_but_tail_is(log_dir: Path) -> None:
    log = PartitionLog.open(log_dir, small_config(), now_ms=0)
    for i in range(30):
        append(log, make_batch(2, value_size=60, tag=i))
    assert log.flush() == 60
    for i in range(30, 40):
        append(log, make_batch(2, value_size=60, tag=i))
    log._close_segments()
    reopened = PartitionLog.open(log_dir, small_config(), now_ms=0)
    assert reopened.recovery_point == 60
    assert reopened.log_end_offset == 80
    assert len(read_everything(reopened)) == 40
    reopened.close()


def test_log_start_offset_survives_reopen(log_dir: Path) -> None:
    log = PartitionLog.open(log_dir, small_config(), now_ms=0)
    for i in range(40):
        append(log, make_batch(2, value_size=60, tag=i))
    log.high_watermark = log.log_end_offset
    assert log.delete_records_before(33) == 33
    log._close_segments()
    reopened = PartitionLog.open(log_dir, small_config(), now_ms=0)
    assert reopened.log_start_offset == 33
    assert read_everything(reopened)[0].base_offset == 32
    reopened.close()
