"""Transactional offsets (TxnOffsetCommit) in the group coordinator: staged per producer id,
published by a COMMIT marker, dropped by an ABORT, rebuilt by replay, checked per KIP-447."""

from __future__ import annotations

from kio.schema.errors import ErrorCode

from odradek.coordinator.group import (
    ClassicGroup,
    GroupConfig,
    GroupCoordinator,
    PartitionCommit,
    TxnCommitRequest,
)
from odradek.coordinator.group.state import ClassicGroupState


def commit_request(
    group_id: str = "g",
    producer_id: int = 7,
    offset: int = 10,
    generation_id: int = -1,
    member_id: str = "",
) -> TxnCommitRequest:
    return TxnCommitRequest(
        transactional_id="tx",
        group_id=group_id,
        producer_id=producer_id,
        producer_epoch=0,
        generation_id=generation_id,
        member_id=member_id,
        group_instance_id=None,
        offsets={"t": {0: PartitionCommit(offset, -1, "m")}},
    )


def stage(coordinator: GroupCoordinator, request: TxnCommitRequest) -> ErrorCode:
    result = coordinator.txn_commit_offsets(1, request, now_ms=100)
    assert result.producer_id == request.producer_id
    for record in result.records:
        coordinator.replay(record.key, record.value, 100, result.producer_id)
    ((_reference, response),) = result.responses
    return ErrorCode(response.errors["t"][0])


def committed(coordinator: GroupCoordinator, group_id: str = "g") -> int | None:
    _error, offsets = coordinator.fetch_offsets(group_id, {"t": [0]})
    value = offsets["t"][0]
    return None if value is None else value.offset


def test_commit_marker_publishes_and_abort_drops() -> None:
    coordinator = GroupCoordinator(GroupConfig())
    partition = coordinator.partition_for("g")
    assert stage(coordinator, commit_request(offset=10)) == ErrorCode.none
    assert committed(coordinator) is None
    assert coordinator.has_pending_txn_offset("g", "t", 0)
    coordinator.complete_transaction(7, commit=True, partition=partition)
    assert committed(coordinator) == 10
    assert not coordinator.has_pending_txn_offset("g", "t", 0)
    assert stage(coordinator, commit_request(offset=20)) == ErrorCode.none
    coordinator.complete_transaction(7, commit=False, partition=partition)
    assert committed(coordinator) == 10
    assert coordinator.pending_txn_offsets == {}


def test_marker_on_another_partition_leaves_the_offsets_staged() -> None:
    coordinator = GroupCoordinator(GroupConfig())
    partition = coordinator.partition_for("g")
    stage(coordinator, commit_request())
    coordinator.complete_transaction(7, commit=True, partition=(partition + 1) % 50)
    assert committed(coordinator) is None
    coordinator.complete_transaction(8, commit=True, partition=partition)  # another producer
    assert committed(coordinator) is None
    coordinator.complete_transaction(7, commit=True, partition=partition)
    assert committed(coordinator) == 10


def test_generation_and_member_checks() -> None:
    coordinator = GroupCoordinator(GroupConfig())
    group = ClassicGroup("g", 0)
    group.generation_id = 3
    group.state = ClassicGroupState.STABLE
    coordinator.groups["g"] = group
    assert stage(coordinator, commit_request(generation_id=3, member_id="ghost")) == (
        ErrorCode.unknown_member_id
    )
    assert stage(coordinator, commit_request(generation_id=2)) == ErrorCode.illegal_generation
    assert stage(coordinator, commit_request(group_id="unknown", generation_id=1)) == (
        ErrorCode.illegal_generation
    )
    assert coordinator.pending_txn_offsets == {}
    # Without group metadata (generation -1, no member) the commit is accepted, as in Kafka.
    assert stage(coordinator, commit_request()) == ErrorCode.none
