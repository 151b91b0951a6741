"""Compaction of one partition's log: choosing what to clean, and swapping the cleaned
segments in.

Kafka's LogCleaner side that works on a whole log -- LogCleanerManager's choice of the
cleanable range and dirty ratio, Cleaner.doClean's loop over segment groups -- and
UnifiedLog.replaceSegments. The segment-level work (the key -> latest offset map, rewriting
a group into one `.cleaned` file, the crash-safe swap files) is cleaner.py's. Module-level
functions over the `PartitionLog` they are given; `PartitionLog.clean` delegates here.
No clock is read: `now_ms` is passed in.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from odradek.storage._files import fsync_directory
from odradek.storage.cleaner import (
    AbortedTracker,
    CleanResult,
    build_offset_map,
    finish_swap,
    group_segments,
    write_cleaned_group,
)
from odradek.storage.segment import LogSegment

if TYPE_CHECKING:
    from odradek.storage.log import PartitionLog

__all__ = ["clean", "swap_in"]

# The warning about keyless records is the partition log's, under its logger's name.
logger = logging.getLogger("odradek.storage.log")

_KEYLESS_OFFSETS_SHOWN = 10


def clean(log: PartitionLog, now_ms: int, force: bool) -> CleanResult:
    """Compact `log` (cleanup.policy=compact): keep only each key's latest record.

    Cleanable are the inactive segments wholly below the first uncleanable offset:
    min(last stable offset, active segment base, first segment younger than
    min.compaction.lag.ms at `now_ms`). The key map covers the whole log below the last
    stable offset (active segment included), without aborted data. In cleaned segments:
    superseded records, aborted transactional data and tombstones whose batch is older
    than delete.retention.ms go; control batches stay. Records without a key stay too
    (Kafka's cleaner drops them silently): their offsets are logged as a warning and
    returned in `CleanResult.keyless_offsets`. Runs only when at least
    min.cleanable.dirty.ratio of the cleanable bytes were written since the last clean by
    this process (the cleaner checkpoint, `_first_dirty_offset`, is not persisted: the
    first clean after open sees everything dirty), or with `force`.
    """
    log._check_open()
    config = log.config
    if not config.compacts:
        return CleanResult(first_dirty_offset=log._first_dirty_offset)
    segments = log._segments
    first_uncleanable = min(log.last_stable_offset, segments[-1].base_offset)
    compaction_horizon = now_ms - config.min_compaction_lag_ms
    cleanable: list[LogSegment] = []
    for segment in segments[:-1]:
        if segment.next_offset > first_uncleanable or (
            config.min_compaction_lag_ms > 0 and segment.largest_timestamp > compaction_horizon
        ):
            break
        cleanable.append(segment)
    total_bytes = sum(segment.size for segment in cleanable)
    dirty_bytes = sum(
        segment.size for segment in cleanable if segment.base_offset >= log._first_dirty_offset
    )
    if (
        not cleanable
        or total_bytes == 0
        or (
            not force
            and (dirty_bytes == 0 or dirty_bytes / total_bytes < config.min_cleanable_dirty_ratio)
        )
    ):
        return CleanResult(first_dirty_offset=log._first_dirty_offset)
    aborted = [entry for segment in segments for entry in segment.txn_index.entries]
    offset_map = build_offset_map(segments, aborted, log.last_stable_offset)
    tracker = AbortedTracker(aborted)
    producer_last_offsets = log._producer_state.last_data_offsets()
    segments_cleaned = bytes_before = bytes_after = records_removed = 0
    keyless_offsets: list[int] = []
    for group in group_segments(cleanable, config.segment_bytes):
        swap_path, stats = write_cleaned_group(
            log.directory,
            group,
            offset_map,
            tracker,
            producer_last_offsets,
            now_ms,
            config.delete_retention_ms,
        )
        swap_in(log, group, swap_path)
        segments_cleaned += len(group)
        bytes_before += stats.bytes_before
        bytes_after += stats.bytes_after
        records_removed += stats.records_removed
        keyless_offsets.extend(stats.keyless_offsets)
    log._first_dirty_offset = cleanable[-1].next_offset
    if keyless_offsets:
        shown = ", ".join(str(offset) for offset in keyless_offsets[:_KEYLESS_OFFSETS_SHOWN])
        more = len(keyless_offsets) - _KEYLESS_OFFSETS_SHOWN
        logger.warning(
            "%s: kept %d record(s) without a key at offset(s) %s%s: a compacted topic "
            "cannot compact them",
            log.directory.name,
            len(keyless_offsets),
            shown,
            f" and {more} more" if more > 0 else "",
        )
    return CleanResult(
        segments_cleaned=segments_cleaned,
        bytes_before=bytes_before,
        bytes_after=bytes_after,
        records_removed=records_removed,
        first_dirty_offset=log._first_dirty_offset,
        keyless_offsets=tuple(keyless_offsets),
    )


def swap_in(log: PartitionLog, group: list[LogSegment], swap_path: Path) -> None:
    """Replace `group`, consecutive segments of `log`, by the committed swap file at
    `swap_path` (UnifiedLog.replaceSegments): the originals are deleted, the swap renamed
    to the group's first segment, which is opened, indexed and put in the group's place."""
    segments = log._segments
    index = segments.index(group[0])
    for segment in log._detach_segments(index, index + len(group)):
        segment.delete_files()
    fsync_directory(log.directory)
    finish_swap(swap_path)
    cleaned = LogSegment.open_existing(log.directory, group[0].base_offset, log._files)
    cleaned.recover(log.config.index_interval_bytes)
    cleaned.write_index_files()
    cleaned.synced_size = cleaned.size
    cleaned.rolling_base_ms = group[-1].rolling_base_ms
    with log._lock:
        segments.insert(index, cleaned)
        log._segment_base_offsets.insert(index, cleaned.base_offset)
