"""LogSegment: one `.log` file of raw batches with its offset and time indexes.

The segment knows byte positions and batch headers, nothing about log start offsets, high
watermarks or configuration: `PartitionLog` decides, the segment does the file work. Writes go
through `os.write` on an O_APPEND descriptor, reads through `os.pread`, both reached through the
segment's `files` (lazy_files.py: the OS itself, or the lazy power-loss model); batches are walked
with `struct.unpack_from` over one buffer and never decoded record by record, except by the
ListOffsets timestamp lookups, which must find the record inside a batch.
"""

from __future__ import annotations

import os
import struct
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import crc32c

from odradek.protocol.record_batch import record_summaries
from odradek.storage._batch import (
    ATTRIBUTES_POSITION,
    BASE_OFFSET_AND_LENGTH,
    BATCH_HEADER_SIZE,
    BATCH_PREFIX,
    BATCH_PREFIX_SIZE,
    LOG_OVERHEAD,
    MAGIC,
    BatchHeader,
)
from odradek.storage.errors import StorageError
from odradek.storage.index import OffsetIndex, TimeIndex, TransactionIndex, fsync_file
from odradek.storage.lazy_files import OS_FILES, SegmentFiles

LOG_FILE_SUFFIX = ".log"
INDEX_FILE_SUFFIX = ".index"
TIME_INDEX_FILE_SUFFIX = ".timeindex"
TXN_INDEX_FILE_SUFFIX = ".txnindex"

# The header fields recovery and timestamp lookups need: the prefix plus the timestamps.
_HEADER = struct.Struct(">qiibIhiqqqhii")
_MINIMUM_BATCH_LENGTH = BATCH_HEADER_SIZE - LOG_OVERHEAD
_MAX_RELATIVE_OFFSET = 2**31 - 1
_SEEK_CHUNK_BYTES = 16 * 1024
_RECOVERY_CHUNK_BYTES = 8 * 1024 * 1024
# One write() of many megabytes makes the kernel fill large page-cache folios; on a VM whose
# freed memory goes back to the host that cost ~10x per byte in system time (8 MiB writes:
# 3.2 s/GB, 1 MiB writes: 0.3 s/GB on the dev VM), so `write` hands the kernel at most this.
_WRITE_CHUNK_BYTES = 1024 * 1024


def segment_file_stem(base_offset: int) -> str:
    """Kafka's file name for a segment: the base offset in 20 zero-padded digits."""
    return f"{base_offset:020d}"


@dataclass(frozen=True, slots=True)
class BatchPosition:
    """Where the batch a read should start with sits, and the bytes already read around it."""

    position: int
    base_offset: int
    chunk: bytes
    chunk_position: int


