"""Divergence and truncation: the leader's Fetch check, the follower's cut, KIP-101/279 cases."""

from __future__ import annotations

import pytest
from kio.schema.errors import ErrorCode
from replication_helpers import ReplicaLog, replicate

from odradek.replication.truncation import (
    BatchPosition,
    DivergingEpoch,
    EpochEndOffset,
    FetchPosition,
    OffsetTruncationState,
    check_fetch_position,
    follower_high_watermark,
    initial_fetch_position,
    last_offset_for_leader_epoch,
    plan_follower_append,
    truncation_offset,
)
from odradek.storage.leader_epoch import EpochEntry, LeaderEpochFileCache


def cache_of(*entries: tuple[int, int]) -> LeaderEpochFileCache:
    cache = LeaderEpochFileCache()
    for epoch, offset in entries:
        cache.assign(epoch, offset)
    return cache


def leader_check(
    cache: LeaderEpochFileCache,
    fetch_offset: int,
    last_fetched_epoch: int | None,
    *,
    current_leader_epoch: int | None = 4,
    leader_epoch: int = 4,
    log_start_offset: int = 0,
    log_end_offset: int = 40,
    is_leader: bool = True,
) -> tuple[ErrorCode | None, DivergingEpoch | None]:
    check = check_fetch_position(
        cache,
        fetch_offset,
        last_fetched_epoch,
        current_leader_epoch=current_leader_epoch,
        leader_epoch=leader_epoch,
        is_leader=is_leader,
        log_start_offset=log_start_offset,
        log_end_offset=log_end_offset,
    )
    return check.error, check.diverging_epoch


# ---- leader side ----------------------------------------------------------------------------


LEADER_CACHE = ((0, 0), (2, 10), (4, 30))


def test_a_follower_on_the_leaders_history_reads_normally() -> None:
    cache = cache_of(*LEADER_CACHE)
    assert leader_check(cache, 40, 4) == (None, None)
    assert leader_check(cache, 25, 2) == (None, None)
    assert leader_check(cache, 30, 2) == (None, None)  # epoch 2 ends exactly at 30


def test_an_epoch_that_ends_earlier_on_the_leader_diverges() -> None:
    cache = cache_of(*LEADER_CACHE)
    assert leader_check(cache, 12, 0) == (None, DivergingEpoch(0, 10))
    assert leader_check(cache, 35, 2) == (None, DivergingEpoch(2, 30))


def test_an_epoch_the_leader_never_had_diverges_at_the_one_below() -> None:
    cache = cache_of(*LEADER_CACHE)
    assert leader_check(cache, 20, 3) == (None, DivergingEpoch(2, 30))
    assert leader_check(cache, 8, 1) == (None, DivergingEpoch(0, 10))


def test_a_follower_epoch_the_leader_cannot_place_is_out_of_range() -> None:
    cache = cache_of((2, 10), (4, 30))
    # Newer than anything the leader has (and not its latest): undefined.
    assert leader_check(cache, 40, 7, current_leader_epoch=None) == (
        ErrorCode.offset_out_of_range,
        None,
    )
    # Empty cache on the leader.
    assert leader_check(LeaderEpochFileCache(), 0, 1) == (ErrorCode.offset_out_of_range, None)


def test_fetch_offsets_outside_the_log_are_out_of_range() -> None:
    cache = cache_of(*LEADER_CACHE)
    assert leader_check(cache, 3, 0, log_start_offset=5) == (ErrorCode.offset_out_of_range, None)
    assert leader_check(cache, 41, None) == (ErrorCode.offset_out_of_range, None)
    assert leader_check(cache, 3, None, log_start_offset=5) == (
        ErrorCode.offset_out_of_range,
        None,
    )


@pytest.mark.parametrize(
    ("current_leader_epoch", "error"),
    [(3, ErrorCode.fenced_leader_epoch), (5, ErrorCode.unknown_leader_epoch)],
)
def test_kip_320_current_leader_epoch_checks(current_leader_epoch: int, error: ErrorCode) -> None:
    cache = cache_of(*LEADER_CACHE)
    assert leader_check(cache, 40, 4, current_leader_epoch=current_leader_epoch) == (error, None)
    answer = last_offset_for_leader_epoch(
        cache,
        40,
        2,
        current_leader_epoch=current_leader_epoch,
        leader_epoch=4,
        is_leader=True,
    )
    assert answer == EpochEndOffset(error)


def test_a_replica_fetch_to_a_non_leader_is_refused() -> None:
    cache = cache_of(*LEADER_CACHE)
    assert leader_check(cache, 40, 4, is_leader=False) == (ErrorCode.not_leader_or_follower, None)


