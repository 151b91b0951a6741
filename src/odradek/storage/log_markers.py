"""Transaction markers written as leader: the COMMIT or ABORT control batch that ends a
producer's transaction in a partition.

Kafka's WriteTxnMarkers path into the log: UnifiedLog.appendAsLeader of a control batch with
origin COORDINATOR, ProducerStateManager's completeTxn (the producer's ongoing transaction
ends, the last stable offset moves) and, for an ABORT, the TransactionIndex entry read_committed
fetches use. The marker encoding is log_append.py's; the write goes through the PartitionLog's
own leader append steps. A module-level function over the `PartitionLog` it is given;
`append_control` delegates here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from odradek.protocol.record_batch import read_batch_header
from odradek.storage.index import AbortedTxn
from odradek.storage.log_append import encode_marker_batch, measure
from odradek.storage.log_types import AppendInfo

if TYPE_CHECKING:
    from odradek.storage.log import PartitionLog

__all__ = ["append_control"]


def append_control(
    log: PartitionLog,
    producer_id: int,
    producer_epoch: int,
    commit: bool,
    coordinator_epoch: int,
    now_ms: int,
    partition_leader_epoch: int | None,
) -> AppendInfo:
    """Write a COMMIT or ABORT marker (WriteTxnMarkers) and end the producer's transaction.

    The marker carries `partition_leader_epoch` (default: the log's `leader_epoch`).
    Raises InvalidProducerEpoch for an epoch older than the producer's and
    TransactionCoordinatorFenced for an older coordinator epoch. A marker for a producer
    without an ongoing transaction is written all the same (as Kafka does) but changes
    neither the last stable offset nor the transaction index. An ABORT of an ongoing
    transaction adds (producer id, first offset, marker offset, LSO) to the segment's
    transaction index.
    """
    log._check_open()
    entry = log._producer_state.prepare_marker(producer_id, producer_epoch, coordinator_epoch)
    epoch = log.leader_epoch if partition_leader_epoch is None else partition_leader_epoch
    batch = encode_marker_batch(
        producer_id, producer_epoch, commit, coordinator_epoch, now_ms, epoch
    )
    headers = [read_batch_header(batch)]
    # (total size, offset count, message count), in `_write`'s order.
    measured = measure(batch, headers, log._config.max_message_bytes)
    offset_count = measured[1]
    marker_offset = log._log_end_offset
    log_append_time_ms = log._log_append_time(now_ms)
    log._assign_epoch(epoch, marker_offset)
    log._write(batch, headers, marker_offset, *measured, now_ms, epoch, log_append_time_ms)
    last_stable_offset = log._producer_state.last_stable_offset_after(producer_id, marker_offset)
    first_offset = log._producer_state.complete_marker(
        entry,
        producer_epoch,
        coordinator_epoch,
        now_ms if log_append_time_ms is None else log_append_time_ms,
        marker_offset,
    )
    if first_offset is not None and not commit:
        log._segments[-1].txn_index.append(
            AbortedTxn(producer_id, first_offset, marker_offset, last_stable_offset)
        )
    return log._finish_append(headers, marker_offset, offset_count, now_ms, log_append_time_ms)
