"""Hypothesis over random appends, flushes, fetches, time, restarts and controller answers.

A leader (broker 1) and followers 2 and 3 in one leader epoch, driven through the real
PartitionState. A small controller model answers AlterPartition as KRaft's does (partition
epoch and each member's broker epoch checked), and a restarted follower is removed from the
ISR with a new partition epoch. After every step:
- the HW never moves backwards;
- a HW that moved is <= every maximal-ISR member's reported log end offset, <= the leader's
  log end offset, and <= its flushed offset when fsync is on;
- the leader is in the committed and the maximal ISR, and in every proposal;
- an expansion names the joining follower with its current registration's broker epoch, and no
  committed ISR member carries a broker epoch other than its current registration's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given
from hypothesis import strategies as st
from kio.schema.errors import ErrorCode
from replication_helpers import LAG_MS, LEADER

from odradek.replication.partition_state import (
    AlterPartitionRequest,
    BrokerMetadata,
    IsrChangeKind,
    LeaderAndIsr,
    PartitionState,
)

FOLLOWERS = (2, 3)
REPLICAS = (LEADER, *FOLLOWERS)

operation = st.one_of(
    st.tuples(st.just("append"), st.integers(1, 5)),
    st.tuples(st.just("flush")),
    st.tuples(st.just("fetch"), st.sampled_from(FOLLOWERS), st.integers(0, 6)),
    st.tuples(st.just("zombie_fetch"), st.sampled_from(FOLLOWERS)),
    st.tuples(st.just("tick"), st.integers(1, LAG_MS)),
    st.tuples(st.just("shrink")),
    st.tuples(st.just("answer"), st.booleans()),
    st.tuples(st.just("restart"), st.sampled_from(FOLLOWERS), st.booleans(), st.booleans()),
    st.tuples(st.just("publish")),
    st.tuples(st.just("fence"), st.sampled_from(FOLLOWERS), st.booleans()),
)


@dataclass
class Cluster:
    state: PartitionState
    now: int = 0
    leader_end: int = 0
    follower_end: dict[int, int] = field(default_factory=lambda: dict.fromkeys(FOLLOWERS, 0))
    registration: dict[int, BrokerMetadata] = field(
        default_factory=lambda: {broker: BrokerMetadata(10) for broker in REPLICAS}
    )
    # What the controller committed: ISR member -> the broker epoch it was committed with.
    committed: dict[int, int] = field(default_factory=lambda: dict.fromkeys(REPLICAS, 10))
    # The image the leader has replayed so far (it may lag the controller's registrations).
    leader_image: dict[int, BrokerMetadata] = field(default_factory=dict)
    partition_epoch: int = 0
    in_flight: AlterPartitionRequest | None = None

    def publish(self) -> None:
        self.leader_image = dict(self.registration)
        self.state.on_metadata_update(self.leader_image, self.now)

    def controller_answer(
        self, request: AlterPartitionRequest
    ) -> tuple[LeaderAndIsr | None, ErrorCode]:
        """KRaft's AlterPartition validation, reduced to what this test needs."""
        if request.partition_epoch != self.partition_epoch:
            return None, ErrorCode.invalid_update_version
        for member in request.new_isr:
            broker = self.registration[member.broker_id]
            if broker.fenced or member.broker_epoch not in (-1, broker.broker_epoch):
                return None, ErrorCode.ineligible_replica
        self.partition_epoch += 1
        self.committed = {
            member.broker_id: (
                self.committed.get(member.broker_id, -1)
                if member.broker_epoch == -1
                else member.broker_epoch
            )
            for member in request.new_isr
        }
        return (
            LeaderAndIsr(LEADER, request.leader_epoch, request.isr, self.partition_epoch),
            ErrorCode.none,
        )


def check_proposal(cluster: Cluster, request: AlterPartitionRequest | None) -> None:
    if request is None:
        return
    assert LEADER in request.isr
    pending = cluster.state.pending_isr_change
    assert pending is not None
    assert pending.request == request
    if pending.kind is IsrChangeKind.EXPAND:
        (joining,) = pending.replica_ids
        member = next(m for m in request.new_isr if m.broker_id == joining)
        # Only a follower whose fetch carried the registration the leader knows may join.
        assert member.broker_epoch == cluster.leader_image[joining].broker_epoch
        assert not cluster.leader_image[joining].fenced
    cluster.in_flight = request


