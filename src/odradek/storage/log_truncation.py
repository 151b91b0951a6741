"""Truncation of a partition's log from its end: a follower cutting back to where its log
diverges from the leader's, or starting over at the leader's range.

Kafka's UnifiedLog.truncateTo and truncateFullyAndStartAt, with LocalLog's removal of
segments from the end (KIP-101/279). Module-level functions over the `PartitionLog` they
are given; its methods delegate here. Every step is crash-safe: the recovery point goes
below the cut in a durable checkpoint first, and segments are deleted newest first so each
unlink leaves a prefix of the log on disk. Each truncation bumps the log's truncation count
under its lock, so a flush in flight on another thread advances nothing past the cut.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from odradek.storage._files import fsync_directory
from odradek.storage.log_loader import load_producer_state
from odradek.storage.producer_state import ProducerStateManager, delete_snapshots
from odradek.storage.segment import LogSegment

if TYPE_CHECKING:
    from odradek.storage.log import PartitionLog

__all__ = ["delete_segments_from", "truncate_fully_and_start_at", "truncate_to"]


def truncate_to(log: PartitionLog, offset: int) -> None:
    """Cut `log` so that it ends at or below `offset` (UnifiedLog.truncateTo).

    At or past the log end offset only the leader-epoch cache loses its entries from the
    log end (an epoch begun with no record); at or below the log start offset the log starts
    over empty at `offset` (`truncate_fully_and_start_at`). Otherwise segments wholly at or
    past `offset` are deleted and the one holding it is cut before the batch holding
    `offset` (a batch goes whole, so the log may end below `offset`); then the leader-epoch
    cache loses the entries from the new end, producer state and the transaction indexes
    are rebuilt from the newest snapshot at or below it (later snapshots are deleted), and
    the high watermark and recovery point are clamped to it.

    A crash at any step reopens a log whose every segment ends where the next begins and
    whose tail from `offset` is recovered batch by batch; the loader trims the epoch cache
    and snapshots to what survived. The log after such a crash may still hold data past
    `offset`: the caller (the replica fetcher) truncates again.
    """
    log._check_open()
    if offset >= log._log_end_offset:
        # Kafka truncates the epoch cache even so: a broker that became leader and
        # recorded its epoch's start offset, then lost leadership before appending, holds
        # an entry at its log end that the new leader never had. Kept, the fetcher would
        # send that epoch as LastFetchedEpoch for ever and be told to truncate again.
        with log._lock:
            log._leader_epoch_cache.truncate_from_end(log._log_end_offset)
        return
    if offset <= log._log_start_offset:
        truncate_fully_and_start_at(log, offset)
        return
    with log._lock:
        log._truncations += 1
        log._recovery_point = min(log._recovery_point, offset)
        log._high_watermark = min(log._high_watermark, offset)
    log._write_checkpoint(sync=True)
    segments = log._segments
    keep = len(segments)
    while keep > 1 and segments[keep - 1].base_offset >= offset:
        keep -= 1
    delete_segments_from(log, keep)
    active = log._segments[-1]
    with log._lock:
        active.truncate_to(offset)
        log_end_offset = active.next_offset
        log._log_end_offset = log_end_offset
        log._recovery_point = min(log._recovery_point, log_end_offset)
        log._high_watermark = max(min(log._high_watermark, log_end_offset), log._log_start_offset)
    log._first_dirty_offset = min(log._first_dirty_offset, log_end_offset)
    log._leader_epoch_cache.truncate_from_end(log_end_offset)
    log._producer_state = load_producer_state(log.directory, log._segments, log_end_offset)
    fsync_directory(log.directory)
    log._write_checkpoint(sync=False)


def truncate_fully_and_start_at(log: PartitionLog, offset: int) -> None:
    """Delete everything in `log` and start it empty at `offset`
    (UnifiedLog.truncateFullyAndStartAt).

    Segments are deleted newest first (each step leaves a prefix of the old log), then the
    new segment is created and the checkpoint naming `offset` as log start is written
    durably; a crash before that reopens the old log's remaining prefix (or an empty log at
    the old start), after it the new empty log. The leader-epoch cache, producer state and
    its snapshots are cleared.
    """
    log._check_open()
    with log._lock:
        log._truncations += 1
    delete_segments_from(log, 0)
    log._leader_epoch_cache.clear_and_flush()
    segment = LogSegment.create(log.directory, offset, log._files)
    with log._lock:
        log._segments.append(segment)
        log._segment_base_offsets.append(offset)
        log._log_start_offset = offset
        log._log_end_offset = offset
        log._high_watermark = offset
        log._recovery_point = offset
        log._directory_dirty = True
    fsync_directory(log.directory)
    log._write_checkpoint(sync=True)
    log._first_dirty_offset = offset
    delete_snapshots(log.directory, keep=0)
    log._producer_state = ProducerStateManager()


def delete_segments_from(log: PartitionLog, keep: int) -> None:
    """Delete `log`'s segments after the first `keep`, newest first (each unlink leaves a
    prefix of the log on disk)."""
    for segment in reversed(log._detach_segments(keep, None)):
        segment.delete_files()
