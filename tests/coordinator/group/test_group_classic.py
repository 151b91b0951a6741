"""The classic protocol as a state machine: no broker, no clock, no I/O."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from kio.schema.errors import ErrorCode

from odradek.coordinator.group import (
    ClassicGroup,
    CommitRequest,
    GroupConfig,
    GroupCoordinator,
    JoinRequest,
    PartitionCommit,
    Result,
    SyncRequest,
)
from odradek.coordinator.group.state import ClassicGroupState

SESSION = 10_000
REBALANCE = 20_000


class Harness:
    """Drives a coordinator and remembers each request's response."""

    def __init__(self, **config: Any) -> None:
        counter = itertools.count()
        self.coordinator = GroupCoordinator(
            GroupConfig(initial_rebalance_delay_ms=0, **config),
            new_id=lambda: f"id{next(counter)}",
        )
        self.references = itertools.count(1)
        self.responses: dict[int, Any] = {}
        self.duplicates: list[int] = []
        self.records: list[tuple[bytes, bytes | None]] = []
        # Appends still "in flight": their responses and completions wait, as in the runtime.
        self.hold_appends = False
        self.held: list[Result] = []

    def absorb(self, result: Result, now: int = 0) -> None:
        if self.held or (self.hold_appends and result.records):
            self.held.append(result)  # answers wait behind every earlier write
            return
        self._settle(result, ErrorCode.none, now)

    def _settle(self, result: Result, error: ErrorCode, now: int) -> None:
        for reference, response in result.responses:
            if reference in self.responses:
                self.duplicates.append(reference)
            self.responses[reference] = (
                response if error == ErrorCode.none else (response.with_error(error))
            )
        if error == ErrorCode.none:
            self.records += [(record.key, record.value) for record in result.records]
            if result.replay_after_append:
                for record in result.records:
                    self.coordinator.replay(record.key, record.value)
        for completion in result.completions:
            self.absorb(completion(error, now), now)

    def release(self, error: ErrorCode = ErrorCode.none, now: int = 0) -> None:
        """The held appends complete (durable, or failed with `error`), in order."""
        self.hold_appends = False
        held, self.held = self.held, []
        for result in held:
            self._settle(result, error if result.records else ErrorCode.none, now)

    def join(
        self, member_id: str = "", now: int = 0, instance: str | None = None, version: int = 5
    ) -> int:
        reference = next(self.references)
        request = JoinRequest(
            "g",
            member_id,
            instance,
            "consumer",
            (("range", b"meta"),),
            SESSION,
            REBALANCE,
            "client",
            "/host",
            version,
        )
        self.absorb(self.coordinator.join_group(reference, request, now), now)
        return reference

    def sync(self, member_id: str, generation: int, now: int = 0, assign: bool = False) -> int:
        reference = next(self.references)
        assignments = {}
        if assign:
            group = self.group
            assignments = {m: m.encode() for m in group.members}
        request = SyncRequest("g", generation, member_id, None, None, None, assignments)
        self.absorb(self.coordinator.sync_group(reference, request, now), now)
        return reference

    def heartbeat(self, member_id: str, generation: int, now: int = 0) -> ErrorCode:
        reference = next(self.references)
        self.absorb(
            self.coordinator.heartbeat(reference, "g", generation, member_id, None, now), now
        )
        return ErrorCode(self.responses[reference].error)

    def leave(self, member_id: str, now: int = 0) -> int:
        reference = next(self.references)
        self.absorb(self.coordinator.leave_group(reference, "g", [(member_id, None)], now), now)
        return reference

    def poll(self, now: int) -> None:
        self.absorb(self.coordinator.poll(now), now)

    @property
    def group(self) -> ClassicGroup:
        group = self.coordinator.group("g")
        assert isinstance(group, ClassicGroup)
        return group

    def member(self, now: int = 0) -> str:
        """Join a new member through MEMBER_ID_REQUIRED; returns its id."""
        first = self.responses[self.join(now=now)]
        assert first.error == ErrorCode.member_id_required
        self.join(first.member_id, now=now)
        return str(first.member_id)


