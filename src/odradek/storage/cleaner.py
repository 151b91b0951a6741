"""Log compaction (Kafka's Cleaner) for `cleanup.policy=compact`: the segment-level work.

`PartitionLog.clean` picks the segments to clean and swaps the results in; this module builds
the key -> latest offset map, rewrites a group of segments into one `.cleaned` file and makes
the swap crash-safe, as Kafka's Cleaner and LogLoader do:

1. the retained batches are written to `<base>.log.cleaned` and fsynced;
2. it is renamed to `<base>.log.swap` (the commit point) and the directory fsynced;
3. the group's segments are deleted and the swap renamed to `<base>.log`.

On open, `complete_interrupted_swaps` deletes `.cleaned` files (the originals are intact) and
finishes any `.swap`: the originals it covers are deleted and it becomes the segment.

A record without a key cannot be compacted (nothing supersedes it). Produce refuses such
records on a compacted topic, but a topic switched from delete to compact may hold some: they
are kept and reported (`CleanResult.keyless_offsets`, logged as a warning), where Kafka's
cleaner drops them silently.

Offsets never change: a batch that loses records is re-encoded with its original base offset,
last offset delta, producer id, epoch and base sequence (so sequence numbers still line up);
a batch that loses all of them disappears, unless it is its producer's last data batch or the
group's last batch, which stay as empty batches (Kafka's RETAIN_EMPTY) so producer state and
the segment's offset range survive.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import crc32c

from odradek.protocol.record_batch import (
    BATCH_HEADER_SIZE,
    LOG_OVERHEAD,
    MAGIC,
    BatchHeader,
    Record,
    decode_records,
    encode_batch,
    iter_batch_headers,
)
from odradek.storage._batch import ATTRIBUTES_POSITION, CRC_POSITION, UINT32
from odradek.storage._files import fsync_directory
from odradek.storage.errors import StorageError
from odradek.storage.index import AbortedTxn
from odradek.storage.segment import (
    INDEX_FILE_SUFFIX,
    LOG_FILE_SUFFIX,
    TIME_INDEX_FILE_SUFFIX,
    TXN_INDEX_FILE_SUFFIX,
    LogSegment,
    segment_file_stem,
)

CLEANED_FILE_SUFFIX = ".cleaned"
SWAP_FILE_SUFFIX = ".swap"

_HEADER = struct.Struct(">qiibIhiqqqhii")
_LAST_OFFSET_DELTA = struct.Struct(">i")
_LAST_OFFSET_DELTA_POSITION = 23
_TIMESTAMP_TYPE_AND_TRANSACTIONAL = 0x08 | 0x10
_CONTROL_FLAG = 0x20
_TRANSACTIONAL_FLAG = 0x10
_MAX_RELATIVE_OFFSET = 2**31 - 1


@dataclass(frozen=True, slots=True)
class CleanResult:
    """What one `PartitionLog.clean` call did (all zero when it had nothing to do)."""

    segments_cleaned: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    records_removed: int = 0
    first_dirty_offset: int = 0  # the cleaner checkpoint after the call
    # Offsets of records without a key found in the cleaned segments: kept, never removed.
    keyless_offsets: tuple[int, ...] = ()

    @property
    def cleaned(self) -> bool:
        return self.segments_cleaned > 0


def iter_segment_batches(
    segment: LogSegment, start_offset: int = -1
) -> Iterator[tuple[int, BatchHeader]]:
    """(position, header) of every batch in `segment` whose last offset is >= `start_offset`."""
    position = 0
    if start_offset > segment.base_offset:
        _, position = segment.offset_index.lookup(start_offset)
    for batch_position, fields in segment.iter_headers(position, segment.size):
        header = BatchHeader(*fields)
        if header.base_offset + header.last_offset_delta >= start_offset:
            yield batch_position, header


def read_batch(segment: LogSegment, position: int, header: BatchHeader) -> bytes:
    return segment.files.pread(segment.fd, header.batch_length + LOG_OVERHEAD, position)


class AbortedTracker:
    """Which transactional batches belong to aborted transactions, walking the log in order.

    Kafka's CleanedTransactionMetadata: an aborted transaction is open for its producer from
    its first offset until that producer's next control batch (the ABORT marker).
    """

    def __init__(self, aborted: Iterable[AbortedTxn]) -> None:
        self._pending = sorted(aborted, key=lambda txn: txn.first_offset)
        self._next = 0
        self._open: set[int] = set()

    def _advance(self, last_offset: int) -> None:
        pending = self._pending
        while self._next < len(pending) and pending[self._next].first_offset <= last_offset:
            self._open.add(pending[self._next].producer_id)
            self._next += 1

    def is_aborted(self, header: BatchHeader) -> bool:
        """Whether a data batch is aborted data; a control batch closes its producer's txn."""
        self._advance(header.base_offset + header.last_offset_delta)
        if header.attributes & _CONTROL_FLAG:
            self._open.discard(header.producer_id)
            return False
        return bool(header.attributes & _TRANSACTIONAL_FLAG) and header.producer_id in self._open


