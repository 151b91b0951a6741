"""Builders for replication tests: a leader's PartitionState, and tiny replica logs.

`ReplicaLog` is a log reduced to what replication decides on: one record per offset, each
tagged with the leader epoch it was written in, plus a real LeaderEpochFileCache. Followers
replicate through the real functions of `odradek.replication.truncation`, so scenario tests
exercise exactly what a replica fetcher will run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from odradek.replication.partition_state import (
    AlterPartitionRequest,
    BrokerMetadata,
    LeaderAndIsr,
    PartitionState,
)
from odradek.replication.truncation import (
    BatchPosition,
    check_fetch_position,
    follower_high_watermark,
    plan_follower_append,
    position_after_truncation,
    truncate_on_diverging_epoch,
)
from odradek.storage.leader_epoch import LeaderEpochFileCache

LEADER = 1
FOLLOWERS = (2, 3)
REPLICAS = (LEADER, *FOLLOWERS)
LAG_MS = 10_000


def brokers(*ids: int, epoch: int = 100) -> dict[int, BrokerMetadata]:
    """Every broker registered with broker epoch `epoch`, unfenced."""
    return {broker_id: BrokerMetadata(epoch) for broker_id in ids}


def make_leader(
    *,
    isr: tuple[int, ...] = REPLICAS,
    replicas: tuple[int, ...] = REPLICAS,
    min_insync: int = 1,
    fsync: bool = False,
    log_end_offset: int = 0,
    high_watermark: int = 0,
    leader_epoch: int = 1,
    now_ms: int = 0,
) -> PartitionState:
    """Broker LEADER leading a partition over `replicas` in `leader_epoch`."""
    state = PartitionState(
        LEADER,
        replica_lag_time_max_ms=LAG_MS,
        min_insync_replicas=min_insync,
        acks_all_fsync=fsync,
        local_broker_epoch=100,
        brokers=brokers(*replicas),
    )
    result = state.become_leader(
        leader_epoch,
        0,
        isr,
        replicas,
        now_ms,
        log_end_offset=log_end_offset,
        high_watermark=high_watermark,
    )
    assert result.applied
    return state


def accept(state: PartitionState, request: AlterPartitionRequest, now_ms: int) -> None:
    """The controller accepts `request` and bumps the partition epoch."""
    outcome = state.on_alter_partition_response(
        request,
        now_ms,
        result=LeaderAndIsr(
            request.leader_id, request.leader_epoch, request.isr, request.partition_epoch + 1
        ),
    )
    assert outcome.committed


@dataclass
class ReplicaLog:
    """One replica's log: the leader epoch of each record, its cache and its HW."""

    broker_id: int
    epochs: list[int] = field(default_factory=list)
    values: list[str] = field(default_factory=list)
    cache: LeaderEpochFileCache = field(default_factory=LeaderEpochFileCache)
    high_watermark: int = 0

    @property
    def log_end_offset(self) -> int:
        return len(self.epochs)

    def append_as_leader(self, leader_epoch: int, *values: str) -> None:
        for value in values:
            self.cache.assign(leader_epoch, self.log_end_offset)
            self.epochs.append(leader_epoch)
            self.values.append(value)

    def truncate_to(self, offset: int) -> None:
        del self.epochs[offset:]
        del self.values[offset:]
        self.cache.truncate_from_end(offset)
        self.high_watermark = min(self.high_watermark, offset)

    def records(self) -> list[tuple[int, str]]:
        return list(zip(self.epochs, self.values, strict=True))


def replicate(
    follower: ReplicaLog,
    leader: ReplicaLog,
    leader_epoch: int,
    *,
    max_rounds: int = 10,
) -> list[int]:
    """Fetch from `leader` until caught up, as a KIP-595 follower; returns the truncations.

    Each round sends (log end offset, latest epoch); a diverging epoch is cut with
    `truncate_on_diverging_epoch`, records are appended with `plan_follower_append`.
    """
    truncations: list[int] = []
    for _ in range(max_rounds):
        fetch_offset = follower.log_end_offset
        check = check_fetch_position(
            leader.cache,
            fetch_offset,
            follower.cache.latest_epoch,
            current_leader_epoch=leader_epoch,
            leader_epoch=leader_epoch,
            is_leader=True,
            log_start_offset=0,
            log_end_offset=leader.log_end_offset,
        )
        assert check.error is None, check
        if check.diverging_epoch is not None:
            state = truncate_on_diverging_epoch(
                check.diverging_epoch, follower.cache, follower.log_end_offset, fetch_offset
            )
            follower.truncate_to(state.offset)
            truncations.append(state.offset)
            assert position_after_truncation(follower.cache, state).fetch_offset == state.offset
            continue
        batches = [
            BatchPosition(offset, offset, leader.epochs[offset])
            for offset in range(fetch_offset, leader.log_end_offset)
        ]
        plan = plan_follower_append(
            fetch_offset, batches, leader_epoch, follower.cache.latest_epoch
        )
        assert plan.error is None
        for batch in batches[: plan.batch_count]:
            follower.epochs.append(leader.epochs[batch.base_offset])
            follower.values.append(leader.values[batch.base_offset])
        follower.cache.assign_all(plan.epoch_entries)
        follower.high_watermark = follower_high_watermark(
            leader.high_watermark, 0, follower.log_end_offset
        )
        if follower.log_end_offset == leader.log_end_offset:
            return truncations
    raise AssertionError("the follower did not converge")
