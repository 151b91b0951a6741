"""The leader's partition state: HW over the maximal ISR, ISR expand/shrink, AlterPartition."""

from __future__ import annotations

import pytest
from kio.schema.errors import ErrorCode
from replication_helpers import LAG_MS, LEADER, REPLICAS, accept, brokers, make_leader

from odradek.replication.partition_state import (
    AlterPartitionRequest,
    BrokerMetadata,
    FollowerFetchResult,
    IsrChangeKind,
    IsrMember,
    LeaderAndIsr,
    PartitionState,
)
from odradek.replication.produce_wait import ProduceWaitState, expired

EPOCH = 100  # every broker's registration epoch in `brokers()`


def fetch(
    state: PartitionState, replica: int, offset: int, now_ms: int, epoch: int = EPOCH
) -> FollowerFetchResult:
    return state.update_follower_fetch(replica, epoch, offset, state.leader_log_end_offset, now_ms)


# ---- the high watermark -------------------------------------------------------------------------


def test_hw_is_the_minimum_log_end_offset_over_the_isr() -> None:
    state = make_leader()
    state.on_leader_append(10, now_ms=1)
    assert state.high_watermark == 0  # followers have not fetched in this epoch
    assert fetch(state, 2, 10, 2).high_watermark == 0
    result = fetch(state, 3, 6, 3)
    assert result.high_watermark_changed
    assert state.high_watermark == 6
    fetch(state, 3, 10, 4)
    assert state.high_watermark == 10


def test_hw_never_moves_backwards_on_the_leader() -> None:
    state = make_leader(isr=(LEADER, 2))
    state.on_leader_append(10, 1)
    fetch(state, 2, 10, 2)
    assert state.high_watermark == 10
    fetch(state, 2, 4, 3)  # a follower that truncated reports less
    assert state.high_watermark == 10


def test_a_new_leader_keeps_its_log_hw_until_followers_fetch() -> None:
    state = make_leader(log_end_offset=50, high_watermark=30)
    assert state.high_watermark == 30
    assert state.leader_epoch_start_offset == 50
    # KIP-207: "latest" is not available while the HW lags the epoch's start.
    assert state.list_offsets_error(isolation_level_given=True) is ErrorCode.offset_not_available
    assert state.list_offsets_error(isolation_level_given=False) is None
    fetch(state, 2, 50, 1)
    fetch(state, 3, 50, 1)
    assert state.high_watermark == 50
    assert state.list_offsets_error(isolation_level_given=True) is None


def test_hw_is_frozen_while_the_isr_is_below_min_insync() -> None:
    # Kafka 4 (KAFKA-15583): strict min.insync.replicas, whatever the acks.
    state = make_leader(isr=(LEADER,), min_insync=2)
    assert state.is_under_min_isr
    state.on_leader_append(5, 1)
    assert state.high_watermark == 0
    assert state.check_before_append(acks=-1) is ErrorCode.not_enough_replicas
    assert state.check_before_append(acks=1) is None


def test_min_insync_above_the_replica_count_is_capped() -> None:
    state = make_leader(isr=(LEADER,), replicas=(LEADER,), min_insync=2)
    assert state.effective_min_insync == 1
    assert state.check_before_append(acks=-1) is None
    state.on_leader_append(5, 1)
    assert state.high_watermark == 5


def test_with_fsync_the_leader_counts_only_its_flushed_offset() -> None:
    state = make_leader(fsync=True)
    state.on_leader_append(10, 1)
    fetch(state, 2, 10, 2)
    fetch(state, 3, 10, 2)
    assert state.high_watermark == 0  # nothing flushed on the leader yet
    assert state.on_leader_flush(6, 3)
    assert state.high_watermark == 6
    assert state.on_leader_flush(10, 4)
    assert state.high_watermark == 10


def test_without_fsync_the_page_cache_counts() -> None:
    state = make_leader(fsync=False)
    state.on_leader_append(10, 1)
    fetch(state, 2, 10, 2)
    fetch(state, 3, 10, 2)
    assert state.high_watermark == 10


# ---- ISR expansion ------------------------------------------------------------------------------


