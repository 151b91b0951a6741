"""TransactionCoordinator: every operation and error code, checked against Kafka's behaviour."""

from __future__ import annotations

import pytest
from kio.schema.errors import ErrorCode
from txn_helpers import TIMEOUT_MS, Harness, offsets_partition_for, tps

from odradek.coordinator.txn import (
    TopicPartition,
    TransactionConfig,
    TransactionLogEntry,
    TransactionState,
    TxnTransitMetadata,
    decode_record,
    transaction_log_record,
)

E = ErrorCode
T0 = tps(("t", 0))
T01 = tps(("t", 0), ("t", 1), ("u", 3))


def log_entry(harness: Harness, index: int = -1) -> TransactionLogEntry:
    entry = decode_record(harness.log[index])
    assert isinstance(entry, TransactionLogEntry)
    return entry


# -- loading ----------------------------------------------------------------------------------


def test_requests_wait_for_start() -> None:
    from odradek.coordinator.txn import TransactionCoordinator

    coordinator = TransactionCoordinator(offsets_partition_for)
    assert coordinator.init_producer_id("a", 1000, 0)[0].error is E.coordinator_load_in_progress
    assert coordinator.init_producer_id(None, 1000, 0)[0].error is E.coordinator_load_in_progress
    assert coordinator.end_txn("a", 0, 0, True, 0)[0].error is E.coordinator_load_in_progress
    added, _ = coordinator.add_partitions_to_txn("a", 0, 0, T0, 0)
    assert added.partition_errors == {T0[0]: E.coordinator_load_in_progress}
    assert coordinator.list_transactions().error is E.coordinator_load_in_progress
    assert coordinator.describe_transactions(["a"])[0].error is E.coordinator_load_in_progress
    start, records = coordinator.start(0)
    # Still loading until the epoch record is appended.
    assert coordinator.init_producer_id("a", 1000, 0)[0].error is E.coordinator_load_in_progress
    assert start.write_id is not None
    coordinator.write_succeeded(start.write_id)
    assert coordinator.loaded
    assert coordinator.coordinator_epoch == 1
    assert len(records) == 1


def test_coordinator_epoch_increments_on_each_load() -> None:
    harness = Harness()
    assert harness.coordinator.coordinator_epoch == 1
    harness = harness.restart()
    assert harness.coordinator.coordinator_epoch == 2
    harness = harness.restart()
    assert harness.coordinator.coordinator_epoch == 3


def test_failed_start_can_be_retried() -> None:
    from odradek.coordinator.txn import TransactionCoordinator

    coordinator = TransactionCoordinator(offsets_partition_for)
    start, _ = coordinator.start(0)
    assert start.write_id is not None
    assert coordinator.write_failed(start.write_id, E.not_leader_or_follower) is E.not_coordinator
    assert not coordinator.loaded
    start, _ = coordinator.start(0)
    assert start.write_id is not None
    coordinator.write_succeeded(start.write_id)
    assert coordinator.loaded


def test_replay_after_start_is_refused() -> None:
    harness = Harness()
    with pytest.raises(RuntimeError):
        harness.coordinator.replay(harness.log[0])


def test_restart_resumes_prepared_transactions() -> None:
    harness = Harness()
    producer = harness.init("tx")
    harness.add("tx", producer, T01)
    ended = harness.end("tx", producer, commit=True)
    assert ended.markers is not None
    # crash before the markers were written
    harness = harness.restart(now_ms=5)
    (markers,) = harness.start.markers
    assert markers.commit
    assert markers.coordinator_epoch == 2 == harness.coordinator.coordinator_epoch
    assert markers.partitions == tuple(sorted(T01))
    assert (markers.producer_id, markers.producer_epoch) == (producer.producer_id, 0)
    assert harness.finish(markers, now_ms=6) is E.none
    assert harness.state_name("tx") == "CompleteCommit"


# -- InitProducerId -----------------------------------------------------------------------------


def test_idempotent_producer_gets_fresh_ids_with_epoch_zero() -> None:
    harness = Harness()
    first_result, first_records = harness.coordinator.init_producer_id(None, 0, 0)
    assert first_result.error is E.none
    assert first_result.producer_epoch == 0
    assert len(first_records) == 1  # the producer id block, before the id leaves
    harness.commit(first_result, first_records)
    second = harness.init(None)
    assert second.producer_id == first_result.producer_id + 1
    assert second.producer_epoch == 0
    assert second.write_id is None  # block already durable


