"""KIP-848: target assignment, reconciliation and incremental revocation, without a broker."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from kio.schema.errors import ErrorCode

from odradek.coordinator.group import (
    CommitRequest,
    ConsumerGroup,
    GroupConfig,
    GroupCoordinator,
    HeartbeatRequest,
    PartitionCommit,
    TopicInfo,
)
from odradek.coordinator.group.assignors import range_, uniform

TOPIC = TopicInfo(uuid.UUID(int=1), 6)
TOPICS = {"t": TOPIC}
CONFIG = GroupConfig(consumer_session_timeout_ms=1000, consumer_min_session_timeout_ms=1000)


class Client:
    """A well-behaved KIP-848 client: owns what the last assignment said."""

    def __init__(self, coordinator: GroupCoordinator, member_id: str) -> None:
        self.coordinator = coordinator
        self.member_id = member_id
        self.epoch = 0
        self.owned: dict[uuid.UUID, frozenset[int]] = {}
        self.references = itertools.count(1)

    def heartbeat(self, now: int, epoch: int | None = None) -> Any:
        request = HeartbeatRequest(
            group_id="g",
            member_id=self.member_id,
            member_epoch=self.epoch if epoch is None else epoch,
            instance_id=None,
            rack_id=None,
            rebalance_timeout_ms=5000,
            subscribed_topic_names=("t",),
            subscribed_topic_regex=None,
            server_assignor=None,
            owned=dict(self.owned),
            client_id="c",
            client_host="",
            api_version=1,
        )
        reference = next(self.references)
        result = self.coordinator.consumer_group_heartbeat(reference, request, TOPICS, now)
        ((_, response),) = result.responses
        if response.error == ErrorCode.none:
            self.epoch = response.member_epoch
            if response.assignment is not None:
                self.owned = dict(response.assignment)
        elif response.error in (ErrorCode.unknown_member_id, ErrorCode.fenced_member_epoch):
            self.epoch, self.owned = 0, {}
        return response


def partitions(client: Client) -> set[int]:
    return set(client.owned.get(TOPIC.topic_id, frozenset()))


def test_members_share_partitions_only_after_revocation() -> None:
    coordinator = GroupCoordinator(CONFIG)
    a, b = Client(coordinator, "a"), Client(coordinator, "b")
    a.heartbeat(0)
    assert partitions(a) == set(range(6))
    b.heartbeat(0)
    assert partitions(b) == set()  # a still owns everything
    a.heartbeat(1)  # a learns it must give up three partitions
    assert len(partitions(a)) == 3
    b.heartbeat(2)
    assert partitions(b) == set()  # a has not confirmed the revocation yet
    a.heartbeat(3)  # confirms
    b.heartbeat(4)
    assert partitions(a) | partitions(b) == set(range(6))
    assert not partitions(a) & partitions(b)
    group = coordinator.group("g")
    assert isinstance(group, ConsumerGroup)
    assert a.epoch == b.epoch == group.group_epoch == 2
    assert group.state.value == "Stable"


def test_epoch_checks_for_heartbeats_and_commits() -> None:
    coordinator = GroupCoordinator(CONFIG)
    a = Client(coordinator, "a")
    a.heartbeat(0)
    assert a.heartbeat(1, epoch=a.epoch + 5).error == ErrorCode.fenced_member_epoch

    def commit(member: str, epoch: int) -> ErrorCode:
        request = CommitRequest(
            "g", epoch, member, None, {"t": {0: PartitionCommit(1, -1, None)}}, 9
        )
        result = coordinator.commit_offsets(1, request, 0)
        return ErrorCode(result.responses[0][1].errors["t"][0])

    assert commit("a", 0) == ErrorCode.stale_member_epoch
    assert commit("nobody", 1) == ErrorCode.unknown_member_id
    a = Client(coordinator, "a")
    a.heartbeat(0)
    assert commit("a", a.epoch) == ErrorCode.none


def test_session_timeout_removes_member_and_bumps_epoch() -> None:
    coordinator = GroupCoordinator(CONFIG)
    a, b = Client(coordinator, "a"), Client(coordinator, "b")
    a.heartbeat(0)
    b.heartbeat(0)
    group = coordinator.group("g")
    assert isinstance(group, ConsumerGroup)
    epoch = group.group_epoch
    a.heartbeat(900)
    coordinator.poll(1000)
    assert set(group.members) == {"a"}
    assert group.group_epoch == epoch + 1


def test_assignors_give_every_partition_to_one_member() -> None:
    subscriptions = {"m1": frozenset({"t"}), "m2": frozenset({"t"}), "m3": frozenset({"t"})}
    for assignor in (uniform, range_):
        assignment = assignor(subscriptions, TOPICS, {})
        owned = [set(assignment[m].get(TOPIC.topic_id, ())) for m in subscriptions]
        assert sorted(map(len, owned)) == [2, 2, 2]
        assert set().union(*owned) == set(range(6))
    assert range_(subscriptions, TOPICS, {})["m1"][TOPIC.topic_id] == frozenset({0, 1})


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["heartbeat", "leave", "time"]),
            st.integers(0, 3),
            st.integers(0, 1500),
        ),
        max_size=60,
    )
)
def test_no_partition_ever_has_two_owners(steps: list[tuple[str, int, int]]) -> None:
    coordinator = GroupCoordinator(CONFIG)
    clients = [Client(coordinator, f"m{index}") for index in range(4)]
    now = 0
    for action, who, delay in steps:
        client = clients[who]
        if action == "heartbeat":
            client.heartbeat(now)
        elif action == "leave" and client.epoch > 0:
            client.heartbeat(now, epoch=-1)
            client.epoch, client.owned = 0, {}
        elif action == "time":
            now += delay
            coordinator.poll(now)
        group = coordinator.group("g")
        if isinstance(group, ConsumerGroup):
            # The target assignment gives every partition at most once ...
            targets = [set(t.get(TOPIC.topic_id, ())) for t in group.target.values()]
            assert sum(map(len, targets)) == len(set().union(*targets)) if targets else True
            # ... and no partition is owned or being revoked by two members at once.
            held = [
                set(m.assigned.get(TOPIC.topic_id, ()))
                | set(m.pending_revocation.get(TOPIC.topic_id, ()))
                for m in group.members.values()
            ]
            assert sum(map(len, held)) == len(set().union(*held)) if held else True
        # What live clients believe they own never overlaps either.
        live = [
            partitions(c)
            for c in clients
            if c.epoch > 0
            and c.member_id in (group.members if isinstance(group, ConsumerGroup) else {})
        ]
        assert sum(map(len, live)) == len(set().union(*live)) if live else True
    # Keep heartbeating: the group converges to a stable, complete assignment.
    for step in range(12):
        for client in clients:
            if client.epoch > 0 or step == 0:
                client.heartbeat(now)
    group = coordinator.group("g")
    assert isinstance(group, ConsumerGroup)
    assert group.state.value == "Stable"
    assert set().union(*(partitions(c) for c in clients)) == set(range(6))