def test_a_follower_rejoins_when_it_reaches_the_hw_and_the_epoch_start() -> None:
    state = make_leader(isr=(LEADER, 2), log_end_offset=20, high_watermark=20)
    state.on_leader_append(30, 1)
    fetch(state, 2, 30, 2)
    assert state.high_watermark == 30
    # Follower 3 is behind the epoch's start offset (20): not yet.
    assert fetch(state, 3, 15, 3).alter_partition is None
    result = fetch(state, 3, 30, 4)
    assert result.alter_partition is not None
    assert result.alter_partition.new_isr == (
        IsrMember(1, 100),
        IsrMember(2, EPOCH),
        IsrMember(3, EPOCH),
    )
    assert state.pending_isr_change is not None
    assert state.pending_isr_change.kind is IsrChangeKind.EXPAND
    assert state.isr == {1, 2}
    assert state.maximal_isr == {1, 2, 3}
    accept(state, result.alter_partition, 5)
    assert state.isr == {1, 2, 3}
    assert state.pending_isr_change is None
    assert state.partition_epoch == 1


def test_a_returning_follower_rejoins_under_continuous_load() -> None:
    # The leader appends between every two fetches, so the follower never reaches the
    # leader's log end offset. It reaches the HW, because a caught-up, eligible replica
    # holds the HW back while it waits to join (Kafka's shouldWaitForReplicaToJoinIsr).
    state = make_leader(isr=(LEADER,), replicas=(LEADER, 2), log_end_offset=1000)
    state.on_leader_append(1000, 0)
    follower_end = 0
    proposal = None
    for tick in range(1, 20):
        now = tick * 100
        state.on_leader_append(state.leader_log_end_offset + 10, now)
        leader_end = state.leader_log_end_offset
        assert follower_end < leader_end
        result = state.update_follower_fetch(2, EPOCH, follower_end, leader_end, now)
        if result.alter_partition is not None:
            proposal = result.alter_partition
            break
        follower_end = leader_end  # the response carries everything up to the leader's end
    assert proposal is not None
    assert proposal.isr == (1, 2)
    assert state.high_watermark <= follower_end


def test_without_waiting_for_the_replica_it_would_chase_the_hw_forever() -> None:
    # The same load with the follower not eligible (fenced): the HW follows the leader's log
    # end offset, the follower is always behind it, and no expansion is ever proposed.
    state = make_leader(isr=(LEADER,), replicas=(LEADER, 2), log_end_offset=1000)
    state.on_metadata_update({1: BrokerMetadata(100), 2: BrokerMetadata(EPOCH, fenced=True)}, 0)
    follower_end = 0
    for tick in range(1, 20):
        now = tick * 100
        state.on_leader_append(state.leader_log_end_offset + 10, now)
        result = state.update_follower_fetch(
            2, EPOCH, follower_end, state.leader_log_end_offset, now
        )
        assert result.alter_partition is None
        assert state.high_watermark == state.leader_log_end_offset
        follower_end = state.leader_log_end_offset


@pytest.mark.parametrize(
    "registration",
    [
        None,  # not registered (not alive)
        BrokerMetadata(EPOCH, fenced=True),
        BrokerMetadata(EPOCH, in_controlled_shutdown=True),
        BrokerMetadata(EPOCH - 1),  # restarted: this image still holds the old registration
    ],
)
def test_an_ineligible_follower_does_not_join(registration: BrokerMetadata | None) -> None:
    state = make_leader(isr=(LEADER, 2))
    image = brokers(1, 2)
    if registration is not None:
        image[3] = registration
    state.on_metadata_update(image, 0)
    result = fetch(state, 3, 0, 1)
    assert result.error is None
    assert result.alter_partition is None
    assert state.maximal_isr == {1, 2}


def test_a_fetch_with_a_stale_broker_epoch_is_refused() -> None:
    state = make_leader()
    state.on_metadata_update({**brokers(1, 2), 3: BrokerMetadata(EPOCH + 1)}, 0)
    result = fetch(state, 3, 0, 1, epoch=EPOCH)
    assert result.error is ErrorCode.not_leader_or_follower
    assert state.replica_state(3) is not None
    assert state.replica_state(3).broker_epoch is None  # type: ignore[union-attr]


def test_fetches_from_strangers_and_to_non_leaders_are_refused() -> None:
    state = make_leader()
    assert fetch(state, 9, 0, 1).error is ErrorCode.unknown_leader_epoch
    state.become_follower(2, 2, 1, REPLICAS)
    assert fetch(state, 3, 0, 1).error is ErrorCode.not_leader_or_follower