def test_idempotent_producer_ignores_expected_id() -> None:
    harness = Harness()
    first = harness.init(None)
    again = harness.init(None, expected=(first.producer_id, 0))
    assert again.error is E.none
    assert again.producer_id != first.producer_id


def test_new_transactional_id_gets_epoch_zero_and_a_record() -> None:
    harness = Harness()
    result = harness.init("tx", now_ms=7, timeout_ms=5000)
    assert (result.error, result.producer_epoch) == (E.none, 0)
    entry = log_entry(harness)
    assert entry.transactional_id == "tx"
    assert entry.metadata is not None
    assert entry.metadata.state is TransactionState.EMPTY
    assert entry.metadata.producer_id == result.producer_id
    assert entry.metadata.txn_timeout_ms == 5000
    assert entry.metadata.txn_last_update_timestamp == 7
    assert entry.metadata.txn_start_timestamp == -1


def test_known_transactional_id_bumps_epoch() -> None:
    harness = Harness()
    first = harness.init("tx")
    second = harness.init("tx", timeout_ms=1234)
    assert second.producer_id == first.producer_id
    assert second.producer_epoch == 1
    metadata = harness.coordinator.transaction("tx")
    assert metadata is not None
    assert metadata.txn_timeout_ms == 1234


@pytest.mark.parametrize("transactional_id", [""])
def test_empty_transactional_id_is_invalid(transactional_id: str) -> None:
    assert Harness().init(transactional_id).error is E.invalid_request


@pytest.mark.parametrize("expected", [(5, -1), (-1, 0)])
def test_half_given_expected_producer_is_invalid(expected: tuple[int, int]) -> None:
    assert Harness().init("tx", expected=expected).error is E.invalid_request


@pytest.mark.parametrize("timeout_ms", [0, -1, 900_001])
def test_transaction_timeout_bounds(timeout_ms: int) -> None:
    result = Harness().init("tx", timeout_ms=timeout_ms)
    assert result.error is E.invalid_transaction_timeout
    assert Harness().init("tx", timeout_ms=900_000).error is E.none


def test_max_timeout_is_configurable() -> None:
    harness = Harness(TransactionConfig(transaction_max_timeout_ms=1000))
    assert harness.init("tx", timeout_ms=1001).error is E.invalid_transaction_timeout
    assert harness.init("tx", timeout_ms=1000).error is E.none


def _harness_with(metadata: TxnTransitMetadata, transactional_id: str = "tx") -> Harness:
    return Harness(log=[transaction_log_record(transactional_id, metadata)])


def _empty(producer_id: int, epoch: int, last_producer_id: int = -1) -> TxnTransitMetadata:
    return TxnTransitMetadata(
        producer_id=producer_id,
        last_producer_id=last_producer_id,
        producer_epoch=epoch,
        last_producer_epoch=-1,
        txn_timeout_ms=TIMEOUT_MS,
        state=TransactionState.EMPTY,
        topic_partitions=frozenset(),
        txn_start_timestamp=-1,
        txn_last_update_timestamp=0,
    )


def test_exhausted_epoch_rotates_the_producer_id() -> None:
    harness = _harness_with(_empty(producer_id=42, epoch=32765))
    bumped = harness.init("tx")
    assert (bumped.producer_id, bumped.producer_epoch) == (42, 32766)
    rotated = harness.init("tx")
    assert rotated.producer_id not in (42, -1)
    assert rotated.producer_epoch == 0
    metadata = harness.coordinator.transaction("tx")
    assert metadata is not None
    assert metadata.last_producer_id == 42


def test_kip360_retry_of_a_rotation_is_recognised() -> None:
    harness = _harness_with(_empty(producer_id=42, epoch=32766))
    rotated = harness.init("tx", expected=(42, 32766))
    assert rotated.error is E.none
    assert rotated.producer_epoch == 0
    new_id = rotated.producer_id
    # The response was lost; the producer retries with the old id and exhausted epoch.
    retried = harness.init("tx", expected=(42, 32766))
    assert retried.error is E.none
    assert (retried.producer_id, retried.producer_epoch) == (new_id, 0)


