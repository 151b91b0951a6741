"""Hypothesis drives the controller with random event sequences and checks, after every step:

- leader in ISR or leader = -1; ISR a non-empty subset of the replicas, no duplicates;
- an ISR holds only active brokers, except a leaderless partition's last member;
- a leader is an active broker;
- leader epoch and partition epoch never go down (per topic id and partition);
- no two registrations ever share a broker epoch, and each epoch is its record's offset;
- producer-id blocks are disjoint and increasing;
- a controller rebuilt by replaying the log, and a broker's MetadataImage, equal the live state.
"""

from __future__ import annotations

import uuid

from controller_harness import Harness
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from odradek.controller import (
    AlterableConfig,
    AlterConfigOp,
    AlterConfigsResource,
    BrokerRegistrationChangeRecord,
    ConfigResourceType,
    CreatableTopic,
    RegisterBrokerRecord,
)
from odradek.controller.partition_change import LeaderRecoveryState

BROKERS = st.integers(1, 4)
TOPICS = st.sampled_from(["a", "b", "c"])


class ControllerMachine(RuleBasedStateMachine):
    @initialize(seed=st.integers(0, 2**16))
    def start(self, seed: int) -> None:
        self.h = Harness(seed)
        self.epochs_seen: dict[tuple[uuid.UUID, int], tuple[int, int]] = {}
        self.blocks: list[tuple[int, int]] = []

    # -- events ----------------------------------------------------------------------------

    @rule(broker_id=BROKERS, new_incarnation=st.booleans(), then_heartbeat=st.booleans())
    def register(self, broker_id: int, new_incarnation: bool, then_heartbeat: bool) -> None:
        h = self.h
        incarnation = h.incarnations.get(broker_id)
        if new_incarnation or incarnation is None:
            incarnation = uuid.UUID(int=len(h.log) + 1)
        registration = h.controller.cluster.registrations.get(broker_id)
        if (
            registration is not None
            and registration.incarnation_id != incarnation
            and h.controller.cluster.has_valid_session(broker_id, h.now_ms)
        ):
            return  # DUPLICATE_BROKER_REGISTRATION, covered by the unit tests
        h.register(broker_id, incarnation)
        if then_heartbeat:
            h.heartbeat(broker_id)

    @rule(
        broker_id=BROKERS,
        want_fence=st.booleans(),
        want_shut_down=st.booleans(),
        caught_up=st.booleans(),
    )
    def heartbeat(
        self, broker_id: int, want_fence: bool, want_shut_down: bool, caught_up: bool
    ) -> None:
        h = self.h
        if broker_id not in h.controller.cluster.registrations:
            return
        h.heartbeat(
            broker_id,
            want_fence=want_fence,
            want_shut_down=want_shut_down,
            metadata_offset=h.offset if caught_up else 0,
        )

    @rule()
    def heartbeat_all(self) -> None:
        self.h.heartbeat_all()

    @rule(ms=st.sampled_from([100, 3000, 9001, 20_000]))
    def advance(self, ms: int) -> None:
        if any(isinstance(r, BrokerRegistrationChangeRecord) for r in self.h.advance(ms)):
            event("session expiry fenced a broker")

    @rule(
        name=TOPICS,
        partitions=st.integers(1, 3),
        replication_factor=st.integers(1, 3),
        unclean=st.booleans(),
    )
    def create_topic(
        self, name: str, partitions: int, replication_factor: int, unclean: bool
    ) -> None:
        configs = (("unclean.leader.election.enable", "true"),) if unclean else ()
        self.h.run(
            self.h.controller.handle_create_topics(
                [CreatableTopic(name, partitions, replication_factor, (), configs)],
                self.h.now_ms,
            )
        )

    @rule(name=TOPICS)
    def delete_topic(self, name: str) -> None:
        self.h.run(self.h.controller.handle_delete_topics([name], [], self.h.now_ms))

    @rule(
        name=TOPICS,
        partition=st.integers(0, 2),
        members=st.lists(BROKERS, max_size=4, unique=True),
        stale_leader_epoch=st.booleans(),
        stale_partition_epoch=st.booleans(),
        stale_broker_epoch=st.booleans(),
        recovered=st.booleans(),
    )
    def alter_partition(
        self,
        name: str,
        partition: int,
        members: list[int],
        stale_leader_epoch: bool,
        stale_partition_epoch: bool,
        stale_broker_epoch: bool,
        recovered: bool,
    ) -> None:
        h = self.h
        topic_id = h.controller.replication.topics_by_name.get(name)
        if topic_id is None:
            return
        current = h.controller.replication.partition(topic_id, partition)
        if current is None or current.leader not in h.epochs:
            return
        isr = [
            current.leader,
            *(m for m in members if m in current.replicas and m != current.leader),
        ]
        epochs = (
            {m: h.epochs[m] - 1 for m in members if m in h.epochs} if stale_broker_epoch else None
        )
        response = h.alter_partition(
            name,
            partition,
            isr,
            leader_epoch=current.leader_epoch - 1 if stale_leader_epoch else None,
            partition_epoch=current.partition_epoch - 1 if stale_partition_epoch else None,
            isr_epochs=epochs,
            leader_recovery_state=0 if recovered else int(current.leader_recovery_state),
        )
        event(f"AlterPartition {response.topics[0].partitions[0].error_code.name}")

    @rule(broker_id=BROKERS)
    def allocate_producer_ids(self, broker_id: int) -> None:
        h = self.h
        if broker_id not in h.controller.cluster.registrations:
            return
        error, start, length = h.allocate_producer_ids(broker_id)
        if error == 0:
            self.blocks.append((start, start + length))

    @rule(enable=st.booleans())
    def set_cluster_unclean_default(self, enable: bool) -> None:
        h = self.h
        h.run(
            h.controller.handle_incremental_alter_configs(
                [
                    AlterConfigsResource(
                        ConfigResourceType.BROKER,
                        "",
                        (
                            AlterableConfig(
                                "unclean.leader.election.enable",
                                AlterConfigOp.SET,
                                "true" if enable else "false",
                            ),
                        ),
                    )
                ],
                h.now_ms,
            )
        )

    @rule()
    def restart_controller(self) -> None:
        self.h.restart()

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def partitions_are_consistent(self) -> None:
        cluster = self.h.controller.cluster
        for topic, partition_id, p in self.h.controller.replication.all_partitions():
            assert p.isr, (topic.name, partition_id, p)
            assert len(set(p.isr)) == len(p.isr)
            assert set(p.isr) <= set(p.replicas)
            assert p.leader == -1 or p.leader in p.isr
            assert p.leader == -1 or cluster.is_active(p.leader)
            if p.leader != -1 or len(p.isr) > 1:
                assert all(cluster.is_active(member) for member in p.isr), p
            if p.leader_recovery_state is LeaderRecoveryState.RECOVERING:
                assert len(p.isr) == 1
                event("a partition is RECOVERING (unclean election)")
            if p.leader == -1:
                event("a partition is leaderless")
            key = (topic.topic_id, partition_id)
            previous = self.epochs_seen.get(key)
            if previous is not None:
                assert p.leader_epoch >= previous[0]
                assert p.partition_epoch >= previous[1]
            self.epochs_seen[key] = (p.leader_epoch, p.partition_epoch)

    @invariant()
    def broker_epochs_are_unique_offsets(self) -> None:
        epochs = [
            (offset, record.broker_epoch)
            for offset, record in enumerate(self.h.log)
            if isinstance(record, RegisterBrokerRecord)
        ]
        assert all(offset == epoch for offset, epoch in epochs)
        current = [r.epoch for r in self.h.controller.cluster.registrations.values()]
        assert len(set(current)) == len(current)

    @invariant()
    def producer_id_blocks_are_disjoint_and_increasing(self) -> None:
        for (_, end), (start, _) in zip(self.blocks, self.blocks[1:], strict=False):
            assert end <= start

    @invariant()
    def replay_rebuilds_the_same_state(self) -> None:
        h = self.h
        rebuilt = h.rebuilt()
        live = h.controller
        assert rebuilt.cluster.registrations == live.cluster.registrations
        assert rebuilt.replication.topics == live.replication.topics
        assert rebuilt.configs.configs == live.configs.configs
        assert rebuilt.producer_ids.next_producer_id == live.producer_ids.next_producer_id
        image = h.image()
        assert dict(image.brokers) == live.cluster.registrations
        assert {
            topic_id: dict(topic.partitions) for topic_id, topic in image.topics_by_id.items()
        } == {topic_id: topic.parts for topic_id, topic in live.replication.topics.items()}


ControllerMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=50, deadline=None
)
test_controller_invariants = ControllerMachine.TestCase
