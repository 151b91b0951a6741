"""Transactional offsets (TxnOffsetCommit) in the group coordinator: staged per producer id,
published by a COMMIT marker, dropped by an ABORT, rebuilt by replay, checked per KIP-447."""

from __future__ import annotations

from kio.schema.errors import ErrorCode

from odradek.coordinator.group import (
    ClassicGroup,
    CommitRequest,
    GroupConfig,
    GroupCoordinator,
    PartitionCommit,
    Result,
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


def _replay(coordinator: GroupCoordinator, result: Result) -> None:
    for record in result.records:
        coordinator.replay(record.key, record.value, 100, result.producer_id)


def _plain_commit(coordinator: GroupCoordinator, group_id: str, topic: str, offset: int) -> Result:
    request = CommitRequest(
        group_id, -1, "", None, {topic: {0: PartitionCommit(offset, -1, "")}}, 8
    )
    result = coordinator.commit_offsets(1, request, 100)
    _replay(coordinator, result)
    return result


def test_deleted_partitions_lose_committed_and_staged_offsets_also_on_replay() -> None:
    """Issue 9 item 4: onPartitionsDeleted tombstones the offsets of the deleted topic only;
    a transaction that staged an offset there publishes nothing for it at COMMIT; a new
    coordinator replaying the same records ends in the same state."""
    coordinator = GroupCoordinator(GroupConfig())
    plain = [
        _plain_commit(coordinator, "g", "t", 7),
        _plain_commit(coordinator, "g", "other", 3),
        _plain_commit(coordinator, "h", "t", 9),
    ]
    staged = coordinator.txn_commit_offsets(1, commit_request(group_id="k", offset=4), 100)
    _replay(coordinator, staged)
    assert coordinator.offset_partitions() == {("t", 0), ("other", 0)}

    deleted = coordinator.on_partitions_deleted(2, [("t", 0), ("t", 1)], 100)
    assert len(deleted.records) == 3  # g/t-0, h/t-0 and the staged k/t-0
    _replay(coordinator, deleted)
    coordinator.complete_transaction(7, True, coordinator.partition_for("k"))

    def state(c: GroupCoordinator) -> dict[str, dict[str, dict[int, object]]]:
        return {g: c.fetch_offsets(g, {"t": [0], "other": [0]})[1] for g in ("g", "h", "k")}

    after = state(coordinator)
    assert after["g"]["t"][0] is None
    assert after["h"]["t"][0] is None
    assert after["k"]["t"][0] is None
    assert committed(coordinator, "g") is None
    other = after["g"]["other"][0]
    assert other is not None
    assert getattr(other, "offset", None) == 3

    replayed = GroupCoordinator(GroupConfig())
    for result in (*plain, staged, deleted):
        _replay(replayed, result)
    replayed.complete_transaction(7, True, replayed.partition_for("k"))
    assert state(replayed) == after
