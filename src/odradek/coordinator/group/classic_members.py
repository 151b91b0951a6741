"""Classic-protocol members of a consumer group (KIP-848 "Online migration").

A classic consumer (JoinGroup/SyncGroup/Heartbeat/LeaveGroup) in a consumer group is a
consumer-group member with ClassicMemberMetadata; the coordinator assigns its partitions with
the group's server-side assignor, as Kafka's GroupMetadataManager does
(classicGroupJoinToConsumerGroup, classicGroupSyncToConsumerGroup,
classicGroupHeartbeatToConsumerGroup, classicGroupLeaveToConsumerGroup):

- JoinGroup updates the member from its ConsumerProtocolSubscription (topics, owned partitions,
  rack), bumps the group epoch if its subscription changed, recomputes the target assignment,
  and reconciles the member as a heartbeat would (partitions it no longer owns need no
  revocation round). The answer: generation = member epoch, protocol type "consumer", the
  member's first protocol, no leader (every classic member is a follower), and the member
  must send SyncGroup within its rebalance timeout.
- SyncGroup answers the member's current assignment as a ConsumerProtocolAssignment, or
  REBALANCE_IN_PROGRESS if the group epoch moved past the member (it must rejoin).
- Heartbeat answers REBALANCE_IN_PROGRESS when the member must rejoin to make progress (the
  group epoch moved, it must revoke, or the partitions it waits for are free); it must then
  rejoin within its rebalance timeout.
- LeaveGroup fences the members; the group may go back to classic (`ConsumerProtocol.fence`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping

from kio.schema.errors import ErrorCode

from odradek.coordinator.group.assignors import TopicInfo, UnknownAssignorError
from odradek.coordinator.group.classic import JoinRequest, SyncRequest
from odradek.coordinator.group.consumer import ConsumerGroup, ConsumerMember, ConsumerProtocol
from odradek.coordinator.group.consumer_records import ClassicMemberMetadata
from odradek.coordinator.group.embedded_protocol import (
    PROTOCOL_TYPE,
    MalformedProtocolError,
    decode_subscription,
    encode_assignment,
    subscription_version,
)
from odradek.coordinator.group.migration import to_topic_ids, to_topic_names
from odradek.coordinator.group.results import (
    ErrorResponse,
    JoinGroupResponse,
    LeaveGroupResponse,
    Result,
    SyncGroupResponse,
)
from odradek.coordinator.group.state import MemberState


class ClassicMembers:
    """The classic protocol's operations on a non-empty consumer group."""

    def __init__(self, consumer: ConsumerProtocol, new_id: Callable[[], str]) -> None:
        self.consumer = consumer
        self.config = consumer.config
        self._new_id = new_id

    # -- JoinGroup ---------------------------------------------------------------------------

    def join(
        self,
        ref: int,
        group: ConsumerGroup,
        request: JoinRequest,
        topics: Mapping[str, TopicInfo],
        now_ms: int,
    ) -> Result:
        result = Result()

        def fail(error: ErrorCode, member_id: str = request.member_id) -> Result:
            result.respond(ref, JoinGroupResponse(error, member_id=member_id))
            return result

        unknown = not request.member_id
        member_id = request.member_id or self._new_id()
        if len(group.members) >= self.config.max_size and member_id not in group.members:
            return fail(ErrorCode.group_max_size_reached)
        names = [name for name, _ in request.protocols]
        if not group.supports_classic_protocols(request.protocol_type, names):
            return fail(ErrorCode.inconsistent_group_protocol)
        if unknown and request.group_instance_id is None and request.api_version >= 4:
            # KIP-394, as for a classic group; the id is only remembered once it rejoins.
            return fail(ErrorCode.member_id_required, member_id)
        try:
            subscription = decode_subscription(request.protocols[0][1])
        except MalformedProtocolError:
            # Kafka: IllegalStateException("Malformed embedded consumer protocol ...").
            return fail(ErrorCode.unknown_server_error)
        member: ConsumerMember | None
        if request.group_instance_id is None:
            member = group.members.get(member_id)
        else:
            existing = group.static_member(request.group_instance_id)
            if unknown:
                member = None
                if existing is not None:
                    # A restarted static member takes its predecessor's place (and target).
                    member = self._replace_static(group, existing, member_id)
            elif existing is None:
                return fail(ErrorCode.unknown_member_id)
            elif existing.member_id != member_id:
                return fail(ErrorCode.fenced_instance_id)
            else:
                member = existing
        if member is None:
            member = ConsumerMember(member_id=member_id)
            group.members[member_id] = member
        names_before = member.subscribed_topic_names
        member.instance_id = request.group_instance_id or member.instance_id
        if subscription.rack_id is not None:
            member.rack_id = subscription.rack_id
        if request.rebalance_timeout_ms >= 0:
            member.rebalance_timeout_ms = request.rebalance_timeout_ms
        member.subscribed_topic_names = frozenset(subscription.topics)
        member.client_id = request.client_id
        member.client_host = request.client_host
        member.classic = ClassicMemberMetadata(request.session_timeout_ms, request.protocols)
        consumer = self.consumer
        subscribed_metadata = consumer.subscribed_metadata(group, topics)
        if (
            member.subscribed_topic_names != names_before
            or subscribed_metadata != group.subscribed_metadata
        ):
            consumer.bump(group, now_ms)
            group.subscribed_metadata = subscribed_metadata
        if group.group_epoch > group.assignment_epoch:
            try:
                consumer.compute_target(group, topics)
            except UnknownAssignorError:
                return fail(ErrorCode.unknown_server_error)
        owned = to_topic_ids(subscription.owned_partitions, topics)
        consumer.reconcile(group, member, owned, now_ms)
        member.session_deadline_ms = now_ms + request.session_timeout_ms
        member.classic_join_deadline_ms = None
        member.classic_sync_deadline_ms = now_ms + max(request.rebalance_timeout_ms, 0)
        result.respond(
            ref,
            JoinGroupResponse(
                ErrorCode.none,
                generation_id=member.member_epoch,
                protocol_type=PROTOCOL_TYPE,
                protocol_name=request.protocols[0][0],
                leader="",
                member_id=member_id,
            ),
        )
        return result

    @staticmethod
    def _replace_static(
        group: ConsumerGroup, existing: ConsumerMember, member_id: str
    ) -> ConsumerMember:
        """Kafka's replaceMember: the new incarnation starts at epoch 0 with the old one's
        target; the old member's records are tombstoned."""
        del group.members[existing.member_id]
        target = group.target.pop(existing.member_id, None)
        existing.member_id = member_id
        existing.member_epoch = existing.previous_member_epoch = 0
        existing.assigned = {}
        existing.pending_revocation = {}
        existing.state = MemberState.STABLE
        existing.revocation_deadline_ms = None
        group.members[member_id] = existing
        if target is not None:
            group.target[member_id] = target
        return existing

    # -- validation shared by SyncGroup, Heartbeat ---------------------------------------------

    @staticmethod
    def _member(
        group: ConsumerGroup, member_id: str, instance_id: str | None
    ) -> ConsumerMember | ErrorCode:
        """Kafka's validateConsumerGroupMember and throwIfMemberDoesNotUseClassicProtocol."""
        if instance_id is None:
            member = group.members.get(member_id)
            if member is None:
                return ErrorCode.unknown_member_id
        else:
            member = group.static_member(instance_id)
            if member is None:
                return ErrorCode.unknown_member_id
            if member.member_id != member_id:
                return ErrorCode.fenced_instance_id
        if not member.uses_classic_protocol:
            return ErrorCode.unknown_member_id
        return member

    # -- SyncGroup ---------------------------------------------------------------------------

    def sync(
        self,
        ref: int,
        group: ConsumerGroup,
        request: SyncRequest,
        names: Mapping[uuid.UUID, str],
        now_ms: int,
    ) -> Result:
        result = Result()
        member = self._member(group, request.member_id, request.group_instance_id)
        if isinstance(member, ErrorCode):
            result.respond(ref, SyncGroupResponse(member))
            return result
        assert member.classic is not None
        protocol_name = member.classic.protocols[0][0] if member.classic.protocols else ""
        error = ErrorCode.none
        if request.generation_id != member.member_epoch:
            error = ErrorCode.illegal_generation
        elif (request.protocol_type is not None and request.protocol_type != PROTOCOL_TYPE) or (
            request.protocol_name is not None and request.protocol_name != protocol_name
        ):
            error = ErrorCode.inconsistent_group_protocol
        elif (
            group.group_epoch > member.member_epoch
            and member.state != MemberState.UNREVOKED_PARTITIONS
        ):
            error = ErrorCode.rebalance_in_progress
            self._expect_join(member, now_ms)
        if error != ErrorCode.none:
            result.respond(ref, SyncGroupResponse(error))
            return result
        member.classic_sync_deadline_ms = None
        member.session_deadline_ms = now_ms + member.classic.session_timeout_ms
        metadata = member.classic.protocols[0][1] if member.classic.protocols else b""
        assignment = encode_assignment(
            to_topic_names(member.assigned, names), subscription_version(metadata)
        )
        result.respond(
            ref,
            SyncGroupResponse(
                ErrorCode.none,
                request.protocol_type or PROTOCOL_TYPE,
                request.protocol_name or protocol_name,
                assignment,
            ),
        )
        return result

    @staticmethod
    def _expect_join(member: ConsumerMember, now_ms: int) -> None:
        if member.classic_join_deadline_ms is None:
            member.classic_join_deadline_ms = now_ms + member.rebalance_timeout_ms

    # -- Heartbeat ---------------------------------------------------------------------------

    def heartbeat(
        self,
        ref: int,
        group: ConsumerGroup,
        generation_id: int,
        member_id: str,
        instance_id: str | None,
        now_ms: int,
    ) -> Result:
        result = Result()
        member = self._member(group, member_id, instance_id)
        if isinstance(member, ErrorCode):
            error = member
        elif generation_id != member.member_epoch:
            error = ErrorCode.illegal_generation
        else:
            assert member.classic is not None
            member.session_deadline_ms = now_ms + member.classic.session_timeout_ms
            error = ErrorCode.none
            if (
                member.member_epoch < group.group_epoch
                or member.state == MemberState.UNREVOKED_PARTITIONS
                or (
                    member.state == MemberState.UNRELEASED_PARTITIONS
                    and not group.waiting_on_unreleased_partition(member)
                )
            ):
                error = ErrorCode.rebalance_in_progress
                self._expect_join(member, now_ms)
        result.respond(ref, ErrorResponse(error))
        return result

    # -- LeaveGroup --------------------------------------------------------------------------

    def leave(
        self,
        ref: int,
        group: ConsumerGroup,
        leaving: list[tuple[str, str | None]],
        now_ms: int,
    ) -> Result:
        result = Result()
        answers: list[tuple[str, str | None, ErrorCode]] = []
        fenced: set[str] = set()
        for member_id, instance_id in leaving:
            if instance_id is None:
                member = group.members.get(member_id)
                error = ErrorCode.none
                if member is None or not member.uses_classic_protocol:
                    error = ErrorCode.unknown_member_id
            else:
                member = group.static_member(instance_id)
                error = ErrorCode.none
                if member is None:
                    error = ErrorCode.unknown_member_id
                elif member_id and member.member_id != member_id:
                    error = ErrorCode.fenced_instance_id
                elif member_id and not member.uses_classic_protocol:
                    error = ErrorCode.unknown_member_id
            answers.append((member_id, instance_id, error))
            if error == ErrorCode.none and member is not None:
                fenced.add(member.member_id)
        if fenced:
            self.consumer.fence(group, fenced, now_ms, result)
        result.respond(ref, LeaveGroupResponse(ErrorCode.none, tuple(answers)))
        return result
