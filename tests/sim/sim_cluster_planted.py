"""Replication bugs planted by monkeypatching the real code, to show that a cluster seed sweep
catches each (the issue: within 1,000 seeds).

Each is a context manager that swaps one function of the broker's or the controller's real code
for a broken copy and restores it afterwards; the broker has no flag for any of them.
`CLUSTER_PLANTED` maps each name to it.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

from kio.schema.errors import ErrorCode
from sim_planted import _swapped

from odradek.broker import replica_fetcher
from odradek.broker.replica_manager import HostedPartition, ReplicaManager
from odradek.controller.messages import AlterPartitionPartition
from odradek.controller.replication_control import ReplicationControlManager
from odradek.replication.partition_state import PartitionState
from odradek.replication.truncation import DivergingEpoch, OffsetTruncationState
from odradek.storage.leader_epoch import LeaderEpochFileCache
from odradek.storage.log import PartitionLog
from odradek.storage.producer_state import ProducerStateManager


@contextlib.contextmanager
def high_watermark_before_followers() -> Iterator[None]:
    """The leader advances the high watermark to its own log end without waiting for the ISR
    followers to fetch the data (Kafka's maybeIncrementLeaderHW with the followers left out)."""

    def increment(self: PartitionState, now_ms: int) -> bool:
        if self.is_under_min_isr:
            return False
        candidate = self.leader_log_end_offset
        if self.acks_all_fsync:
            candidate = min(candidate, self.leader_flushed_offset)
        # the bug: no follower's log end offset holds the candidate back
        if candidate > self.high_watermark:
            self.high_watermark = candidate
            return True
        return False

    with _swapped(PartitionState, "_maybe_increment_high_watermark", increment):
        yield


@contextlib.contextmanager
def returning_leader_keeps_its_tail() -> Iterator[None]:
    """A returning former leader whose log diverges from the new leader's does not truncate:
    the Fetch answer's DivergingEpoch is taken as "nothing to cut" (the replica fetcher's
    `truncate_on_diverging_epoch`, Kafka's truncateOnFetchResponse, skipped), so the tail it
    wrote as leader stays under the new leader's records."""

    def no_truncation(
        diverging_epoch: DivergingEpoch,
        cache: LeaderEpochFileCache,
        log_end_offset: int,
        fetch_offset: int,
    ) -> OffsetTruncationState:
        return OffsetTruncationState(log_end_offset, True)  # the bug: nothing cut

    # The replica fetcher calls the name it imported from odradek.replication.truncation.
    with _swapped(replica_fetcher, "truncate_on_diverging_epoch", no_truncation):
        yield


@contextlib.contextmanager
def acks_all_before_isr_check() -> Iterator[None]:
    """An acks=all produce is answered as soon as the leader wrote it, before the check that
    the ISR has it (Kafka's DelayedProduce without checkEnoughReplicasReachOffset). The
    internal topics' waits (group and transaction coordinators) keep the real code."""

    async def wait_for_acks_all(
        self: ReplicaManager, hosted: HostedPartition, last_offset: int, timeout_ms: int
    ) -> ErrorCode:
        if hosted.topic.startswith("__") or not hosted.state.is_leader:
            return await original(self, hosted, last_offset, timeout_ms)
        return ErrorCode.none  # the bug: no wait for the high watermark

    original = ReplicaManager.wait_for_acks_all
    with _swapped(ReplicaManager, "wait_for_acks_all", wait_for_acks_all):
        yield


@contextlib.contextmanager
def follower_skips_producer_state() -> Iterator[None]:
    """A follower appends replicated batches without rebuilding the producers' state (their
    sequences): after a failover the new leader takes a retried batch as new."""
    following: list[bool] = []

    def append_as_follower(self: PartitionLog, records: Any, now_ms: int) -> Any:
        following.append(True)
        try:
            return original_append(self, records, now_ms)
        finally:
            following.pop()

    def replay_data_batch(self: ProducerStateManager, header: Any, max_timestamp: int) -> None:
        if following:
            return  # the bug: nothing recorded for a replicated batch
        original_replay(self, header, max_timestamp)

    original_append: Callable[..., Any] = PartitionLog.append_as_follower
    original_replay: Callable[..., None] = ProducerStateManager.replay_data_batch
    with (
        _swapped(PartitionLog, "append_as_follower", append_as_follower),
        _swapped(ProducerStateManager, "replay_data_batch", replay_data_batch),
    ):
        yield


@contextlib.contextmanager
def alter_partition_stale_epoch() -> Iterator[None]:
    """The controller accepts an AlterPartition whose leader epoch or partition epoch is older
    than the partition's (no FENCED_LEADER_EPOCH / INVALID_UPDATE_VERSION): a leader's outdated
    ISR overwrites the newer one."""

    def validate(
        self: ReplicationControlManager,
        broker_id: int,
        partition: Any,
        data: AlterPartitionPartition,
        version: int,
    ) -> Any:
        if partition is not None:
            data = dataclasses.replace(
                data,
                leader_epoch=max(data.leader_epoch, partition.leader_epoch),
                partition_epoch=max(data.partition_epoch, partition.partition_epoch),
            )
        return original(self, broker_id, partition, data, version)

    original = ReplicationControlManager._validate_alter_partition
    with _swapped(ReplicationControlManager, "_validate_alter_partition", validate):
        yield


CLUSTER_PLANTED: dict[str, Callable[[], contextlib.AbstractContextManager[None]]] = {
    "high-watermark-before-followers": high_watermark_before_followers,
    "returning-leader-keeps-its-tail": returning_leader_keeps_its_tail,
    "acks-all-before-isr-check": acks_all_before_isr_check,
    "follower-skips-producer-state": follower_skips_producer_state,
    "alter-partition-stale-epoch": alter_partition_stale_epoch,
}