def test_offset_for_leader_epoch_answers_clients_from_the_cache() -> None:
    cache = cache_of(*LEADER_CACHE)

    def ask(epoch: int) -> EpochEndOffset:
        return last_offset_for_leader_epoch(
            cache, 40, epoch, current_leader_epoch=None, leader_epoch=4, is_leader=True
        )

    assert ask(4) == EpochEndOffset(ErrorCode.none, 4, 40)
    assert ask(3) == EpochEndOffset(ErrorCode.none, 2, 30)
    assert ask(9) == EpochEndOffset(ErrorCode.none, -1, -1)
    not_leader = last_offset_for_leader_epoch(
        cache, 40, 2, current_leader_epoch=None, leader_epoch=4, is_leader=False
    )
    assert not_leader.error is ErrorCode.not_leader_or_follower


# ---- follower side --------------------------------------------------------------------------


def test_truncation_to_the_leaders_end_of_a_shared_epoch() -> None:
    follower = cache_of((0, 0), (2, 10))
    assert truncation_offset(2, 15, follower, 18, 5) == OffsetTruncationState(15, True)
    # The follower's own epoch ended earlier than the leader's answer: its end wins.
    follower = cache_of((0, 0), (2, 10), (3, 14))
    assert truncation_offset(2, 15, follower, 18, 5) == OffsetTruncationState(14, True)
    # Never past the follower's own log end.
    assert truncation_offset(3, 30, follower, 18, 5) == OffsetTruncationState(18, True)


def test_an_epoch_unknown_to_the_follower_cuts_to_its_own_older_epoch_and_asks_again() -> None:
    follower = cache_of((0, 0), (3, 5))
    assert truncation_offset(1, 6, follower, 8, 0) == OffsetTruncationState(5, False)


def test_an_epoch_older_than_the_followers_cache_truncates_to_the_leaders_offset() -> None:
    # The follower's cache places an epoch below all its entries as ending where its first
    # entry starts (Kafka's endOffsetFor), so the leader's offset wins if it is lower.
    follower = cache_of((5, 100))
    assert truncation_offset(2, 90, follower, 150, 0) == OffsetTruncationState(90, True)
    assert truncation_offset(2, 120, follower, 150, 0) == OffsetTruncationState(100, True)
    empty = LeaderEpochFileCache()
    assert truncation_offset(2, 90, empty, 150, 0) == OffsetTruncationState(90, True)


def test_undefined_answers_fall_back_as_kafka_does() -> None:
    follower = cache_of((0, 0))
    # No end offset: truncate to the initial fetch offset (the follower's HW).
    assert truncation_offset(-1, -1, follower, 50, 12) == OffsetTruncationState(12, True)
    # An offset without an epoch (OffsetForLeaderEpoch v0): the leader's offset.
    assert truncation_offset(-1, 30, follower, 50, 12) == OffsetTruncationState(30, True)
    assert truncation_offset(-1, 80, follower, 50, 12) == OffsetTruncationState(50, True)


def test_initial_fetch_position() -> None:
    assert initial_fetch_position(cache_of((0, 0), (2, 7)), 12, 9) == FetchPosition(12, 2)
    assert initial_fetch_position(LeaderEpochFileCache(), 12, 9) == FetchPosition(9, None, 9)


def test_plan_follower_append_collects_epoch_changes() -> None:
    batches = [
        BatchPosition(10, 12, 2),
        BatchPosition(13, 13, 2),
        BatchPosition(15, 19, 3),  # a compaction gap before it is fine
        BatchPosition(20, 21, 5),  # written after the epoch this fetch was sent in
    ]
    plan = plan_follower_append(10, batches, current_leader_epoch=4, last_fetched_epoch=2)
    assert plan.error is None
    assert plan.batch_count == 3
    assert plan.epoch_entries == (EpochEntry(3, 15),)
    assert (plan.next_fetch_offset, plan.last_fetched_epoch) == (20, 3)


def test_plan_follower_append_refuses_offsets_behind_the_log() -> None:
    plan = plan_follower_append(10, [BatchPosition(8, 12, 2)], 4, 2)
    assert plan.error is ErrorCode.offset_out_of_range
    assert plan.batch_count == 0
    out_of_order = [BatchPosition(10, 12, 2), BatchPosition(11, 14, 2)]
    assert plan_follower_append(10, out_of_order, 4, 2).error is ErrorCode.offset_out_of_range


def test_follower_high_watermark_is_clamped_to_the_local_log() -> None:
    assert follower_high_watermark(30, 0, 20) == 20
    assert follower_high_watermark(15, 0, 20) == 15
    assert follower_high_watermark(3, 5, 20) == 5


