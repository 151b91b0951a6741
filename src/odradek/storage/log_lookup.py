"""Offset and time lookups over a partition's segments: Fetch reads, ListOffsets by time,
the aborted transactions a read_committed fetch needs, the segment holding an offset.

Pure reads over the segment list `PartitionLog` owns (Kafka's LocalLog.read,
UnifiedLog.fetchOffsetByTimestamp and collectAbortedTransactions); bounds such as the log
start offset and the high watermark are passed in. Nothing here writes.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence

from odradek.storage.log_types import ReadResult
from odradek.storage.segment import LogSegment

__all__ = [
    "aborted_transactions",
    "max_timestamp_offset",
    "offset_for_timestamp",
    "read",
    "segment_holding",
]


def _segment_index(base_offsets: Sequence[int], offset: int) -> int:
    """Position of the segment holding `offset` (the first segment for an offset below it)."""
    return max(bisect_right(base_offsets, offset) - 1, 0)


def segment_holding(base_offsets: Sequence[int], offset: int) -> int:
    """Base offset of the segment holding `offset`, from the segments' ascending base
    offsets (the first segment's for an offset below it)."""
    return base_offsets[_segment_index(base_offsets, offset)]


def read(
    segments: Sequence[LogSegment],
    base_offsets: Sequence[int],
    fetch_offset: int,
    max_bytes: int,
    max_offset: int,
    min_one_batch: bool,
) -> ReadResult:
    """Whole batches holding offsets from `fetch_offset`, below `max_offset`.

    The caller has checked `fetch_offset` against the log's range and bounded `max_offset`
    by the log end offset. The first batch may start before `fetch_offset` (clients skip the
    records before it). Batches come from one segment; the next segment is used when the one
    holding `fetch_offset` has nothing at or after it.
    """
    if fetch_offset >= max_offset:
        return ReadResult(b"", None)
    index = _segment_index(base_offsets, fetch_offset)
    for segment in segments[index:]:
        if segment.base_offset >= max_offset:
            break
        end_position = segment.size
        start = segment.find_batch(fetch_offset, end_position)
        if start is None:
            continue
        if start.base_offset >= max_offset:
            break
        records = segment.read_batches(start, max_bytes, max_offset, min_one_batch, end_position)
        return ReadResult(records, start.base_offset if records else None)
    return ReadResult(b"", None)


def aborted_transactions(
    segments: Sequence[LogSegment],
    base_offsets: Sequence[int],
    fetch_offset: int,
    upper_bound_offset: int,
) -> list[tuple[int, int]]:
    """(producer id, first offset) of aborted transactions overlapping
    [fetch_offset, upper_bound_offset), Kafka's collectAbortedTransactions: searching from
    the segment holding `fetch_offset` on until an entry's LSO reaches the upper bound."""
    index = _segment_index(base_offsets, fetch_offset)
    found: list[tuple[int, int]] = []
    for segment in segments[index:]:
        entries, complete = segment.txn_index.collect(fetch_offset, upper_bound_offset)
        found.extend((entry.producer_id, entry.first_offset) for entry in entries)
        if complete:
            break
    return found


def offset_for_timestamp(
    segments: Sequence[LogSegment], timestamp_ms: int, log_start_offset: int
) -> tuple[int, int] | None:
    """(offset, timestamp) of the first record at or after `log_start_offset` whose
    timestamp is >= `timestamp_ms`, or None (UnifiedLog.fetchOffsetByTimestamp, per record)."""
    for segment in segments:
        if segment.max_timestamp < timestamp_ms or segment.next_offset <= log_start_offset:
            continue
        found = segment.find_offset_by_timestamp(timestamp_ms, log_start_offset, segment.size)
        if found is not None:
            return found
    return None


def max_timestamp_offset(
    segments: Sequence[LogSegment], log_start_offset: int
) -> tuple[int, int] | None:
    """(offset, timestamp) of the first record carrying the log's largest timestamp
    (ListOffsets -3, KIP-734), the offset raised to `log_start_offset`; None without one."""
    best: LogSegment | None = None
    for segment in segments:
        if segment.max_timestamp >= 0 and (
            best is None or segment.max_timestamp > best.max_timestamp
        ):
            best = segment
    if best is None:
        return None
    found = best.find_max_timestamp_record(best.size)
    if found is None:
        # No record carries it (an emptied batch after compaction): the batch's offset.
        found = (best.offset_of_max_timestamp, best.max_timestamp)
    return max(found[0], log_start_offset), found[1]