# ---- ISR shrink ---------------------------------------------------------------------------------


def test_a_stalled_follower_leaves_the_isr_after_the_lag_time() -> None:
    state = make_leader(min_insync=2)
    state.on_leader_append(10, 0)
    fetch(state, 2, 10, 1)
    fetch(state, 3, 10, 1)
    assert state.high_watermark == 10
    # Follower 3 stalls; follower 2 keeps up.
    state.on_leader_append(20, 2)
    fetch(state, 2, 20, 3)
    assert state.high_watermark == 10
    assert state.maybe_shrink_isr(LAG_MS) is None  # not lagging for long enough yet
    request = state.maybe_shrink_isr(LAG_MS + 2)
    assert request is not None
    assert request.isr == (1, 2)
    # While the shrink is in flight the maximal ISR still holds 3: the HW waits.
    assert state.maximal_isr == {1, 2, 3}
    fetch(state, 2, 20, LAG_MS + 3)
    assert state.high_watermark == 10
    accept(state, request, LAG_MS + 4)
    assert state.isr == {1, 2}
    assert state.high_watermark == 20


def test_a_follower_fetching_at_the_leaders_end_is_never_out_of_sync() -> None:
    state = make_leader()
    state.on_leader_append(5, 0)
    fetch(state, 2, 5, 1)
    fetch(state, 3, 5, 1)
    assert state.out_of_sync_replicas(10 * LAG_MS) == set()


def test_one_isr_change_in_flight() -> None:
    state = make_leader(isr=(LEADER,))
    state.on_leader_append(10, 0)
    first = fetch(state, 2, 10, 1).alter_partition
    assert first is not None
    # Another caught-up follower waits for the first change to complete.
    assert fetch(state, 3, 10, 2).alter_partition is None
    assert state.maybe_shrink_isr(10 * LAG_MS) is None
    assert state.maximal_isr == {1, 2}
    accept(state, first, 3)
    second = fetch(state, 3, 10, 4).alter_partition
    assert second is not None
    assert second.isr == (1, 2, 3)
    assert second.partition_epoch == 1


# ---- AlterPartition answers ---------------------------------------------------------------------


def pending_expansion() -> tuple[PartitionState, AlterPartitionRequest]:
    state = make_leader(isr=(LEADER, 2))
    state.on_leader_append(10, 0)
    fetch(state, 2, 10, 1)
    request = fetch(state, 3, 10, 1).alter_partition
    assert request is not None
    return state, request


@pytest.mark.parametrize("error", [ErrorCode.operation_not_attempted, ErrorCode.ineligible_replica])
def test_a_change_the_controller_did_not_apply_is_dropped(error: ErrorCode) -> None:
    state, request = pending_expansion()
    outcome = state.on_alter_partition_response(request, 2, error=error)
    assert outcome.reset
    assert state.pending_isr_change is None
    assert state.maximal_isr == {1, 2}


@pytest.mark.parametrize(
    "error",
    [
        ErrorCode.fenced_leader_epoch,
        ErrorCode.invalid_update_version,
        ErrorCode.new_leader_elected,
        ErrorCode.unknown_topic_or_partition,
    ],
)
def test_non_retriable_errors_stay_pending_until_metadata(error: ErrorCode) -> None:
    state, request = pending_expansion()
    outcome = state.on_alter_partition_response(request, 2, error=error)
    assert not outcome.reset
    assert outcome.retry is None
    assert state.pending_isr_change is not None
    # New metadata settles it.
    state.become_leader(2, 3, (1, 2), REPLICAS, 3, log_end_offset=10, high_watermark=10)
    assert state.pending_isr_change is None


def test_other_errors_are_retried() -> None:
    state, request = pending_expansion()
    outcome = state.on_alter_partition_response(request, 2, error=ErrorCode.request_timed_out)
    assert outcome.retry == request


