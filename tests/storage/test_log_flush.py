"""Flushing: flush.messages, and group-commit flushes on a thread racing appends."""

from __future__ import annotations

import threading
from pathlib import Path

from storage_helpers import append, make_batch, read_everything, small_config

from odradek.storage import PartitionLog


def test_flush_advances_the_recovery_point(log_dir: Path) -> None:
    log = PartitionLog.open(log_dir, small_config(), now_ms=0)
    append(log, make_batch(4))
    assert log.recovery_point == 0
    assert log.flush() == 4
    assert log.recovery_point == 4
    assert log.flush() == 4
    log.close()


def test_flush_messages_flushes_inside_append(log_dir: Path) -> None:
    log = PartitionLog.open(log_dir, small_config(flush_messages=5), now_ms=0)
    append(log, make_batch(3))
    assert log.recovery_point == 0
    append(log, make_batch(3))
    assert log.recovery_point == 6
    log.close()


def test_flush_due_after_flush_ms(log_dir: Path) -> None:
    log = PartitionLog.open(log_dir, small_config(flush_ms=1_000), now_ms=0)
    assert not log.flush_due(10_000)
    append(log, make_batch(1), now_ms=10_000)
    assert not log.flush_due(10_500)
    assert log.flush_due(11_000)
    log.flush()
    assert not log.flush_due(20_000)
    append(log, make_batch(1), now_ms=20_000)
    append(log, make_batch(1), now_ms=21_001)  # the oldest unflushed append is now due
    assert log.recovery_point == 3
    log.close()


def test_flush_on_a_thread_while_appending(log_dir: Path) -> None:
    log = PartitionLog.open(log_dir, small_config(segment_bytes=8192), now_ms=0)
    done = threading.Event()
    recovery_points: list[int] = []
    errors: list[BaseException] = []

    def flusher() -> None:
        try:
            while not done.is_set():
                recovery_points.append(log.flush())
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    thread = threading.Thread(target=flusher)
    thread.start()
    try:
        for i in range(1_500):
            append(log, make_batch(2, value_size=50, tag=i))
            if i % 300 == 299:
                log.high_watermark = log.log_end_offset
                log.delete_records_before(log.log_end_offset - 200)
    finally:
        done.set()
        thread.join()
    assert not errors
    assert len(log.segment_base_offsets()) > 1
    assert recovery_points == sorted(recovery_points)
    assert all(point <= 3_000 for point in recovery_points)
    assert log.flush() == 3_000
    headers = read_everything(log)
    assert headers[-1].next_offset == 3_000
    log.close()
    reopened = PartitionLog.open(log_dir, small_config(segment_bytes=8192), now_ms=0)
    assert reopened.log_end_offset == 3_000
    assert [h.base_offset for h in read_everything(reopened)] == [h.base_offset for h in headers]
    reopened.close()


def test_flush_after_close_is_harmless(log_dir: Path) -> None:
    log = PartitionLog.open(log_dir, small_config(), now_ms=0)
    append(log, make_batch(1))
    log.close()
    assert log.flush() == 1