class LogSegment:
    """One segment: `<base offset>.log`, `.index`, `.timeindex`, `.txnindex` in the directory.

    `size`, `synced_size` and the pin count are shared with a flushing thread and only changed
    under the owning log's lock; everything else belongs to the thread that appends.
    """

    def __init__(
        self,
        directory: Path,
        base_offset: int,
        fd: int,
        size: int,
        files: SegmentFiles = OS_FILES,
    ) -> None:
        stem = segment_file_stem(base_offset)
        self.directory = directory
        self.base_offset = base_offset
        self.log_path = directory / (stem + LOG_FILE_SUFFIX)
        self.files = files  # every call on `fd` goes through it
        self.fd = fd
        self.size = size
        self.next_offset = base_offset
        self.max_timestamp = -1
        self.offset_of_max_timestamp = -1
        self.offset_index = OffsetIndex(directory / (stem + INDEX_FILE_SUFFIX), base_offset)
        self.time_index = TimeIndex(directory / (stem + TIME_INDEX_FILE_SUFFIX), base_offset)
        self.txn_index = TransactionIndex(directory / (stem + TXN_INDEX_FILE_SUFFIX))
        self.bytes_since_last_index_entry = 0
        # The segment.ms clock: when the first batch arrived (or when the log was opened).
        self.rolling_base_ms: int | None = None
        self.synced_size = 0
        self.index_files_synced = True
        self.index_files_stale = False  # rebuilt in memory, files not rewritten yet
        self.pins = 0
        self.close_requested = False
        self.closed = False

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    def create(
        cls, directory: Path, base_offset: int, files: SegmentFiles = OS_FILES
    ) -> LogSegment:
        path = directory / (segment_file_stem(base_offset) + LOG_FILE_SUFFIX)
        fd = files.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        files.ftruncate(fd, 0)
        segment = cls(directory, base_offset, fd, 0, files)
        segment.txn_index.path.unlink(missing_ok=True)
        return segment

    @classmethod
    def open_existing(
        cls, directory: Path, base_offset: int, files: SegmentFiles = OS_FILES
    ) -> LogSegment:
        path = directory / (segment_file_stem(base_offset) + LOG_FILE_SUFFIX)
        fd = files.open(path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
        return cls(directory, base_offset, fd, files.size(fd), files)

    def write_index_files(self) -> None:
        """Persist both indexes, adding the final time index entry as Kafka does on roll."""
        self.time_index.maybe_append(self.max_timestamp, self.offset_of_max_timestamp)
        self.offset_index.write()
        self.time_index.write()
        self.index_files_synced = False
        self.index_files_stale = False

    def sync_index_files(self) -> None:
        if not self.index_files_synced:
            fsync_file(self.offset_index.path)
            fsync_file(self.time_index.path)
            self.index_files_synced = True

    def close_fd(self) -> None:
        if not self.closed:
            self.closed = True
            self.files.close(self.fd)

    def delete_files(self) -> None:
        for path in (
            self.log_path,
            self.offset_index.path,
            self.time_index.path,
            self.txn_index.path,
        ):
            path.unlink(missing_ok=True)

    @property
    def largest_timestamp(self) -> int:
        """The time retention.ms counts from: the max batch timestamp, else the roll clock."""
        if self.max_timestamp >= 0:
            return self.max_timestamp
        return self.rolling_base_ms if self.rolling_base_ms is not None else -1

    # -- append ------------------------------------------------------------------------------

    def can_hold_offset(self, offset: int) -> bool:
        """Whether `offset` fits an index entry's 32-bit relative offset."""
        return offset - self.base_offset <= _MAX_RELATIVE_OFFSET

    def write(self, buffer: bytes | bytearray | memoryview) -> None:
        """Append raw bytes to the log file; the caller then calls `account_batches`."""
        with memoryview(buffer) as view:
            written = 0
            try:
                while written < len(view):
                    written += self.files.write(
                        self.fd, view[written : written + _WRITE_CHUNK_BYTES]
                    )
            except OSError as error:
                # Leave no torn batch behind for a reader or the next append.
                self.files.ftruncate(self.fd, self.size)
                raise StorageError(f"write to {self.log_path} failed: {error}") from error

    def write_parts(self, parts: list[bytes | memoryview]) -> None:
        """Append buffers with one writev (no joined copy); same contract as `write`."""
        total = sum(len(part) for part in parts)
        try:
            written = self.files.writev(self.fd, parts)
        except OSError as error:
            self.files.ftruncate(self.fd, self.size)
            raise StorageError(f"write to {self.log_path} failed: {error}") from error
        if written < total:
            # A short writev (rare: signals, full disk): finish with plain writes.
            self.write(b"".join(bytes(part) for part in parts)[written:])

    def account_batches(
        self,
        headers: list[BatchHeader],
        first_offset: int,
        position: int,
        index_interval_bytes: int,
        log_append_time_ms: int | None,
    ) -> None:
        """Update the indexes and timestamps for batches just written at `position`."""
        base_offset = first_offset
        for header in headers:
            size = header.batch_length + LOG_OVERHEAD
            max_timestamp = (
                header.max_timestamp if log_append_time_ms is None else log_append_time_ms
            )
            self._account_batch(base_offset, position, size, max_timestamp, index_interval_bytes)
            base_offset += header.last_offset_delta + 1
            position += size
        self.next_offset = base_offset

    def account_replicated_batches(
        self, headers: list[BatchHeader], position: int, index_interval_bytes: int
    ) -> None:
        """`account_batches` for batches written with the offsets they carry (a follower's
        append: the leader assigned them, and a compacted leader log may leave gaps)."""
        for header in headers:
            size = header.batch_length + LOG_OVERHEAD
            self._account_batch(
                header.base_offset, position, size, header.max_timestamp, index_interval_bytes
            )
            position += size
        self.next_offset = headers[-1].base_offset + headers[-1].last_offset_delta + 1

    def _account_batch(
        self,
        base_offset: int,
        position: int,
        size: int,
        max_timestamp: int,
        index_interval_bytes: int,
    ) -> None:
        if max_timestamp > self.max_timestamp:
            self.max_timestamp = max_timestamp
            self.offset_of_max_timestamp = base_offset
        if self.bytes_since_last_index_entry > index_interval_bytes:
            self.offset_index.append(base_offset, position)
            self.time_index.maybe_append(self.max_timestamp, self.offset_of_max_timestamp)
            self.bytes_since_last_index_entry = 0
        self.bytes_since_last_index_entry += size

    # -- read --------------------------------------------------------------------------------

    def find_batch(self, target_offset: int, end_position: int) -> BatchPosition | None:
        """The first batch whose last offset is >= `target_offset`, before `end_position`."""
        _, position = self.offset_index.lookup(target_offset)
        while position + BATCH_PREFIX_SIZE <= end_position:
            chunk = self.files.pread(
                self.fd, min(_SEEK_CHUNK_BYTES, end_position - position), position
            )
            offset_in_chunk = 0
            chunk_length = len(chunk)
            while offset_in_chunk + BATCH_PREFIX_SIZE <= chunk_length:
                base_offset, batch_length, _, _, _, _, last_offset_delta = BATCH_PREFIX.unpack_from(
                    chunk, offset_in_chunk
                )
                if batch_length < _MINIMUM_BATCH_LENGTH:
                    raise StorageError(f"corrupt batch length at {position} in {self.log_path}")
                if base_offset + last_offset_delta >= target_offset:
                    return BatchPosition(position + offset_in_chunk, base_offset, chunk, position)
                offset_in_chunk += batch_length + LOG_OVERHEAD
            if chunk_length == 0:
                break
            position += offset_in_chunk
        return None

    def read_batches(
        self,
        start: BatchPosition,
        max_bytes: int,
        max_offset: int,
        min_one_batch: bool,
        end_position: int,
    ) -> bytes | memoryview:
        """Whole batches from `start`: base offset < `max_offset`, at most `max_bytes` in all.

        With `min_one_batch`, the first batch comes back whole even when larger (KIP-74).
        One `pread`, one slice: the batches are never copied one by one.
        """
        position = start.position
        limit = min(end_position, position + max(max_bytes, 0))
        chunk_end = start.chunk_position + len(start.chunk)
        buffer: bytes | memoryview
        if limit <= chunk_end:
            begin = position - start.chunk_position
            buffer = memoryview(start.chunk)[begin : begin + limit - position]
        else:
            buffer = self.files.pread(self.fd, limit - position, position)
        walk_from = 0
        skip = self.offset_index.last_entry_before(limit, max_offset)
        if skip is not None and skip[1] > position:
            walk_from = skip[1] - position
        length = len(buffer)
        while walk_from + LOG_OVERHEAD <= length:
            base_offset, batch_length = BASE_OFFSET_AND_LENGTH.unpack_from(buffer, walk_from)
            batch_end = walk_from + batch_length + LOG_OVERHEAD
            if base_offset >= max_offset or batch_end > length:
                break
            walk_from = batch_end
        if walk_from > 0:
            return buffer if walk_from == length else memoryview(buffer)[:walk_from]
        if min_one_batch and start.base_offset < max_offset:
            first_size = self._batch_size_at(start)
            return self.files.pread(self.fd, min(first_size, end_position - position), position)
        return b""

    def _batch_size_at(self, start: BatchPosition) -> int:
        begin = start.position - start.chunk_position
        (_, batch_length) = BASE_OFFSET_AND_LENGTH.unpack_from(start.chunk, begin)
        return int(batch_length) + LOG_OVERHEAD

    def iter_headers(
        self, position: int, end_position: int
    ) -> Iterator[tuple[int, tuple[int, ...]]]:
        """(position, unpacked 61-byte header) for each batch from `position`; no CRC check."""
        while position + BATCH_HEADER_SIZE <= end_position:
            chunk = self.files.pread(
                self.fd, min(_SEEK_CHUNK_BYTES, end_position - position), position
            )
            offset_in_chunk = 0
            while offset_in_chunk + BATCH_HEADER_SIZE <= len(chunk):
                header = _HEADER.unpack_from(chunk, offset_in_chunk)
                if header[1] < _MINIMUM_BATCH_LENGTH:
                    raise StorageError(f"corrupt batch length at {position} in {self.log_path}")
                yield position + offset_in_chunk, header
                offset_in_chunk += header[1] + LOG_OVERHEAD
            if not chunk:
                return
            position += offset_in_chunk

    def find_offset_by_timestamp(
        self, target_timestamp: int, start_offset: int, end_position: int
    ) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record at or after `start_offset` whose timestamp
        is >= the target, or None (Kafka's FileRecords.searchForTimestamp).

        Batches whose max timestamp reaches the target are decompressed and their records'
        timestamps read: a batch holds records older than its max timestamp. Not a hot path
        (ListOffsets by time).
        """
        from_offset = max(self.time_index.lookup(target_timestamp), start_offset)
        _, position = self.offset_index.lookup(from_offset)
        for batch_position, header in self.iter_headers(position, end_position):
            base_offset, batch_length, last_offset_delta, max_timestamp = (
                header[0],
                header[1],
                header[6],
                header[8],
            )
            if base_offset + last_offset_delta < start_offset or max_timestamp < target_timestamp:
                continue
            batch = self.files.pread(self.fd, batch_length + LOG_OVERHEAD, batch_position)
            for record in record_summaries(batch):
                if record.timestamp >= target_timestamp and record.offset >= start_offset:
                    return record.offset, record.timestamp
        return None

    def find_max_timestamp_record(self, end_position: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record carrying the segment's max timestamp, or
        None when no record does (Kafka's RecordBatch.offsetOfMaxTimestamp, for ListOffsets
        MAX_TIMESTAMP): the batch that first reached it is decompressed to find the record.
        """
        target = self.max_timestamp
        if target < 0:
            return None
        _, position = self.offset_index.lookup(self.offset_of_max_timestamp)
        for batch_position, header in self.iter_headers(position, end_position):
            if header[8] != target:
                continue
            batch = self.files.pread(self.fd, header[1] + LOG_OVERHEAD, batch_position)
            for record in record_summaries(batch):
                if record.timestamp == target:
                    return record.offset, target
        return None

    # -- recovery ----------------------------------------------------------------------------

    def _reset_derived_state(self) -> None:
        self.offset_index.clear()
        self.time_index.clear()
        self.next_offset = self.base_offset
        self.max_timestamp = -1
        self.offset_of_max_timestamp = -1
        self.bytes_since_last_index_entry = 0

    def recover(
        self, index_interval_bytes: int, epoch_starts: list[tuple[int, int]] | None = None
    ) -> int:
        """LogLoader's segment recovery: validate every batch, rebuild the indexes.

        Checks each batch's length, magic, CRC and that offsets only grow, truncates the file
        at the first batch that fails, and returns the number of bytes truncated. With
        `epoch_starts`, appends `(partition leader epoch, base offset)` for every valid batch
        whose epoch is >= 0 and above the last one listed (Kafka's LogSegment.recover feeding
        the leader-epoch cache).
        """
        self._reset_derived_state()
        self.index_files_stale = True
        file_size = self.files.size(self.fd)
        position = 0
        wanted = _RECOVERY_CHUNK_BYTES
        valid = True
        while valid and position < file_size:
            chunk = self.files.pread(self.fd, min(wanted, file_size - position), position)
            wanted = _RECOVERY_CHUNK_BYTES
            offset_in_chunk = 0
            with memoryview(chunk) as view:
                while True:
                    if offset_in_chunk + BATCH_HEADER_SIZE > len(chunk):
                        if position + offset_in_chunk + BATCH_HEADER_SIZE > file_size:
                            valid = position + offset_in_chunk == file_size
                        break
                    header = _HEADER.unpack_from(chunk, offset_in_chunk)
                    base_offset, batch_length, _, magic, crc, _, last_offset_delta = header[:7]
                    size = batch_length + LOG_OVERHEAD
                    if (
                        batch_length < _MINIMUM_BATCH_LENGTH
                        or magic != MAGIC
                        or base_offset < self.next_offset
                        or last_offset_delta < 0
                        or not self.can_hold_offset(base_offset + last_offset_delta)
                    ):
                        valid = False
                        break
                    if offset_in_chunk + size > len(chunk):
                        if position + offset_in_chunk + size > file_size:
                            valid = False
                        elif offset_in_chunk == 0:
                            wanted = size
                        break
                    actual_crc = crc32c.crc32c(
                        view[offset_in_chunk + ATTRIBUTES_POSITION : offset_in_chunk + size]
                    )
                    if actual_crc != crc:
                        valid = False
                        break
                    if (
                        epoch_starts is not None
                        and header[2] >= 0
                        and (not epoch_starts or header[2] > epoch_starts[-1][0])
                    ):
                        epoch_starts.append((header[2], base_offset))
                    self._account_batch(
                        base_offset,
                        position + offset_in_chunk,
                        size,
                        header[8],
                        index_interval_bytes,
                    )
                    self.next_offset = base_offset + last_offset_delta + 1
                    offset_in_chunk += size
            position += offset_in_chunk
        truncated = file_size - position
        if truncated:
            self.files.ftruncate(self.fd, position)
        self.size = position
        return truncated

    def truncate_to(self, offset: int) -> int:
        """Remove every batch whose last offset is >= `offset`; returns the bytes removed.

        Kafka's LogSegment.truncateTo: the batch holding `offset` goes whole, so the segment
        then ends at that batch's base offset. The file is cut first, then the in-memory
        indexes are trimmed and the tail after the last remaining index entry is walked again
        (headers only) for the next offset and the max timestamp. The index files on disk are
        stale until rewritten (`index_files_stale`); a load after a crash rejects entries past
        the file's end and recovers the segment. Aborted transactions ending at or after the
        cut leave the transaction index.
        """
        start = self.find_batch(offset, self.size)
        if start is None:
            return 0
        cut = start.position
        removed = self.size - cut
        self.files.ftruncate(self.fd, cut)
        self.size = cut
        self.synced_size = min(self.synced_size, cut)
        offset_index = self.offset_index
        keep = bisect_left(offset_index.positions, cut)
        del offset_index.offsets[keep:]
        del offset_index.positions[keep:]
        time_index = self.time_index
        keep = bisect_left(time_index.offsets, start.base_offset)
        del time_index.offsets[keep:]
        del time_index.timestamps[keep:]
        last_time_entry = time_index.last_entry()
        if last_time_entry is None:
            self.max_timestamp, self.offset_of_max_timestamp = -1, -1
        else:
            self.max_timestamp, self.offset_of_max_timestamp = last_time_entry
        entry_offset, position = offset_index.lookup(2**63 - 1)
        self.next_offset = entry_offset if position > 0 else self.base_offset
        for _, header in self.iter_headers(position, cut):
            if header[8] > self.max_timestamp:
                self.max_timestamp = header[8]
                self.offset_of_max_timestamp = header[0]
            self.next_offset = header[0] + header[6] + 1
        self.bytes_since_last_index_entry = cut - position
        self.index_files_stale = True
        self.txn_index.truncate_from(start.base_offset)
        return removed

    def load(self, index_interval_bytes: int, verify_tail_crc: bool) -> bool:
        """Trust the index files, walking only the tail after the last offset index entry.

        False when an index file is missing or insane or the tail does not line up with the
        file end; the caller then runs `recover`. With `verify_tail_crc` the tail's batches
        are CRC-checked too (the sanity check after a clean shutdown).
        """
        self._reset_derived_state()
        if self.size == 0:
            return True
        if not self.offset_index.load(self.size) or not self.time_index.load(2**63 - 1):
            return False
        if len(self.offset_index) == 0 and self.size > 2 * index_interval_bytes + _SEEK_CHUNK_BYTES:
            # An empty index over a large log: the file was lost, not legitimately empty.
            return False
        entry_offset, position = self.offset_index.lookup(2**63 - 1)
        last_time_entry = self.time_index.last_entry()
        if last_time_entry is not None:
            self.max_timestamp, self.offset_of_max_timestamp = last_time_entry
        try:
            return self._load_tail(position, entry_offset, last_time_entry, verify_tail_crc)
        except StorageError:
            return False

    def _load_tail(
        self,
        position: int,
        entry_offset: int,
        last_time_entry: tuple[int, int] | None,
        verify_tail_crc: bool,
    ) -> bool:
        expected_next_offset = self.base_offset
        first = True
        for batch_position, header in self.iter_headers(position, self.size):
            base_offset, batch_length, _, magic, crc, _, last_offset_delta = header[:7]
            size = batch_length + LOG_OVERHEAD
            if (
                batch_length < _MINIMUM_BATCH_LENGTH
                or magic != MAGIC
                or base_offset < expected_next_offset
                or (first and position > 0 and base_offset != entry_offset)
                or batch_position + size > self.size
            ):
                return False
            if verify_tail_crc:
                data = self.files.pread(
                    self.fd, size - ATTRIBUTES_POSITION, batch_position + ATTRIBUTES_POSITION
                )
                if crc32c.crc32c(data) != crc:
                    return False
            first = False
            if header[8] > self.max_timestamp:
                self.max_timestamp = header[8]
                self.offset_of_max_timestamp = base_offset
            expected_next_offset = base_offset + last_offset_delta + 1
            position_after = batch_position + size
            if position_after == self.size:
                self.next_offset = expected_next_offset
                self.bytes_since_last_index_entry = self.size - position
                # A time index entry past the log's end belongs to data that is gone.
                return last_time_entry is None or last_time_entry[1] < self.next_offset
        return False
