"""What coordinator operations return: responses to complete and records to append.

A response is addressed to a request reference (an int the runtime chose when it called the
operation); one operation may complete other, parked requests, e.g. the JoinGroup that lets a
rebalance finish completes every member's JoinGroup. Responses here are plain values; the broker's
handlers turn them into each API version's wire format.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from kio.schema.errors import ErrorCode

from odradek.coordinator.group.records import CoordinatorRecord

# Called once the result's records are durable (`ErrorCode.none`) or failed to append (the
# error the runtime mapped the append error to), with `now` in ms; returns what follows from
# it, as Kafka's appendFuture callbacks do (e.g. the SyncGroup assignments after the group
# record is stored). Runs on the coordinator's state, never concurrently with an operation.
Completion = Callable[[ErrorCode, int], "Result"]


@dataclass(slots=True)
class Result:
    """What an operation returns: `responses` and `records` to append to
    `__consumer_offsets`. The runtime releases the responses only once the records, and every
    record appended before them, are durable; if the append fails, every waiting response gets
    the append's error instead (Kafka's CoordinatorRuntime and its deferred event queue)."""

    responses: list[tuple[int, Any]] = field(default_factory=list)
    records: list[CoordinatorRecord] = field(default_factory=list)
    completions: list[Completion] = field(default_factory=list)
    # Offset records change state only once appended: the runtime replays these afterwards.
    replay_after_append: bool = False
    # Transactional offsets (TxnOffsetCommit): the records go into one transactional batch of
    # this producer, and are replayed as staged until the transaction's marker lands.
    producer_id: int = -1
    producer_epoch: int = -1

    def respond(self, ref: int, response: Any) -> None:
        self.responses.append((ref, response))

    def extend(self, other: Result) -> None:
        self.responses += other.responses
        self.records += other.records
        self.completions += other.completions


@dataclass(frozen=True, slots=True)
class JoinMember:
    member_id: str
    group_instance_id: str | None
    metadata: bytes


@dataclass(frozen=True, slots=True)
class JoinGroupResponse:
    error: ErrorCode
    generation_id: int = -1
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader: str = ""
    member_id: str = ""
    members: tuple[JoinMember, ...] = ()
    skip_assignment: bool = False

    def with_error(self, error: ErrorCode) -> JoinGroupResponse:
        return JoinGroupResponse(error, member_id=self.member_id)


@dataclass(frozen=True, slots=True)
class SyncGroupResponse:
    error: ErrorCode
    protocol_type: str | None = None
    protocol_name: str | None = None
    assignment: bytes = b""

    def with_error(self, error: ErrorCode) -> SyncGroupResponse:
        return SyncGroupResponse(error)


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    """Heartbeat and DeleteGroups-style answers: one error code."""

    error: ErrorCode

    def with_error(self, error: ErrorCode) -> ErrorResponse:
        return ErrorResponse(error)


@dataclass(frozen=True, slots=True)
class LeaveGroupResponse:
    error: ErrorCode
    # (member_id, group_instance_id, error) per member asked to leave
    members: tuple[tuple[str, str | None, ErrorCode], ...] = ()

    def with_error(self, error: ErrorCode) -> LeaveGroupResponse:
        return replace(self, error=error)


TopicPartitionErrors = dict[str, dict[int, ErrorCode]]


@dataclass(frozen=True, slots=True)
class OffsetCommitResponse:
    errors: TopicPartitionErrors

    def with_error(self, error: ErrorCode) -> OffsetCommitResponse:
        return OffsetCommitResponse(
            {topic: dict.fromkeys(partitions, error) for topic, partitions in self.errors.items()}
        )


@dataclass(frozen=True, slots=True)
class DeleteGroupsResponse:
    errors: dict[str, ErrorCode]

    def with_error(self, error: ErrorCode) -> DeleteGroupsResponse:
        return DeleteGroupsResponse(
            {
                group: error if code == ErrorCode.none else code
                for group, code in self.errors.items()
            }
        )


@dataclass(frozen=True, slots=True)
class ReadResponse:
    """A read's answer (OffsetFetch, DescribeGroups): `value` computed when the read ran,
    released once every write before it is durable; `error` if one of those writes failed."""

    value: Any
    error: ErrorCode = ErrorCode.none

    def with_error(self, error: ErrorCode) -> ReadResponse:
        return ReadResponse(None, error)


@dataclass(frozen=True, slots=True)
class OffsetDeleteResponse:
    error: ErrorCode
    errors: TopicPartitionErrors

    def with_error(self, error: ErrorCode) -> OffsetDeleteResponse:
        return OffsetDeleteResponse(error, {})


TopicPartitions = dict[uuid.UUID, frozenset[int]]


@dataclass(frozen=True, slots=True)
class ConsumerGroupHeartbeatResponse:
    error: ErrorCode
    error_message: str | None = None
    member_id: str | None = None
    member_epoch: int = -1
    heartbeat_interval_ms: int = 0
    assignment: TopicPartitions | None = None

    def with_error(self, error: ErrorCode) -> ConsumerGroupHeartbeatResponse:
        return ConsumerGroupHeartbeatResponse(error, member_id=self.member_id)
