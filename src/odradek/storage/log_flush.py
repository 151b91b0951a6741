"""Flushing a partition's log and writing its recovery-point checkpoint.

Kafka's UnifiedLog.flush / LocalLog.flush and the log's checkpoint files
(recovery-point-offset-checkpoint, log-start-offset-checkpoint and the high watermark, one
file here). Module-level functions over the `PartitionLog` they are given; its `flush` and
`_write_checkpoint` delegate here. `flush` is the one operation that runs on another thread
(the broker's group commit): it reads the log's state only under the log's lock, never holds
the lock across an fdatasync, pins the segments it syncs so deleting or closing them cannot
close their descriptors, and advances nothing when a truncation happened meanwhile.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from odradek.storage._files import fsync_directory
from odradek.storage.log_loader import CHECKPOINT_FILE_NAME, LogCheckpoint, write_checkpoint
from odradek.storage.log_lookup import segment_holding

if TYPE_CHECKING:
    from odradek.storage.log import PartitionLog

__all__ = ["flush", "write_log_checkpoint"]


def flush(log: PartitionLog) -> int:
    """fdatasync everything appended to `log` so far (the directory too when segments
    came or went) and advance its recovery point; returns the new recovery point.

    The checkpoint file is rewritten (not fsynced) only when the recovery point enters
    another segment.
    """
    with log._lock:
        if log._closed:
            return log._recovery_point
        target_offset = log._log_end_offset
        target_messages = log._appended_messages
        truncations = log._truncations
        pending = [
            (segment, segment.size)
            for segment in log._segments
            if segment.synced_size < segment.size
        ]
        for segment, _ in pending:
            segment.pins += 1
        sync_directory = log._directory_dirty
        log._directory_dirty = False
    try:
        for segment, _ in pending:
            segment.files.fdatasync(segment.fd)
        if sync_directory:
            fsync_directory(log.directory)
    finally:
        with log._lock:
            truncated = truncations != log._truncations
            for segment, size in pending:
                if not truncated:
                    segment.synced_size = max(segment.synced_size, size)
                segment.pins -= 1
                if segment.close_requested and segment.pins == 0:
                    segment.close_fd()
    with log._lock:
        # A truncation during the sync may have replaced what the target covered.
        advanced = truncations == log._truncations and target_offset > log._recovery_point
        if advanced:
            log._recovery_point = target_offset
        log._flushed_messages = max(log._flushed_messages, target_messages)
        if log._flushed_messages == log._appended_messages:
            log._oldest_unflushed_append_ms = None
        recovery_point = log._recovery_point
        # Recovery re-checks batches from the segment holding the checkpointed recovery
        # point on: within one segment a newer recovery point changes nothing it does, so
        # the file (an atomic rename, as costly as the fdatasync here) is rewritten only
        # when the recovery point enters another segment. The high watermark it carries may
        # lag meanwhile, as Kafka's replication-offset checkpoint does between its periodic
        # writes; truncations, deletions and close write it as before.
        moved_segment = advanced and (
            segment_holding(log._segment_base_offsets, recovery_point) != log._checkpointed_segment
        )
    if moved_segment:
        # Written after the data is on disk, so the file never claims more than is there;
        # not fsynced: a stale recovery point only means a longer scan on recovery.
        log._write_checkpoint(sync=False)
    return recovery_point


def write_log_checkpoint(log: PartitionLog, sync: bool) -> None:
    """Write `log`'s log start offset, recovery point and high watermark to its checkpoint
    file (atomically; fsynced when `sync`); nothing once the log is deleted."""
    with log._checkpoint_lock:
        if log._deleted:
            return
        with log._lock:
            checkpoint = LogCheckpoint(
                log_start_offset=log._log_start_offset,
                recovery_point=log._recovery_point,
                high_watermark=log._high_watermark,
            )
            log._checkpointed_segment = segment_holding(
                log._segment_base_offsets, checkpoint.recovery_point
            )
        write_checkpoint(log.directory / CHECKPOINT_FILE_NAME, checkpoint, durable=sync)
