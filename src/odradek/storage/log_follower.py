"""Appends as follower: a replica fetch's batches written exactly as the leader wrote them.

Kafka's UnifiedLog.appendAsFollower. The batch checks are log_append.py's
(`check_replicated_batches`); the writes go through the PartitionLog's own segment roll and
advance, shared with leader appends. From what it writes the follower rebuilds what a leader
would have: the leader-epoch cache, producer state and the transaction indexes. A
module-level function over the `PartitionLog` it is given; `append_as_follower` delegates
here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from odradek.storage.log_append import check_replicated_batches
from odradek.storage.log_loader import apply_marker
from odradek.storage.log_types import AppendInfo

if TYPE_CHECKING:
    from odradek.storage.log import PartitionLog

__all__ = ["append_as_follower"]


def append_as_follower(
    log: PartitionLog, records: bytes | memoryview, now_ms: int
) -> AppendInfo | None:
    """Append a replica fetch's batches exactly as the leader wrote them.

    Kafka's UnifiedLog.appendAsFollower: offsets, leader epochs and timestamps are kept
    (nothing is patched or assigned); every batch's length, magic and CRC are checked
    (CorruptRecord) and its offsets must continue the log: the first batch at or after
    the log end offset, each after the previous one (OffsetsOutOfOrder; a compacted
    leader log may skip offsets). Nothing is written when a check fails. Trailing bytes
    that do not make a complete batch are ignored; None when no complete batch came.

    From what it writes the follower rebuilds what a leader would have: the leader-epoch
    cache (a new epoch starts at its first batch), producer state (sequences and offsets
    of each producer's last batches, so a retry after failover is a duplicate here; the
    first offset of each ongoing transaction) and, for the control batches, the end of
    each transaction: an ABORT adds the aborted range to the transaction index. Only
    control batches are decoded (one marker record each). The high watermark does not
    move: the caller sets it from the leader's.
    """
    log._check_open()
    headers, valid_bytes = check_replicated_batches(records, log._log_end_offset)
    if not headers:
        return None
    first_offset = headers[0].base_offset
    last_offset = headers[-1].last_offset
    message_count = sum(header.records_count for header in headers)
    cache = log._leader_epoch_cache
    for header in headers:
        epoch = header.partition_leader_epoch
        if epoch >= 0 and epoch != cache.latest_epoch:
            cache.assign(epoch, header.base_offset)
    segment = log._active_segment_for(valid_bytes, last_offset, first_offset, now_ms)
    position = segment.size
    view = memoryview(records)
    segment.write(view[:valid_bytes])
    segment.account_replicated_batches(headers, position, log._config.index_interval_bytes)
    log._advance(segment, position + valid_bytes, last_offset + 1, message_count, now_ms)
    state = log._producer_state
    batch_position = 0
    for header in headers:
        if header.producer_id >= 0:
            if header.is_control:
                batch = bytes(view[batch_position : batch_position + header.size])
                apply_marker(state, segment, header, batch)
            else:
                state.replay_data_batch(header, header.max_timestamp)
        batch_position += header.size
    return log._finish_append(
        headers,
        first_offset,
        last_offset - first_offset + 1,
        now_ms,
        None,
        [header.base_offset for header in headers],
    )