def test_two_members_join_sync_and_rebalance_on_leave() -> None:
    harness = Harness()
    a = harness.member()
    assert harness.group.state == ClassicGroupState.COMPLETING_REBALANCE
    leader_sync = harness.sync(a, 1, assign=True)
    assert harness.responses[leader_sync].assignment == a.encode()
    assert harness.group.state == ClassicGroupState.STABLE

    # b joins: a must rejoin before the rebalance completes.
    first = harness.responses[harness.join()]
    b_join = harness.join(first.member_id)
    b = first.member_id
    assert b_join not in harness.responses
    assert harness.heartbeat(a, 1) == ErrorCode.rebalance_in_progress
    a_join = harness.join(a)
    assert harness.responses[a_join].generation_id == 2
    assert harness.responses[b_join].generation_id == 2
    assert len(harness.responses[a_join].members) == 2  # a is still the leader
    assert harness.responses[b_join].members == ()
    b_sync = harness.sync(b, 2)
    assert b_sync not in harness.responses  # parked until the leader's assignment
    harness.sync(a, 2, assign=True)
    assert harness.responses[b_sync].assignment == b.encode()
    assert harness.heartbeat(b, 1) == ErrorCode.illegal_generation
    assert harness.heartbeat("stranger", 2) == ErrorCode.unknown_member_id

    harness.leave(b)
    assert harness.group.state == ClassicGroupState.PREPARING_REBALANCE
    assert harness.responses[harness.join(a)].generation_id == 3
    assert not harness.duplicates


def test_session_expiry_removes_a_silent_member() -> None:
    harness = Harness()
    a = harness.member()
    harness.sync(a, 1, assign=True)
    harness.poll(SESSION - 1)
    assert a in harness.group.members
    assert harness.coordinator.next_deadline() == SESSION
    harness.poll(SESSION)
    assert harness.group.state == ClassicGroupState.EMPTY
    assert harness.group.generation_id == 2


def test_static_member_rejoin_keeps_generation_and_assignment() -> None:
    harness = Harness()
    join = harness.responses[harness.join(instance="i")]
    assert join.error == ErrorCode.none  # static members skip MEMBER_ID_REQUIRED
    harness.sync(join.member_id, 1, assign=True)
    again = harness.responses[harness.join(instance="i", now=5)]
    assert again.error == ErrorCode.none
    assert again.generation_id == 1
    assert again.member_id != join.member_id
    assert harness.group.state == ClassicGroupState.STABLE
    synced = harness.responses[harness.sync(again.member_id, 1)]
    assert synced.assignment == join.member_id.encode()
    # The old incarnation is fenced.
    reference = next(harness.references)
    harness.absorb(harness.coordinator.heartbeat(reference, "g", 1, join.member_id, "i", 5))
    assert harness.responses[reference].error == ErrorCode.fenced_instance_id


def test_initial_rebalance_delay_waits_for_more_members() -> None:
    harness = Harness()
    harness.coordinator = GroupCoordinator(
        GroupConfig(initial_rebalance_delay_ms=3000), new_id=iter(map(str, range(99))).__next__
    )
    first = harness.responses[harness.join()]
    a_join = harness.join(first.member_id, now=0)
    assert a_join not in harness.responses
    assert harness.coordinator.next_deadline() == 3000
    harness.poll(3000)
    assert harness.responses[a_join].generation_id == 1


