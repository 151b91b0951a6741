"""The lazy storage mode: unsynced log bytes live in memory only, so a crash loses exactly them."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from storage_helpers import append, idempotent_batch, keyed_batch, make_batch, read_everything

from odradek.protocol.record_batch import decode_batches
from odradek.storage import LogConfig, LogManager, PartitionLog
from odradek.storage.lazy_files import OS_FILES, LazyFiles, files_for_mode

CONFIG = LogConfig(segment_bytes=4096, index_interval_bytes=256)


def _lazy_manager(data_dir: Path, config: LogConfig = CONFIG) -> tuple[LogManager, LazyFiles]:
    files = LazyFiles()
    return LogManager.open(data_dir, config, now_ms=0, files=files), files


def _log(manager: LogManager, topic: str = "t") -> PartitionLog:
    log = manager.log(topic, 0)
    assert log is not None
    return log


def _values(log: PartitionLog) -> list[int]:
    """The tag of every batch (make_batch's values start with `<tag>:`), in log order."""
    tags = []
    offset = log.log_start_offset
    end = log.log_end_offset
    while offset < end:
        data = bytes(log.read(offset, 1 << 20, end, min_one_batch=True).records)
        assert data
        for header, records in decode_batches(data):
            if header.last_offset < offset:
                continue
            value = records[0].value
            assert value is not None
            tags.append(int(value.split(b":")[0]))
            offset = header.next_offset
    return tags


# -- the file layer on its own ---------------------------------------------------------------


def test_os_mode_is_the_os_functions_themselves() -> None:
    assert OS_FILES.mode == "os"
    assert OS_FILES.pread is os.pread
    assert OS_FILES.writev is os.writev
    assert OS_FILES.write is os.write
    assert OS_FILES.fdatasync is os.fdatasync
    assert files_for_mode("os") is OS_FILES
    assert isinstance(files_for_mode("lazy"), LazyFiles)
    with pytest.raises(ValueError, match="unknown storage mode 'fast'"):
        files_for_mode("fast")


def test_lazy_file_reads_pending_bytes_and_syncs_them(tmp_path: Path) -> None:
    path = tmp_path / "f.log"
    files = LazyFiles()
    fd = files.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    assert files.write(fd, b"hello ") == 6
    assert files.writev(fd, [b"wor", memoryview(b"ld")]) == 5
    assert path.stat().st_size == 0  # nothing reached the OS
    assert files.size(fd) == 11
    assert files.pread(fd, 100, 0) == b"hello world"
    files.fdatasync(fd)
    assert path.read_bytes() == b"hello world"
    files.write(fd, b"!!")
    # A read spanning the synced bytes and the pending tail, and one inside the tail.
    assert files.pread(fd, 5, 8) == b"rld!!"
    assert files.pread(fd, 1, 12) == b"!"
    assert files.pread(fd, 10, 13) == b""
    assert files.unsynced_bytes() == 2
    # ftruncate inside the pending tail drops only pending bytes ...
    files.ftruncate(fd, 12)
    assert files.pread(fd, 100, 0) == b"hello world!"
    # ... and below the synced size it truncates the file too.
    files.ftruncate(fd, 5)
    assert files.size(fd) == 5
    assert path.read_bytes() == b"hello"
    files.write(fd, b" there")
    files.power_cut()
    assert path.read_bytes() == b"hello"


def test_close_hands_the_pending_tail_to_the_os(tmp_path: Path) -> None:
    path = tmp_path / "f.log"
    files = LazyFiles()
    fd = files.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    files.write(fd, b"abc")
    files.close(fd)
    assert path.read_bytes() == b"abc"
    assert files.unsynced_bytes() == 0


# -- partition logs in lazy mode ---------------------------------------------------------------


def test_unsynced_appends_are_readable_then_lost_in_a_crash(tmp_path: Path) -> None:
    manager, files = _lazy_manager(tmp_path)
    manager.create_topic("t", 1, {"segment.bytes": str(1 << 20)})
    log = _log(manager)
    for tag in range(10):
        append(log, make_batch(2, value_size=60, tag=tag))
    assert log.flush() == 20
    for tag in range(10, 25):
        append(log, make_batch(2, value_size=60, tag=tag))
    # In-process, unsynced data is served as before (acks=1 data readable, like the page cache).
    assert log.log_end_offset == 50
    assert _values(log) == list(range(25))
    assert files.unsynced_bytes() > 0

    files.power_cut()  # a crash: no flush, no close, the unsynced tail is gone

    reopened, _ = _lazy_manager(tmp_path)
    log = _log(reopened)
    assert log.log_end_offset == 20
    assert _values(log) == list(range(10))
    assert [header.base_offset for header in read_everything(log)] == list(range(0, 20, 2))
    # The log goes on from where the synced data ends.
    assert append(log, make_batch(2, tag=99)).first_offset == 20
    reopened.close()


def test_fsynced_bytes_survive_across_rolled_segments(tmp_path: Path) -> None:
    manager, files = _lazy_manager(tmp_path)
    manager.create_topic("t", 1, {})
    log = _log(manager)
    for tag in range(60):  # ~11 KiB: three segments of 4 KiB
        append(log, make_batch(2, value_size=60, tag=tag))
    assert len(log.segment_base_offsets()) >= 3
    synced_end = log.flush()
    assert synced_end == 120
    for tag in range(60, 130):  # more rolls, none of them synced
        append(log, make_batch(2, value_size=60, tag=tag))
    assert len(log.segment_base_offsets()) >= 6
    assert _values(log) == list(range(130))

    files.power_cut()

    # Segment files created after the flush exist on disk (directory entries are not modelled)
    # but hold nothing: recovery cuts the log at the last synced byte and drops them.
    reopened, _ = _lazy_manager(tmp_path)
    log = _log(reopened)
    assert log.log_end_offset == 120
    assert _values(log) == list(range(60))
    assert append(log, make_batch(1, tag=7)).first_offset == 120
    reopened.close()

    # After a clean shutdown nothing is lost, in any mode.
    again, files = _lazy_manager(tmp_path)
    assert _log(again).log_end_offset == 121
    files.power_cut()


def test_clean_shutdown_in_lazy_mode_loses_nothing(tmp_path: Path) -> None:
    manager, _ = _lazy_manager(tmp_path)
    manager.create_topic("t", 1, {})
    log = _log(manager)
    for tag in range(40):
        append(log, make_batch(2, value_size=60, tag=tag))
    manager.close()
    reopened = LogManager.open(tmp_path, CONFIG, now_ms=0)  # and readable in os mode
    assert _values(_log(reopened)) == list(range(40))
    reopened.close()


def test_os_mode_keeps_unsynced_bytes_over_the_same_crash(tmp_path: Path) -> None:
    """The contrast: with the OS's page cache, a process crash loses nothing."""
    manager = LogManager.open(tmp_path, CONFIG, now_ms=0)
    manager.create_topic("t", 1, {})
    log = _log(manager)
    for tag in range(30):
        append(log, make_batch(2, value_size=60, tag=tag))
    log._close_segments()  # a process crash: no flush, no clean-shutdown marker
    reopened = LogManager.open(tmp_path, CONFIG, now_ms=0)
    assert _values(_log(reopened)) == list(range(30))
    reopened.close()


def test_flush_on_another_thread_while_appending(tmp_path: Path) -> None:
    """The broker's group commit: fdatasync on a worker thread while the loop appends."""
    manager, files = _lazy_manager(tmp_path)
    manager.create_topic("t", 1, {})
    log = _log(manager)
    stop = threading.Event()
    errors: list[BaseException] = []

    def flusher() -> None:
        try:
            while not stop.is_set():
                log.flush()
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    thread = threading.Thread(target=flusher)
    thread.start()
    try:
        for tag in range(400):
            append(log, make_batch(2, value_size=60, tag=tag))
            if tag % 50 == 0:
                assert _values(log)[-1] == tag
    finally:
        stop.set()
        thread.join()
    assert not errors
    assert log.flush() == 800
    files.power_cut()
    reopened, _ = _lazy_manager(tmp_path)
    assert _values(_log(reopened)) == list(range(400))
    reopened.close()


def test_compaction_reads_unsynced_segments(tmp_path: Path) -> None:
    config = LogConfig(segment_bytes=1024, index_interval_bytes=256, cleanup_policy="compact")
    manager, files = _lazy_manager(tmp_path, config)
    manager.create_topic("t", 1, {})
    log = _log(manager)
    for round_ in range(30):
        append(log, keyed_batch([(f"k{round_ % 3}".encode(), f"v{round_}".encode() * 20)]))
    assert files.unsynced_bytes() > 0
    log.high_watermark = log.log_end_offset
    result = log.clean(now_ms=10_000, force=True)
    assert result.cleaned
    assert result.records_removed > 0
    log.flush()
    end = log.log_end_offset
    files.power_cut()
    reopened, _ = _lazy_manager(tmp_path, config)
    log = _log(reopened)
    assert log.log_end_offset == end
    read_everything(log)
    reopened.close()


def test_producer_state_forgets_batches_lost_in_a_crash(tmp_path: Path) -> None:
    """A snapshot taken on roll must not make a retry of a lost batch look like a duplicate."""
    manager, files = _lazy_manager(tmp_path)
    manager.create_topic("t", 1, {})
    log = _log(manager)
    sequence = 0
    for _ in range(20):
        append(log, idempotent_batch(7, 0, sequence, count=5, tag=sequence))
        sequence += 5
    synced_end = log.flush()
    synced_sequence = sequence
    segments_before = len(log.segment_base_offsets())
    while len(log.segment_base_offsets()) < segments_before + 2:  # rolls: snapshots on disk
        append(log, idempotent_batch(7, 0, sequence, count=5, tag=sequence))
        sequence += 5
    files.power_cut()

    reopened, _ = _lazy_manager(tmp_path)
    log = _log(reopened)
    assert log.log_end_offset == synced_end
    # The producer retries its first unacknowledged batch: it is written, not a duplicate.
    info = append(log, idempotent_batch(7, 0, synced_sequence, count=5, tag=synced_sequence))
    assert not info.duplicate
    assert info.first_offset == synced_end
    reopened.close()