# ---- scenarios --------------------------------------------------------------------------------


def test_kip_101_scenario_1_a_stale_high_watermark_does_not_lose_committed_data() -> None:
    # A leads epoch 0 with m1, m2; B has both, but the HW that reached B is still 1 when B
    # restarts. Truncating to that HW would drop m2; if A then dies, m2 (committed: A's HW
    # was 2) is gone. With epochs B keeps it.
    a = ReplicaLog(1)
    b = ReplicaLog(2)
    a.append_as_leader(0, "m1", "m2")
    replicate(b, a, leader_epoch=0)
    a.high_watermark = 2
    b.high_watermark = 1

    # B restarts and follows A again: no truncation, its epoch says it is on A's history.
    position = initial_fetch_position(b.cache, b.log_end_offset, b.high_watermark)
    assert position.truncate_to is None
    assert replicate(b, a, leader_epoch=1) == []

    # A dies; B leads epoch 1 and still has m2.
    b.append_as_leader(1, "m3")
    assert b.values == ["m1", "m2", "m3"]


def test_kip_101_scenario_2_replicas_that_diverged_are_made_identical() -> None:
    # A (leader, epoch 0) wrote m1, m2; B only got m1. Both lose power; B comes back first,
    # leads epoch 1 and writes m3 at offset 1. A returns as a follower with m2 at offset 1:
    # with HW truncation its log would keep m2 where B has m3. The diverging epoch cuts it.
    a = ReplicaLog(1)
    b = ReplicaLog(2)
    a.append_as_leader(0, "m1", "m2")
    b.epochs, b.values = [0], ["m1"]
    b.cache.assign(0, 0)
    a.high_watermark = 2
    b.append_as_leader(1, "m3")

    truncations = replicate(a, b, leader_epoch=1)
    assert truncations == [1]
    assert a.records() == b.records() == [(0, "m1"), (1, "m3")]


def test_kip_279_leader_changes_twice_quickly() -> None:
    # Three replicas. Epoch 0 (leader A): m0..m2 reach everyone.
    a, b, c = ReplicaLog(1), ReplicaLog(2), ReplicaLog(3)
    a.append_as_leader(0, "m0", "m1", "m2")
    replicate(b, a, 0)
    replicate(c, a, 0)
    # Epoch 1 (leader B): b3, b4 reach C only... then B fails before C fetched b5.
    b.append_as_leader(1, "b3", "b4", "b5")
    c.epochs += [1, 1]
    c.values += ["b3", "b4"]
    c.cache.assign(1, 3)
    # Epoch 2 (leader A, which never saw epoch 1): a3 and a4 are not replicated; A fails.
    a.append_as_leader(2, "a3", "a4")
    # Epoch 3 (leader C): writes c5, c6.
    c.append_as_leader(3, "c5", "c6")

    # A returns: its epoch 2 is unknown to C, which answers with epoch 1; A never had epoch
    # 1, so it first cuts to the end of its own epoch 0 (truncation not final) and asks
    # again; C then says epoch 0 ends at 3, which is where A already is.
    assert replicate(a, c, leader_epoch=3) == [3]
    # B returns: it has epoch 1 up to offset 6, C has epoch 1 only up to 5.
    assert replicate(b, c, leader_epoch=3) == [5]

    expected = [(0, "m0"), (0, "m1"), (0, "m2"), (1, "b3"), (1, "b4"), (3, "c5"), (3, "c6")]
    assert a.records() == b.records() == c.records() == expected
    for replica in (a, b):
        assert replica.cache.epoch_entries() == c.cache.epoch_entries()


def test_kip_279_follower_holding_an_epoch_the_leader_never_had_needs_two_rounds() -> None:
    follower = ReplicaLog(2)
    follower.epochs = [0] * 5 + [3] * 3
    follower.values = [f"f{i}" for i in range(8)]
    follower.cache.assign(0, 0)
    follower.cache.assign(3, 5)
    leader = ReplicaLog(1)
    leader.epochs = [0] * 3 + [1] * 3 + [4] * 2
    leader.values = ["f0", "f1", "f2", "l3", "l4", "l5", "l6", "l7"]
    for epoch, offset in ((0, 0), (1, 3), (4, 6)):
        leader.cache.assign(epoch, offset)

    # Round 1: the leader answers epoch 1 (its largest <= 3), unknown to the follower, which
    # cuts to the end of its epoch 0 (5), not final. Round 2: epoch 0 ends at 3 on the leader.
    assert replicate(follower, leader, leader_epoch=4) == [5, 3]
    assert follower.records() == leader.records()