def build_offset_map(
    segments: Sequence[LogSegment], aborted: Iterable[AbortedTxn], end_offset: int
) -> dict[bytes, int]:
    """key -> offset of its latest record below `end_offset`, skipping aborted data."""
    offset_map: dict[bytes, int] = {}
    tracker = AbortedTracker(aborted)
    for segment in segments:
        if segment.base_offset >= end_offset:
            break
        for position, header in iter_segment_batches(segment):
            if header.base_offset >= end_offset:
                break
            if tracker.is_aborted(header) or header.is_control:
                continue
            for record in decode_records(read_batch(segment, position, header)):
                if record.key is not None and record.offset < end_offset:
                    offset_map[record.key] = record.offset
    return offset_map


def group_segments(segments: Sequence[LogSegment], max_bytes: int) -> list[list[LogSegment]]:
    """Consecutive segments merged while they fit `segment.bytes` and 32-bit relative offsets."""
    groups: list[list[LogSegment]] = []
    for segment in segments:
        if groups:
            group = groups[-1]
            size = sum(member.size for member in group) + segment.size
            if (
                size <= max_bytes
                and segment.next_offset - group[0].base_offset - 1 <= _MAX_RELATIVE_OFFSET
            ):
                group.append(segment)
                continue
        groups.append([segment])
    return groups


def _empty_batch(header: BatchHeader) -> bytes:
    """A batch without records keeping the offsets, producer fields and max timestamp."""
    batch = bytearray(BATCH_HEADER_SIZE)
    _HEADER.pack_into(
        batch,
        0,
        header.base_offset,
        BATCH_HEADER_SIZE - LOG_OVERHEAD,
        header.partition_leader_epoch,
        MAGIC,
        0,
        header.attributes & (_TIMESTAMP_TYPE_AND_TRANSACTIONAL | _CONTROL_FLAG),
        header.last_offset_delta,
        header.max_timestamp,
        header.max_timestamp,
        header.producer_id,
        header.producer_epoch,
        header.base_sequence,
        0,
    )
    UINT32.pack_into(batch, CRC_POSITION, crc32c.crc32c(memoryview(batch)[ATTRIBUTES_POSITION:]))
    return bytes(batch)


def _reencode(header: BatchHeader, retained: list[Record]) -> bytes:
    """The retained records as one batch with the original offsets and producer fields."""
    batch = bytearray(
        encode_batch(
            retained,
            base_offset=header.base_offset,
            compression=header.compression,
            producer_id=header.producer_id,
            producer_epoch=header.producer_epoch,
            base_sequence=header.base_sequence,
            is_transactional=header.is_transactional,
            partition_leader_epoch=header.partition_leader_epoch,
            timestamp_type=header.timestamp_type,
        )
    )
    # Keep the original last offset so the batch's last sequence does not move (Kafka does
    # the same: overrideLastOffset), then re-sign the batch.
    _LAST_OFFSET_DELTA.pack_into(batch, _LAST_OFFSET_DELTA_POSITION, header.last_offset_delta)
    UINT32.pack_into(batch, CRC_POSITION, crc32c.crc32c(memoryview(batch)[ATTRIBUTES_POSITION:]))
    return bytes(batch)


@dataclass(slots=True)
class GroupStats:
    bytes_before: int = 0
    bytes_after: int = 0
    records_removed: int = 0
    keyless_offsets: list[int] = field(default_factory=list)


