"""The state table and the prepare/complete discipline of TransactionMetadata."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from odradek.coordinator.txn import (
    VALID_PREVIOUS_STATES,
    InvalidTransitionError,
    TopicPartition,
    TransactionMetadata,
    TransactionState,
    is_valid_transition,
)

S = TransactionState

# Kafka 4's TransactionState.validPreviousStates, spelled out by name (PrepareAbort from
# Empty/Complete* is transaction version 2's abort of an empty transaction).
KAFKA_TABLE = {
    "Empty": {"Empty", "CompleteCommit", "CompleteAbort"},
    "Ongoing": {"Ongoing", "Empty", "CompleteCommit", "CompleteAbort"},
    "PrepareCommit": {"Ongoing"},
    "PrepareAbort": {"Ongoing", "PrepareEpochFence", "Empty", "CompleteCommit", "CompleteAbort"},
    "CompleteCommit": {"PrepareCommit"},
    "CompleteAbort": {"PrepareAbort"},
    "Dead": {"Empty", "CompleteAbort", "CompleteCommit"},
    "PrepareEpochFence": {"Ongoing"},
}


def test_table_matches_kafka() -> None:
    assert {
        target.kafka_name: {state.kafka_name for state in previous}
        for target, previous in VALID_PREVIOUS_STATES.items()
    } == KAFKA_TABLE


def test_status_ids_and_names_are_kafkas() -> None:
    assert [(s.value, s.kafka_name) for s in S] == [
        (0, "Empty"),
        (1, "Ongoing"),
        (2, "PrepareCommit"),
        (3, "PrepareAbort"),
        (4, "CompleteCommit"),
        (5, "CompleteAbort"),
        (6, "Dead"),
        (7, "PrepareEpochFence"),
    ]
    assert all(S.from_kafka_name(s.kafka_name) is s for s in S)
    assert S.from_kafka_name("ongoing") is None


def metadata(state: TransactionState, epoch: int = 3) -> TransactionMetadata:
    return TransactionMetadata(
        transactional_id="tx",
        producer_id=10,
        last_producer_id=-1,
        producer_epoch=epoch,
        last_producer_epoch=-1,
        txn_timeout_ms=1000,
        state=state,
        topic_partitions=(frozenset() if state is S.EMPTY else frozenset({TopicPartition("t", 0)})),
        txn_start_timestamp=-1 if state is S.EMPTY else 5,
        txn_last_update_timestamp=5,
    )


@given(st.sampled_from(list(S)), st.sampled_from(list(S)))
def test_prepare_transition_follows_the_table(current: S, target: S) -> None:
    subject = metadata(current)
    if is_valid_transition(current, target):
        transit = subject.prepare_transition(target, update_timestamp=9)
        assert transit.state is target
        assert subject.pending_state is target
        assert subject.state is current  # nothing applied yet
    else:
        with pytest.raises(InvalidTransitionError):
            subject.prepare_transition(target, update_timestamp=9)
        assert subject.pending_state is None


def test_second_prepare_while_pending_is_refused() -> None:
    subject = metadata(S.ONGOING)
    subject.prepare_abort_or_commit(True, 10)
    with pytest.raises(InvalidTransitionError):
        subject.prepare_abort_or_commit(False, 11)


def test_abort_transition_leaves_metadata_unchanged() -> None:
    subject = metadata(S.ONGOING)
    before = subject.durable_view()
    subject.prepare_add_partitions([TopicPartition("u", 1)], 50)
    subject.abort_transition()
    assert subject.durable_view() == before
    assert subject.pending_state is None


def test_complete_requires_the_pending_state() -> None:
    subject = metadata(S.ONGOING)
    transit = subject.prepare_abort_or_commit(True, 10)
    subject.abort_transition()
    with pytest.raises(InvalidTransitionError):
        subject.complete_transition(transit)


def test_complete_rejects_a_transition_that_drops_partitions() -> None:
    subject = metadata(S.ONGOING)
    subject.prepare_add_partitions([TopicPartition("u", 1)], 50)
    bogus = dataclasses.replace(subject.durable_view(), topic_partitions=frozenset())
    with pytest.raises(InvalidTransitionError):
        subject.complete_transition(bogus)


def test_fence_goes_through_prepare_epoch_fence_to_prepare_abort() -> None:
    subject = metadata(S.ONGOING, epoch=3)
    transit = subject.prepare_fence_and_abort(20)
    assert (transit.state, transit.producer_epoch) == (S.PREPARE_ABORT, 4)
    assert subject.state is S.ONGOING
    subject.complete_transition(transit)
    assert (subject.state, subject.producer_epoch) == (S.PREPARE_ABORT, 4)


@pytest.mark.parametrize("state", [S.EMPTY, S.COMPLETE_COMMIT, S.PREPARE_COMMIT])
def test_fence_only_from_ongoing(state: S) -> None:
    with pytest.raises(InvalidTransitionError):
        metadata(state).prepare_fence_and_abort(20)


def test_fence_at_short_max_is_refused() -> None:
    with pytest.raises(InvalidTransitionError):
        metadata(S.ONGOING, epoch=32767).prepare_fence_and_abort(20)


def test_dead_is_never_completed() -> None:
    subject = metadata(S.EMPTY)
    transit = subject.prepare_dead()
    with pytest.raises(InvalidTransitionError):
        subject.complete_transition(transit)


def test_epoch_bump_with_an_exhausted_epoch_is_a_bug() -> None:
    with pytest.raises(InvalidTransitionError):
        metadata(S.EMPTY, epoch=32766).prepare_increment_producer_epoch(1000, None, 0)
