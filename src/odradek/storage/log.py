"""PartitionLog: one partition's ordered segments, its offsets, flushing, retention and recovery.

Threading: `append`, `read`, retention, `delete_records_before`, `update_config` and `close`
run on one thread (the broker's event loop). `flush` may run on any other thread at the same
time -- the broker's group commit -- so the state a flush reads (log end offset, segment sizes,
the segment list) changes only under `_lock`, the lock is never held across an fdatasync, and
a segment a flush is syncing is pinned so deleting or closing it cannot close its descriptor.

Recovery is Kafka's LogLoader: segments past the recovery-point checkpoint are scanned batch by
batch (length, magic, CRC, growing offsets) and cut at the first bad batch; after a clean
shutdown only the tail after the last index entry is checked.
"""

from __future__ import annotations

import os
import shutil
import threading
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path

from odradek.protocol.record_batch import (
    LOG_OVERHEAD,
    BatchHeader,
    assign_offsets,
    offset_patched_parts,
)
from odradek.storage._batch import set_log_append_time
from odradek.storage._files import fsync_directory, write_file_atomically
from odradek.storage.errors import OffsetOutOfRange, RecordBatchTooLarge, StorageError
from odradek.storage.segment import (
    INDEX_FILE_SUFFIX,
    LOG_FILE_SUFFIX,
    TIME_INDEX_FILE_SUFFIX,
    LogSegment,
)

CHECKPOINT_FILE_NAME = "log-state.checkpoint"
CLEAN_SHUTDOWN_FILE_NAME = ".kafka_cleanshutdown"
_CHECKPOINT_VERSION = 0
_NEVER = 2**63 - 1

__all__ = [
    "AppendInfo",
    "LogConfig",
    "OffsetOutOfRange",
    "PartitionLog",
    "ReadResult",
    "RecordBatchTooLarge",
    "StorageError",
]


@dataclass(frozen=True, slots=True)
class LogConfig:
    """The topic-level settings a partition log obeys (Kafka's names, in snake_case)."""

    segment_bytes: int = 1024**3
    segment_ms: int = 7 * 24 * 60 * 60 * 1000
    segment_index_bytes: int = 10 * 1024 * 1024
    retention_ms: int = 7 * 24 * 60 * 60 * 1000  # -1 keeps everything
    retention_bytes: int = -1  # -1 keeps everything
    index_interval_bytes: int = 4096
    flush_messages: int = _NEVER
    flush_ms: int = _NEVER
    max_message_bytes: int = 1048588
    message_timestamp_type: str = "CreateTime"  # or "LogAppendTime"
    cleanup_policy: str = "delete"
    min_insync_replicas: int = 1

    @property
    def deletes(self) -> bool:
        """Whether retention deletes old segments (cleanup.policy contains delete)."""
        return "delete" in self.cleanup_policy.split(",")


@dataclass(frozen=True, slots=True)
class AppendInfo:
    """What an append did, as the Produce response and the broker need it."""

    first_offset: int
    last_offset: int
    max_timestamp: int
    offset_of_max_timestamp: int  # base offset of the batch holding it
    log_append_time_ms: int  # -1 with CreateTime
    log_start_offset: int


@dataclass(frozen=True, slots=True)
class ReadResult:
    """Whole batches ready for a Fetch response, and the base offset of the first one."""

    records: bytes | memoryview
    first_offset: int | None


@dataclass(frozen=True, slots=True)
class _Checkpoint:
    log_start_offset: int = 0
    recovery_point: int = 0
    high_watermark: int = 0


def _read_checkpoint(path: Path) -> _Checkpoint | None:
    try:
        text = path.read_text()
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, separator, value = line.partition(":")
        if not separator:
            return None
        try:
            values[key.strip()] = int(value)
        except ValueError:
            return None
    if values.get("version") != _CHECKPOINT_VERSION:
        return None
    try:
        return _Checkpoint(
            log_start_offset=values["log_start_offset"],
            recovery_point=values["recovery_point"],
            high_watermark=values["high_watermark"],
        )
    except KeyError:
        return None


def _segment_base_offsets(directory: Path) -> list[int]:
    """Base offsets of the segments in `directory`; leftover temporary files are removed."""
    base_offsets = []
    for path in directory.iterdir():
        if path.name.endswith(".tmp"):
            path.unlink()
        elif path.suffix == LOG_FILE_SUFFIX and path.stem.isdigit():
            base_offsets.append(int(path.stem))
    return sorted(base_offsets)


