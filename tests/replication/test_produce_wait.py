"""acks=all decisions: before the append, in purgatory, on expiry (Kafka 4's Partition)."""

from __future__ import annotations

from kio.schema.errors import ErrorCode

from odradek.replication.produce_wait import (
    ProduceWaitState,
    check_before_append,
    completion,
    effective_min_insync,
    expired,
)


def test_not_enough_replicas_before_the_append() -> None:
    assert check_before_append(isr_size=1, min_insync=2) is ErrorCode.not_enough_replicas
    assert check_before_append(isr_size=2, min_insync=2) is None
    assert check_before_append(isr_size=3, min_insync=2) is None


def test_the_effective_minimum_is_capped_at_the_replica_count() -> None:
    assert effective_min_insync(3, 2) == 2
    assert effective_min_insync(2, None) == 2
    assert check_before_append(isr_size=1, min_insync=2, replication_factor=1) is None


def test_pending_until_the_high_watermark_passes_the_batch() -> None:
    # A batch at offsets 10..14: the HW must reach 15.
    assert completion(14, 14, 3, 2).state is ProduceWaitState.PENDING
    done = completion(14, 15, 3, 2)
    assert done.is_done
    assert done.error is ErrorCode.none


def test_not_enough_replicas_after_append_only_once_the_hw_passed() -> None:
    assert completion(14, 10, 1, 2).state is ProduceWaitState.PENDING
    status = completion(14, 15, 1, 2)
    assert status.is_done
    assert status.error is ErrorCode.not_enough_replicas_after_append
    capped = completion(14, 15, 1, 2, replication_factor=1)
    assert capped.error is ErrorCode.none


def test_a_leader_that_lost_leadership_answers_not_leader() -> None:
    status = completion(14, 15, 3, 2, is_leader=False)
    assert status.is_done
    assert status.error is ErrorCode.not_leader_or_follower


def test_expiry_times_out_a_pending_wait_only() -> None:
    assert expired(completion(14, 10, 3, 2)).error is ErrorCode.request_timed_out
    done = completion(14, 15, 3, 2)
    assert expired(done) is done