def test_stale_answers_are_ignored() -> None:
    state, request = pending_expansion()
    wrong_epoch = LeaderAndIsr(LEADER, 7, (1, 2, 3), 5)
    assert state.on_alter_partition_response(request, 2, result=wrong_epoch).ignored
    assert state.pending_isr_change is not None
    state.partition_epoch = 4
    old_version = LeaderAndIsr(LEADER, 1, (1, 2, 3), 3)
    assert state.on_alter_partition_response(request, 2, result=old_version).ignored
    # An answer to a request that is no longer pending.
    state.become_leader(1, 5, (1, 2), REPLICAS, 3, log_end_offset=10, high_watermark=10)
    assert state.on_alter_partition_response(request, 2, result=old_version).ignored


# ---- role changes -------------------------------------------------------------------------------


def test_become_leader_with_an_older_partition_epoch_is_ignored() -> None:
    state = make_leader()
    state.become_leader(1, 3, REPLICAS, REPLICAS, 1, log_end_offset=0, high_watermark=0)
    result = state.become_leader(2, 2, REPLICAS, REPLICAS, 1, log_end_offset=0, high_watermark=0)
    assert not result.applied
    assert state.leader_epoch == 1


def test_a_new_leader_epoch_starts_at_the_log_end_offset() -> None:
    state = make_leader(log_end_offset=7, high_watermark=7)
    result = state.become_leader(3, 1, REPLICAS, REPLICAS, 5, log_end_offset=12, high_watermark=7)
    assert result.applied
    assert not result.is_new_leader
    assert result.epoch_start == (3, 12)
    assert state.leader_epoch_start_offset == 12
    same_epoch = state.become_leader(
        3, 2, REPLICAS, REPLICAS, 6, log_end_offset=12, high_watermark=7
    )
    assert same_epoch.epoch_start is None


def test_become_follower_reports_a_new_leader_epoch() -> None:
    state = make_leader()
    assert state.become_follower(2, 2, 1, REPLICAS)
    assert not state.is_leader
    assert state.isr == frozenset()
    assert not state.become_follower(2, 2, 1, REPLICAS)
    assert not state.become_follower(3, 5, 0, REPLICAS)  # older partition epoch
    assert state.check_current_leader_epoch(1) is ErrorCode.fenced_leader_epoch
    assert state.check_current_leader_epoch(3) is ErrorCode.unknown_leader_epoch
    assert state.check_current_leader_epoch(2) is ErrorCode.none
    assert state.check_current_leader_epoch(None) is ErrorCode.none


# ---- acks=all through the partition -------------------------------------------------------------


def test_acks_all_completes_when_the_hw_passes_the_batch() -> None:
    state = make_leader(min_insync=2)
    assert state.check_before_append(-1) is None
    state.on_leader_append(5, 0)  # a batch at offsets 0..4
    assert state.produce_completion(4).state is ProduceWaitState.PENDING
    fetch(state, 2, 5, 1)
    assert state.produce_completion(4).state is ProduceWaitState.PENDING
    fetch(state, 3, 5, 1)
    status = state.produce_completion(4)
    assert status.is_done
    assert status.error is ErrorCode.none


def test_an_isr_falling_below_min_insync_while_waiting_ends_in_a_timeout() -> None:
    state = make_leader(min_insync=2, isr=(LEADER, 2))
    assert state.check_before_append(-1) is None
    state.on_leader_append(5, 0)
    # Follower 2 stalls and is removed; the ISR is {1} < 2: the HW stops.
    request = state.maybe_shrink_isr(LAG_MS + 1)
    assert request is not None
    accept(state, request, LAG_MS + 1)
    state.on_leader_flush(5, LAG_MS + 2)
    assert state.high_watermark == 0
    waiting = state.produce_completion(4)
    assert waiting.state is ProduceWaitState.PENDING
    assert expired(waiting).error is ErrorCode.request_timed_out
    assert state.check_before_append(-1) is ErrorCode.not_enough_replicas


def test_not_enough_replicas_after_append_when_the_isr_shrank_after_the_hw_passed() -> None:
    state = make_leader(min_insync=2, isr=(LEADER, 2))
    state.on_leader_append(5, 0)
    fetch(state, 2, 5, 1)
    assert state.high_watermark == 5
    state.on_leader_append(8, 2)  # a later batch that follower 2 never fetches
    request = state.maybe_shrink_isr(LAG_MS + 10)  # 2 stalls before the first check runs
    assert request is not None
    accept(state, request, LAG_MS + 10)
    status = state.produce_completion(4)
    assert status.is_done
    assert status.error is ErrorCode.not_enough_replicas_after_append