def test_offset_commit_checks_generation_and_replays() -> None:
    harness = Harness()
    a = harness.member()
    harness.sync(a, 1, assign=True)

    def commit(generation: int, member: str, offset: int, metadata: str = "") -> ErrorCode:
        reference = next(harness.references)
        request = CommitRequest(
            "g", generation, member, None, {"t": {0: PartitionCommit(offset, -1, metadata)}}, 8
        )
        harness.absorb(harness.coordinator.commit_offsets(reference, request, 7))
        return ErrorCode(harness.responses[reference].errors["t"][0])

    assert commit(1, a, 10) == ErrorCode.none
    assert commit(2, a, 11) == ErrorCode.illegal_generation
    assert commit(1, "x", 12) == ErrorCode.unknown_member_id
    assert commit(1, a, 13, "m" * 5000) == ErrorCode.offset_metadata_too_large
    _error, offsets = harness.coordinator.fetch_offsets("g", {"t": [0]})
    assert offsets["t"][0] is not None
    assert offsets["t"][0].offset == 10

    # A fresh coordinator rebuilt from the records has the same offsets and generation.
    fresh = GroupCoordinator(GroupConfig())
    for key, value in harness.records:
        fresh.replay(key, value)
    fresh.finish_loading(100)
    _, replayed = fresh.fetch_offsets("g", {"t": [0]})
    assert replayed == offsets
    group = fresh.group("g")
    assert isinstance(group, ClassicGroup)
    assert group.generation_id == 1
    assert list(group.members) == [a]


# -- Hypothesis: random members, requests and time --------------------------------------------

