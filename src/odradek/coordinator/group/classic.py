"""The classic group protocol: JoinGroup, SyncGroup, Heartbeat, LeaveGroup and their timers.

Follows Kafka's GroupCoordinator/ClassicGroup: a rebalance moves a group from Stable (or Empty)
to PreparingRebalance, where it waits for every member to (re)join, up to the rebalance timeout
(or `group.initial.rebalance.delay.ms` for a new group); then the generation is bumped and the
group waits in CompletingRebalance for the leader's SyncGroup with the assignments, which is
stored in `__consumer_offsets` before anyone gets it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from kio.schema.errors import ErrorCode

from odradek.coordinator.group.config import GroupConfig
from odradek.coordinator.group.records import (
    CoordinatorRecord,
    GroupKey,
    GroupValue,
    MemberValue,
    encode_group_value,
    encode_key,
    partition_for,
)
from odradek.coordinator.group.results import (
    ErrorResponse,
    JoinGroupResponse,
    JoinMember,
    LeaveGroupResponse,
    Result,
    SyncGroupResponse,
)
from odradek.coordinator.group.state import ClassicGroupState, check_classic_transition

State = ClassicGroupState


@dataclass(slots=True)
class ClassicMember:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    rebalance_timeout_ms: int
    session_timeout_ms: int
    protocol_type: str
    protocols: tuple[tuple[str, bytes], ...]
    assignment: bytes = b""
    join_ref: int | None = None
    join_version: int = 0
    sync_ref: int | None = None
    heartbeat_deadline_ms: int = 0

    def metadata(self, protocol: str | None) -> bytes:
        for name, metadata in self.protocols:
            if name == protocol:
                return metadata
        return b""

    def protocol_names(self) -> list[str]:
        return [name for name, _ in self.protocols]


class ClassicGroup:
    def __init__(self, group_id: str, now_ms: int) -> None:
        self.group_id = group_id
        self.state = State.EMPTY
        self.state_timestamp_ms = now_ms
        self.generation_id = 0
        self.protocol_type: str | None = None
        self.protocol_name: str | None = None
        self.leader_id: str | None = None
        self.members: dict[str, ClassicMember] = {}
        self.static_members: dict[str, str] = {}
        # member ids handed out with MEMBER_ID_REQUIRED -> deadline for their second join
        self.pending_members: dict[str, int] = {}
        self.rebalance_deadline_ms: int | None = None
        self.sync_deadline_ms: int | None = None
        self.in_initial_delay = False
        self.initial_delay_remaining_ms = 0
        self.new_member_added = False

    # -- state -------------------------------------------------------------------------------

    def transition(self, target: State, now_ms: int) -> None:
        check_classic_transition(self.state, target)
        self.state = target
        self.state_timestamp_ms = now_ms

    def is_leader(self, member_id: str) -> bool:
        return self.leader_id == member_id

    def max_rebalance_timeout_ms(self) -> int:
        return max((member.rebalance_timeout_ms for member in self.members.values()), default=0)

    def all_joined(self) -> bool:
        return not self.pending_members and all(
            member.join_ref is not None for member in self.members.values()
        )

    # -- protocols ---------------------------------------------------------------------------

    def candidate_protocols(self) -> list[str]:
        """Protocols every member supports, in the leader's order of preference."""
        members = list(self.members.values())
        if not members:
            return []
        leader = self.members.get(self.leader_id or "", members[0])
        supported = set.intersection(*(set(member.protocol_names()) for member in members))
        return [name for name in leader.protocol_names() if name in supported]

    def supports_protocols(self, protocol_type: str, names: list[str]) -> bool:
        if not self.members:
            return bool(protocol_type) and bool(names)
        return protocol_type == self.protocol_type and bool(
            set(self.candidate_protocols()) & set(names)
        )

    def select_protocol(self) -> str:
        """Each member votes for its most preferred candidate; ties go to the leader's order."""
        candidates = self.candidate_protocols()
        votes: Counter[str] = Counter()
        for member in self.members.values():
            votes[next(name for name in member.protocol_names() if name in candidates)] += 1
        return max(candidates, key=lambda name: (votes[name], -candidates.index(name)))

    # -- members -----------------------------------------------------------------------------

    def add_member(self, member: ClassicMember) -> None:
        if not self.members:
            self.protocol_type = member.protocol_type
        self.members[member.member_id] = member
        if member.group_instance_id is not None:
            self.static_members[member.group_instance_id] = member.member_id
        if self.leader_id is None:
            self.leader_id = member.member_id
        self.pending_members.pop(member.member_id, None)

    def pop_member(self, member_id: str) -> ClassicMember:
        member = self.members.pop(member_id)
        if (
            member.group_instance_id is not None
            and self.static_members.get(member.group_instance_id) == member_id
        ):
            del self.static_members[member.group_instance_id]
        if self.leader_id == member_id:
            self.leader_id = next(iter(self.members), None)
        return member

    def is_static_fenced(self, member_id: str, instance_id: str | None) -> bool:
        if instance_id is None:
            return False
        known = self.static_members.get(instance_id)
        return known is not None and known != member_id

    def to_value(self, assignments: dict[str, bytes] | None = None) -> GroupValue:
        return GroupValue(
            protocol_type=self.protocol_type or "",
            generation=self.generation_id,
            protocol=self.protocol_name,
            leader=self.leader_id,
            current_state_timestamp=self.state_timestamp_ms,
            members=tuple(
                MemberValue(
                    member.member_id,
                    member.group_instance_id,
                    member.client_id,
                    member.client_host,
                    member.rebalance_timeout_ms,
                    member.session_timeout_ms,
                    member.metadata(self.protocol_name),
                    member.assignment
                    if assignments is None
                    else assignments.get(member.member_id, b""),
                )
                for member in self.members.values()
            ),
        )


