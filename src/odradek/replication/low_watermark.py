"""The low watermark of a partition on its leader (Kafka's `Partition.lowWatermarkIfLeader`).

DeleteRecords raises the leader's log start offset; followers move theirs when a Fetch response
carries the leader's log start, and report it back in their next Fetch (`log_start_offset`).
The low watermark is the smallest log start offset over the leader and every follower whose
broker is alive (registered and unfenced), skipping followers that have not reported one yet;
a DeleteRecords request completes when it reaches the requested offset (Kafka's
DelayedDeleteRecords). Plain code: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping

from odradek.replication.partition_state import UNKNOWN_OFFSET, BrokerMetadata, ReplicaState


def low_watermark(
    leader_log_start_offset: int,
    followers: Mapping[int, ReplicaState],
    brokers: Mapping[int, BrokerMetadata],
) -> int:
    """min(log start offset) over the leader and the live followers that reported one."""
    offsets = [leader_log_start_offset]
    for broker_id, state in followers.items():
        broker = brokers.get(broker_id)
        if broker is None or broker.fenced or state.log_start_offset == UNKNOWN_OFFSET:
            continue
        offsets.append(state.log_start_offset)
    return min(offsets)