def test_kip360_epoch_bump_and_retry() -> None:
    harness = Harness()
    first = harness.init("tx")
    bumped = harness.init("tx", expected=(first.producer_id, 0))
    assert (bumped.error, bumped.producer_epoch) == (E.none, 1)
    # Lost response: the same request again returns the same epoch, no further bump.
    retried = harness.init("tx", expected=(first.producer_id, 0))
    assert (retried.error, retried.producer_epoch) == (E.none, 1)
    # A stale epoch (neither current nor last) is fenced.
    assert harness.init("tx", expected=(first.producer_id, 5)).error is E.producer_fenced
    # Someone else's producer id is fenced.
    assert harness.init("tx", expected=(first.producer_id + 99, 1)).error is E.producer_fenced


def test_kip360_after_a_new_producer_initialised_is_fenced() -> None:
    harness = Harness()
    first = harness.init("tx")
    harness.init("tx")  # a new instance, no expected epoch: last epoch forgotten
    assert harness.init("tx", expected=(first.producer_id, 0)).error is E.producer_fenced


def test_kip360_on_a_new_transactional_id_is_accepted() -> None:
    harness = Harness()
    result = harness.init("tx", expected=(12345, 3))
    assert (result.error, result.producer_epoch) == (E.none, 0)


def test_init_while_ongoing_fences_and_aborts_first() -> None:
    harness = Harness()
    producer = harness.init("tx")
    harness.add("tx", producer, T01, now_ms=10)
    result, records = harness.coordinator.init_producer_id("tx", TIMEOUT_MS, 20)
    assert result.error is E.concurrent_transactions
    assert result.markers is not None
    assert result.markers.commit is False
    assert result.markers.producer_epoch == 1  # old epoch + 1
    assert result.markers.partitions == tuple(sorted(T01))
    assert result.markers.coordinator_epoch == harness.coordinator.coordinator_epoch
    harness.commit(result, records)
    entry = log_entry(harness)
    assert entry.metadata is not None
    assert entry.metadata.state is TransactionState.PREPARE_ABORT
    assert entry.metadata.producer_epoch == 1
    # The old producer is fenced at once.
    assert harness.end("tx", producer, commit=True).error is E.producer_fenced
    # The client retries while the abort is in flight.
    assert harness.init("tx").error is E.concurrent_transactions
    assert harness.finish(result.markers, now_ms=30) is E.none
    assert harness.state_name("tx") == "CompleteAbort"
    retried = harness.init("tx", now_ms=40)
    assert (retried.error, retried.producer_epoch) == (E.none, 2)


def test_failed_fence_leaves_the_epoch_unbumped() -> None:
    harness = Harness()
    producer = harness.init("tx")
    harness.add("tx", producer, T0)
    result, records = harness.coordinator.init_producer_id("tx", TIMEOUT_MS, 20)
    assert harness.fail(result, records, E.request_timed_out) is E.coordinator_not_available
    metadata = harness.coordinator.transaction("tx")
    assert metadata is not None
    assert (metadata.state, metadata.producer_epoch) == (TransactionState.ONGOING, 0)
    assert harness.coordinator.pending_state("tx") is None


@pytest.mark.parametrize("commit", [True, False])
def test_init_while_prepared_is_concurrent(commit: bool) -> None:
    harness = Harness()
    producer = harness.init("tx")
    harness.add("tx", producer, T0)
    harness.end("tx", producer, commit=commit)
    assert harness.init("tx").error is E.concurrent_transactions


def test_init_while_a_write_is_pending_is_concurrent() -> None:
    harness = Harness()
    producer = harness.init("tx")
    pending, records = harness.coordinator.add_partitions_to_txn(
        "tx", producer.producer_id, 0, T0, 0
    )
    assert harness.init("tx").error is E.concurrent_transactions
    assert harness.end("tx", producer, commit=True).error is E.concurrent_transactions
    harness.commit(pending, records)
    assert harness.state_name("tx") == "Ongoing"


def test_failed_init_of_a_new_id_leaves_no_trace() -> None:
    harness = Harness()
    result, records = harness.coordinator.init_producer_id("tx", TIMEOUT_MS, 0)
    assert harness.fail(result, records, E.not_leader_or_follower) is E.not_coordinator
    assert harness.coordinator.transaction("tx") is None
    again = harness.init("tx")
    assert again.error is E.none
    assert again.producer_id != result.producer_id  # ids are skipped, never reused


# -- zombie fencing -----------------------------------------------------------------------------