events = st.lists(
    st.tuples(
        st.sampled_from(["join", "rejoin", "sync", "heartbeat", "leave", "time"]),
        st.integers(0, 3),
        st.integers(0, 12_000),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(events)
def test_classic_invariants_hold_for_any_sequence(steps: list[tuple[str, int, int]]) -> None:
    harness = Harness()
    now = 0
    known: list[str] = []
    last_generation = 0
    asked: list[int] = []
    for action, who, delay in steps:
        group = harness.coordinator.group("g")
        member = known[who % len(known)] if known else ""
        generation = group.generation_id if isinstance(group, ClassicGroup) else 0
        if action == "join":
            response = harness.responses[harness.join(now=now)]
            if response.error == ErrorCode.member_id_required:
                known.append(response.member_id)
                asked.append(harness.join(response.member_id, now=now))
        elif action == "rejoin" and member:
            asked.append(harness.join(member, now=now))
        elif action == "sync" and member:
            asked.append(harness.sync(member, generation, now=now, assign=True))
        elif action == "heartbeat" and member:
            harness.heartbeat(member, generation, now=now)
        elif action == "leave" and member:
            harness.leave(member, now=now)
        elif action == "time":
            now += delay
            harness.poll(now)
        group = harness.coordinator.group("g")
        if isinstance(group, ClassicGroup):
            assert group.generation_id >= last_generation
            last_generation = group.generation_id
            if group.state == ClassicGroupState.STABLE:
                # One generation per stable state: nobody waits on a join or a sync.
                assert group.leader_id in group.members
                assert all(
                    m.join_ref is None and m.sync_ref is None for m in group.members.values()
                )
            if group.state == ClassicGroupState.EMPTY:
                assert not group.members
            if group.members:
                assert group.leader_id in group.members
    # Far in the future every parked request has been answered, exactly once.
    harness.poll(now + 10 * REBALANCE)
    harness.poll(now + 20 * REBALANCE)
    assert not harness.duplicates
    assert all(reference in harness.responses for reference in asked)


def test_offsets_retention_expires_simple_commits_and_forgets_the_group() -> None:
    harness = Harness(offsets_retention_ms=60_000, offsets_retention_check_interval_ms=1000)
    reference = next(harness.references)
    request = CommitRequest("g", -1, "", None, {"t": {0: PartitionCommit(5, -1, None)}}, 8)
    harness.absorb(harness.coordinator.commit_offsets(reference, request, 0))
    harness.poll(0)  # schedules the first retention check
    harness.poll(59_000)
    assert harness.coordinator.fetch_offsets("g", {"t": [0]})[1]["t"][0] is not None
    harness.poll(61_000)
    assert harness.coordinator.fetch_offsets("g", {"t": [0]})[1]["t"][0] is None
    assert harness.coordinator.group("g") is None
    assert harness.records[-1][1] is None  # a tombstone for the group


def _two_members(harness: Harness) -> tuple[str, str]:
    """a (the leader) and b in generation 2, both waiting to sync."""
    a = harness.member()
    harness.sync(a, 1, assign=True)
    first = harness.responses[harness.join()]
    b_join = harness.join(first.member_id)
    a_join = harness.join(a)
    assert harness.responses[a_join].generation_id == 2
    assert harness.responses[b_join].generation_id == 2
    return a, str(first.member_id)


def test_sync_assignments_take_effect_only_once_stored() -> None:
    """Issue 9 item 5: a follower's SyncGroup between the leader's and the append's end
    parks; both get their assignments together when the group record is durable."""
    harness = Harness()
    a, b = _two_members(harness)
    harness.hold_appends = True
    leader = harness.sync(a, 2, assign=True)
    assert harness.group.state == ClassicGroupState.COMPLETING_REBALANCE
    follower = harness.sync(b, 2)
    assert harness.group.state == ClassicGroupState.COMPLETING_REBALANCE
    assert leader not in harness.responses
    assert follower not in harness.responses
    harness.release()
    assert harness.group.state == ClassicGroupState.STABLE
    assert harness.responses[leader].assignment == a.encode()
    assert harness.responses[follower].assignment == b.encode()


def test_failed_assignment_append_fails_every_sync_and_rebalances() -> None:
    harness = Harness()
    a, b = _two_members(harness)
    harness.hold_appends = True
    leader = harness.sync(a, 2, assign=True)
    follower = harness.sync(b, 2)
    harness.release(ErrorCode.not_coordinator)
    assert harness.responses[leader].error == ErrorCode.not_coordinator
    assert harness.responses[follower].error == ErrorCode.not_coordinator
    assert harness.group.state == ClassicGroupState.PREPARING_REBALANCE
    assert all(member.assignment == b"" for member in harness.group.members.values())


def test_failed_static_replacement_append_keeps_the_old_member() -> None:
    harness = Harness()
    first = harness.responses[harness.join(instance="i")]
    harness.sync(first.member_id, 1, assign=True)
    harness.hold_appends = True
    rejoin = harness.join(instance="i")
    harness.release(ErrorCode.not_coordinator)
    assert harness.responses[rejoin].error == ErrorCode.not_coordinator
    assert list(harness.group.members) == [first.member_id]
    assert harness.group.static_members == {"i": first.member_id}
    assert harness.heartbeat(first.member_id, 1) == ErrorCode.none


def _commit(harness: Harness, generation: int, member: str, version: int = 9) -> ErrorCode:
    reference = next(harness.references)
    request = CommitRequest(
        "g", generation, member, None, {"t": {0: PartitionCommit(5, -1, "")}}, version
    )
    harness.absorb(harness.coordinator.commit_offsets(reference, request, 0))
    return ErrorCode(harness.responses[reference].errors["t"][0])


def test_generation_minus_one_commits_to_an_empty_group_whatever_the_member_id() -> None:
    """Issue 9 item 6: a KIP-848 consumer that never subscribed sends its member id with
    epoch -1; an empty group takes every such commit (Kafka's validateOffsetCommit)."""
    harness = Harness()
    assert _commit(harness, -1, "never-joined") == ErrorCode.none
    assert _commit(harness, -1, "never-joined") == ErrorCode.none
    assert _commit(harness, -1, "") == ErrorCode.none
    assert _commit(harness, -1, "someone-else", version=2) == ErrorCode.none


def test_commits_to_a_non_empty_group_still_get_kafkas_errors() -> None:
    harness = Harness()
    a = harness.member()
    harness.sync(a, 1, assign=True)
    assert _commit(harness, -1, "never-joined") == ErrorCode.unknown_member_id
    assert _commit(harness, -1, "") == ErrorCode.unknown_member_id
    assert _commit(harness, 1, "never-joined") == ErrorCode.unknown_member_id
    assert _commit(harness, 7, a) == ErrorCode.illegal_generation
    assert _commit(harness, 1, a) == ErrorCode.none
