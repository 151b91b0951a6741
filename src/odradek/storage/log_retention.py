"""Retention and deletion of a partition's oldest segments: DeleteRecords and the
retention.ms / retention.bytes policy.

Kafka's UnifiedLog.deleteOldSegments (deleteRetentionMsBreachedSegments,
deleteRetentionSizeBreachedSegments, deleteLogStartOffsetBreachedSegments) and
UnifiedLog.maybeIncrementLogStartOffset, with LocalLog's removal of segments from the front.
Module-level functions over the `PartitionLog` they are given; its methods delegate here.
The log start offset is raised in the checkpoint before the segments below it are unlinked,
so a crash between the two leaves segments the next open deletes (`delete_segments` from
PartitionLog.open). No clock is read: `now_ms` is passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from odradek.storage.segment import LogSegment

if TYPE_CHECKING:
    from odradek.storage.log import PartitionLog

__all__ = [
    "count_segments_below",
    "delete_records_before",
    "delete_segments",
    "enforce_retention",
    "truncate_epochs_from_start",
]


def delete_records_before(log: PartitionLog, offset: int) -> int:
    """DeleteRecords: raise `log`'s start offset to `offset` (bounded by the log end
    offset); returns the low watermark (the log start offset after the call).

    When `offset` reaches past the active segment's data, an empty segment is rolled at
    the log end first so the active one can go. The new log start offset is checkpointed
    durably before the segments wholly below it are deleted, then the leader-epoch cache
    loses the entries below it.
    """
    log._check_open()
    offset = min(offset, log._log_end_offset)
    if offset <= log._log_start_offset:
        return log._log_start_offset
    active = log._segments[-1]
    if offset >= active.next_offset and active.size > 0:
        log._roll(log._log_end_offset)
    log._log_start_offset = offset
    log._high_watermark = max(log._high_watermark, offset)
    log._write_checkpoint(sync=True)
    delete_segments(log, count_segments_below(log._segments, offset))
    truncate_epochs_from_start(log, offset)
    return log._log_start_offset


def enforce_retention(log: PartitionLog, now_ms: int) -> int:
    """Delete `log`'s old segments by retention.bytes and retention.ms; returns the bytes
    deleted (UnifiedLog.deleteOldSegments).

    Segments wholly below the log start offset always go; with cleanup.policy containing
    delete, then the oldest segments while the log stays over retention.bytes without them,
    then the oldest whose largest timestamp is more than retention.ms older than `now_ms`.
    A segment goes only when every offset it holds is below the high watermark, and the
    active segment only when it is not empty: a new empty segment is rolled at the log end
    first (a log always has one), so the log start offset can reach the log end offset. An
    empty or a non-delete cleanup.policy deletes nothing by time or size.
    """
    log._check_open()
    config = log.config
    segments = log._segments
    high_watermark = log._high_watermark
    log_end_offset = log._log_end_offset

    def deletable(number: int) -> bool:
        if number >= len(segments):
            return False
        if number == len(segments) - 1:
            return segments[number].size > 0 and high_watermark >= log_end_offset
        return high_watermark >= segments[number + 1].base_offset

    count = count_segments_below(segments, log._log_start_offset)
    if config.deletes and config.retention_bytes >= 0:
        excess = (
            log.size_in_bytes
            - sum(segment.size for segment in segments[:count])
            - config.retention_bytes
        )
        while deletable(count) and excess - segments[count].size >= 0:
            excess -= segments[count].size
            count += 1
    if config.deletes and config.retention_ms >= 0:
        while deletable(count) and now_ms - segments[count].largest_timestamp > config.retention_ms:
            count += 1
    if not count:
        return 0
    if count == len(segments):
        log._roll(log_end_offset)
    deleted_bytes = delete_segments(log, count)
    new_start = log._segments[0].base_offset
    if new_start > log._log_start_offset:
        log._log_start_offset = new_start
        log._high_watermark = max(log._high_watermark, new_start)
        log._write_checkpoint(sync=False)
        truncate_epochs_from_start(log, new_start)
    return deleted_bytes


def truncate_epochs_from_start(log: PartitionLog, log_start_offset: int) -> None:
    """Drop the leader-epoch entries wholly below `log_start_offset` (the earliest kept
    entry moves up to it), Kafka's LeaderEpochFileCache.truncateFromStart; a no-op when the
    earliest entry already starts at or after it."""
    cache = log.leader_epoch_cache
    earliest = cache.earliest_entry
    if earliest is not None and earliest.start_offset < log_start_offset:
        cache.truncate_from_start(log_start_offset)


def count_segments_below(segments: Sequence[LogSegment], offset: int) -> int:
    """How many leading `segments` hold only offsets below `offset` (never all of them:
    the active segment stays)."""
    count = 0
    for segment in segments[:-1]:
        if segment.next_offset > offset:
            break
        count += 1
    return count


def delete_segments(log: PartitionLog, count: int) -> int:
    """Delete `log`'s oldest `count` segments, oldest first; returns their bytes."""
    doomed = log._detach_segments(0, count)
    for segment in doomed:
        segment.delete_files()
    return sum(segment.size for segment in doomed)