def test_zombie_is_fenced_by_a_second_init() -> None:
    harness = Harness()
    zombie = harness.init("tx")
    harness.add("tx", zombie, T0)
    harness.finish(harness.end("tx", zombie, commit=True).markers)
    successor = harness.init("tx")
    assert successor.producer_epoch == zombie.producer_epoch + 1
    assert harness.add("tx", zombie, T01).error is E.producer_fenced
    assert harness.end("tx", zombie, commit=True).error is E.producer_fenced
    assert harness.end("tx", zombie, commit=False).error is E.producer_fenced
    added, _ = harness.coordinator.add_offsets_to_txn(
        "tx", zombie.producer_id, zombie.producer_epoch, "group", 0
    )
    assert added.error is E.producer_fenced
    assert harness.add("tx", successor, T01).error is E.none


def test_higher_epoch_than_current_is_fenced_too() -> None:
    harness = Harness()
    producer = harness.init("tx")
    assert harness.add("tx", (producer.producer_id, 7), T0).error is E.producer_fenced


# -- AddPartitionsToTxn / AddOffsetsToTxn -------------------------------------------------------


def test_add_partitions_unknown_or_mismatched_producer() -> None:
    harness = Harness()
    producer = harness.init("tx")
    assert harness.add("nope", producer, T0).error is E.invalid_producer_id_mapping
    wrong = harness.add("tx", (producer.producer_id + 1, 0), T01)
    assert wrong.error is E.invalid_producer_id_mapping
    assert wrong.partition_errors == dict.fromkeys(T01, E.invalid_producer_id_mapping)
    assert harness.add("", producer, T0).error is E.invalid_request


def test_add_partitions_starts_and_extends_a_transaction() -> None:
    harness = Harness()
    producer = harness.init("tx", now_ms=1)
    first = harness.add("tx", producer, T0, now_ms=100)
    assert first.error is E.none
    assert first.partition_errors == {T0[0]: E.none}
    metadata = harness.coordinator.transaction("tx")
    assert metadata is not None
    assert metadata.state is TransactionState.ONGOING
    assert metadata.txn_start_timestamp == 100
    harness.add("tx", producer, T01, now_ms=200)
    metadata = harness.coordinator.transaction("tx")
    assert metadata is not None
    assert metadata.topic_partitions == frozenset(T01)
    assert metadata.txn_start_timestamp == 100  # the transaction's start, not the last add
    assert metadata.txn_last_update_timestamp == 200


def test_add_partitions_already_added_writes_nothing() -> None:
    harness = Harness()
    producer = harness.init("tx")
    harness.add("tx", producer, T01)
    size = len(harness.log)
    result, records = harness.coordinator.add_partitions_to_txn(
        "tx", producer.producer_id, 0, T0, 5
    )
    assert (result.error, records, result.write_id) == (E.none, [], None)
    assert len(harness.log) == size


@pytest.mark.parametrize("commit", [True, False])
def test_add_partitions_while_prepared_is_concurrent(commit: bool) -> None:
    harness = Harness()
    producer = harness.init("tx")
    harness.add("tx", producer, T0)
    harness.end("tx", producer, commit=commit)
    assert harness.add("tx", producer, T01).error is E.concurrent_transactions


@pytest.mark.parametrize("commit", [True, False])
def test_add_partitions_after_completion_starts_a_new_transaction(commit: bool) -> None:
    harness = Harness()
    producer = harness.init("tx")
    harness.add("tx", producer, T01, now_ms=10)
    harness.finish(harness.end("tx", producer, commit=commit, now_ms=20).markers, now_ms=30)
    harness.add("tx", producer, T0, now_ms=40)
    metadata = harness.coordinator.transaction("tx")
    assert metadata is not None
    assert metadata.state is TransactionState.ONGOING
    assert metadata.topic_partitions == frozenset(T0)
    assert metadata.txn_start_timestamp == 40


def test_verify_only_checks_membership_and_writes_nothing() -> None:
    harness = Harness()
    producer = harness.init("tx")
    harness.add("tx", producer, T0)
    result, records = harness.coordinator.add_partitions_to_txn(
        "tx", producer.producer_id, 0, T01, 0, verify_only=True
    )
    assert records == []
    assert result.partition_errors == {
        TopicPartition("t", 0): E.none,
        TopicPartition("t", 1): E.transaction_abortable,
        TopicPartition("u", 3): E.transaction_abortable,
    }
    assert harness.state_name("tx") == "Ongoing"
    fenced, _ = harness.coordinator.add_partitions_to_txn(
        "tx", producer.producer_id, 1, T0, 0, verify_only=True
    )
    assert fenced.error is E.producer_fenced
    harness.end("tx", producer, commit=True)
    prepared, _ = harness.coordinator.add_partitions_to_txn(
        "tx", producer.producer_id, 0, T0, 0, verify_only=True
    )
    assert prepared.error is E.concurrent_transactions