def write_cleaned_group(
    directory: Path,
    group: Sequence[LogSegment],
    offset_map: dict[bytes, int],
    tracker: AbortedTracker,
    producer_last_offsets: set[int],
    now_ms: int,
    delete_retention_ms: int,
) -> tuple[Path, GroupStats]:
    """Write the group's retained batches to `<base>.log.cleaned`, fsync it, rename it to
    `.log.swap` (the commit point) and return the swap path."""
    stem = segment_file_stem(group[0].base_offset)
    cleaned_path = directory / (stem + LOG_FILE_SUFFIX + CLEANED_FILE_SUFFIX)
    swap_path = directory / (stem + LOG_FILE_SUFFIX + SWAP_FILE_SUFFIX)
    stats = GroupStats()
    last_segment = group[-1]
    fd = os.open(cleaned_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        for segment in group:
            stats.bytes_before += segment.size
            batches = list(iter_segment_batches(segment))
            for number, (position, header) in enumerate(batches):
                data = read_batch(segment, position, header)
                aborted = tracker.is_aborted(header)
                if header.is_control:
                    # Markers are kept (see PartitionLog.clean): they are small and keep the
                    # producer's last epoch and coordinator epoch in the log.
                    output = data
                else:
                    records = decode_records(data)
                    retained: list[Record] = []
                    tombstones_expire = now_ms - header.max_timestamp > delete_retention_ms
                    for record in [] if aborted else records:
                        if record.key is None:
                            # Nothing supersedes a keyless record: it is kept, never dropped
                            # silently (it predates the topic being compacted).
                            stats.keyless_offsets.append(record.offset)
                            retained.append(record)
                        elif record.offset >= offset_map.get(record.key, -1) and (
                            record.value is not None or not tombstones_expire
                        ):
                            retained.append(record)
                    stats.records_removed += len(records) - len(retained)
                    if retained and len(retained) == len(records):
                        output = data
                    elif retained:
                        output = _reencode(header, retained)
                    elif (
                        header.producer_id >= 0
                        and header.base_offset + header.last_offset_delta in producer_last_offsets
                    ) or (segment is last_segment and number == len(batches) - 1):
                        output = data if header.records_count == 0 else _empty_batch(header)
                    else:
                        continue
                written = 0
                while written < len(output):
                    written += os.write(fd, output[written:])
                stats.bytes_after += len(output)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        cleaned_path.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(cleaned_path, swap_path)
    fsync_directory(directory)
    return swap_path, stats


def _segment_files(directory: Path, base_offset: int) -> list[Path]:
    stem = segment_file_stem(base_offset)
    return [
        directory / (stem + suffix)
        for suffix in (
            LOG_FILE_SUFFIX,
            INDEX_FILE_SUFFIX,
            TIME_INDEX_FILE_SUFFIX,
            TXN_INDEX_FILE_SUFFIX,
        )
    ]


def finish_swap(swap_path: Path) -> Path:
    """Rename a swap file to its segment name (the originals must be gone); fsync the dir."""
    log_path = swap_path.with_name(swap_path.name[: -len(SWAP_FILE_SUFFIX)])
    os.replace(swap_path, log_path)
    fsync_directory(swap_path.parent)
    return log_path


def complete_interrupted_swaps(directory: Path) -> None:
    """LogLoader's clean-up of a crash during compaction (run before segments are opened)."""
    swaps: list[Path] = []
    for path in directory.iterdir():
        if path.name.endswith(CLEANED_FILE_SUFFIX):
            path.unlink()  # the swap was never committed: the originals are intact
        elif path.name.endswith(LOG_FILE_SUFFIX + SWAP_FILE_SUFFIX):
            swaps.append(path)
    if not swaps:
        return
    for swap_path in sorted(swaps):
        stem = swap_path.name.split(".", 1)[0]
        if not stem.isdigit():
            raise StorageError(f"unexpected swap file {swap_path}")
        base_offset = int(stem)
        next_offset = base_offset
        data = swap_path.read_bytes()
        for _, header in iter_batch_headers(data):
            next_offset = header.next_offset
        # The swap replaces the segment at its base offset and every one whose records it
        # holds; the group's last batch is always retained, so that is the whole group.
        for path in list(directory.iterdir()):
            if path.suffix != LOG_FILE_SUFFIX or not path.stem.isdigit():
                continue
            original = int(path.stem)
            if original == base_offset or base_offset <= original < next_offset:
                for file in _segment_files(directory, original):
                    file.unlink(missing_ok=True)
        fsync_directory(directory)
        finish_swap(swap_path)
