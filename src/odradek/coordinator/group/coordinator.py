"""GroupCoordinator: every group and committed offset of the broker, as one state machine.

Shaped like Kafka's coordinator runtime. A write operation takes a request reference and `now`
and returns a `Result`: responses (for this request or for parked ones) and records for
`__consumer_offsets`; the caller appends the records and only then delivers the responses.
`replay(key, value)` applies a record read back from the log, which is how state is rebuilt on
start. Timers fire from `poll(now)`; `next_deadline()` says when to call it next. Reads
(OffsetFetch, Describe, List) are plain methods that change nothing.

A group is classic or a KIP-848 consumer group; it moves between the two online (KIP-848
"Online migration", `migration`): a ConsumerGroupHeartbeat joining a classic group upgrades it,
classic members of a consumer group are served by `classic_members`, and the group goes back to
classic when its last consumer-protocol member leaves, as `group.consumer.migration.policy`
allows. Every consumer-group change is written as Kafka's KIP-848 records.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from kio.schema.errors import ErrorCode

from odradek.coordinator.group.assignors import TopicInfo
from odradek.coordinator.group.classic import (
    ClassicGroup,
    ClassicMember,
    ClassicProtocol,
    JoinRequest,
    SyncRequest,
)
from odradek.coordinator.group.classic_members import ClassicMembers
from odradek.coordinator.group.config import GroupConfig
from odradek.coordinator.group.consumer import (
    MEMBER_STATES,
    ConsumerGroup,
    ConsumerMember,
    ConsumerProtocol,
    HeartbeatRequest,
)
from odradek.coordinator.group.consumer_records import (
    decode_current_value,
    decode_member_value,
    decode_target_epoch_value,
    decode_target_value,
)
from odradek.coordinator.group.embedded_protocol import MalformedProtocolError
from odradek.coordinator.group.migration import (
    classic_group_uses_consumer_protocol,
    to_classic_group,
    to_consumer_group,
)
from odradek.coordinator.group.records import (
    ConsumerGroupKey,
    CoordinatorRecord,
    CurrentAssignmentKey,
    GroupKey,
    MemberKey,
    OffsetKey,
    OffsetValue,
    RecordFormatError,
    TargetAssignmentEpochKey,
    TargetAssignmentKey,
    decode_consumer_group_value,
    decode_group_value,
    decode_key,
    decode_offset_value,
    encode_key,
    encode_offset_value,
    partition_for,
    read_subscribed_topics,
)
from odradek.coordinator.group.results import (
    DeleteGroupsResponse,
    ErrorResponse,
    JoinGroupResponse,
    OffsetCommitResponse,
    OffsetDeleteResponse,
    Result,
    SyncGroupResponse,
)
from odradek.coordinator.group.state import ClassicGroupState, MemberState
from odradek.determinism import random_uuid

# An offset record's metadata is an int16-length string (OffsetCommitValue).
_MAX_RECORD_STRING_BYTES = 0x7FFF

logger = logging.getLogger(__name__)

Group = ClassicGroup | ConsumerGroup
TopicPartition = tuple[str, int]

CLASSIC = "classic"
CONSUMER = "consumer"


@dataclass(frozen=True, slots=True)
class PartitionCommit:
    offset: int
    leader_epoch: int
    metadata: str | None


@dataclass(frozen=True, slots=True)
class CommitRequest:
    group_id: str
    generation_id_or_member_epoch: int
    member_id: str
    group_instance_id: str | None
    offsets: dict[str, dict[int, PartitionCommit]]
    api_version: int


@dataclass(frozen=True, slots=True)
class TxnCommitRequest:
    """TxnOffsetCommit: offsets staged for `producer_id` until its transaction ends."""

    transactional_id: str
    group_id: str
    producer_id: int
    producer_epoch: int
    generation_id: int
    member_id: str
    group_instance_id: str | None
    offsets: dict[str, dict[int, PartitionCommit]]


@dataclass(frozen=True, slots=True)
class DescribedMember:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    metadata: bytes
    assignment: bytes


@dataclass(frozen=True, slots=True)
class DescribedGroup:
    group_id: str
    error: ErrorCode
    state: str
    protocol_type: str
    protocol_data: str
    members: tuple[DescribedMember, ...]


@dataclass(frozen=True, slots=True)
class ListedGroup:
    group_id: str
    protocol_type: str
    state: str
    group_type: str


def _uuid_id() -> str:
    return str(random_uuid())


class GroupCoordinator:
    def __init__(self, config: GroupConfig, new_id: Callable[[], str] = _uuid_id) -> None:
        self.config = config
        self.groups: dict[str, Group] = {}
        self.offsets: dict[str, dict[TopicPartition, OffsetValue]] = {}
        self.classic = ClassicProtocol(config, self._classic_group, self._new_classic, new_id)
        self.consumer = ConsumerProtocol(config, self._consumer_group, self._new_consumer, new_id)
        self.consumer.downgrade = self._maybe_downgrade
        self.classic_members = ClassicMembers(self.consumer, new_id)
        # The topics the broker last told an operation about (names for ids in assignments).
        self._topics: dict[str, TopicInfo] = {}
        self._next_retention_check_ms: int | None = None
        # Kafka's pendingTransactionalOffsetCommits: producer id -> group -> partition -> offset,
        # staged by TxnOffsetCommit, committed or dropped when the transaction's marker lands.
        self.pending_txn_offsets: dict[int, dict[str, dict[TopicPartition, OffsetValue]]] = {}
        # Append order of the record behind each committed and each staged offset (replay runs
        # in log order, so a counter stands in for Kafka's appendedBatchOffset): when a
        # transaction commits, a plain commit appended after its offset record wins, as in Kafka.
        self._replayed = 0
        self._committed_order: dict[tuple[str, TopicPartition], int] = {}
        self._staged_order: dict[tuple[int, str, TopicPartition], int] = {}

    # -- groups by kind ----------------------------------------------------------------------

    def group(self, group_id: str) -> Group | None:
        return self.groups.get(group_id)

    def _classic_group(self, group_id: str) -> ClassicGroup | None:
        group = self.groups.get(group_id)
        return group if isinstance(group, ClassicGroup) else None

    def _consumer_group(self, group_id: str) -> ConsumerGroup | None:
        group = self.groups.get(group_id)
        return group if isinstance(group, ConsumerGroup) else None

    def _new_classic(self, group_id: str, now_ms: int) -> ClassicGroup | None:
        existing = self.groups.get(group_id)
        if isinstance(existing, ClassicGroup):
            return existing
        if isinstance(existing, ConsumerGroup) and existing.members:
            return None
        group = ClassicGroup(group_id, now_ms)
        self.groups[group_id] = group
        return group

    def _new_consumer(
        self, group_id: str, topics: Mapping[str, TopicInfo], now_ms: int, result: Result
    ) -> ConsumerGroup | ErrorCode:
        """Kafka's getOrMaybeCreateConsumerGroup for a member joining with epoch 0: the
        consumer group, a new one (an empty classic group is deleted first), or the classic
        group upgraded; GROUP_ID_NOT_FOUND when the classic group cannot be upgraded,
        GROUP_MAX_SIZE_REACHED when it could but has no room for the new member."""
        existing = self.groups.get(group_id)
        if isinstance(existing, ConsumerGroup):
            return existing
        if isinstance(existing, ClassicGroup) and (existing.members or existing.pending_members):
            return self._upgrade(existing, topics, now_ms, result)
        group = ConsumerGroup(group_id)
        if isinstance(existing, ClassicGroup):
            # An empty classic group (e.g. offsets only) is deleted; a consumer group
            # takes its place, with its epoch counting on from the generation.
            result.records.append(self._group_tombstone(group_id))
            group.group_epoch = existing.generation_id
            group.assignment_epoch = existing.generation_id
        self.groups[group_id] = group
        return group

    def _group_tombstone(self, group_id: str) -> CoordinatorRecord:
        return CoordinatorRecord(self.partition_for(group_id), encode_key(GroupKey(group_id)), None)

    # -- online migration (KIP-848) ---------------------------------------------------------

    def _upgrade(
        self, classic: ClassicGroup, topics: Mapping[str, TopicInfo], now_ms: int, result: Result
    ) -> ConsumerGroup | ErrorCode:
        """Kafka's validateOnlineUpgrade + convertToConsumerGroup: the classic group's
        members move into a new consumer group (parked JoinGroup/SyncGroup answers get
        REBALANCE_IN_PROGRESS, so they rejoin), the classic group record is tombstoned."""
        if not (
            self.config.consumer_migration_policy.upgrade_enabled
            and classic_group_uses_consumer_protocol(classic)
            and len(classic.members) <= self.config.max_size
        ):
            logger.info("classic group %s cannot be upgraded", classic.group_id)
            return ErrorCode.group_id_not_found
        if len(classic.members) >= self.config.max_size:
            # Kafka converts, then finds no room for the joining member: nothing is stored.
            return ErrorCode.group_max_size_reached
        try:
            group = to_consumer_group(classic, topics, now_ms, ConsumerGroup(classic.group_id))
        except MalformedProtocolError as error:
            logger.warning("cannot upgrade classic group %s: %s", classic.group_id, error)
            return ErrorCode.group_id_not_found
        for member in classic.members.values():
            if member.join_ref is not None:
                result.respond(
                    member.join_ref,
                    JoinGroupResponse(ErrorCode.rebalance_in_progress, member_id=member.member_id),
                )
            if member.sync_ref is not None:
                result.respond(member.sync_ref, SyncGroupResponse(ErrorCode.rebalance_in_progress))
            member.join_ref = member.sync_ref = None
        classic.state = ClassicGroupState.DEAD
        result.records.append(self._group_tombstone(classic.group_id))
        group.subscribed_metadata = self.consumer.subscribed_metadata(group, topics)
        self.groups[classic.group_id] = group
        logger.info(
            "upgraded classic group %s (generation %d, %d member(s)) to a consumer group",
            classic.group_id,
            classic.generation_id,
            len(group.members),
        )
        return group

    def _maybe_downgrade(
        self, group: ConsumerGroup, leaving: set[str], now_ms: int, result: Result
    ) -> bool:
        """Kafka's validateOnlineDowngradeWithFencedMember(s) + convertToClassicGroup: when
        the members leaving are the last on the consumer protocol, the others become a
        classic group that rebalances at once. Returns whether the group was converted."""
        members = group.members
        leaving = {member_id for member_id in leaving if member_id in members}
        remaining = [m for member_id, m in members.items() if member_id not in leaving]
        if not leaving or not all(m.uses_classic_protocol for m in remaining):
            return False
        if len(leaving) == 1 and members[next(iter(leaving))].uses_classic_protocol:
            return False
        if (
            not remaining
            or not self.config.consumer_migration_policy.downgrade_enabled
            or len(remaining) > self.config.max_size
        ):
            return False
        names = {info.topic_id: name for name, info in group.subscribed_metadata.items()}
        names |= {info.topic_id: name for name, info in self._topics.items()}
        result.records += self.consumer.tombstones(group)
        classic = to_classic_group(group, leaving, names, now_ms)
        result.records.append(self.classic.group_record(classic))
        self.groups[group.group_id] = classic
        self.classic.prepare_rebalance(classic, now_ms, result)
        logger.info(
            "downgraded consumer group %s (epoch %d, %d member(s)) to a classic group",
            group.group_id,
            group.group_epoch,
            len(classic.members),
        )
        return True

    def _persist(self, group_id: str, result: Result) -> Result:
        """Append the records of what the operation changed in a consumer group."""
        group = self.groups.get(group_id)
        if isinstance(group, ConsumerGroup):
            result.records += self.consumer.records_for(group)
        return result

    def partition_for(self, group_id: str) -> int:
        return partition_for(group_id, self.config.offsets_topic_partitions)

    # -- classic protocol --------------------------------------------------------------------

    def join_group(
        self,
        ref: int,
        request: JoinRequest,
        now_ms: int,
        topics: Mapping[str, TopicInfo] | None = None,
    ) -> Result:
        """JoinGroup: to a classic group, or as a classic member of a non-empty consumer
        group; an empty consumer group is deleted and a classic group takes its place."""
        if topics is not None:
            self._topics = dict(topics)
        group = self.groups.get(request.group_id)
        if isinstance(group, ConsumerGroup):
            if group.members:
                result = self.classic_members.join(ref, group, request, self._topics, now_ms)
                return self._persist(request.group_id, result)
            tombstones = self.consumer.tombstones(group)
            del self.groups[request.group_id]
            result = self.classic.join(ref, request, now_ms)
            result.records[0:0] = tombstones
            return result
        return self.classic.join(ref, request, now_ms)

    def sync_group(
        self,
        ref: int,
        request: SyncRequest,
        now_ms: int,
        topics: Mapping[str, TopicInfo] | None = None,
    ) -> Result:
        if topics is not None:
            self._topics = dict(topics)
        group = self.groups.get(request.group_id)
        if isinstance(group, ConsumerGroup):
            if not group.members:
                result = Result()
                result.respond(ref, SyncGroupResponse(ErrorCode.unknown_member_id))
                return result
            names = {info.topic_id: name for name, info in self._topics.items()}
            result = self.classic_members.sync(ref, group, request, names, now_ms)
            return self._persist(request.group_id, result)
        return self.classic.sync(ref, request, now_ms)

    def heartbeat(
        self,
        ref: int,
        group_id: str,
        generation_id: int,
        member_id: str,
        instance_id: str | None,
        now_ms: int,
    ) -> Result:
        group = self.groups.get(group_id)
        if isinstance(group, ConsumerGroup):
            result = self.classic_members.heartbeat(
                ref, group, generation_id, member_id, instance_id, now_ms
            )
            return self._persist(group_id, result)
        return self.classic.heartbeat(ref, group_id, generation_id, member_id, instance_id, now_ms)

    def leave_group(
        self, ref: int, group_id: str, members: list[tuple[str, str | None]], now_ms: int
    ) -> Result:
        group = self.groups.get(group_id)
        if isinstance(group, ConsumerGroup):
            result = self.classic_members.leave(ref, group, members, now_ms)
            return self._persist(group_id, result)
        return self.classic.leave(ref, group_id, members, now_ms)

    # -- consumer protocol -------------------------------------------------------------------

    def consumer_group_heartbeat(
        self,
        ref: int,
        request: HeartbeatRequest,
        topics: Mapping[str, TopicInfo],
        now_ms: int,
    ) -> Result:
        self._topics = dict(topics)
        result = self.consumer.heartbeat(ref, request, topics, now_ms)
        return self._persist(request.group_id, result)

    # -- offsets -----------------------------------------------------------------------------

    def _validate_commit(self, request: CommitRequest, now_ms: int) -> ErrorCode:
        group = self.groups.get(request.group_id)
        generation = request.generation_id_or_member_epoch
        if not request.group_id:
            return ErrorCode.invalid_group_id
        if group is None:
            if generation < 0:
                return ErrorCode.none
            return (
                ErrorCode.group_id_not_found
                if request.api_version >= 9
                else ErrorCode.illegal_generation
            )
        if isinstance(group, ConsumerGroup):
            if generation < 0 and not group.members:
                return ErrorCode.none
            member = group.members.get(request.member_id)
            if member is None:
                return ErrorCode.unknown_member_id
            if generation != member.member_epoch:
                # Kafka's ConsumerGroup.validateMemberEpoch: a classic member's commit is
                # checked against its generation, and answered in the classic protocol.
                return (
                    ErrorCode.illegal_generation
                    if member.uses_classic_protocol
                    else ErrorCode.stale_member_epoch
                )
            return ErrorCode.none
        if group.state == ClassicGroupState.DEAD:
            return ErrorCode.coordinator_not_available
        if generation < 0 and group.state == ClassicGroupState.EMPTY:
            # Kafka's ClassicGroup.validateOffsetCommit: generation -1 comes from the admin
            # client or a consumer outside group management (assign(), or a KIP-848 consumer
            # that never subscribed, which still sends its member id): an empty group takes
            # the commit whatever the member id.
            return ErrorCode.none
        if group.is_static_fenced(request.member_id, request.group_instance_id):
            return ErrorCode.fenced_instance_id
        classic_member = group.members.get(request.member_id)
        if classic_member is None:
            return ErrorCode.unknown_member_id
        if generation != group.generation_id:
            return ErrorCode.illegal_generation
        if group.state == ClassicGroupState.COMPLETING_REBALANCE:
            return ErrorCode.rebalance_in_progress
        # A commit from a live member counts as a heartbeat, as in Kafka.
        classic_member.heartbeat_deadline_ms = now_ms + classic_member.session_timeout_ms
        return ErrorCode.none

    def _offset_records(
        self,
        result: Result,
        group_id: str,
        offsets: Mapping[str, Mapping[int, PartitionCommit]],
        error: ErrorCode,
        now_ms: int,
    ) -> dict[str, dict[int, ErrorCode]]:
        """Each partition's answer to an (Txn)OffsetCommit that the group check answered with
        `error`; the offset records to append for the accepted ones go into `result`.

        A metadata string longer than an offset record can hold (32767 UTF-8 bytes, possible
        when `offset.metadata.max.bytes` allows it) fails the whole commit with
        UNKNOWN_SERVER_ERROR and writes nothing: Kafka's record serializer throws and the
        coordinator runtime answers every partition so."""
        errors: dict[str, dict[int, ErrorCode]] = {}
        records: list[CoordinatorRecord] = []
        unwritable = False
        partition = self.partition_for(group_id) if group_id else 0
        for topic, partitions in offsets.items():
            topic_errors = errors.setdefault(topic, {})
            for index, commit in partitions.items():
                if error != ErrorCode.none:
                    topic_errors[index] = error
                    continue
                metadata = commit.metadata or ""
                # Kafka compares String.length(), UTF-16 code units, not encoded bytes
                # (OffsetMetadataManager.isMetadataInvalid).
                if len(metadata.encode("utf-16-le")) // 2 > self.config.offset_metadata_max_bytes:
                    topic_errors[index] = ErrorCode.offset_metadata_too_large
                    continue
                if len(metadata.encode()) > _MAX_RECORD_STRING_BYTES:
                    unwritable = True
                    continue
                topic_errors[index] = ErrorCode.none
                records.append(
                    CoordinatorRecord(
                        partition,
                        encode_key(OffsetKey(group_id, topic, index)),
                        encode_offset_value(
                            OffsetValue(commit.offset, commit.leader_epoch, metadata, now_ms)
                        ),
                    )
                )
        if unwritable:
            return {
                topic: dict.fromkeys(partitions, ErrorCode.unknown_server_error)
                for topic, partitions in offsets.items()
            }
        result.records.extend(records)
        return errors

    def commit_offsets(self, ref: int, request: CommitRequest, now_ms: int) -> Result:
        """OffsetCommit. The offsets change only when the records are replayed after the
        append (`Result.replay_after_append`)."""
        result = Result(replay_after_append=True)
        error = self._validate_commit(request, now_ms)
        errors = self._offset_records(result, request.group_id, request.offsets, error, now_ms)
        result.respond(ref, OffsetCommitResponse(errors))
        return result

    def _validate_txn_commit(self, request: TxnCommitRequest) -> ErrorCode:
        """KIP-447: a transactional commit from a consumer-group member is checked against the
        group's generation (classic) or member epoch (consumer), as Kafka does."""
        if not request.group_id:
            return ErrorCode.invalid_group_id
        group = self.groups.get(request.group_id)
        generation = request.generation_id
        if group is None:
            # A group this coordinator does not know: only a commit outside any generation
            # is accepted (Kafka creates a simple group for it, whatever the member id).
            if generation < 0:
                return ErrorCode.none
            return ErrorCode.illegal_generation
        if isinstance(group, ConsumerGroup):
            if generation < 0 and not request.member_id:
                return ErrorCode.none
            member = group.members.get(request.member_id)
            if member is None:
                return ErrorCode.unknown_member_id
            if generation != member.member_epoch:
                return ErrorCode.illegal_generation
            return ErrorCode.none
        if group.state == ClassicGroupState.DEAD:
            return ErrorCode.coordinator_not_available
        if generation < 0 and group.state == ClassicGroupState.EMPTY:
            return ErrorCode.none
        if group.is_static_fenced(request.member_id, request.group_instance_id):
            return ErrorCode.fenced_instance_id
        if request.member_id and request.member_id not in group.members:
            return ErrorCode.unknown_member_id
        if generation >= 0 and generation != group.generation_id:
            return ErrorCode.illegal_generation
        return ErrorCode.none

    def txn_commit_offsets(self, ref: int, request: TxnCommitRequest, now_ms: int) -> Result:
        """TxnOffsetCommit: the records are appended as the producer's transactional batch and
        replayed (with the producer id) as staged offsets; the COMMIT marker makes them
        visible (`complete_transaction`), an ABORT drops them."""
        result = Result(
            replay_after_append=True,
            producer_id=request.producer_id,
            producer_epoch=request.producer_epoch,
        )
        error = self._validate_txn_commit(request)
        errors = self._offset_records(result, request.group_id, request.offsets, error, now_ms)
        result.respond(ref, OffsetCommitResponse(errors))
        return result

    def complete_transaction(self, producer_id: int, commit: bool, partition: int) -> None:
        """The COMMIT/ABORT marker of `producer_id` landed on `__consumer_offsets`-`partition`
        (Kafka's onTransactionCompleted): publish or drop its staged offsets there."""
        staged = self.pending_txn_offsets.get(producer_id)
        if staged is None:
            return
        for group_id in [g for g in staged if self.partition_for(g) == partition]:
            offsets = staged.pop(group_id)
            orders = {
                topic_partition: self._staged_order.pop((producer_id, group_id, topic_partition), 0)
                for topic_partition in offsets
            }
            if not commit:
                continue
            committed = self.offsets.setdefault(group_id, {})
            for topic_partition, value in offsets.items():
                order = orders[topic_partition]
                if self._committed_order.get((group_id, topic_partition), -1) > order:
                    continue  # a plain commit appended later than this transaction's offset
                committed[topic_partition] = value
                self._committed_order[(group_id, topic_partition)] = order
            if group_id not in self.groups:
                self.groups[group_id] = ClassicGroup(group_id, 0)
        if not staged:
            del self.pending_txn_offsets[producer_id]

    def on_partitions_deleted(
        self, ref: int, topic_partitions: Iterable[TopicPartition], now_ms: int
    ) -> Result:
        """Partitions were deleted (DeleteTopics, or found gone at load): tombstone every
        group's committed offset there and every offset an open transaction staged there, so
        a topic created again under the same name starts with no committed offset, also after
        a restart (Kafka's OffsetMetadataManager.onPartitionsDeleted). Answers `ref` with an
        ErrorResponse; the offsets go when the tombstones are replayed after the append."""
        result = Result(replay_after_append=True)
        deleted = set(topic_partitions)
        doomed: set[tuple[str, TopicPartition]] = {
            (group_id, topic_partition)
            for group_id, committed in self.offsets.items()
            for topic_partition in committed.keys() & deleted
        }
        for staged in self.pending_txn_offsets.values():
            for group_id, offsets in staged.items():
                doomed |= {(group_id, tp) for tp in offsets.keys() & deleted}
        for group_id, (topic, index) in sorted(doomed):
            result.records.append(
                CoordinatorRecord(
                    self.partition_for(group_id),
                    encode_key(OffsetKey(group_id, topic, index)),
                    None,
                )
            )
        result.respond(ref, ErrorResponse(ErrorCode.none))
        return result

    def offset_partitions(self) -> set[TopicPartition]:
        """Every partition some group has a committed or staged offset for."""
        partitions = {tp for committed in self.offsets.values() for tp in committed}
        for staged in self.pending_txn_offsets.values():
            for offsets in staged.values():
                partitions |= offsets.keys()
        return partitions

    def has_pending_txn_offset(self, group_id: str, topic: str, partition: int) -> bool:
        """Whether an open transaction staged an offset for this partition (OffsetFetch with
        require_stable answers UNSTABLE_OFFSET_COMMIT then, KIP-447)."""
        return any(
            (topic, partition) in staged.get(group_id, {})
            for staged in self.pending_txn_offsets.values()
        )

    def fetch_offsets(
        self,
        group_id: str,
        topics: Mapping[str, Iterable[int]] | None,
        member_id: str | None = None,
        member_epoch: int = -1,
    ) -> tuple[ErrorCode, dict[str, dict[int, OffsetValue | None]]]:
        """OffsetFetch: the committed offset per partition (None when there is none)."""
        group = self.groups.get(group_id)
        if member_id is not None and isinstance(group, ConsumerGroup) and member_epoch >= 0:
            member = group.members.get(member_id)
            if member is None:
                return ErrorCode.unknown_member_id, {}
            if member_epoch != member.member_epoch:
                return ErrorCode.stale_member_epoch, {}
        committed = self.offsets.get(group_id, {})
        answer: dict[str, dict[int, OffsetValue | None]] = {}
        if topics is None:
            for (topic, partition), value in sorted(committed.items()):
                answer.setdefault(topic, {})[partition] = value
            return ErrorCode.none, answer
        for topic, partitions in topics.items():
            answer[topic] = {index: committed.get((topic, index)) for index in partitions}
        return ErrorCode.none, answer

    def _subscribed_topics(self, group: Group) -> set[str]:
        if isinstance(group, ConsumerGroup):
            names: set[str] = set()
            for member in group.members.values():
                names |= member.subscribed_topic_names
            return names
        if group.protocol_type != "consumer" or group.state == ClassicGroupState.EMPTY:
            return set()
        topics: set[str] = set()
        for classic_member in group.members.values():
            for _name, metadata in classic_member.protocols:
                topics.update(read_subscribed_topics(metadata))
        return topics

    def delete_offsets(
        self, ref: int, group_id: str, topics: Mapping[str, Iterable[int]], now_ms: int
    ) -> Result:
        result = Result(replay_after_append=True)
        group = self.groups.get(group_id)
        if group is None or (
            isinstance(group, ClassicGroup) and group.state == ClassicGroupState.DEAD
        ):
            result.respond(ref, OffsetDeleteResponse(ErrorCode.group_id_not_found, {}))
            return result
        if isinstance(group, ClassicGroup) and group.members and group.protocol_type != "consumer":
            result.respond(ref, OffsetDeleteResponse(ErrorCode.non_empty_group, {}))
            return result
        subscribed = self._subscribed_topics(group)
        committed = self.offsets.get(group_id, {})
        partition = self.partition_for(group_id)
        errors: dict[str, dict[int, ErrorCode]] = {}
        for topic, partitions in topics.items():
            topic_errors = errors.setdefault(topic, {})
            for index in partitions:
                if topic in subscribed:
                    topic_errors[index] = ErrorCode.group_subscribed_to_topic
                    continue
                topic_errors[index] = ErrorCode.none
                if (topic, index) in committed:
                    result.records.append(
                        CoordinatorRecord(
                            partition, encode_key(OffsetKey(group_id, topic, index)), None
                        )
                    )
        result.respond(ref, OffsetDeleteResponse(ErrorCode.none, errors))
        return result

    # -- admin -------------------------------------------------------------------------------

    def delete_groups(self, ref: int, group_ids: list[str], now_ms: int) -> Result:
        result = Result(replay_after_append=True)
        errors: dict[str, ErrorCode] = {}
        for group_id in group_ids:
            group = self.groups.get(group_id)
            if not group_id:
                errors[group_id] = ErrorCode.invalid_group_id
            elif group is None or (
                isinstance(group, ClassicGroup) and group.state == ClassicGroupState.DEAD
            ):
                errors[group_id] = ErrorCode.group_id_not_found
            elif group.members or (isinstance(group, ClassicGroup) and group.pending_members):
                errors[group_id] = ErrorCode.non_empty_group
            else:
                errors[group_id] = ErrorCode.none
                result.records += self._tombstones(group)
        result.respond(ref, DeleteGroupsResponse(errors))
        return result

    def _tombstones(self, group: Group) -> list[CoordinatorRecord]:
        partition = self.partition_for(group.group_id)
        records = [
            CoordinatorRecord(partition, encode_key(OffsetKey(group.group_id, topic, index)), None)
            for topic, index in sorted(self.offsets.get(group.group_id, {}))
        ]
        if isinstance(group, ConsumerGroup):
            return records + self.consumer.tombstones(group)
        records.append(CoordinatorRecord(partition, encode_key(GroupKey(group.group_id)), None))
        return records

    def describe_groups(self, group_ids: Iterable[str]) -> list[DescribedGroup]:
        described = []
        for group_id in group_ids:
            group = self.groups.get(group_id)
            if group is None or isinstance(group, ConsumerGroup):
                error = ErrorCode.group_id_not_found if group is None else ErrorCode.none
                if isinstance(group, ConsumerGroup):
                    # Kafka describes a consumer-protocol group here only as not classic.
                    error = ErrorCode.group_id_not_found
                described.append(DescribedGroup(group_id, error, "Dead", "", "", ()))
                continue
            stable = group.state == ClassicGroupState.STABLE
            members = tuple(
                DescribedMember(
                    member.member_id,
                    member.group_instance_id,
                    member.client_id,
                    member.client_host,
                    member.metadata(group.protocol_name) if stable else b"",
                    member.assignment if stable else b"",
                )
                for member in group.members.values()
            )
            described.append(
                DescribedGroup(
                    group_id,
                    ErrorCode.none,
                    group.state.value,
                    group.protocol_type or "",
                    (group.protocol_name or "") if stable else "",
                    members,
                )
            )
        return described

    def list_groups(
        self, states: Iterable[str] = (), types: Iterable[str] = ()
    ) -> list[ListedGroup]:
        wanted_states = {state.lower() for state in states}
        wanted_types = {kind.lower() for kind in types}
        listed = []
        for group_id, group in sorted(self.groups.items()):
            if isinstance(group, ConsumerGroup):
                listing = ListedGroup(group_id, "consumer", group.state.value, CONSUMER)
            else:
                if group.state == ClassicGroupState.DEAD:
                    continue
                listing = ListedGroup(
                    group_id, group.protocol_type or "", group.state.value, CLASSIC
                )
            if wanted_states and listing.state.lower() not in wanted_states:
                continue
            if wanted_types and listing.group_type not in wanted_types:
                continue
            listed.append(listing)
        return listed

    # -- replay ------------------------------------------------------------------------------

    def replay(
        self, key_bytes: bytes, value: bytes | None, now_ms: int = 0, producer_id: int = -1
    ) -> None:
        """Apply one `__consumer_offsets` record (from the log, or just appended). A record
        of a transactional batch (`producer_id` >= 0) is staged until its marker."""
        try:
            key = decode_key(key_bytes)
            if key is None:
                return
            self._replayed += 1
            if producer_id >= 0:
                if isinstance(key, OffsetKey) and value is not None:
                    topic_partition = (key.topic, key.partition)
                    self.pending_txn_offsets.setdefault(producer_id, {}).setdefault(
                        key.group_id, {}
                    )[topic_partition] = decode_offset_value(value)
                    self._staged_order[(producer_id, key.group_id, topic_partition)] = (
                        self._replayed
                    )
                return
            if isinstance(key, OffsetKey):
                self._replay_offset(key, value, now_ms)
            elif isinstance(key, GroupKey):
                self._replay_group(key, value, now_ms)
            elif isinstance(key, ConsumerGroupKey):
                self._replay_consumer_group(key, value)
            else:
                self._replay_consumer_member(key, value)
        except RecordFormatError as error:
            logger.warning("skipping an unreadable __consumer_offsets record: %s", error)

    def _replay_offset(self, key: OffsetKey, value: bytes | None, now_ms: int) -> None:
        committed = self.offsets.setdefault(key.group_id, {})
        if value is None:
            topic_partition = (key.topic, key.partition)
            committed.pop(topic_partition, None)
            self._committed_order.pop((key.group_id, topic_partition), None)
            if not committed:
                del self.offsets[key.group_id]
            # A tombstone also drops what open transactions staged for the partition (as in
            # Kafka's replay), so their COMMIT marker cannot bring a deleted offset back.
            for producer_id, staged in self.pending_txn_offsets.items():
                offsets = staged.get(key.group_id)
                if offsets is not None and offsets.pop(topic_partition, None) is not None:
                    self._staged_order.pop((producer_id, key.group_id, topic_partition), None)
                    if not offsets:
                        del staged[key.group_id]
            return
        committed[(key.topic, key.partition)] = decode_offset_value(value)
        self._committed_order[(key.group_id, (key.topic, key.partition))] = self._replayed
        if key.group_id not in self.groups:
            # Offsets without a group: a "simple" group that only commits.
            self.groups[key.group_id] = ClassicGroup(key.group_id, now_ms)

    def _replay_group(self, key: GroupKey, value: bytes | None, now_ms: int) -> None:
        existing = self.groups.get(key.group_id)
        if value is None:
            if isinstance(existing, ClassicGroup) or existing is None:
                self.groups.pop(key.group_id, None)
            return
        stored = decode_group_value(value)
        group = ClassicGroup(key.group_id, stored.current_state_timestamp)
        group.generation_id = stored.generation
        group.protocol_type = stored.protocol_type or None
        group.protocol_name = stored.protocol
        group.leader_id = stored.leader
        for member in stored.members:
            group.add_member(
                ClassicMember(
                    member_id=member.member_id,
                    group_instance_id=member.group_instance_id,
                    client_id=member.client_id,
                    client_host=member.client_host,
                    rebalance_timeout_ms=member.rebalance_timeout_ms,
                    session_timeout_ms=member.session_timeout_ms,
                    protocol_type=stored.protocol_type,
                    protocols=((stored.protocol or "", member.subscription),),
                    assignment=member.assignment,
                    heartbeat_deadline_ms=now_ms + member.session_timeout_ms,
                )
            )
        group.leader_id = stored.leader if stored.leader in group.members else group.leader_id
        group.state = ClassicGroupState.STABLE if group.members else ClassicGroupState.EMPTY
        self.groups[key.group_id] = group

    def _replay_consumer_group(self, key: ConsumerGroupKey, value: bytes | None) -> None:
        existing = self.groups.get(key.group_id)
        if value is None:
            if isinstance(existing, ConsumerGroup) or existing is None:
                self.groups.pop(key.group_id, None)
            return
        epoch = decode_consumer_group_value(value)
        if isinstance(existing, ConsumerGroup):
            existing.group_epoch = epoch
            return
        group = ConsumerGroup(key.group_id)
        group.group_epoch = group.assignment_epoch = epoch
        self.groups[key.group_id] = group

    def _persisted_consumer_group(self, group_id: str) -> ConsumerGroup:
        """Kafka's getOrMaybeCreatePersistedConsumerGroup: a simple classic group (offsets
        only, no record of its own) gives way to the consumer group being replayed."""
        group = self.groups.get(group_id)
        if isinstance(group, ConsumerGroup):
            return group
        created = ConsumerGroup(group_id)
        self.groups[group_id] = created
        return created

    def _replay_consumer_member(
        self,
        key: MemberKey | TargetAssignmentEpochKey | TargetAssignmentKey | CurrentAssignmentKey,
        value: bytes | None,
    ) -> None:
        """The KIP-848 member, target and current assignment records (Kafka's replay of
        ConsumerGroupMemberMetadata, TargetAssignment*, CurrentMemberAssignment)."""
        if value is None:
            group = self.groups.get(key.group_id)
            if not isinstance(group, ConsumerGroup):
                return
            if isinstance(key, MemberKey):
                group.members.pop(key.member_id, None)
            elif isinstance(key, TargetAssignmentKey):
                group.target.pop(key.member_id, None)
            elif isinstance(key, CurrentAssignmentKey) and key.member_id in group.members:
                member = group.members[key.member_id]
                member.assigned, member.pending_revocation = {}, {}
            return
        group = self._persisted_consumer_group(key.group_id)
        if isinstance(key, TargetAssignmentEpochKey):
            group.assignment_epoch = decode_target_epoch_value(value)
            return
        if isinstance(key, TargetAssignmentKey):
            group.target[key.member_id] = decode_target_value(value)
            return
        member = group.members.setdefault(key.member_id, ConsumerMember(member_id=key.member_id))
        if isinstance(key, MemberKey):
            stored = decode_member_value(value)
            member.instance_id = stored.instance_id
            member.rack_id = stored.rack_id
            member.client_id = stored.client_id
            member.client_host = stored.client_host
            member.subscribed_topic_names = frozenset(stored.subscribed_topic_names)
            member.subscribed_topic_regex = stored.subscribed_topic_regex
            member.rebalance_timeout_ms = stored.rebalance_timeout_ms
            member.server_assignor = stored.server_assignor
            member.classic = stored.classic
            return
        current = decode_current_value(value)
        member.member_epoch = current.member_epoch
        member.previous_member_epoch = current.previous_member_epoch
        member.state = MEMBER_STATES.get(current.state, member.state)
        member.assigned = current.assigned
        member.pending_revocation = current.pending_revocation

    def finish_loading(self, now_ms: int, partition: int | None = None) -> None:
        """After replay: loaded members' sessions start now (as in Kafka's group load); with
        `partition`, only the groups of that `__consumer_offsets` partition (a cluster member
        that just became its leader)."""
        for group in self.groups.values():
            if partition is not None and self.partition_for(group.group_id) != partition:
                continue
            if isinstance(group, ClassicGroup):
                for member in group.members.values():
                    member.heartbeat_deadline_ms = now_ms + member.session_timeout_ms
                continue
            if not group.members:
                group.assignment_epoch = group.group_epoch
            group.state_timestamp_ms = group.state_timestamp_ms or now_ms
            for consumer_member in group.members.values():
                consumer_member.session_deadline_ms = now_ms + consumer_member.session_timeout_ms(
                    self.consumer.session_timeout_ms(group.group_id)
                )
                if consumer_member.state == MemberState.UNREVOKED_PARTITIONS:
                    consumer_member.revocation_deadline_ms = (
                        now_ms + consumer_member.rebalance_timeout_ms
                    )
            self.consumer.mark_persisted(group)

    def unload_partition(
        self, partition: int
    ) -> list[tuple[int, JoinGroupResponse | SyncGroupResponse]]:
        """Forget every group, committed and staged offset of `__consumer_offsets`-`partition`
        (Kafka's GroupCoordinator.onResignation: this broker no longer leads it). Returns the
        parked JoinGroup / SyncGroup answers to send now, each NOT_COORDINATOR, so their
        members find the new coordinator."""
        answers: list[tuple[int, JoinGroupResponse | SyncGroupResponse]] = []
        for group_id in [g for g in self.groups if self.partition_for(g) == partition]:
            group = self.groups.pop(group_id)
            if isinstance(group, ClassicGroup):
                for member in group.members.values():
                    if member.join_ref is not None:
                        answers.append(
                            (
                                member.join_ref,
                                JoinGroupResponse(
                                    ErrorCode.not_coordinator, member_id=member.member_id
                                ),
                            )
                        )
                    if member.sync_ref is not None:
                        answers.append(
                            (member.sync_ref, SyncGroupResponse(ErrorCode.not_coordinator))
                        )
                    member.join_ref = member.sync_ref = None
        for group_id in [g for g in self.offsets if self.partition_for(g) == partition]:
            del self.offsets[group_id]
        for key in [k for k in self._committed_order if self.partition_for(k[0]) == partition]:
            del self._committed_order[key]
        for producer_id, staged in list(self.pending_txn_offsets.items()):
            for group_id in [g for g in staged if self.partition_for(g) == partition]:
                del staged[group_id]
            if not staged:
                del self.pending_txn_offsets[producer_id]
        for staged_key in [k for k in self._staged_order if self.partition_for(k[1]) == partition]:
            del self._staged_order[staged_key]
        return answers

    # -- timers ------------------------------------------------------------------------------

    def next_deadline(self) -> int | None:
        deadlines = []
        for group in self.groups.values():
            if isinstance(group, ClassicGroup):
                deadline = self.classic.next_deadline(group)
            else:
                deadline = self.consumer.next_deadline(group)
            if deadline is not None:
                deadlines.append(deadline)
        if self._next_retention_check_ms is not None:
            deadlines.append(self._next_retention_check_ms)
        return min(deadlines, default=None)

    def poll(self, now_ms: int, topics: Mapping[str, TopicInfo] | None = None) -> Result:
        if topics is not None:
            self._topics = dict(topics)
        result = Result()
        for group in list(self.groups.values()):
            if isinstance(group, ClassicGroup):
                self.classic.poll(group, now_ms, result)
            elif self.consumer.poll(group, now_ms, result):
                result.records += self.consumer.records_for(group)
        if self._next_retention_check_ms is None:
            self._next_retention_check_ms = now_ms + self.config.offsets_retention_check_interval_ms
        elif self._next_retention_check_ms <= now_ms:
            self.expire_offsets(now_ms, result)
            self._next_retention_check_ms = now_ms + self.config.offsets_retention_check_interval_ms
        return result

    def expire_offsets(self, now_ms: int, result: Result) -> None:
        """`offsets.retention.minutes`: a group's offsets expire once it has been empty that
        long; offsets of a group that only commits expire that long after their commit."""
        retention = self.config.offsets_retention_ms
        for group_id in sorted(set(self.offsets) | set(self.groups)):
            group = self.groups.get(group_id)
            if group is not None and (
                group.members or (isinstance(group, ClassicGroup) and group.pending_members)
            ):
                continue
            committed = self.offsets.get(group_id, {})
            partition = self.partition_for(group_id)
            has_protocol = isinstance(group, ConsumerGroup) or (
                isinstance(group, ClassicGroup) and group.protocol_type is not None
            )
            empty_since = group.state_timestamp_ms if group is not None else 0
            for (topic, index), value in sorted(committed.items()):
                base = empty_since if has_protocol else value.commit_timestamp
                if base + retention <= now_ms:
                    del committed[(topic, index)]
                    result.records.append(
                        CoordinatorRecord(
                            partition, encode_key(OffsetKey(group_id, topic, index)), None
                        )
                    )
            if not committed:
                self.offsets.pop(group_id, None)
                if group is not None and (not has_protocol or empty_since + retention <= now_ms):
                    result.records += self._tombstones(group)
                    del self.groups[group_id]