@given(st.booleans(), st.integers(1, 3), st.lists(operation, min_size=1, max_size=80))
def test_partition_state_invariants(fsync: bool, min_insync: int, operations: list[tuple]) -> None:  # type: ignore[type-arg]
    state = PartitionState(
        LEADER,
        replica_lag_time_max_ms=LAG_MS,
        min_insync_replicas=min_insync,
        acks_all_fsync=fsync,
        local_broker_epoch=10,
    )
    cluster = Cluster(state)
    cluster.publish()
    state.become_leader(1, 0, REPLICAS, REPLICAS, 0, log_end_offset=0, high_watermark=0)

    for op in operations:
        before = state.high_watermark
        kind = op[0]
        if kind == "append":
            cluster.leader_end += op[1]
            state.on_leader_append(cluster.leader_end, cluster.now)
        elif kind == "flush":
            state.on_leader_flush(cluster.leader_end, cluster.now)
        elif kind == "fetch":
            follower, advance = op[1], op[2]
            epoch = cluster.registration[follower].broker_epoch
            offset = cluster.follower_end[follower]
            result = state.update_follower_fetch(
                follower, epoch, offset, cluster.leader_end, cluster.now
            )
            assert result.error is None
            check_proposal(cluster, result.alter_partition)
            cluster.follower_end[follower] = min(cluster.leader_end, offset + advance)
        elif kind == "zombie_fetch":
            follower = op[1]
            stale = cluster.registration[follower].broker_epoch - 1
            result = state.update_follower_fetch(
                follower, stale, cluster.leader_end, cluster.leader_end, cluster.now
            )
            known = cluster.leader_image[follower]
            if not known.fenced and known.broker_epoch > stale:
                assert result.error is ErrorCode.not_leader_or_follower
            check_proposal(cluster, result.alter_partition)
        elif kind == "tick":
            cluster.now += op[1]
        elif kind == "shrink":
            check_proposal(cluster, state.maybe_shrink_isr(cluster.now))
        elif kind == "answer" and cluster.in_flight is not None:
            request, cluster.in_flight = cluster.in_flight, None
            if op[1]:
                answer, error = cluster.controller_answer(request)
            else:
                answer, error = None, ErrorCode.request_timed_out
            outcome = state.on_alter_partition_response(
                request, cluster.now, result=answer, error=error
            )
            if outcome.retry is not None:
                cluster.in_flight = outcome.retry
        elif kind == "restart":
            follower, lost_disk, seen = op[1], op[2], op[3]
            old = cluster.registration[follower]
            cluster.registration[follower] = BrokerMetadata(old.broker_epoch + 1, old.fenced)
            if lost_disk:
                cluster.follower_end[follower] = 0
            if seen:
                cluster.publish()
            if follower in cluster.committed:
                # KRaft fences the old registration and removes it from the ISR.
                del cluster.committed[follower]
                cluster.partition_epoch += 1
                cluster.in_flight = None
                cluster.publish()  # the same metadata carries the new registration
                state.become_leader(
                    1,
                    cluster.partition_epoch,
                    tuple(cluster.committed),
                    REPLICAS,
                    cluster.now,
                    log_end_offset=cluster.leader_end,
                    high_watermark=state.high_watermark,
                    flushed_offset=state.leader_flushed_offset,
                )
        elif kind == "fence":
            follower, fenced = op[1], op[2]
            old = cluster.registration[follower]
            cluster.registration[follower] = BrokerMetadata(old.broker_epoch, fenced)
            cluster.publish()
        elif kind == "publish":
            cluster.publish()

        # ---- invariants ----
        hw = state.high_watermark
        assert hw >= before
        assert hw <= cluster.leader_end
        if fsync:
            assert hw <= state.leader_flushed_offset
        if hw > before:
            for replica in state.maximal_isr - {LEADER}:
                replica_state = state.replica_state(replica)
                assert replica_state is not None
                assert hw <= replica_state.log_end_offset
        assert LEADER in state.isr
        assert LEADER in state.maximal_isr
        assert set(state.isr) == set(cluster.committed)
        for member, epoch in cluster.committed.items():
            if member != LEADER:
                assert epoch in (-1, cluster.registration[member].broker_epoch)
