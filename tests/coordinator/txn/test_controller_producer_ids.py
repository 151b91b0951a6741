"""ControllerProducerIdManager: a cluster member's producer ids come only from the controller's
AllocateProducerIds blocks (KIP-730, Kafka's RPCProducerIdManager)."""

from __future__ import annotations

import pytest
from kio.schema.errors import ErrorCode

from odradek.coordinator.txn import (
    ControllerProducerIdManager,
    ProducerIdsUnavailableError,
    TransactionCoordinator,
)


def test_no_id_before_the_first_block() -> None:
    manager = ControllerProducerIdManager()
    assert manager.wants_block()
    with pytest.raises(ProducerIdsUnavailableError):
        manager.allocate()


def test_a_used_up_block_waits_for_the_next_never_a_local_one() -> None:
    manager = ControllerProducerIdManager()
    manager.install_block(5000, 10)
    assert [manager.allocate()[0] for _ in range(10)] == list(range(5000, 5010))
    # A single broker would reserve [5010, 6010) itself: another broker's block, perhaps.
    with pytest.raises(ProducerIdsUnavailableError):
        manager.allocate()
    manager.install_block(9000, 10)
    assert manager.allocate() == (9000, None)


def test_the_next_block_is_asked_for_at_ninety_percent() -> None:
    manager = ControllerProducerIdManager()
    manager.install_block(0, 100)
    for _ in range(89):
        manager.allocate()
    assert not manager.wants_block()
    manager.allocate()
    assert manager.wants_block()
    # The prefetched block waits until the current one is used up.
    manager.install_block(300, 100)
    assert not manager.wants_block()
    assert [manager.allocate()[0] for _ in range(11)] == [*range(90, 100), 300]


def test_replayed_block_records_do_not_move_the_allocator() -> None:
    manager = ControllerProducerIdManager()
    manager.install_block(2000, 1000)
    manager.replay_block(50_000)
    manager.observe(70_000)
    assert manager.allocate() == (2000, None)


def test_init_producer_id_is_retriable_while_no_block_is_in_hand() -> None:
    manager = ControllerProducerIdManager()
    coordinator = TransactionCoordinator(lambda group: 0, producer_ids=manager)
    start, _records = coordinator.start(0, coordinator_epoch=7)
    assert start.coordinator_epoch == 7
    assert start.write_id is not None
    coordinator.write_succeeded(start.write_id)
    result, records = coordinator.init_producer_id("copier", 60_000, 0)
    assert (result.error, records) == (ErrorCode.coordinator_load_in_progress, [])
    assert coordinator.transaction("copier") is None
    manager.install_block(4000, 1000)
    result, _records = coordinator.init_producer_id("copier", 60_000, 0)
    assert (result.error, result.producer_id) == (ErrorCode.none, 4000)