class PartitionLog:
    """A partition's log: segments plus log start offset, log end offset, high watermark."""

    def __init__(self, directory: Path, config: LogConfig, segments: list[LogSegment]) -> None:
        self.directory = directory
        self._config = config
        self._segments = segments
        self._segment_base_offsets = [segment.base_offset for segment in segments]
        self._lock = threading.Lock()
        self._checkpoint_lock = threading.Lock()
        self._log_start_offset = segments[0].base_offset
        self._log_end_offset = segments[-1].next_offset
        self._high_watermark = self._log_start_offset
        self._recovery_point = self._log_start_offset
        self._appended_messages = 0
        self._flushed_messages = 0
        # When the oldest append not yet covered by a flush happened (flush.ms counts from it).
        self._oldest_unflushed_append_ms: int | None = None
        self._directory_dirty = False
        self._closed = False
        self._deleted = False

    # -- opening: LogLoader ------------------------------------------------------------------

    @classmethod
    def open(cls, directory: Path, config: LogConfig, now_ms: int) -> PartitionLog:
        """Create an empty log in `directory` or recover the one there."""
        directory.mkdir(parents=True, exist_ok=True)
        checkpoint = _read_checkpoint(directory / CHECKPOINT_FILE_NAME) or _Checkpoint()
        clean_shutdown_path = directory / CLEAN_SHUTDOWN_FILE_NAME
        clean_shutdown = clean_shutdown_path.exists()
        segments = _load_segments(directory, config, checkpoint, clean_shutdown)
        if not segments:
            segments = [LogSegment.create(directory, checkpoint.log_start_offset)]
        for segment in segments:
            if segment.size > 0:
                segment.rolling_base_ms = now_ms
        log = cls(directory, config, segments)
        log_end_offset = log._log_end_offset
        log._log_start_offset = min(
            max(checkpoint.log_start_offset, segments[0].base_offset), log_end_offset
        )
        log._recovery_point = (
            log_end_offset
            if clean_shutdown
            else max(min(checkpoint.recovery_point, log_end_offset), log._log_start_offset)
        )
        for segment in segments:
            if segment.next_offset <= log._recovery_point:
                segment.synced_size = segment.size
        log._high_watermark = max(
            min(checkpoint.high_watermark, log_end_offset), log._log_start_offset
        )
        # A crash between writing the log start checkpoint and deleting segments leaves some.
        log._delete_segments(log._count_segments_below(log._log_start_offset))
        if clean_shutdown:
            # From here on a crash is an unclean shutdown; make the removal durable.
            clean_shutdown_path.unlink()
        fsync_directory(directory)
        return log

    # -- offsets -----------------------------------------------------------------------------

    @property
    def config(self) -> LogConfig:
        return self._config

    @property
    def log_start_offset(self) -> int:
        return self._log_start_offset

    @property
    def log_end_offset(self) -> int:
        return self._log_end_offset

    @property
    def high_watermark(self) -> int:
        return self._high_watermark

    @high_watermark.setter
    def high_watermark(self, offset: int) -> None:
        """Set by the broker; kept within [log start offset, log end offset]."""
        self._high_watermark = max(min(offset, self._log_end_offset), self._log_start_offset)

    @property
    def recovery_point(self) -> int:
        """Every offset below this one is on disk (fdatasync'd)."""
        return self._recovery_point

    @property
    def size_in_bytes(self) -> int:
        return sum(segment.size for segment in self._segments)

    def segment_base_offsets(self) -> list[int]:
        return list(self._segment_base_offsets)

    def update_config(self, config: LogConfig) -> None:
        self._config = config

    # -- append ------------------------------------------------------------------------------

    def append(
        self,
        records: bytes | memoryview,
        headers: list[BatchHeader],
        now_ms: int,
        partition_leader_epoch: int | None = None,
    ) -> AppendInfo:
        """Append validated batches, assigning offsets from the log end offset.

        `headers` are the batches' parsed headers in order (the protocol layer's
        `BatchHeader`); the records themselves are never decoded.
        """
        self._check_open()
        if not headers:
            raise ValueError("append needs at least one batch")
        config = self._config
        total_size = 0
        offset_count = 0
        message_count = 0
        for header in headers:
            size = header.batch_length + LOG_OVERHEAD
            if size > config.max_message_bytes:
                raise RecordBatchTooLarge(
                    f"batch of {size} bytes exceeds max.message.bytes {config.max_message_bytes}"
                )
            total_size += size
            offset_count += header.last_offset_delta + 1
            message_count += header.records_count
        if total_size != len(records):
            raise ValueError(f"headers describe {total_size} bytes, records hold {len(records)}")

        first_offset = self._log_end_offset
        last_offset = first_offset + offset_count - 1
        log_append_time_ms = now_ms if config.message_timestamp_type == "LogAppendTime" else None
        segment = self._segments[-1]
        if self._should_roll(segment, total_size, last_offset, now_ms):
            segment = self._roll(first_offset)
        if segment.rolling_base_ms is None:
            segment.rolling_base_ms = now_ms
        position = segment.size
        if log_append_time_ms is not None:
            # LogAppendTime rewrites CRC-covered fields: patch a copy.
            buffer = assign_offsets(records, headers, first_offset, partition_leader_epoch)
            set_log_append_time(buffer, headers, log_append_time_ms)
            segment.write(buffer)
        else:
            segment.write_parts(
                offset_patched_parts(records, headers, first_offset, partition_leader_epoch)
            )
        segment.account_batches(
            headers, first_offset, position, config.index_interval_bytes, log_append_time_ms
        )
        with self._lock:
            segment.size = position + total_size
            self._log_end_offset = last_offset + 1
        self._appended_messages += message_count
        if self._oldest_unflushed_append_ms is None:
            self._oldest_unflushed_append_ms = now_ms

        if log_append_time_ms is not None:
            max_timestamp, offset_of_max_timestamp = log_append_time_ms, first_offset
        else:
            max_timestamp, offset_of_max_timestamp = -1, -1
            base_offset = first_offset
            for header in headers:
                if header.max_timestamp > max_timestamp:
                    max_timestamp, offset_of_max_timestamp = header.max_timestamp, base_offset
                base_offset += header.last_offset_delta + 1
        if (
            self._appended_messages - self._flushed_messages >= config.flush_messages
            or self.flush_due(now_ms)
        ):
            self.flush()
        return AppendInfo(
            first_offset=first_offset,
            last_offset=last_offset,
            max_timestamp=max_timestamp,
            offset_of_max_timestamp=offset_of_max_timestamp,
            log_append_time_ms=-1 if log_append_time_ms is None else log_append_time_ms,
            log_start_offset=self._log_start_offset,
        )

    def _should_roll(
        self, segment: LogSegment, append_size: int, last_offset: int, now_ms: int
    ) -> bool:
        if segment.size == 0:
            return False
        config = self._config
        return (
            segment.size + append_size > config.segment_bytes
            or (
                segment.rolling_base_ms is not None
                and now_ms - segment.rolling_base_ms > config.segment_ms
            )
            or len(segment.offset_index) >= max(config.segment_index_bytes // 8, 1)
            or not segment.can_hold_offset(last_offset)
        )

    def _roll(self, base_offset: int) -> LogSegment:
        """Start a new active segment at `base_offset`; the old one stays open for reads."""
        self._segments[-1].write_index_files()
        segment = LogSegment.create(self.directory, base_offset)
        with self._lock:
            self._segments.append(segment)
            self._segment_base_offsets.append(base_offset)
            self._directory_dirty = True
        return segment

    # -- read --------------------------------------------------------------------------------

    def read(
        self, fetch_offset: int, max_bytes: int, max_offset: int, min_one_batch: bool
    ) -> ReadResult:
        """Whole batches holding offsets from `fetch_offset`, below `max_offset`.

        The first batch may start before `fetch_offset` (clients skip the records before it).
        Batches come from one segment; the next segment is used when the one holding
        `fetch_offset` has nothing at or after it.
        """
        self._check_open()
        log_end_offset = self._log_end_offset
        if fetch_offset < self._log_start_offset or fetch_offset > log_end_offset:
            raise OffsetOutOfRange(fetch_offset, self._log_start_offset, log_end_offset)
        max_offset = min(max_offset, log_end_offset)
        if fetch_offset >= max_offset:
            return ReadResult(b"", None)
        segments = self._segments
        index = max(bisect_right(self._segment_base_offsets, fetch_offset) - 1, 0)
        for segment in segments[index:]:
            if segment.base_offset >= max_offset:
                break
            end_position = segment.size
            start = segment.find_batch(fetch_offset, end_position)
            if start is None:
                continue
            if start.base_offset >= max_offset:
                break
            records = segment.read_batches(
                start, max_bytes, max_offset, min_one_batch, end_position
            )
            return ReadResult(records, start.base_offset if records else None)
        return ReadResult(b"", None)

    # -- timestamps --------------------------------------------------------------------------

    def offset_for_timestamp(self, timestamp_ms: int) -> tuple[int, int] | None:
        """ListOffsets by timestamp, at batch granularity: (offset, timestamp) or None.

        The answer is the first batch whose max timestamp is >= `timestamp_ms`: its base
        offset (raised to the log start offset) and that max timestamp. Kafka decodes the
        batch to return the first record at or after the target; a consumer seeking to the
        batch's base offset sees the same records plus a few earlier ones from that batch.
        Not bounded by the high watermark: the caller filters.
        """
        log_start_offset = self._log_start_offset
        for segment in self._segments:
            if segment.max_timestamp < timestamp_ms or segment.next_offset <= log_start_offset:
                continue
            found = segment.find_offset_by_timestamp(timestamp_ms, log_start_offset, segment.size)
            if found is not None:
                return max(found[0], log_start_offset), found[1]
        return None

    def max_timestamp_offset(self) -> tuple[int, int] | None:
        """(offset, timestamp) of the largest timestamp in the log (ListOffsets -3).

        The offset is the base offset of the batch holding that timestamp, so fetching from
        it returns the record; None when no batch has a timestamp.
        """
        best: tuple[int, int] | None = None
        for segment in self._segments:
            if segment.max_timestamp >= 0 and (best is None or segment.max_timestamp > best[1]):
                best = (
                    max(segment.offset_of_max_timestamp, self._log_start_offset),
                    segment.max_timestamp,
                )
        return best

    # -- durability --------------------------------------------------------------------------

    def flush_due(self, now_ms: int) -> bool:
        """Whether the oldest unflushed append is flush.ms old (for a flush scheduler)."""
        oldest = self._oldest_unflushed_append_ms
        return oldest is not None and now_ms - oldest >= self._config.flush_ms

    def flush(self) -> int:
        """fdatasync everything appended so far and advance the recovery point; thread-safe.

        Returns the new recovery point.
        """
        with self._lock:
            if self._closed:
                return self._recovery_point
            target_offset = self._log_end_offset
            target_messages = self._appended_messages
            pending = [
                (segment, segment.size)
                for segment in self._segments
                if segment.synced_size < segment.size
            ]
            for segment, _ in pending:
                segment.pins += 1
            sync_directory = self._directory_dirty
            self._directory_dirty = False
        try:
            for segment, _ in pending:
                os.fdatasync(segment.fd)
            if sync_directory:
                fsync_directory(self.directory)
        finally:
            with self._lock:
                for segment, size in pending:
                    segment.synced_size = max(segment.synced_size, size)
                    segment.pins -= 1
                    if segment.close_requested and segment.pins == 0:
                        segment.close_fd()
        with self._lock:
            advanced = target_offset > self._recovery_point
            if advanced:
                self._recovery_point = target_offset
            self._flushed_messages = max(self._flushed_messages, target_messages)
            if self._flushed_messages == self._appended_messages:
                self._oldest_unflushed_append_ms = None
            recovery_point = self._recovery_point
        if advanced:
            # Written after the data is on disk, so the file never claims more than is there;
            # not fsynced: a stale recovery point only means a longer scan on recovery.
            self._write_checkpoint(sync=False)
        return recovery_point

    def _write_checkpoint(self, sync: bool) -> None:
        with self._checkpoint_lock:
            if self._deleted:
                return
            text = (
                f"version: {_CHECKPOINT_VERSION}\n"
                f"log_start_offset: {self._log_start_offset}\n"
                f"recovery_point: {self._recovery_point}\n"
                f"high_watermark: {self._high_watermark}\n"
            )
            write_file_atomically(
                self.directory / CHECKPOINT_FILE_NAME, text.encode(), durable=sync
            )

    # -- deletion ----------------------------------------------------------------------------

    def delete_records_before(self, offset: int) -> int:
        """DeleteRecords: raise the log start offset to `offset`; returns the low watermark.

        The caller bounds `offset` by the high watermark. Segments wholly below the new log
        start offset are deleted.
        """
        self._check_open()
        offset = min(offset, self._log_end_offset)
        if offset <= self._log_start_offset:
            return self._log_start_offset
        active = self._segments[-1]
        if offset >= active.next_offset and active.size > 0:
            self._roll(self._log_end_offset)
        self._log_start_offset = offset
        self._high_watermark = max(self._high_watermark, offset)
        self._write_checkpoint(sync=True)
        self._delete_segments(self._count_segments_below(offset))
        return self._log_start_offset

    def enforce_retention(self, now_ms: int) -> int:
        """Delete old segments by retention.ms and retention.bytes; returns bytes deleted.

        Never deletes the active segment, nor a segment holding offsets at or above the high
        watermark. A segment's age is its largest batch timestamp.
        """
        self._check_open()
        config = self._config
        deleted_bytes = 0
        deletable = len(self._segments) - 1
        high_watermark = self._high_watermark
        while deletable > 0 and self._segments[deletable].base_offset > high_watermark:
            deletable -= 1
        count = self._count_segments_below(self._log_start_offset)
        if config.deletes and config.retention_ms >= 0:
            while (
                count < deletable
                and now_ms - self._segments[count].largest_timestamp > config.retention_ms
            ):
                count += 1
        if config.deletes and config.retention_bytes >= 0:
            excess = self.size_in_bytes - config.retention_bytes
            for segment in self._segments[:count]:
                excess -= segment.size
            while count < deletable and excess - self._segments[count].size >= 0:
                excess -= self._segments[count].size
                count += 1
        if count:
            deleted_bytes = self._delete_segments(count)
            new_start = self._segments[0].base_offset
            if new_start > self._log_start_offset:
                self._log_start_offset = new_start
                self._high_watermark = max(self._high_watermark, new_start)
                self._write_checkpoint(sync=False)
        return deleted_bytes

    def _count_segments_below(self, offset: int) -> int:
        """How many leading segments hold only offsets below `offset` (never all of them)."""
        count = 0
        for segment in self._segments[:-1]:
            if segment.next_offset > offset:
                break
            count += 1
        return count

    def _delete_segments(self, count: int) -> int:
        with self._lock:
            doomed = self._segments[:count]
            del self._segments[:count]
            del self._segment_base_offsets[:count]
            self._directory_dirty = True
            for segment in doomed:
                segment.close_requested = True
                if segment.pins == 0:
                    segment.close_fd()
        for segment in doomed:
            segment.delete_files()
        return sum(segment.size for segment in doomed)

    # -- shutdown ----------------------------------------------------------------------------

    def close(self) -> None:
        """Flush, persist indexes and checkpoints, and leave the clean-shutdown marker."""
        if self._closed:
            return
        self.flush()
        for segment in self._segments:
            if segment is self._segments[-1]:
                segment.write_index_files()
            segment.sync_index_files()
        self._write_checkpoint(sync=True)
        self._close_segments()
        (self.directory / CLEAN_SHUTDOWN_FILE_NAME).touch()
        fsync_directory(self.directory)

    def delete(self) -> None:
        """Close without ceremony and remove the partition directory."""
        if not self._closed:
            self._close_segments()
        with self._checkpoint_lock:
            self._deleted = True
        shutil.rmtree(self.directory, ignore_errors=True)

    def _close_segments(self) -> None:
        with self._lock:
            self._closed = True
            for segment in self._segments:
                segment.close_requested = True
                if segment.pins == 0:
                    segment.close_fd()

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"log {self.directory} is closed")