def test_add_offsets_adds_the_groups_offsets_partition() -> None:
    harness = Harness()
    producer = harness.init("tx")
    result = harness.commit(
        *harness.coordinator.add_offsets_to_txn("tx", producer.producer_id, 0, "my-group", 3)
    )
    expected = TopicPartition("__consumer_offsets", offsets_partition_for("my-group"))
    assert (result.error, result.offsets_partition) == (E.none, expected)
    metadata = harness.coordinator.transaction("tx")
    assert metadata is not None
    assert metadata.topic_partitions == frozenset({expected})
    ended = harness.end("tx", producer, commit=True)
    assert ended.markers is not None
    assert ended.markers.partitions == (expected,)
    unknown, _ = harness.coordinator.add_offsets_to_txn("nope", 0, 0, "g", 0)
    assert unknown.error is E.invalid_producer_id_mapping


# -- EndTxn -------------------------------------------------------------------------------------


@pytest.mark.parametrize("commit", [True, False])
def test_end_txn_flow_with_records_and_markers(commit: bool) -> None:
    harness = Harness()
    producer = harness.init("tx")
    harness.add("tx", producer, T01, now_ms=10)
    result, records = harness.coordinator.end_txn("tx", producer.producer_id, 0, commit, 50)
    assert result.error is E.none
    assert len(records) == 1
    # Not applied until the append succeeds.
    assert harness.state_name("tx") == "Ongoing"
    harness.commit(result, records)
    prepared = log_entry(harness).metadata
    assert prepared is not None
    assert prepared.state is (
        TransactionState.PREPARE_COMMIT if commit else TransactionState.PREPARE_ABORT
    )
    assert prepared.topic_partitions == frozenset(T01)
    markers = result.markers
    assert markers is not None
    assert markers.commit is commit
    assert (markers.producer_id, markers.producer_epoch) == (producer.producer_id, 0)
    assert markers.coordinator_epoch == 1
    assert markers.partitions == tuple(sorted(T01))
    assert harness.finish(markers, now_ms=60) is E.none
    completed = log_entry(harness).metadata
    assert completed is not None
    assert completed.state is (
        TransactionState.COMPLETE_COMMIT if commit else TransactionState.COMPLETE_ABORT
    )
    assert completed.topic_partitions == frozenset()
    assert completed.txn_start_timestamp == 10
    assert completed.txn_last_update_timestamp == 60
    # markers_written again (a broker retry) is harmless
    assert harness.finish(markers) is E.none


@pytest.mark.parametrize("commit", [True, False])
def test_end_txn_retries(commit: bool) -> None:
    harness = Harness()
    producer = harness.init("tx")
    harness.add("tx", producer, T0)
    ended = harness.end("tx", producer, commit=commit)
    # Same outcome while markers are in flight: retriable.
    assert harness.end("tx", producer, commit=commit).error is E.concurrent_transactions
    # Opposite outcome: invalid.
    assert harness.end("tx", producer, commit=not commit).error is E.invalid_txn_state
    harness.finish(ended.markers)
    size = len(harness.log)
    assert harness.end("tx", producer, commit=commit).error is E.none
    assert len(harness.log) == size
    assert harness.end("tx", producer, commit=not commit).error is E.invalid_txn_state


@pytest.mark.parametrize("commit", [True, False])
def test_end_txn_without_a_transaction_is_invalid(commit: bool) -> None:
    harness = Harness()
    producer = harness.init("tx")
    assert harness.end("tx", producer, commit=commit).error is E.invalid_txn_state


def test_end_txn_unknown_or_fenced() -> None:
    harness = Harness()
    producer = harness.init("tx")
    harness.add("tx", producer, T0)
    assert harness.end("other", producer, commit=True).error is E.invalid_producer_id_mapping
    assert (
        harness.end("tx", (producer.producer_id + 1, 0), commit=True).error
        is E.invalid_producer_id_mapping
    )
    assert harness.end("tx", (producer.producer_id, 1), commit=True).error is E.producer_fenced
    assert harness.end("", producer, commit=True).error is E.invalid_request
    assert harness.state_name("tx") == "Ongoing"