@dataclass(frozen=True, slots=True)
class JoinRequest:
    group_id: str
    member_id: str
    group_instance_id: str | None
    protocol_type: str
    protocols: tuple[tuple[str, bytes], ...]
    session_timeout_ms: int
    rebalance_timeout_ms: int
    client_id: str
    client_host: str
    api_version: int


@dataclass(frozen=True, slots=True)
class SyncRequest:
    group_id: str
    generation_id: int
    member_id: str
    group_instance_id: str | None
    protocol_type: str | None
    protocol_name: str | None
    assignments: dict[str, bytes]


#: A member id travels in a STRING field (int16 length): at most 32,767 UTF-8 bytes.
MAX_MEMBER_ID_BYTES = 32_767


def member_id_for(prefix: str, unique: str) -> str:
    """Kafka's member id, `<group.instance.id or client.id>-<uuid>`, with the prefix shortened
    when the whole would not fit a protocol STRING (Kafka fails to encode its JoinGroup answer
    there; a client with a 32 KiB client.id still gets a member id here)."""
    room = MAX_MEMBER_ID_BYTES - len(unique.encode()) - 1
    encoded = prefix.encode()
    if len(encoded) > room:
        prefix = encoded[:room].decode(errors="ignore")
    return f"{prefix}-{unique}"