def _load_segments(
    directory: Path, config: LogConfig, checkpoint: _Checkpoint, clean_shutdown: bool
) -> list[LogSegment]:
    base_offsets = _segment_base_offsets(directory)
    segments = [LogSegment.open_existing(directory, base) for base in base_offsets]
    # Segments from the one holding the recovery point on may hold unflushed (torn) bytes.
    first_unflushed = len(segments) - 1
    if not clean_shutdown:
        first_unflushed = max(bisect_right(base_offsets, checkpoint.recovery_point) - 1, 0)
    for number, segment in enumerate(segments):
        if number < first_unflushed:
            if not segment.load(config.index_interval_bytes, verify_tail_crc=False):
                segment.recover(config.index_interval_bytes)
            continue
        last = number == len(segments) - 1
        if (
            clean_shutdown
            and segment.load(config.index_interval_bytes, verify_tail_crc=True)
            and last
        ):
            continue
        truncated = segment.recover(config.index_interval_bytes)
        if truncated and not last:
            # Everything after a torn or corrupt batch is unreachable: drop later segments.
            for later in segments[number + 1 :]:
                later.close_fd()
                later.delete_files()
            del segments[number + 1 :]
            break
    # Index files of every segment but the active one are written once, on roll; a rebuilt
    # index must be written again or the next load would rebuild it once more.
    for segment in segments[:-1]:
        if segment.index_files_stale:
            segment.write_index_files()
    _remove_orphan_index_files(directory, {segment.base_offset for segment in segments})
    return segments


def _remove_orphan_index_files(directory: Path, base_offsets: set[int]) -> None:
    for path in directory.iterdir():
        if (
            path.suffix in (INDEX_FILE_SUFFIX, TIME_INDEX_FILE_SUFFIX)
            and path.stem.isdigit()
            and int(path.stem) not in base_offsets
        ):
            path.unlink()