def test_markers_written_with_a_stale_instruction() -> None:
    harness = Harness()
    producer = harness.init("tx")
    harness.add("tx", producer, T0)
    markers = harness.end("tx", producer, commit=True).markers
    assert markers is not None
    from dataclasses import replace

    stale = replace(markers, coordinator_epoch=markers.coordinator_epoch - 1)
    assert harness.finish(stale) is E.not_coordinator
    assert harness.finish(replace(markers, producer_epoch=9)) is E.producer_fenced
    assert harness.finish(replace(markers, commit=False)) is E.invalid_txn_state
    assert harness.finish(replace(markers, producer_id=999)) is E.invalid_producer_id_mapping
    assert harness.state_name("tx") == "PrepareCommit"


def test_failed_complete_write_can_be_retried() -> None:
    harness = Harness()
    producer = harness.init("tx")
    harness.add("tx", producer, T0)
    markers = harness.end("tx", producer, commit=True).markers
    assert markers is not None
    result, records = harness.coordinator.markers_written(markers, 5)
    harness.fail(result, records)
    assert harness.state_name("tx") == "PrepareCommit"
    assert harness.finish(markers, now_ms=6) is E.none
    assert harness.state_name("tx") == "CompleteCommit"


# -- timeouts and expiration ---------------------------------------------------------------------


def test_timed_out_transaction_is_aborted_and_the_producer_fenced() -> None:
    harness = Harness()
    producer = harness.init("tx", timeout_ms=1000)
    harness.add("tx", producer, T01, now_ms=100)
    assert harness.coordinator.next_deadline() == 1101
    assert harness.commit(*harness.coordinator.poll(1100)).aborts == ()  # strict: start+timeout<now
    polled = harness.commit(*harness.coordinator.poll(1101))
    (markers,) = polled.aborts
    assert markers.commit is False
    assert markers.producer_epoch == 1
    assert markers.partitions == tuple(sorted(T01))
    assert harness.state_name("tx") == "PrepareAbort"
    assert harness.coordinator.next_deadline() is None  # markers pending: nothing to time
    assert harness.end("tx", producer, commit=True).error is E.producer_fenced
    assert harness.add("tx", producer, T0).error is E.producer_fenced
    harness.finish(markers, now_ms=1200)
    assert harness.state_name("tx") == "CompleteAbort"
    # The application re-initialises and carries on at the next epoch.
    assert harness.init("tx", now_ms=1300).producer_epoch == 2


def test_poll_skips_transactions_with_a_pending_write() -> None:
    harness = Harness()
    producer = harness.init("tx", timeout_ms=1000)
    harness.add("tx", producer, T0, now_ms=0)
    pending = harness.coordinator.end_txn("tx", producer.producer_id, 0, True, 10)
    polled, records = harness.coordinator.poll(5000)
    assert (polled.aborts, records) == ((), [])
    harness.commit(*pending)


def test_transactional_id_expiration() -> None:
    config = TransactionConfig(transactional_id_expiration_ms=10_000)
    harness = Harness(config)
    harness.init("idle", now_ms=0)
    busy = harness.init("busy", now_ms=0)
    harness.add("busy", busy, T0, now_ms=5)
    assert harness.coordinator.next_deadline() == 10_000
    assert harness.commit(*harness.coordinator.poll(9_999)).expired == ()
    polled, records = harness.coordinator.poll(10_000)
    assert polled.expired == ("idle",)
    assert records[0].value is None  # tombstone
    # While the tombstone is pending the id still exists.
    assert harness.coordinator.transaction("idle") is not None
    harness.commit(polled, records)
    assert harness.coordinator.transaction("idle") is None
    assert harness.coordinator.describe_transactions(["idle"])[0].error is (
        E.transactional_id_not_found
    )
    # An expired id starts afresh.
    again = harness.init("idle", now_ms=20_000)
    assert again.producer_epoch == 0
    assert harness.restart().coordinator.transaction("busy") is not None


def test_failed_tombstone_keeps_the_id() -> None:
    harness = Harness(TransactionConfig(transactional_id_expiration_ms=10))
    harness.init("idle")
    polled, records = harness.coordinator.poll(100)
    harness.fail(polled, records)
    assert harness.coordinator.transaction("idle") is not None
    assert harness.coordinator.pending_state("idle") is None
    assert harness.commit(*harness.coordinator.poll(100)).expired == ("idle",)


