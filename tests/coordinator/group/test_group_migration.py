"""KIP-848 online migration as a state machine: a classic group upgraded by a consumer-protocol
member, classic members served inside the consumer group, the downgrade when the last
consumer-protocol member leaves, the policies, and the records each step writes."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import pytest
from kio.schema.errors import ErrorCode

from odradek.coordinator.group import (
    ClassicGroup,
    CommitRequest,
    ConsumerGroup,
    GroupConfig,
    GroupCoordinator,
    HeartbeatRequest,
    JoinRequest,
    PartitionCommit,
    Result,
    SyncRequest,
    TopicInfo,
)
from odradek.coordinator.group.config import MigrationPolicy
from odradek.coordinator.group.consumer_records import (
    decode_current_value,
    decode_member_value,
    decode_target_epoch_value,
    decode_target_value,
)
from odradek.coordinator.group.embedded_protocol import (
    decode_assignment,
    encode_assignment,
    encode_subscription,
)
from odradek.coordinator.group.records import (
    ConsumerGroupKey,
    CurrentAssignmentKey,
    GroupKey,
    MemberKey,
    TargetAssignmentEpochKey,
    TargetAssignmentKey,
    decode_consumer_group_value,
    decode_group_value,
    decode_key,
)
from odradek.coordinator.group.state import ClassicGroupState

TOPIC = TopicInfo(uuid.UUID(int=7), 6)
TOPICS = {"t": TOPIC}
SESSION = 10_000


def join_request(
    member_id: str, owned: frozenset[int] = frozenset(), protocol_type: str = "consumer"
) -> JoinRequest:
    subscription = encode_subscription(("t",), {"t": owned} if owned else None)
    return JoinRequest(
        group_id="g",
        member_id=member_id,
        group_instance_id=None,
        protocol_type=protocol_type,
        protocols=(("range", subscription),),
        session_timeout_ms=SESSION,
        rebalance_timeout_ms=20_000,
        client_id="classic",
        client_host="",
        api_version=5,
    )


class Mixed:
    """Classic members (JoinGroup/SyncGroup/Heartbeat) and KIP-848 members of group "g"."""

    def __init__(self, **config: Any) -> None:
        counter = itertools.count()
        self.coordinator = GroupCoordinator(
            GroupConfig(
                initial_rebalance_delay_ms=0,
                consumer_session_timeout_ms=SESSION,
                consumer_min_session_timeout_ms=SESSION,
                **config,
            ),
            new_id=lambda: f"m{next(counter)}",
        )
        self.references = itertools.count(1)
        self.records: list[tuple[bytes, bytes | None]] = []

    def run(self, result: Result) -> dict[int, Any]:
        self.records += [(record.key, record.value) for record in result.records]
        responses = dict(result.responses)
        for completion in result.completions:
            responses |= self.run(completion(ErrorCode.none, 0))
        return responses

    def classic_join(
        self, member_id: str, owned: frozenset[int] = frozenset(), protocol_type: str = "consumer"
    ) -> Any:
        reference = next(self.references)
        request = join_request(member_id, owned, protocol_type)
        return self.run(self.coordinator.join_group(reference, request, 0, TOPICS)).get(reference)

    def classic_sync(
        self, member_id: str, generation: int, assignments: dict[str, bytes] | None = None
    ) -> Any:
        reference = next(self.references)
        request = SyncRequest(
            "g", generation, member_id, None, "consumer", "range", assignments or {}
        )
        return self.run(self.coordinator.sync_group(reference, request, 0, TOPICS)).get(reference)

    def classic_heartbeat(self, member_id: str, generation: int) -> ErrorCode:
        reference = next(self.references)
        result = self.coordinator.heartbeat(reference, "g", generation, member_id, None, 0)
        error: ErrorCode = self.run(result)[reference].error
        return error

    def consumer_heartbeat(
        self, member_id: str, epoch: int, owned: frozenset[int] | None = None
    ) -> Any:
        reference = next(self.references)
        request = HeartbeatRequest(
            "g", member_id, epoch, None, None, 20_000, ("t",), None, None,
            None if owned is None else {TOPIC.topic_id: owned}, "kip848", "", 1,
        )  # fmt: skip
        result = self.coordinator.consumer_group_heartbeat(reference, request, TOPICS, 0)
        return self.run(result)[reference]

    def classic_group_of_two(self) -> int:
        """Members a and b hold partitions 0-2 and 3-5 in a classic group; its generation."""
        first = self.classic_join("")  # MEMBER_ID_REQUIRED hands out an id
        assert first.error == ErrorCode.member_id_required
        joined = self.classic_join(first.member_id)
        leader = joined.member_id
        second = self.classic_join("")
        # b's join waits for a's rejoin, which completes the rebalance with both in it
        pending = self.coordinator.join_group(
            next(self.references), join_request(second.member_id), 0, TOPICS
        )
        self.run(pending)
        self.run(
            self.coordinator.join_group(next(self.references), join_request(leader), 0, TOPICS)
        )
        group = self.coordinator.group("g")
        assert isinstance(group, ClassicGroup)
        assert group.state == ClassicGroupState.COMPLETING_REBALANCE
        assert sorted(group.members) == sorted([leader, second.member_id])
        self.a, self.b = leader, second.member_id
        generation = group.generation_id
        self.classic_sync(
            self.a,
            generation,
            {
                self.a: encode_assignment({"t": frozenset({0, 1, 2})}, 1),
                self.b: encode_assignment({"t": frozenset({3, 4, 5})}, 1),
            },
        )
        assert group.state.value == "Stable"
        self.records.clear()
        return generation

    def decoded(self) -> list[tuple[Any, Any]]:
        """The records written so far, keys decoded, values as the coordinator reads them."""
        decoders = {
            GroupKey: decode_group_value,
            ConsumerGroupKey: decode_consumer_group_value,
            MemberKey: decode_member_value,
            TargetAssignmentKey: decode_target_value,
            TargetAssignmentEpochKey: decode_target_epoch_value,
            CurrentAssignmentKey: decode_current_value,
        }
        out = []
        for key_bytes, value in self.records:
            key = decode_key(key_bytes)
            out.append((key, None if value is None else decoders[type(key)](value)))
        return out


def test_consumer_member_upgrades_classic_group_and_records_it() -> None:
    mixed = Mixed()
    generation = mixed.classic_group_of_two()
    answer = mixed.consumer_heartbeat("c", 0)
    assert answer.error == ErrorCode.none
    group = mixed.coordinator.group("g")
    assert isinstance(group, ConsumerGroup)
    assert sorted(group.members) == sorted([mixed.a, mixed.b, "c"])
    # The classic members' partitions are still theirs: c gets nothing until they revoke.
    assert answer.assignment == {}
    assert answer.member_epoch == generation + 1

    records = mixed.decoded()
    assert records[0] == (GroupKey("g"), None)  # the classic group record is tombstoned
    members = {key.member_id: value for key, value in records if isinstance(key, MemberKey)}
    assert members[mixed.a].classic is not None
    assert members[mixed.a].classic.session_timeout_ms == SESSION
    assert [name for name, _ in members[mixed.a].classic.protocols] == ["range"]
    assert members[mixed.a].subscribed_topic_names == ("t",)
    assert members["c"].classic is None
    epochs = [value for key, value in records if isinstance(key, ConsumerGroupKey)]
    assert epochs == [generation + 1]
    current = {k.member_id: v for k, v in records if isinstance(k, CurrentAssignmentKey)}
    # a keeps 0-2 until it revokes what the new target takes away.
    assert current[mixed.a].member_epoch == generation
    assert current[mixed.a].assigned == {TOPIC.topic_id: frozenset({0, 1, 2})}
    targets = {k.member_id: v for k, v in records if isinstance(k, TargetAssignmentKey)}
    assert sum(len(p.get(TOPIC.topic_id, ())) for p in targets.values()) == 6
    assert [v for k, v in records if isinstance(k, TargetAssignmentEpochKey)] == [generation + 1]


def spread_over_everyone(mixed: Mixed) -> dict[str, frozenset[int]]:
    """Each classic member heartbeats, rejoins having revoked everything (eager) and syncs;
    the KIP-848 member heartbeats; until the group is stable. Returns who owns what."""
    owned: dict[str, frozenset[int]] = {}
    generations = dict.fromkeys([mixed.a, mixed.b], -1)
    c_epoch = mixed.consumer_heartbeat("c", 0).member_epoch if "c" not in owned else 0
    group = mixed.coordinator.group("g")
    assert isinstance(group, ConsumerGroup)
    for member_id in generations:
        generations[member_id] = group.members[member_id].member_epoch
    for _ in range(6):
        for member_id in (mixed.a, mixed.b):
            error = mixed.classic_heartbeat(member_id, generations[member_id])
            assert error in (ErrorCode.none, ErrorCode.rebalance_in_progress)
            if error == ErrorCode.rebalance_in_progress:
                joined = mixed.classic_join(member_id)
                assert joined.error == ErrorCode.none
                assert joined.leader == ""
                generations[member_id] = joined.generation_id
                synced = mixed.classic_sync(member_id, joined.generation_id)
                assert synced.error == ErrorCode.none
                owned[member_id] = decode_assignment(synced.assignment).get("t", frozenset())
        answer = mixed.consumer_heartbeat("c", c_epoch, owned.get("c", frozenset()))
        assert answer.error == ErrorCode.none
        c_epoch = answer.member_epoch
        if answer.assignment is not None:
            owned["c"] = answer.assignment.get(TOPIC.topic_id, frozenset())
        if str(group.state.value) == "Stable":
            break
    return owned


def test_partitions_spread_over_classic_and_consumer_members_without_overlap() -> None:
    mixed = Mixed()
    mixed.classic_group_of_two()
    owned = spread_over_everyone(mixed)
    group = mixed.coordinator.group("g")
    assert isinstance(group, ConsumerGroup)
    assert group.state.value == "Stable"
    assert sorted(len(partitions) for partitions in owned.values()) == [2, 2, 2]
    assert frozenset().union(*owned.values()) == frozenset(range(6))


def test_converted_group_is_rebuilt_by_replay() -> None:
    mixed = Mixed()
    mixed.classic_group_of_two()
    spread_over_everyone(mixed)
    before = mixed.coordinator.group("g")
    assert isinstance(before, ConsumerGroup)
    reloaded = GroupCoordinator(mixed.coordinator.config)
    # Replay everything written since the classic group stood, after its own record.
    mixed_records = mixed.records
    for key, value in mixed_records:
        reloaded.replay(key, value)
    reloaded.finish_loading(0)
    after = reloaded.group("g")
    assert isinstance(after, ConsumerGroup)
    assert after.group_epoch == before.group_epoch
    assert after.assignment_epoch == before.assignment_epoch
    assert after.target == before.target
    for member_id, member in before.members.items():
        replayed = after.members[member_id]
        assert replayed.classic == member.classic
        assert replayed.member_epoch == member.member_epoch
        assert replayed.assigned == member.assigned
        assert replayed.state == member.state
    # Nothing left to write: the log holds the group as it is.
    assert reloaded.consumer.records_for(after) == []


def test_last_consumer_member_leaving_downgrades_to_classic() -> None:
    mixed = Mixed()
    mixed.classic_group_of_two()
    spread_over_everyone(mixed)
    consumer_group = mixed.coordinator.group("g")
    assert isinstance(consumer_group, ConsumerGroup)
    epoch = consumer_group.group_epoch
    targets = {m: consumer_group.target[m] for m in (mixed.a, mixed.b)}
    mixed.records.clear()
    assert mixed.consumer_heartbeat("c", -1).error == ErrorCode.none
    group = mixed.coordinator.group("g")
    assert isinstance(group, ClassicGroup)
    assert group.state == ClassicGroupState.PREPARING_REBALANCE
    assert group.generation_id == epoch
    assert group.protocol_type == "consumer"
    assert group.protocol_name == "range"
    for member_id, target in targets.items():
        assigned = decode_assignment(group.members[member_id].assignment)
        assert assigned == {"t": target[TOPIC.topic_id]}
    records = mixed.decoded()
    tombstoned = {type(key) for key, value in records if value is None}
    assert tombstoned == {
        CurrentAssignmentKey,
        TargetAssignmentKey,
        MemberKey,
        TargetAssignmentEpochKey,
        ConsumerGroupKey,
    }
    (_key, stored), *_ = [(k, v) for k, v in records if isinstance(k, GroupKey)]
    assert stored.generation == epoch
    assert sorted(member.member_id for member in stored.members) == sorted(targets)
    # The classic members rejoin the classic rebalance; the leader assigns again.
    assert mixed.classic_heartbeat(mixed.a, epoch) == ErrorCode.rebalance_in_progress


def test_disabled_and_downgrade_policies_refuse_the_upgrade() -> None:
    for policy in (MigrationPolicy.DISABLED, MigrationPolicy.DOWNGRADE):
        mixed = Mixed(consumer_migration_policy=policy)
        mixed.classic_group_of_two()
        answer = mixed.consumer_heartbeat("c", 0)
        assert answer.error == ErrorCode.group_id_not_found
        assert isinstance(mixed.coordinator.group("g"), ClassicGroup)
        assert mixed.records == []


def test_upgrade_policy_keeps_a_consumer_group_of_classic_members() -> None:
    mixed = Mixed(consumer_migration_policy=MigrationPolicy.UPGRADE)
    mixed.classic_group_of_two()
    spread_over_everyone(mixed)
    assert mixed.consumer_heartbeat("c", -1).error == ErrorCode.none
    group = mixed.coordinator.group("g")
    assert isinstance(group, ConsumerGroup)
    assert sorted(group.members) == sorted([mixed.a, mixed.b])


def test_group_size_limits() -> None:
    mixed = Mixed(max_size=2)
    mixed.classic_group_of_two()
    # Room for the classic members but not for the new one: nothing is converted.
    assert mixed.consumer_heartbeat("c", 0).error == ErrorCode.group_max_size_reached
    assert isinstance(mixed.coordinator.group("g"), ClassicGroup)
    assert mixed.records == []


def test_other_protocol_types_are_not_upgraded_nor_joined() -> None:
    mixed = Mixed()
    mixed.classic_group_of_two()
    group = mixed.coordinator.group("g")
    assert isinstance(group, ClassicGroup)
    group.protocol_type = "connect"
    assert mixed.consumer_heartbeat("c", 0).error == ErrorCode.group_id_not_found
    group.protocol_type = "consumer"
    assert mixed.consumer_heartbeat("c", 0).error == ErrorCode.none
    answer = mixed.classic_join("", protocol_type="connect")
    assert answer.error == ErrorCode.inconsistent_group_protocol


@pytest.mark.parametrize("wrong", ["generation", "member"])
def test_classic_member_commits_are_checked_against_its_generation(wrong: str) -> None:
    mixed = Mixed()
    mixed.classic_group_of_two()
    mixed.consumer_heartbeat("c", 0)
    group = mixed.coordinator.group("g")
    assert isinstance(group, ConsumerGroup)
    epoch = group.members[mixed.a].member_epoch
    commit = CommitRequest(
        "g",
        epoch + 5 if wrong == "generation" else epoch,
        mixed.a if wrong == "generation" else "stranger",
        None,
        {"t": {0: PartitionCommit(10, -1, None)}},
        8,
    )
    result = mixed.coordinator.commit_offsets(1, commit, 0)
    ((_, response),) = result.responses
    expected = (
        ErrorCode.illegal_generation if wrong == "generation" else ErrorCode.unknown_member_id
    )
    assert response.errors == {"t": {0: expected}}


def test_classic_member_that_does_not_rejoin_in_time_is_removed() -> None:
    mixed = Mixed()
    mixed.classic_group_of_two()
    mixed.consumer_heartbeat("c", 0)
    group = mixed.coordinator.group("g")
    assert isinstance(group, ConsumerGroup)
    generation = group.members[mixed.a].member_epoch
    assert mixed.classic_heartbeat(mixed.a, generation) == ErrorCode.rebalance_in_progress
    deadline = mixed.coordinator.next_deadline()
    assert deadline is not None
    # The join deadline is the rebalance timeout (20 s), before the session (10 s) would
    # expire only if heartbeats stopped: keep b and c alive, let a miss its JoinGroup.
    now = 0
    while mixed.a in group.members and now < 30_000:
        now += 5_000
        group.members[mixed.b].session_deadline_ms = now + SESSION
        group.members["c"].session_deadline_ms = now + SESSION
        group.members[mixed.a].session_deadline_ms = now + SESSION
        mixed.run(mixed.coordinator.poll(now))
    assert mixed.a not in group.members
    assert 20_000 <= now <= 25_000