class ClassicProtocol:
    """The classic protocol's operations over the coordinator's classic groups."""

    def __init__(
        self,
        config: GroupConfig,
        groups: Callable[[str], ClassicGroup | None],
        create_group: Callable[[str, int], ClassicGroup | None],
        new_id: Callable[[], str],
    ) -> None:
        self.config = config
        self._group = groups
        self._create_group = create_group
        self._new_id = new_id

    def group_record(
        self, group: ClassicGroup, assignments: dict[str, bytes] | None = None
    ) -> CoordinatorRecord:
        """The group's record; with `assignments` (member id -> bytes) in place of the
        members' current ones (the leader's SyncGroup, stored before it takes effect)."""
        return CoordinatorRecord(
            partition_for(group.group_id, self.config.offsets_topic_partitions),
            encode_key(GroupKey(group.group_id)),
            encode_group_value(group.to_value(assignments)),
        )

    # -- JoinGroup ---------------------------------------------------------------------------

    def join(self, ref: int, request: JoinRequest, now_ms: int) -> Result:
        result = Result()

        def fail(error: ErrorCode, member_id: str = "") -> Result:
            result.respond(ref, JoinGroupResponse(error, member_id=member_id))
            return result

        config = self.config
        if not request.group_id:
            return fail(ErrorCode.invalid_group_id, request.member_id)
        if not (
            config.min_session_timeout_ms
            <= request.session_timeout_ms
            <= config.max_session_timeout_ms
        ):
            return fail(ErrorCode.invalid_session_timeout, request.member_id)
        group = self._group(request.group_id)
        if group is None:
            if request.member_id:
                return fail(ErrorCode.unknown_member_id, request.member_id)
            group = self._create_group(request.group_id, now_ms)
            if group is None:
                return fail(ErrorCode.inconsistent_group_protocol)
        if group.state == State.DEAD:
            return fail(ErrorCode.coordinator_not_available, request.member_id)
        names = [name for name, _ in request.protocols]
        if not request.member_id:
            return self._join_new_member(group, ref, request, names, now_ms, result)
        return self._join_existing_member(group, ref, request, names, now_ms, result)

    def _join_new_member(
        self,
        group: ClassicGroup,
        ref: int,
        request: JoinRequest,
        names: list[str],
        now_ms: int,
        result: Result,
    ) -> Result:
        if not group.supports_protocols(request.protocol_type, names):
            result.respond(ref, JoinGroupResponse(ErrorCode.inconsistent_group_protocol))
            return result
        instance_id = request.group_instance_id
        if instance_id is not None and instance_id in group.static_members:
            return self._replace_static_member(group, ref, request, now_ms, result)
        if len(group.members) + len(group.pending_members) >= self.config.max_size:
            result.respond(ref, JoinGroupResponse(ErrorCode.group_max_size_reached))
            return result
        member_id = member_id_for(instance_id or request.client_id, self._new_id())
        if instance_id is None and request.api_version >= 4:
            # KIP-394: the client must come back with the id, so a lost response cannot leave
            # a member nobody owns behind.
            group.pending_members[member_id] = now_ms + request.session_timeout_ms
            result.respond(
                ref, JoinGroupResponse(ErrorCode.member_id_required, member_id=member_id)
            )
            return result
        self._add_member_and_rebalance(group, ref, request, member_id, now_ms, result)
        return result

    def _join_existing_member(
        self,
        group: ClassicGroup,
        ref: int,
        request: JoinRequest,
        names: list[str],
        now_ms: int,
        result: Result,
    ) -> Result:
        member_id = request.member_id
        if not group.supports_protocols(request.protocol_type, names):
            result.respond(
                ref, JoinGroupResponse(ErrorCode.inconsistent_group_protocol, member_id=member_id)
            )
            return result
        if member_id in group.pending_members and member_id not in group.members:
            self._add_member_and_rebalance(group, ref, request, member_id, now_ms, result)
            return result
        if group.is_static_fenced(member_id, request.group_instance_id):
            result.respond(
                ref, JoinGroupResponse(ErrorCode.fenced_instance_id, member_id=member_id)
            )
            return result
        member = group.members.get(member_id)
        if member is None:
            result.respond(ref, JoinGroupResponse(ErrorCode.unknown_member_id, member_id=member_id))
            return result
        if group.state == State.PREPARING_REBALANCE:
            self._update_member(group, member, ref, request, result)
            self.try_complete_join(group, now_ms, result)
        elif group.state == State.COMPLETING_REBALANCE:
            if member.protocols == request.protocols:
                # The member lost the JoinGroup response: send it again.
                self._update_timeouts(member, request, now_ms)
                result.respond(ref, self._current_generation(group, member, request.api_version))
            else:
                self._update_member(group, member, ref, request, result)
                self.prepare_rebalance(group, now_ms, result)
        elif group.state == State.STABLE:
            if group.is_leader(member_id) or member.protocols != request.protocols:
                # The leader rejoining (or new metadata) means it wants a new assignment.
                self._update_member(group, member, ref, request, result)
                self.prepare_rebalance(group, now_ms, result)
            else:
                self._update_timeouts(member, request, now_ms)
                result.respond(ref, self._current_generation(group, member, request.api_version))
        else:
            result.respond(ref, JoinGroupResponse(ErrorCode.unknown_member_id, member_id=member_id))
        return result

    def _current_generation(
        self, group: ClassicGroup, member: ClassicMember, api_version: int
    ) -> JoinGroupResponse:
        leader = group.is_leader(member.member_id)
        return JoinGroupResponse(
            ErrorCode.none,
            generation_id=group.generation_id,
            protocol_type=group.protocol_type,
            protocol_name=group.protocol_name,
            leader=group.leader_id or "",
            member_id=member.member_id,
            members=self._join_members(group) if leader else (),
        )

    @staticmethod
    def _join_members(group: ClassicGroup) -> tuple[JoinMember, ...]:
        return tuple(
            JoinMember(
                member.member_id, member.group_instance_id, member.metadata(group.protocol_name)
            )
            for member in group.members.values()
        )

    def _update_timeouts(self, member: ClassicMember, request: JoinRequest, now_ms: int) -> None:
        member.session_timeout_ms = request.session_timeout_ms
        member.rebalance_timeout_ms = request.rebalance_timeout_ms
        member.heartbeat_deadline_ms = now_ms + member.session_timeout_ms

    def _update_member(
        self,
        group: ClassicGroup,
        member: ClassicMember,
        ref: int,
        request: JoinRequest,
        result: Result,
    ) -> None:
        if member.join_ref is not None and member.join_ref != ref:
            result.respond(
                member.join_ref,
                JoinGroupResponse(ErrorCode.rebalance_in_progress, member_id=member.member_id),
            )
        member.protocols = request.protocols
        member.session_timeout_ms = request.session_timeout_ms
        member.rebalance_timeout_ms = request.rebalance_timeout_ms
        member.join_ref = ref
        member.join_version = request.api_version

    def _add_member_and_rebalance(
        self,
        group: ClassicGroup,
        ref: int,
        request: JoinRequest,
        member_id: str,
        now_ms: int,
        result: Result,
    ) -> None:
        member = ClassicMember(
            member_id=member_id,
            group_instance_id=request.group_instance_id,
            client_id=request.client_id,
            client_host=request.client_host,
            rebalance_timeout_ms=request.rebalance_timeout_ms,
            session_timeout_ms=request.session_timeout_ms,
            protocol_type=request.protocol_type,
            protocols=request.protocols,
            join_ref=ref,
            join_version=request.api_version,
            heartbeat_deadline_ms=now_ms + request.session_timeout_ms,
        )
        group.add_member(member)
        group.new_member_added = True
        if group.state != State.PREPARING_REBALANCE:
            self.prepare_rebalance(group, now_ms, result)
        self.try_complete_join(group, now_ms, result)

    def _replace_static_member(
        self, group: ClassicGroup, ref: int, request: JoinRequest, now_ms: int, result: Result
    ) -> Result:
        """A static member restarted: it takes over its old member's place (and assignment);
        in a stable group without a rebalance."""
        assert request.group_instance_id is not None
        old_id = group.static_members[request.group_instance_id]
        old = group.members[old_id]
        new_id = member_id_for(request.group_instance_id, self._new_id())
        was_leader = group.is_leader(old_id)
        # The old incarnation's parked requests learn they are fenced.
        if old.join_ref is not None:
            result.respond(
                old.join_ref, JoinGroupResponse(ErrorCode.fenced_instance_id, member_id=old_id)
            )
        if old.sync_ref is not None:
            result.respond(old.sync_ref, SyncGroupResponse(ErrorCode.fenced_instance_id))
        members = list(group.members.items())
        replaced = ClassicMember(
            member_id=new_id,
            group_instance_id=request.group_instance_id,
            client_id=request.client_id,
            client_host=request.client_host,
            rebalance_timeout_ms=request.rebalance_timeout_ms,
            session_timeout_ms=request.session_timeout_ms,
            protocol_type=request.protocol_type,
            protocols=old.protocols,
            assignment=old.assignment,
            heartbeat_deadline_ms=now_ms + request.session_timeout_ms,
        )
        group.members = {
            (new_id if member_id == old_id else member_id): (
                replaced if member_id == old_id else member
            )
            for member_id, member in members
        }
        group.static_members[request.group_instance_id] = new_id
        if was_leader:
            group.leader_id = new_id
        protocols_changed = old.metadata(group.protocol_name) != dict(request.protocols).get(
            group.protocol_name or "", None
        )
        if group.state == State.STABLE and not protocols_changed:
            replaced.protocols = request.protocols
            leader = group.is_leader(new_id)
            skip = leader and request.api_version >= 9
            result.records.append(self.group_record(group))
            old.join_ref = old.sync_ref = None
            instance_id = request.group_instance_id

            def stored(error: ErrorCode, _completed_ms: int) -> Result:
                # Kafka reverts the replacement when the group record cannot be stored: the
                # old incarnation keeps its place; the new one got the error and retries.
                if error != ErrorCode.none and group.static_members.get(instance_id) == new_id:
                    group.members = {
                        (old_id if member_id == new_id else member_id): (
                            old if member_id == new_id else member
                        )
                        for member_id, member in group.members.items()
                    }
                    group.static_members[instance_id] = old_id
                    if group.leader_id == new_id:
                        group.leader_id = old_id
                return Result()

            result.completions.append(stored)
            result.respond(
                ref,
                JoinGroupResponse(
                    ErrorCode.none,
                    generation_id=group.generation_id,
                    protocol_type=group.protocol_type,
                    protocol_name=group.protocol_name,
                    leader=group.leader_id or "",
                    member_id=new_id,
                    members=self._join_members(group) if skip else (),
                    skip_assignment=skip,
                ),
            )
            return result
        self._update_member(group, replaced, ref, request, result)
        if group.state == State.PREPARING_REBALANCE:
            self.try_complete_join(group, now_ms, result)
        else:
            self.prepare_rebalance(group, now_ms, result)
        return result

    # -- rebalance steps ---------------------------------------------------------------------

    def prepare_rebalance(self, group: ClassicGroup, now_ms: int, result: Result) -> None:
        if group.state == State.COMPLETING_REBALANCE:
            for member in group.members.values():
                member.assignment = b""
                if member.sync_ref is not None:
                    result.respond(
                        member.sync_ref, SyncGroupResponse(ErrorCode.rebalance_in_progress)
                    )
                    member.sync_ref = None
        rebalance_timeout = group.max_rebalance_timeout_ms()
        delay = self.config.initial_rebalance_delay_ms
        if group.state == State.EMPTY and delay > 0:
            first = min(delay, rebalance_timeout)
            group.in_initial_delay = True
            group.initial_delay_remaining_ms = max(rebalance_timeout - delay, 0)
            group.new_member_added = False
            group.rebalance_deadline_ms = now_ms + first
        else:
            group.in_initial_delay = False
            group.rebalance_deadline_ms = now_ms + rebalance_timeout
        group.sync_deadline_ms = None
        group.transition(State.PREPARING_REBALANCE, now_ms)
        self.try_complete_join(group, now_ms, result)

    def try_complete_join(self, group: ClassicGroup, now_ms: int, result: Result) -> None:
        if (
            group.state == State.PREPARING_REBALANCE
            and not group.in_initial_delay
            and group.all_joined()
        ):
            self.complete_join(group, now_ms, result)

    def complete_join(self, group: ClassicGroup, now_ms: int, result: Result) -> None:
        # Dynamic members that did not rejoin in time are out; static ones keep their place.
        for member in list(group.members.values()):
            if member.join_ref is None and member.group_instance_id is None:
                self._remove(group, member.member_id, ErrorCode.unknown_member_id, result)
        group.in_initial_delay = False
        group.rebalance_deadline_ms = None
        group.generation_id += 1
        if not group.members:
            group.protocol_name = None
            group.leader_id = None
            group.transition(State.EMPTY, now_ms)
            result.records.append(self.group_record(group))
            return
        if group.leader_id is None or group.members[group.leader_id].join_ref is None:
            group.leader_id = next(
                (m.member_id for m in group.members.values() if m.join_ref is not None),
                group.leader_id,
            )
        group.protocol_name = group.select_protocol()
        group.transition(State.COMPLETING_REBALANCE, now_ms)
        group.sync_deadline_ms = now_ms + group.max_rebalance_timeout_ms()
        members = self._join_members(group)
        for member in group.members.values():
            if member.join_ref is None:
                continue
            leader = group.is_leader(member.member_id)
            result.respond(
                member.join_ref,
                JoinGroupResponse(
                    ErrorCode.none,
                    generation_id=group.generation_id,
                    protocol_type=group.protocol_type,
                    protocol_name=group.protocol_name,
                    leader=group.leader_id or "",
                    member_id=member.member_id,
                    members=members if leader else (),
                ),
            )
            member.join_ref = None
            member.heartbeat_deadline_ms = now_ms + member.session_timeout_ms

    def _remove(
        self, group: ClassicGroup, member_id: str, error: ErrorCode, result: Result
    ) -> None:
        member = group.pop_member(member_id)
        if member.join_ref is not None:
            result.respond(member.join_ref, JoinGroupResponse(error, member_id=member_id))
        if member.sync_ref is not None:
            result.respond(member.sync_ref, SyncGroupResponse(error))

    def remove_and_update(
        self, group: ClassicGroup, member_ids: list[str], now_ms: int, result: Result
    ) -> None:
        """Members leave (LeaveGroup, session expiry): the rest rebalance."""
        if not member_ids:
            return
        for member_id in member_ids:
            self._remove(group, member_id, ErrorCode.unknown_member_id, result)
        if group.state in (State.STABLE, State.COMPLETING_REBALANCE):
            self.prepare_rebalance(group, now_ms, result)
        elif group.state == State.PREPARING_REBALANCE:
            self.try_complete_join(group, now_ms, result)

    # -- SyncGroup ---------------------------------------------------------------------------

    def sync(self, ref: int, request: SyncRequest, now_ms: int) -> Result:
        result = Result()

        def answer(error: ErrorCode) -> Result:
            result.respond(ref, SyncGroupResponse(error))
            return result

        group = self._group(request.group_id)
        if group is None:
            return answer(ErrorCode.unknown_member_id)
        if group.state == State.DEAD:
            return answer(ErrorCode.coordinator_not_available)
        if group.is_static_fenced(request.member_id, request.group_instance_id):
            return answer(ErrorCode.fenced_instance_id)
        member = group.members.get(request.member_id)
        if member is None:
            return answer(ErrorCode.unknown_member_id)
        if request.generation_id != group.generation_id:
            return answer(ErrorCode.illegal_generation)
        if (request.protocol_type is not None and request.protocol_type != group.protocol_type) or (
            request.protocol_name is not None and request.protocol_name != group.protocol_name
        ):
            return answer(ErrorCode.inconsistent_group_protocol)
        if group.state == State.EMPTY:
            return answer(ErrorCode.unknown_member_id)
        if group.state == State.PREPARING_REBALANCE:
            return answer(ErrorCode.rebalance_in_progress)
        member.heartbeat_deadline_ms = now_ms + member.session_timeout_ms
        if group.state == State.STABLE:
            result.respond(ref, self._sync_response(group, member))
            return result
        # CompletingRebalance: park until the leader's assignment is stored.
        if member.sync_ref is not None and member.sync_ref != ref:
            result.respond(member.sync_ref, SyncGroupResponse(ErrorCode.rebalance_in_progress))
        member.sync_ref = ref
        if group.is_leader(member.member_id):
            # Kafka's order: store the group with the assignments first; the group stays in
            # CompletingRebalance (a follower's SyncGroup parks) until the append is durable,
            # then every parked member gets its assignment at once, or all get the error.
            assignments = {
                member_id: request.assignments.get(member_id, b"") for member_id in group.members
            }
            group.sync_deadline_ms = None
            result.records.append(self.group_record(group, assignments))
            generation = group.generation_id

            def stored(error: ErrorCode, completed_ms: int) -> Result:
                return self._assignments_stored(group, generation, assignments, error, completed_ms)

            result.completions.append(stored)
        return result

    def _assignments_stored(
        self,
        group: ClassicGroup,
        generation: int,
        assignments: dict[str, bytes],
        error: ErrorCode,
        now_ms: int,
    ) -> Result:
        """The leader's assignments are durable (or failed to append): propagate them, or
        the error and a new rebalance (Kafka's setAndPropagateAssignment /
        resetAndPropagateAssignmentError). Nothing to do when the group moved on meanwhile."""
        result = Result()
        if (
            self._group(group.group_id) is not group
            or group.state != State.COMPLETING_REBALANCE
            or group.generation_id != generation
        ):
            return result
        if error != ErrorCode.none:
            for each in group.members.values():
                each.assignment = b""
                if each.sync_ref is not None:
                    result.respond(each.sync_ref, SyncGroupResponse(error))
                    each.sync_ref = None
            self.prepare_rebalance(group, now_ms, result)
            return result
        for each in group.members.values():
            each.assignment = assignments.get(each.member_id, b"")
        group.transition(State.STABLE, now_ms)
        for each in group.members.values():
            if each.sync_ref is not None:
                result.respond(each.sync_ref, self._sync_response(group, each))
                each.sync_ref = None
                each.heartbeat_deadline_ms = now_ms + each.session_timeout_ms
        return result

    @staticmethod
    def _sync_response(group: ClassicGroup, member: ClassicMember) -> SyncGroupResponse:
        return SyncGroupResponse(
            ErrorCode.none, group.protocol_type, group.protocol_name, member.assignment
        )

    # -- Heartbeat ---------------------------------------------------------------------------

    def heartbeat(
        self,
        ref: int,
        group_id: str,
        generation_id: int,
        member_id: str,
        instance_id: str | None,
        now_ms: int,
    ) -> Result:
        result = Result()
        group = self._group(group_id)
        if group is None:
            error = ErrorCode.unknown_member_id
        elif group.state == State.DEAD:
            error = ErrorCode.coordinator_not_available
        elif group.is_static_fenced(member_id, instance_id):
            error = ErrorCode.fenced_instance_id
        elif member_id not in group.members:
            error = ErrorCode.unknown_member_id
        elif generation_id != group.generation_id:
            error = ErrorCode.illegal_generation
        else:
            member = group.members[member_id]
            member.heartbeat_deadline_ms = now_ms + member.session_timeout_ms
            error = (
                ErrorCode.rebalance_in_progress
                if group.state == State.PREPARING_REBALANCE
                else ErrorCode.none
            )
        result.respond(ref, ErrorResponse(error))
        return result

    # -- LeaveGroup --------------------------------------------------------------------------

    def leave(
        self,
        ref: int,
        group_id: str,
        leaving: list[tuple[str, str | None]],
        now_ms: int,
    ) -> Result:
        result = Result()
        group = self._group(group_id)
        if group is None:
            result.respond(ref, LeaveGroupResponse(ErrorCode.unknown_member_id))
            return result
        if group.state == State.DEAD:
            result.respond(ref, LeaveGroupResponse(ErrorCode.coordinator_not_available))
            return result
        answers: list[tuple[str, str | None, ErrorCode]] = []
        removed: list[str] = []
        for member_id, instance_id in leaving:
            if instance_id is not None:
                known = group.static_members.get(instance_id)
                if known is None:
                    answers.append((member_id, instance_id, ErrorCode.unknown_member_id))
                elif member_id and member_id != known:
                    answers.append((member_id, instance_id, ErrorCode.fenced_instance_id))
                else:
                    answers.append((member_id, instance_id, ErrorCode.none))
                    if known not in removed:
                        removed.append(known)
            elif member_id in group.pending_members:
                del group.pending_members[member_id]
                answers.append((member_id, None, ErrorCode.none))
            elif member_id in group.members:
                answers.append((member_id, None, ErrorCode.none))
                if member_id not in removed:
                    removed.append(member_id)
            else:
                answers.append((member_id, None, ErrorCode.unknown_member_id))
        self.remove_and_update(group, removed, now_ms, result)
        if not removed and group.state == State.PREPARING_REBALANCE:
            self.try_complete_join(group, now_ms, result)
        result.respond(ref, LeaveGroupResponse(ErrorCode.none, tuple(answers)))
        return result

    # -- timers ------------------------------------------------------------------------------

    @staticmethod
    def next_deadline(group: ClassicGroup) -> int | None:
        deadlines = [
            member.heartbeat_deadline_ms
            for member in group.members.values()
            if member.join_ref is None and member.sync_ref is None
        ]
        deadlines += group.pending_members.values()
        if group.rebalance_deadline_ms is not None:
            deadlines.append(group.rebalance_deadline_ms)
        if group.sync_deadline_ms is not None:
            deadlines.append(group.sync_deadline_ms)
        return min(deadlines, default=None)

    def poll(self, group: ClassicGroup, now_ms: int, result: Result) -> None:
        expired_pending = [
            member_id for member_id, deadline in group.pending_members.items() if deadline <= now_ms
        ]
        for member_id in expired_pending:
            del group.pending_members[member_id]
        if (
            group.state == State.PREPARING_REBALANCE
            and group.rebalance_deadline_ms is not None
            and group.rebalance_deadline_ms <= now_ms
        ):
            if (
                group.in_initial_delay
                and group.new_member_added
                and group.initial_delay_remaining_ms > 0
            ):
                extension = min(
                    self.config.initial_rebalance_delay_ms, group.initial_delay_remaining_ms
                )
                group.initial_delay_remaining_ms -= extension
                group.new_member_added = False
                group.rebalance_deadline_ms = now_ms + extension
            else:
                group.in_initial_delay = False
                self.complete_join(group, now_ms, result)
        if (
            group.state == State.COMPLETING_REBALANCE
            and group.sync_deadline_ms is not None
            and group.sync_deadline_ms <= now_ms
        ):
            late = [m.member_id for m in group.members.values() if m.sync_ref is None]
            self.remove_and_update(group, late, now_ms, result)
        expired = [
            member.member_id
            for member in group.members.values()
            if member.join_ref is None
            and member.sync_ref is None
            and member.heartbeat_deadline_ms <= now_ms
        ]
        self.remove_and_update(group, expired, now_ms, result)
        if expired_pending and group.state == State.PREPARING_REBALANCE:
            self.try_complete_join(group, now_ms, result)