def test_completed_transactions_expire_after_their_last_update() -> None:
    harness = Harness(TransactionConfig(transactional_id_expiration_ms=1000))
    producer = harness.init("tx", now_ms=0)
    harness.add("tx", producer, T0, now_ms=0)
    harness.finish(harness.end("tx", producer, commit=True, now_ms=10).markers, now_ms=500)
    assert harness.coordinator.next_deadline() == 1500


# -- Describe / List ----------------------------------------------------------------------------


def test_describe_transactions() -> None:
    harness = Harness()
    producer = harness.init("tx", timeout_ms=3000)
    harness.add("tx", producer, T01, now_ms=77)
    described = harness.coordinator.describe_transactions(["tx", "nope", ""])
    assert [d.error for d in described] == [
        E.none,
        E.transactional_id_not_found,
        E.invalid_request,
    ]
    tx = described[0]
    assert tx.transaction_state == "Ongoing"
    assert tx.transaction_timeout_ms == 3000
    assert tx.transaction_start_time_ms == 77
    assert (tx.producer_id, tx.producer_epoch) == (producer.producer_id, 0)
    assert tx.topics == (("t", (0, 1)), ("u", (3,)))


def test_list_transactions_filters() -> None:
    harness = Harness()
    a = harness.init("a")
    harness.init("b")
    harness.add("a", a, T0, now_ms=100)
    listed = harness.coordinator.list_transactions(now_ms=1000)
    assert [(t.transactional_id, t.transaction_state) for t in listed.transaction_states] == [
        ("a", "Ongoing"),
        ("b", "Empty"),
    ]
    ongoing = harness.coordinator.list_transactions(["Ongoing", "Bogus"], now_ms=1000)
    assert [t.transactional_id for t in ongoing.transaction_states] == ["a"]
    assert ongoing.unknown_state_filters == ("Bogus",)
    by_producer = harness.coordinator.list_transactions(producer_id_filters=[a.producer_id])
    assert [t.transactional_id for t in by_producer.transaction_states] == ["a"]
    long_running = harness.coordinator.list_transactions(
        ["Ongoing"], duration_filter_ms=900, now_ms=1000
    )
    assert long_running.transaction_states == ()
    long_running = harness.coordinator.list_transactions(
        ["Ongoing"], duration_filter_ms=899, now_ms=1000
    )
    assert [t.transactional_id for t in long_running.transaction_states] == ["a"]
    assert harness.coordinator.list_transactions(["Bogus"]).transaction_states == ()


# -- transaction version 2 (KIP-890 part 2) ----------------------------------------------------


def test_v2_end_txn_with_exhausted_epoch_moves_to_a_new_producer_id() -> None:
    harness = _harness_with(_empty(producer_id=42, epoch=32765))
    producer = harness.init("tx")
    assert (producer.producer_id, producer.producer_epoch) == (42, 32766)
    harness.commit(
        *harness.coordinator.add_partitions_to_txn(
            "tx", 42, 32766, T0, 0, client_transaction_version=2
        )
    )
    ended = harness.commit(
        *harness.coordinator.end_txn("tx", 42, 32766, True, 1, transaction_version=2)
    )
    assert ended.error == E.none
    assert ended.markers is not None
    # The markers fence the old id at Short.MaxValue; the producer continues as (new id, 0).
    assert (ended.markers.producer_id, ended.markers.producer_epoch) == (42, 32767)
    assert ended.producer_id not in (42, -1)
    assert ended.producer_epoch == 0
    assert harness.finish(ended.markers, 2) == E.none
    metadata = harness.coordinator.transaction("tx")
    assert metadata is not None
    assert (metadata.producer_id, metadata.producer_epoch) == (ended.producer_id, 0)
    assert metadata.state is TransactionState.COMPLETE_COMMIT
    # The retry of that EndTxn with the old id and epoch gets the same answer.
    retry, records = harness.coordinator.end_txn("tx", 42, 32766, True, 3, transaction_version=2)
    assert not records
    assert (retry.error, retry.producer_id, retry.producer_epoch) == (
        E.none,
        ended.producer_id,
        0,
    )
    # A replayed coordinator has the same state, next producer id and version included.
    replayed = harness.restart().coordinator.snapshot()
    assert replayed.transactions == harness.coordinator.snapshot().transactions
