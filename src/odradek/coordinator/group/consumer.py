"""The KIP-848 consumer protocol: ConsumerGroupHeartbeat with server-side assignment.

Every membership or subscription change bumps the group epoch; the next heartbeat computes a
new target assignment (assignment epoch = group epoch). Each member then reconciles towards its
target one heartbeat at a time, as Kafka's CurrentAssignmentBuilder does: first it revokes what
it must give up (keeping its epoch), then it gets the target epoch and the partitions that are
free; a partition another member still owns or is revoking is handed over only once released.

A member may also speak the classic protocol (a consumer group migrated from a classic group,
KIP-848 "Online migration"): it carries its ClassicMemberMetadata and is served through
JoinGroup/SyncGroup/Heartbeat by `classic_members`. Every change of the group is written as
Kafka's KIP-848 records (`records_for`), so the group and its members survive a restart.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from kio.schema.errors import ErrorCode

from odradek.coordinator.group.assignors import Assignment, TopicInfo, UnknownAssignorError, assign
from odradek.coordinator.group.config import GroupConfig
from odradek.coordinator.group.consumer_records import (
    MEMBER_STATE_STABLE,
    MEMBER_STATE_UNRELEASED_PARTITIONS,
    MEMBER_STATE_UNREVOKED_PARTITIONS,
    ClassicMemberMetadata,
    CurrentAssignmentValue,
    MemberMetadataValue,
    encode_current_value,
    encode_member_value,
    encode_target_epoch_value,
    encode_target_value,
)
from odradek.coordinator.group.records import (
    ConsumerGroupKey,
    CoordinatorRecord,
    CurrentAssignmentKey,
    Key,
    MemberKey,
    TargetAssignmentEpochKey,
    TargetAssignmentKey,
    encode_consumer_group_value,
    encode_key,
    partition_for,
)
from odradek.coordinator.group.results import ConsumerGroupHeartbeatResponse, Result
from odradek.coordinator.group.state import ConsumerGroupState, MemberState

Partitions = dict[uuid.UUID, frozenset[int]]

LEAVE_GROUP_MEMBER_EPOCH = -1
LEAVE_GROUP_STATIC_MEMBER_EPOCH = -2

MEMBER_STATE_CODES = {
    MemberState.UNREVOKED_PARTITIONS: MEMBER_STATE_UNREVOKED_PARTITIONS,
    MemberState.UNRELEASED_PARTITIONS: MEMBER_STATE_UNRELEASED_PARTITIONS,
    MemberState.STABLE: MEMBER_STATE_STABLE,
}
MEMBER_STATES = {code: state for state, code in MEMBER_STATE_CODES.items()}


@dataclass(slots=True)
class ConsumerMember:
    member_id: str
    instance_id: str | None = None
    rack_id: str | None = None
    client_id: str = ""
    client_host: str = ""
    rebalance_timeout_ms: int = 0
    subscribed_topic_names: frozenset[str] = frozenset()
    subscribed_topic_regex: str | None = None
    server_assignor: str | None = None
    member_epoch: int = 0
    previous_member_epoch: int = 0
    state: MemberState = MemberState.STABLE
    assigned: Partitions = field(default_factory=dict)
    pending_revocation: Partitions = field(default_factory=dict)
    session_deadline_ms: int = 0
    revocation_deadline_ms: int | None = None
    # A classic-protocol member: its session timeout and JoinGroup protocols; None for a
    # member that speaks ConsumerGroupHeartbeat.
    classic: ClassicMemberMetadata | None = None
    # Classic members only: the JoinGroup a REBALANCE_IN_PROGRESS heartbeat asked for, and the
    # SyncGroup after a JoinGroup, are due within the rebalance timeout (Kafka's join and
    # sync timeouts); a member that misses either is removed.
    classic_join_deadline_ms: int | None = None
    classic_sync_deadline_ms: int | None = None

    @property
    def uses_classic_protocol(self) -> bool:
        return self.classic is not None

    def session_timeout_ms(self, group_session_timeout_ms: int) -> int:
        """A classic member's own session timeout, else the group's (ms)."""
        if self.classic is not None:
            return self.classic.session_timeout_ms
        return group_session_timeout_ms

    def metadata_value(self) -> MemberMetadataValue:
        return MemberMetadataValue(
            instance_id=self.instance_id,
            rack_id=self.rack_id,
            client_id=self.client_id,
            client_host=self.client_host,
            subscribed_topic_names=tuple(sorted(self.subscribed_topic_names)),
            subscribed_topic_regex=self.subscribed_topic_regex,
            rebalance_timeout_ms=self.rebalance_timeout_ms,
            server_assignor=self.server_assignor,
            classic=self.classic,
        )

    def current_value(self) -> CurrentAssignmentValue:
        return CurrentAssignmentValue(
            member_epoch=self.member_epoch,
            previous_member_epoch=self.previous_member_epoch,
            state=MEMBER_STATE_CODES[self.state],
            assigned=self.assigned,
            pending_revocation=self.pending_revocation,
        )

    def subscribed(self, topics: Mapping[str, TopicInfo]) -> frozenset[str]:
        names = set(self.subscribed_topic_names)
        if self.subscribed_topic_regex:
            try:
                pattern = re.compile(self.subscribed_topic_regex)
            except re.error:
                pattern = None
            if pattern is not None:
                names |= {name for name in topics if pattern.fullmatch(name)}
        return frozenset(names)


class ConsumerGroup:
    def __init__(self, group_id: str) -> None:
        self.group_id = group_id
        self.group_epoch = 0
        self.assignment_epoch = 0
        self.members: dict[str, ConsumerMember] = {}
        self.target: Assignment = {}
        self.assignor_name: str | None = None
        # What the target assignment was computed from: subscribed topic -> (id, partitions).
        self.subscribed_metadata: dict[str, TopicInfo] = {}
        self.state_timestamp_ms = 0
        # What the log holds for this group (`ConsumerProtocol.records_for` writes the
        # difference): member id -> (metadata, target, current assignment) value bytes.
        self.persisted_members: dict[str, tuple[bytes, bytes, bytes]] = {}
        self.persisted_epoch: int | None = None
        self.persisted_assignment_epoch: int | None = None

    def static_member(self, instance_id: str | None) -> ConsumerMember | None:
        if instance_id is None:
            return None
        return next((m for m in self.members.values() if m.instance_id == instance_id), None)

    def classic_member_count(self) -> int:
        return sum(1 for member in self.members.values() if member.uses_classic_protocol)

    def all_classic_except(self, member_ids: set[str]) -> bool:
        """Kafka's allMembersUseClassicProtocolExcept: every member but `member_ids` speaks
        the classic protocol, and none of `member_ids` does."""
        return all(
            member.uses_classic_protocol != (member_id in member_ids)
            for member_id, member in self.members.items()
        )

    def supports_classic_protocols(self, protocol_type: str, names: list[str]) -> bool:
        """Kafka's supportsClassicProtocols: a "consumer" JoinGroup whose protocols include
        one every classic member supports."""
        if protocol_type != "consumer":
            return False
        if not self.members:
            return bool(names)
        classic = [m.classic for m in self.members.values() if m.classic is not None]
        return any(
            all(name in {protocol for protocol, _ in each.protocols} for each in classic)
            for name in names
        )

    def waiting_on_unreleased_partition(self, member: ConsumerMember) -> bool:
        """Kafka's waitingOnUnreleasedPartition: a target partition the member does not have
        yet is still owned by someone else."""
        if member.state != MemberState.UNRELEASED_PARTITIONS:
            return False
        taken = self.owner_epochs(member.member_id)
        missing = _flatten(self.target.get(member.member_id, {})) - _flatten(member.assigned)
        return bool(missing & taken)

    @property
    def state(self) -> ConsumerGroupState:
        if not self.members:
            return ConsumerGroupState.EMPTY
        if self.group_epoch > self.assignment_epoch:
            return ConsumerGroupState.ASSIGNING
        if any(
            member.member_epoch != self.assignment_epoch or member.state != MemberState.STABLE
            for member in self.members.values()
        ):
            return ConsumerGroupState.RECONCILING
        return ConsumerGroupState.STABLE

    def owner_epochs(self, excluding: str) -> set[tuple[uuid.UUID, int]]:
        """Partitions some other member owns or is still revoking."""
        owned: set[tuple[uuid.UUID, int]] = set()
        for member in self.members.values():
            if member.member_id == excluding:
                continue
            for partitions in (member.assigned, member.pending_revocation):
                for topic_id, numbers in partitions.items():
                    owned.update((topic_id, number) for number in numbers)
        return owned


@dataclass(frozen=True, slots=True)
class ConsumerGroupOverrides:
    """A consumer group's dynamic configs (Kafka's GroupConfig); None keeps the default."""

    session_timeout_ms: int | None = None
    heartbeat_interval_ms: int | None = None


@dataclass(frozen=True, slots=True)
class HeartbeatRequest:
    group_id: str
    member_id: str
    member_epoch: int
    instance_id: str | None
    rack_id: str | None
    rebalance_timeout_ms: int
    subscribed_topic_names: tuple[str, ...] | None
    subscribed_topic_regex: str | None
    server_assignor: str | None
    owned: Partitions | None
    client_id: str
    client_host: str
    api_version: int


def _flatten(partitions: Partitions) -> set[tuple[uuid.UUID, int]]:
    return {(topic_id, number) for topic_id, numbers in partitions.items() for number in numbers}


def _group(pairs: set[tuple[uuid.UUID, int]]) -> Partitions:
    grouped: dict[uuid.UUID, set[int]] = {}
    for topic_id, number in pairs:
        grouped.setdefault(topic_id, set()).add(number)
    return {topic_id: frozenset(numbers) for topic_id, numbers in grouped.items()}


class ConsumerProtocol:
    def __init__(
        self,
        config: GroupConfig,
        groups: Callable[[str], ConsumerGroup | None],
        create_group: Callable[
            [str, Mapping[str, TopicInfo], int, Result], ConsumerGroup | ErrorCode
        ],
        new_id: Callable[[], str],
    ) -> None:
        self.config = config
        self._group = groups
        self._create_group = create_group
        self._new_id = new_id
        # Per-group dynamic configs (GROUP resource, KIP-848): group id -> overrides of the
        # broker's group.consumer.session.timeout.ms / heartbeat.interval.ms.
        self.group_overrides: dict[str, ConsumerGroupOverrides] = {}
        # Set by the coordinator: converts the group to a classic group when the members
        # being fenced are the last ones on the consumer protocol (KIP-848 online
        # downgrade); returns whether it did.
        self.downgrade: Callable[[ConsumerGroup, set[str], int, Result], bool] | None = None

    def set_group_overrides(self, group_id: str, overrides: ConsumerGroupOverrides) -> None:
        """Apply a group's `consumer.session.timeout.ms` / `consumer.heartbeat.interval.ms`
        (None: the broker default); members pick them up on their next heartbeat."""
        if overrides == ConsumerGroupOverrides():
            self.group_overrides.pop(group_id, None)
        else:
            self.group_overrides[group_id] = overrides

    def session_timeout_ms(self, group_id: str) -> int:
        """The group's session timeout (ms): its override, else the broker's default."""
        override = self.group_overrides.get(group_id)
        if override is not None and override.session_timeout_ms is not None:
            return override.session_timeout_ms
        return self.config.consumer_session_timeout_ms

    def heartbeat_interval_ms(self, group_id: str) -> int:
        """The group's heartbeat interval (ms): its override, else the broker's default."""
        override = self.group_overrides.get(group_id)
        if override is not None and override.heartbeat_interval_ms is not None:
            return override.heartbeat_interval_ms
        return self.config.consumer_heartbeat_interval_ms

    # -- records -----------------------------------------------------------------------------

    def _record(self, group_id: str, key: Key, value: bytes | None) -> CoordinatorRecord:
        return CoordinatorRecord(
            partition_for(group_id, self.config.offsets_topic_partitions), encode_key(key), value
        )

    def records_for(self, group: ConsumerGroup) -> list[CoordinatorRecord]:
        """The records that bring the log's copy of `group` up to date, in Kafka's order:
        removed members' tombstones (current assignment, target, metadata), then changed
        member metadata, the group epoch, changed targets, the assignment epoch and changed
        current assignments. Marks them written."""
        group_id = group.group_id
        records: list[CoordinatorRecord] = []
        for member_id in [m for m in group.persisted_members if m not in group.members]:
            del group.persisted_members[member_id]
            records += [
                self._record(group_id, CurrentAssignmentKey(group_id, member_id), None),
                self._record(group_id, TargetAssignmentKey(group_id, member_id), None),
                self._record(group_id, MemberKey(group_id, member_id), None),
            ]
        now = {
            member_id: (
                encode_member_value(member.metadata_value()),
                encode_target_value(group.target.get(member_id, {})),
                encode_current_value(member.current_value()),
            )
            for member_id, member in group.members.items()
        }
        before = dict(group.persisted_members)

        def changed(member_id: str, index: int) -> bool:
            old = before.get(member_id)
            return old is None or old[index] != now[member_id][index]

        for member_id, values in now.items():
            if changed(member_id, 0):
                records.append(self._record(group_id, MemberKey(group_id, member_id), values[0]))
        if group.persisted_epoch != group.group_epoch:
            records.append(
                self._record(
                    group_id,
                    ConsumerGroupKey(group_id),
                    encode_consumer_group_value(group.group_epoch),
                )
            )
        for member_id, values in now.items():
            if changed(member_id, 1):
                records.append(
                    self._record(group_id, TargetAssignmentKey(group_id, member_id), values[1])
                )
        if group.persisted_assignment_epoch != group.assignment_epoch:
            records.append(
                self._record(
                    group_id,
                    TargetAssignmentEpochKey(group_id),
                    encode_target_epoch_value(group.assignment_epoch),
                )
            )
        for member_id, values in now.items():
            if changed(member_id, 2):
                records.append(
                    self._record(group_id, CurrentAssignmentKey(group_id, member_id), values[2])
                )
        self.mark_persisted(group, now)
        return records

    @staticmethod
    def mark_persisted(
        group: ConsumerGroup, values: dict[str, tuple[bytes, bytes, bytes]] | None = None
    ) -> None:
        """The log holds exactly the group's current state (after replay, or a write)."""
        if values is None:
            values = {
                member_id: (
                    encode_member_value(member.metadata_value()),
                    encode_target_value(group.target.get(member_id, {})),
                    encode_current_value(member.current_value()),
                )
                for member_id, member in group.members.items()
            }
        group.persisted_members = values
        group.persisted_epoch = group.group_epoch
        group.persisted_assignment_epoch = group.assignment_epoch

    def tombstones(self, group: ConsumerGroup) -> list[CoordinatorRecord]:
        """Every record of the group deleted (Kafka's createGroupTombstoneRecords)."""
        group_id = group.group_id
        records = []
        for member_id in sorted(set(group.members) | set(group.persisted_members)):
            records += [
                self._record(group_id, CurrentAssignmentKey(group_id, member_id), None),
                self._record(group_id, TargetAssignmentKey(group_id, member_id), None),
                self._record(group_id, MemberKey(group_id, member_id), None),
            ]
        records += [
            self._record(group_id, TargetAssignmentEpochKey(group_id), None),
            self._record(group_id, ConsumerGroupKey(group_id), None),
        ]
        group.persisted_members = {}
        group.persisted_epoch = group.persisted_assignment_epoch = None
        return records

    def bump(self, group: ConsumerGroup, now_ms: int) -> None:
        group.group_epoch += 1
        group.state_timestamp_ms = now_ms

    # -- the heartbeat -----------------------------------------------------------------------

    def heartbeat(
        self,
        ref: int,
        request: HeartbeatRequest,
        topics: Mapping[str, TopicInfo],
        now_ms: int,
    ) -> Result:
        result = Result()

        def fail(error: ErrorCode, message: str | None = None) -> Result:
            result.respond(
                ref,
                ConsumerGroupHeartbeatResponse(error, message, member_id=request.member_id or None),
            )
            return result

        epoch = request.member_epoch
        if not request.group_id:
            return fail(ErrorCode.invalid_request, "GroupId can't be empty.")
        if request.api_version >= 1 and not request.member_id:
            return fail(ErrorCode.invalid_request, "MemberId can't be empty.")
        if epoch == 0:
            if request.rebalance_timeout_ms < 0:
                return fail(ErrorCode.invalid_request, "RebalanceTimeoutMs must be provided.")
            if request.subscribed_topic_names is None and request.subscribed_topic_regex is None:
                return fail(ErrorCode.invalid_request, "SubscribedTopicNames must be set.")
        elif epoch < LEAVE_GROUP_STATIC_MEMBER_EPOCH:
            return fail(ErrorCode.invalid_request, f"MemberEpoch {epoch} is invalid.")
        if request.server_assignor is not None and (
            request.server_assignor not in self.config.consumer_assignors
        ):
            return fail(
                ErrorCode.unsupported_assignor,
                f"ServerAssignor {request.server_assignor} is not supported.",
            )
        if request.subscribed_topic_regex is not None:
            try:
                re.compile(request.subscribed_topic_regex)
            except re.error:
                return fail(
                    ErrorCode.invalid_regular_expression, "SubscribedTopicRegex is invalid."
                )
        group = self._group(request.group_id)
        if epoch in (LEAVE_GROUP_MEMBER_EPOCH, LEAVE_GROUP_STATIC_MEMBER_EPOCH):
            return self._leave(ref, group, request, now_ms, result)
        if group is None:
            if epoch != 0:
                return fail(ErrorCode.unknown_member_id, "The group does not exist.")
            created = self._create_group(request.group_id, topics, now_ms, result)
            if created == ErrorCode.group_max_size_reached:
                return fail(created, "The group is full.")
            if isinstance(created, ErrorCode):
                return fail(created, f"Group {request.group_id} is not a consumer group.")
            group = created
        member_id = request.member_id or self._new_id()
        member = group.members.get(member_id)
        bumped = False
        if epoch == 0:
            taken_over = False
            if request.instance_id is not None:
                replaced = self._take_over_static(group, member_id, request)
                if isinstance(replaced, ErrorCode):
                    return fail(replaced, "Static member is still active.")
                if replaced is not None:
                    member, taken_over = replaced, True
            if member is not None and not taken_over:
                # A member re-joining from scratch: drop what it had, then join again.
                self.remove(group, member_id, now_ms)
                member = None
            if member is None:
                if len(group.members) >= self.config.max_size:
                    return fail(ErrorCode.group_max_size_reached, "The group is full.")
                member = ConsumerMember(member_id=member_id)
                group.members[member_id] = member
                self.bump(group, now_ms)
                bumped = True
        else:
            if member is None:
                return fail(ErrorCode.unknown_member_id, "The member is not in the group.")
            if epoch > member.member_epoch or (
                epoch < member.member_epoch
                and not (
                    epoch == member.previous_member_epoch
                    and request.owned is not None
                    and _flatten(request.owned) <= _flatten(member.assigned)
                )
            ):
                return fail(
                    ErrorCode.fenced_member_epoch,
                    f"The member epoch {epoch} is not {member.member_epoch}.",
                )
        # A classic member that comes back on ConsumerGroupHeartbeat now speaks this protocol.
        member.classic = None
        member.classic_join_deadline_ms = member.classic_sync_deadline_ms = None
        member.session_deadline_ms = now_ms + self.session_timeout_ms(group.group_id)
        member.client_id = request.client_id
        member.client_host = request.client_host
        if request.rebalance_timeout_ms >= 0:
            member.rebalance_timeout_ms = request.rebalance_timeout_ms
        if request.instance_id is not None:
            member.instance_id = request.instance_id
        if request.rack_id is not None:
            member.rack_id = request.rack_id
        changed = False
        if request.subscribed_topic_names is not None:
            names = frozenset(request.subscribed_topic_names)
            changed |= names != member.subscribed_topic_names
            member.subscribed_topic_names = names
        if request.subscribed_topic_regex is not None:
            regex = request.subscribed_topic_regex or None
            changed |= regex != member.subscribed_topic_regex
            member.subscribed_topic_regex = regex
        if request.server_assignor is not None:
            changed |= request.server_assignor != member.server_assignor
            member.server_assignor = request.server_assignor
        subscribed_metadata = self.subscribed_metadata(group, topics)
        if changed or subscribed_metadata != group.subscribed_metadata:
            if not (changed and epoch == 0 and bumped):
                self.bump(group, now_ms)
            group.subscribed_metadata = subscribed_metadata
        if group.group_epoch > group.assignment_epoch:
            try:
                self.compute_target(group, topics)
            except UnknownAssignorError as error:
                return fail(ErrorCode.unsupported_assignor, f"Unknown assignor {error}.")
        assigned_before = dict(member.assigned)
        self.reconcile(group, member, request.owned, now_ms)
        full_request = epoch == 0 or (
            request.rebalance_timeout_ms >= 0
            and request.subscribed_topic_names is not None
            and request.owned is not None
        )
        # As Kafka: the assignment goes out on a full request or when the assigned partitions
        # changed — not when only the epoch moved (librdkafka re-applies a repeated assignment
        # while it is still reconciling the previous one, and can end up owning nothing).
        send_assignment = full_request or assigned_before != member.assigned
        result.respond(
            ref,
            ConsumerGroupHeartbeatResponse(
                ErrorCode.none,
                member_id=member_id,
                member_epoch=member.member_epoch,
                heartbeat_interval_ms=self.heartbeat_interval_ms(group.group_id),
                assignment=dict(member.assigned) if send_assignment else None,
            ),
        )
        return result

    def _take_over_static(
        self, group: ConsumerGroup, member_id: str, request: HeartbeatRequest
    ) -> ConsumerMember | ErrorCode | None:
        """A static member rejoining under a new member id takes its predecessor's place."""
        for old in list(group.members.values()):
            if old.instance_id == request.instance_id and old.member_id != member_id:
                if old.member_epoch != LEAVE_GROUP_STATIC_MEMBER_EPOCH:
                    return ErrorCode.unreleased_instance_id
                previous_id = old.member_id
                del group.members[previous_id]
                old.member_id = member_id
                old.member_epoch = old.previous_member_epoch
                group.members[member_id] = old
                if previous_id in group.target:
                    group.target[member_id] = group.target.pop(previous_id)
                return old
        return None

    def _leave(
        self,
        ref: int,
        group: ConsumerGroup | None,
        request: HeartbeatRequest,
        now_ms: int,
        result: Result,
    ) -> Result:
        member = group.members.get(request.member_id) if group is not None else None
        if group is None or member is None:
            result.respond(
                ref,
                ConsumerGroupHeartbeatResponse(
                    ErrorCode.unknown_member_id, member_id=request.member_id or None
                ),
            )
            return result
        if request.member_epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH and member.instance_id:
            # A static member going away for a while keeps its assignment until the session
            # times out or it comes back.
            member.previous_member_epoch = member.member_epoch
            member.member_epoch = LEAVE_GROUP_STATIC_MEMBER_EPOCH
        else:
            self.fence(group, {member.member_id}, now_ms, result)
        result.respond(
            ref,
            ConsumerGroupHeartbeatResponse(
                ErrorCode.none,
                member_id=request.member_id,
                member_epoch=request.member_epoch,
            ),
        )
        return result

    def remove(self, group: ConsumerGroup, member_id: str, now_ms: int) -> None:
        group.members.pop(member_id, None)
        group.target.pop(member_id, None)
        self.bump(group, now_ms)

    def fence(
        self, group: ConsumerGroup, member_ids: set[str], now_ms: int, result: Result
    ) -> None:
        """Members leave or time out (Kafka's consumerGroupFenceMembers): when they are the
        last ones on the consumer protocol the group may go back to classic (`downgrade`);
        otherwise they are removed and the group epoch bumped."""
        if self.downgrade is not None and self.downgrade(group, member_ids, now_ms, result):
            return
        for member_id in member_ids:
            group.members.pop(member_id, None)
            group.target.pop(member_id, None)
        self.bump(group, now_ms)

    # -- assignment --------------------------------------------------------------------------

    @staticmethod
    def subscribed_metadata(
        group: ConsumerGroup, topics: Mapping[str, TopicInfo]
    ) -> dict[str, TopicInfo]:
        names: set[str] = set()
        for member in group.members.values():
            names |= member.subscribed(topics)
        return {name: topics[name] for name in sorted(names) if name in topics}

    def _choose_assignor(self, group: ConsumerGroup) -> str:
        votes = Counter(
            member.server_assignor for member in group.members.values() if member.server_assignor
        )
        if votes:
            return max(sorted(votes), key=lambda name: votes[name])
        return self.config.consumer_assignors[0]

    def compute_target(self, group: ConsumerGroup, topics: Mapping[str, TopicInfo]) -> None:
        name = self._choose_assignor(group)
        subscriptions = {
            member_id: member.subscribed(topics) for member_id, member in group.members.items()
        }
        group.target = assign(name, subscriptions, topics, group.target)
        group.assignor_name = name
        group.assignment_epoch = group.group_epoch

    def reconcile(
        self,
        group: ConsumerGroup,
        member: ConsumerMember,
        owned: Partitions | None,
        now_ms: int,
    ) -> None:
        if member.state == MemberState.UNREVOKED_PARTITIONS:
            revoking = _flatten(member.pending_revocation)
            if owned is None or revoking & _flatten(owned):
                return
            member.pending_revocation = {}
            member.revocation_deadline_ms = None
            member.state = MemberState.STABLE
        if member.member_epoch == group.assignment_epoch and member.state == MemberState.STABLE:
            return
        target = _flatten(group.target.get(member.member_id, {}))
        current = _flatten(member.assigned)
        to_revoke = current - target
        # As Kafka's CurrentAssignmentBuilder: partitions the member says it no longer owns
        # (a classic member rejoins having revoked them) need no revocation round.
        if to_revoke and (owned is None or to_revoke & _flatten(owned)):
            member.assigned = _group(current & target)
            member.pending_revocation = _group(to_revoke)
            member.state = MemberState.UNREVOKED_PARTITIONS
            member.revocation_deadline_ms = now_ms + member.rebalance_timeout_ms
            return
        taken = group.owner_epochs(member.member_id)
        granted = {pair for pair in target if pair not in taken}
        if member.member_epoch != group.assignment_epoch:
            member.previous_member_epoch = member.member_epoch
            member.member_epoch = group.assignment_epoch
        member.assigned = _group(granted)
        member.state = (
            MemberState.UNRELEASED_PARTITIONS if granted != target else MemberState.STABLE
        )

    # -- timers ------------------------------------------------------------------------------

    @staticmethod
    def _deadlines(member: ConsumerMember) -> list[int]:
        deadlines = [member.session_deadline_ms]
        for deadline in (
            member.revocation_deadline_ms,
            member.classic_join_deadline_ms,
            member.classic_sync_deadline_ms,
        ):
            if deadline is not None:
                deadlines.append(deadline)
        return deadlines

    @classmethod
    def next_deadline(cls, group: ConsumerGroup) -> int | None:
        return min(
            (deadline for member in group.members.values() for deadline in cls._deadlines(member)),
            default=None,
        )

    def poll(self, group: ConsumerGroup, now_ms: int, result: Result) -> bool:
        """Fence members whose session, revocation, join or sync deadline passed; returns
        False when that turned the group into a classic group (it is no longer this one)."""
        for member in list(group.members.values()):
            if member.member_id not in group.members:
                continue
            if min(self._deadlines(member)) <= now_ms:
                self.fence(group, {member.member_id}, now_ms, result)
                if self._group(group.group_id) is not group:
                    return False
        return True
