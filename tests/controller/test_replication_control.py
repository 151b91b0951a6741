"""Topics, partitions, elections and AlterPartition, with Kafka's error codes."""

from __future__ import annotations

import random
import uuid

import pytest
from controller_harness import Harness
from kio.schema.errors import ErrorCode

from odradek.controller import (
    AlterableConfig,
    AlterConfigOp,
    AlterConfigsResource,
    ConfigRecord,
    ConfigResourceType,
    CreatableTopic,
    CreatePartitionsTopic,
    InvalidReplicationFactor,
    LeaderRecoveryState,
    PartitionRecord,
    RemoveTopicRecord,
    TopicRecord,
    place_replicas,
)

UNCLEAN = ("unclean.leader.election.enable", "true")


def partition_error(response: object) -> ErrorCode:
    topics = response.topics  # type: ignore[attr-defined]
    error: ErrorCode = topics[0].partitions[0].error_code
    return error


# -- placement -----------------------------------------------------------------------------------


def test_round_robin_placement_spreads_leaders_and_followers() -> None:
    assignments = place_replicas([3, 1, 2], 6, 2, random.Random(4))
    leaders = [replicas[0] for replicas in assignments]
    assert sorted(leaders) == [1, 1, 2, 2, 3, 3]
    for replicas in assignments:
        assert len(set(replicas)) == 2
    # The same RNG state gives the same placement: the controller is deterministic.
    assert place_replicas([1, 2, 3], 6, 2, random.Random(4)) == assignments


def test_placement_start_comes_from_the_injected_rng() -> None:
    starts = {place_replicas([1, 2, 3], 1, 1, random.Random(seed))[0][0] for seed in range(30)}
    assert starts == {1, 2, 3}


def test_more_replicas_than_brokers_is_refused() -> None:
    with pytest.raises(InvalidReplicationFactor):
        place_replicas([1, 2], 1, 3, random.Random(0))


# -- CreateTopics --------------------------------------------------------------------------------


def test_create_topic_places_over_live_brokers_only() -> None:
    h = Harness()
    h.start_brokers(1, 2, 3)
    h.heartbeat(3, want_fence=True)
    result = h.create_topic("t", partitions=4, replication_factor=2)
    assert result.error_code is ErrorCode.none
    assert (result.num_partitions, result.replication_factor) == (4, 2)
    for p in range(4):
        partition = h.partition("t", p)
        assert 3 not in partition.replicas
        assert partition.isr == partition.replicas
        assert partition.leader == partition.replicas[0]
        assert (partition.leader_epoch, partition.partition_epoch) == (0, 0)
    too_many = h.create_topic("u", partitions=1, replication_factor=3)
    assert too_many.error_code is ErrorCode.invalid_replication_factor


def test_create_topic_records_are_config_then_topic_then_partitions() -> None:
    h = Harness()
    h.start_brokers(1)
    start = len(h.log)
    h.create_topic("t", partitions=2, configs=[("retention.ms", "1000")])
    kinds = [type(record) for record in h.log[start:]]
    assert kinds == [ConfigRecord, TopicRecord, PartitionRecord, PartitionRecord]
    assert h.controller.configs.topic_config("t") == {"retention.ms": "1000"}


def test_explicit_assignments_are_honoured() -> None:
    h = Harness()
    h.start_brokers(1, 2, 3)
    h.heartbeat(2, want_fence=True)
    result = h.create_topic("t", assignments=[(1, (3, 2)), (0, (2, 1))])
    assert result.error_code is ErrorCode.none
    assert h.partition("t", 0).replicas == (2, 1)
    # The fenced broker is a replica but not in the ISR, and does not lead.
    assert (h.partition("t", 0).isr, h.partition("t", 0).leader) == ((1,), 1)
    assert (h.partition("t", 1).isr, h.partition("t", 1).leader) == ((3,), 3)


@pytest.mark.parametrize(
    ("topic", "error"),
    [
        (CreatableTopic("bad name!"), ErrorCode.invalid_topic_exception),
        (CreatableTopic("t", num_partitions=0), ErrorCode.invalid_partitions),
        (CreatableTopic("t", replication_factor=0), ErrorCode.invalid_replication_factor),
        (CreatableTopic("t", replication_factor=3), ErrorCode.invalid_replication_factor),
        (CreatableTopic("t", configs=(("retention.ms", "soon"),)), ErrorCode.invalid_config),
        (CreatableTopic("t", configs=(("retention.ms", None),)), ErrorCode.invalid_config),
        (
            CreatableTopic("t", configs=(("unclean.leader.election.enable", "maybe"),)),
            ErrorCode.invalid_config,
        ),
        (CreatableTopic("t", 2, -1, ((0, (1,)),)), ErrorCode.invalid_request),
        (CreatableTopic("t", -1, 1, ((0, (1,)),)), ErrorCode.invalid_request),
        (CreatableTopic("t", -1, -1, ((0, (1, 1)),)), ErrorCode.invalid_replica_assignment),
        (CreatableTopic("t", -1, -1, ((0, (9,)),)), ErrorCode.invalid_replica_assignment),
        (CreatableTopic("t", -1, -1, ((0, ()),)), ErrorCode.invalid_replica_assignment),
        (CreatableTopic("t", -1, -1, ((1, (1,)),)), ErrorCode.invalid_replica_assignment),
        (
            CreatableTopic("t", -1, -1, ((0, (1,)), (1, (1, 2)))),
            ErrorCode.invalid_replica_assignment,
        ),
        (CreatableTopic("t", -1, -1, ((0, (3,)),)), ErrorCode.invalid_replica_assignment),
    ],
)
def test_create_topic_errors(topic: CreatableTopic, error: ErrorCode) -> None:
    h = Harness()
    h.start_brokers(1, 2, 3)
    h.heartbeat(3, want_fence=True)
    (result,) = h.run(h.controller.handle_create_topics([topic], h.now_ms))
    assert result.error_code is error, result
    assert "t" not in h.controller.replication.topics_by_name


def test_create_topic_that_exists_or_collides() -> None:
    h = Harness()
    h.start_brokers(1)
    h.create_topic("a.b")
    assert h.create_topic("a.b").error_code is ErrorCode.topic_already_exists
    assert h.create_topic("a_b").error_code is ErrorCode.invalid_topic_exception
    results = h.run(
        h.controller.handle_create_topics([CreatableTopic("x"), CreatableTopic("x")], h.now_ms)
    )
    assert [r.error_code for r in results] == [ErrorCode.invalid_request] * 2


def test_create_partitions() -> None:
    h = Harness()
    h.start_brokers(1, 2)
    h.create_topic("t", partitions=1, replication_factor=2)
    results = h.run(
        h.controller.handle_create_partitions(
            [
                CreatePartitionsTopic("t", 3),
                CreatePartitionsTopic("missing", 2),
            ],
            h.now_ms,
        )
    )
    assert [r.error_code for r in results] == [
        ErrorCode.none,
        ErrorCode.unknown_topic_or_partition,
    ]
    assert len(h.controller.replication.topics[h.topic_id("t")].parts) == 3
    assert all(len(h.partition("t", p).replicas) == 2 for p in range(3))
    (same,) = h.run(h.controller.handle_create_partitions([CreatePartitionsTopic("t", 3)], 0))
    assert same.error_code is ErrorCode.invalid_partitions
    (mismatch,) = h.run(
        h.controller.handle_create_partitions([CreatePartitionsTopic("t", 5, ((1, 2),))], 0)
    )
    assert mismatch.error_code is ErrorCode.invalid_replica_assignment
    (explicit,) = h.run(
        h.controller.handle_create_partitions([CreatePartitionsTopic("t", 4, ((2, 1),))], 0)
    )
    assert explicit.error_code is ErrorCode.none
    assert h.partition("t", 3).replicas == (2, 1)


# -- DeleteTopics --------------------------------------------------------------------------------


def test_delete_topic_removes_partitions_and_configs_and_frees_the_name() -> None:
    h = Harness()
    h.start_brokers(1)
    h.create_topic("t", partitions=2, configs=[("retention.ms", "5")])
    topic_id = h.topic_id("t")
    results = h.run(h.controller.handle_delete_topics(["t", "nope"], [uuid.UUID(int=5)], 0))
    assert [r.error_code for r in results] == [
        ErrorCode.none,
        ErrorCode.unknown_topic_or_partition,
        ErrorCode.unknown_topic_id,
    ]
    assert h.log[-1] == RemoveTopicRecord(topic_id)
    assert topic_id not in h.controller.replication.topics
    assert h.controller.configs.topic_config("t") == {}
    assert h.image().topic("t") is None
    again = h.create_topic("t")
    assert again.error_code is ErrorCode.none
    assert again.topic_id != topic_id
    assert h.controller.configs.topic_config("t") == {}
    by_id = h.run(h.controller.handle_delete_topics([], [h.topic_id("t")], 0))
    assert by_id[0].error_code is ErrorCode.none


# -- elections -----------------------------------------------------------------------------------


def test_clean_election_picks_the_next_isr_member_in_replica_order() -> None:
    h = Harness()
    h.start_brokers(1, 2, 3)
    h.create_topic("t", assignments=[(0, (1, 3, 2))])
    h.heartbeat(1, want_fence=True)
    partition = h.partition("t")
    assert (partition.leader, partition.isr) == (3, (3, 2))
    assert (partition.leader_epoch, partition.partition_epoch) == (1, 1)


def test_follower_fencing_shrinks_the_isr_without_a_leader_epoch_bump() -> None:
    h = Harness()
    h.start_brokers(1, 2)
    h.create_topic("t", assignments=[(0, (1, 2))])
    h.heartbeat(2, want_fence=True)
    partition = h.partition("t")
    assert (partition.leader, partition.isr) == (1, (1,))
    assert (partition.leader_epoch, partition.partition_epoch) == (0, 1)


def test_no_unclean_election_by_default() -> None:
    h = Harness()
    h.start_brokers(1, 2)
    h.create_topic("t", assignments=[(0, (1, 2))])
    h.alter_partition("t", 0, [1])  # broker 2 fell out of the ISR
    h.heartbeat(1, want_fence=True)
    h.advance(1000)
    h.heartbeat(2)
    partition = h.partition("t")
    assert (partition.leader, partition.isr) == (-1, (1,))


def test_unclean_election_makes_the_partition_recovering() -> None:
    h = Harness()
    h.start_brokers(1, 2)
    h.create_topic("t", assignments=[(0, (1, 2))], configs=[UNCLEAN])
    h.alter_partition("t", 0, [1])
    h.heartbeat(1, want_fence=True)
    partition = h.partition("t")
    assert (partition.leader, partition.isr) == (2, (2,))
    assert partition.leader_recovery_state is LeaderRecoveryState.RECOVERING
    # While recovering, the leader may not grow the ISR ...
    h.heartbeat(1)
    grow = h.alter_partition("t", 0, [2, 1], leader_recovery_state=1)
    assert partition_error(grow) is ErrorCode.invalid_request
    # ... until it reports RECOVERED, which it may do with itself alone.
    done = h.alter_partition("t", 0, [2], leader_recovery_state=0)
    assert partition_error(done) is ErrorCode.none
    assert h.partition("t").leader_recovery_state is LeaderRecoveryState.RECOVERED
    back = h.alter_partition("t", 0, [2], leader_recovery_state=1)
    assert partition_error(back) is ErrorCode.invalid_request


def test_enabling_unclean_election_later_elects_on_the_next_tick() -> None:
    h = Harness()
    h.start_brokers(1, 2)
    h.create_topic("t", assignments=[(0, (1, 2))])
    h.alter_partition("t", 0, [1])
    h.heartbeat(1, want_fence=True)
    assert h.partition("t").leader == -1
    h.run(
        h.controller.handle_incremental_alter_configs(
            [
                AlterConfigsResource(
                    ConfigResourceType.BROKER,
                    "",
                    (AlterableConfig(UNCLEAN[0], AlterConfigOp.SET, "true"),),
                )
            ],
            h.now_ms,
        )
    )
    h.advance(1)
    assert h.partition("t").leader == 2


# -- AlterPartition ------------------------------------------------------------------------------


@pytest.fixture
def three() -> Harness:
    """Brokers 1, 2, 3; topic t with replicas (1, 2, 3), ISR shrunk to (1, 2)."""
    h = Harness()
    h.start_brokers(1, 2, 3)
    h.create_topic("t", assignments=[(0, (1, 2, 3))])
    assert partition_error(h.alter_partition("t", 0, [1, 2])) is ErrorCode.none
    return h


def test_alter_partition_accepted(three: Harness) -> None:
    h = three
    before = h.partition("t")
    response = h.alter_partition("t", 0, [1, 2, 3])
    answer = response.topics[0].partitions[0]
    assert answer.error_code is ErrorCode.none
    after = h.partition("t")
    assert after.isr == (1, 2, 3)
    assert after.partition_epoch == before.partition_epoch + 1
    assert after.leader_epoch == before.leader_epoch
    assert (answer.leader_id, answer.isr, answer.partition_epoch) == (1, (1, 2, 3), 2)


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"leader_epoch": -1}, ErrorCode.fenced_leader_epoch),
        ({"partition_epoch": 0}, ErrorCode.invalid_update_version),
        ({"leader_epoch": 5}, ErrorCode.not_controller),
        ({"partition_epoch": 9}, ErrorCode.not_controller),
        ({"broker_id": 2}, ErrorCode.invalid_request),
    ],
)
def test_alter_partition_stale_epochs(
    three: Harness, changes: dict[str, int], error: ErrorCode
) -> None:
    h = three
    before = h.partition("t")
    response = h.alter_partition("t", 0, [1, 2, 3], **changes)  # type: ignore[arg-type]
    assert partition_error(response) is error
    assert h.partition("t") == before


def test_alter_partition_from_an_old_leader_after_a_leader_change(three: Harness) -> None:
    h = three
    stale_leader_epoch = h.partition("t").leader_epoch
    h.heartbeat(1, want_fence=True)
    h.heartbeat(1)
    assert h.partition("t").leader == 2
    response = h.alter_partition("t", 0, [1], broker_id=1, leader_epoch=stale_leader_epoch)
    assert partition_error(response) is ErrorCode.fenced_leader_epoch


@pytest.mark.parametrize(
    "isr",
    [[2, 3], [1, 1, 2], [1, 4], []],
    ids=["without-leader", "duplicate", "not-a-replica", "empty"],
)
def test_alter_partition_invalid_isr(three: Harness, isr: list[int]) -> None:
    assert partition_error(three.alter_partition("t", 0, isr)) is ErrorCode.invalid_request


def test_alter_partition_ineligible_replicas(three: Harness) -> None:
    h = three
    h.heartbeat(3, want_fence=True)
    fenced = h.alter_partition("t", 0, [1, 2, 3])
    assert partition_error(fenced) is ErrorCode.ineligible_replica
    h.heartbeat(3)
    wrong_epoch = h.alter_partition("t", 0, [1, 2, 3], isr_epochs={3: h.epochs[3] + 1})
    assert partition_error(wrong_epoch) is ErrorCode.ineligible_replica
    # Version 2 carries no broker epochs: the epoch check is skipped.
    assert partition_error(h.alter_partition("t", 0, [1, 2, 3], version=2)) is ErrorCode.none


def test_alter_partition_ineligible_while_shutting_down_and_unregistered() -> None:
    h = Harness()
    h.start_brokers(1, 2, 3)
    h.create_topic("t", assignments=[(0, (1, 2, 3))])
    h.create_topic("u", assignments=[(0, (3, 1))])
    h.alter_partition("t", 0, [1, 2])
    h.heartbeat(3, want_shut_down=True)  # leads u-0: controlled shutdown
    assert h.controller.cluster.registrations[3].in_controlled_shutdown
    shutting = h.alter_partition("t", 0, [1, 2, 3])
    assert partition_error(shutting) is ErrorCode.ineligible_replica
    # Versions before 2 answered OPERATION_NOT_ATTEMPTED (Kafka 3's rule, kept as stated).
    old = h.alter_partition("t", 0, [1, 2, 3], version=1)
    assert partition_error(old) is ErrorCode.operation_not_attempted


def test_alter_partition_unknown_topic_partition_and_stale_broker_epoch(three: Harness) -> None:
    h = three
    from odradek.controller import (
        AlterPartitionPartition,
        AlterPartitionRequest,
        AlterPartitionTopic,
        BrokerState,
    )

    data = AlterPartitionPartition(0, 0, (BrokerState(1, h.epochs[1]),), 1)
    unknown_topic = AlterPartitionRequest(
        1, h.epochs[1], (AlterPartitionTopic(uuid.uuid4(), (data,)),)
    )
    response = h.run(h.controller.handle_alter_partition(unknown_topic, 0))
    assert partition_error(response) is ErrorCode.unknown_topic_id
    by_name = AlterPartitionRequest(1, h.epochs[1], (AlterPartitionTopic(None, (data,), "nope"),))
    response = h.run(h.controller.handle_alter_partition(by_name, 0, version=1))
    assert partition_error(response) is ErrorCode.unknown_topic_or_partition
    missing = AlterPartitionPartition(7, 0, (BrokerState(1, h.epochs[1]),), 1)
    unknown_partition = AlterPartitionRequest(
        1, h.epochs[1], (AlterPartitionTopic(h.topic_id("t"), (missing,)),)
    )
    response = h.run(h.controller.handle_alter_partition(unknown_partition, 0))
    assert partition_error(response) is ErrorCode.unknown_topic_or_partition
    stale = AlterPartitionRequest(1, h.epochs[1] - 1, ())
    response = h.run(h.controller.handle_alter_partition(stale, 0))
    assert response.error_code is ErrorCode.stale_broker_epoch
    assert response.topics == ()


def test_a_no_op_alter_partition_writes_nothing(three: Harness) -> None:
    h = three
    before = len(h.log)
    response = h.alter_partition("t", 0, [1, 2])
    assert partition_error(response) is ErrorCode.none
    assert len(h.log) == before


# -- configs -------------------------------------------------------------------------------------


def test_incremental_alter_configs() -> None:
    h = Harness()
    h.start_brokers(1)
    h.create_topic("t")

    def alter(kind: int, name: str, *configs: AlterableConfig) -> ErrorCode:
        (response,) = h.run(
            h.controller.handle_incremental_alter_configs(
                [AlterConfigsResource(kind, name, configs)], h.now_ms
            )
        )
        return response.error_code

    topic, broker, group = ConfigResourceType.TOPIC, ConfigResourceType.BROKER, 32
    assert alter(topic, "t", AlterableConfig("cleanup.policy", AlterConfigOp.SET, "delete")) == 0
    assert (
        alter(topic, "t", AlterableConfig("cleanup.policy", AlterConfigOp.APPEND, "compact")) == 0
    )
    assert h.controller.configs.topic_config("t") == {"cleanup.policy": "delete,compact"}
    assert (
        alter(topic, "t", AlterableConfig("cleanup.policy", AlterConfigOp.SUBTRACT, "delete")) == 0
    )
    assert h.controller.configs.topic_config("t") == {"cleanup.policy": "compact"}
    assert alter(topic, "t", AlterableConfig("cleanup.policy", AlterConfigOp.DELETE, None)) == 0
    assert h.controller.configs.topic_config("t") == {}
    assert alter(topic, "nope", AlterableConfig("retention.ms", 0, "1")) is (
        ErrorCode.unknown_topic_or_partition
    )
    assert alter(topic, "t", AlterableConfig("retention.ms", 0, "x")) is ErrorCode.invalid_config
    assert alter(broker, "abc", AlterableConfig("x", 0, "1")) is ErrorCode.invalid_request
    assert alter(broker, "1", AlterableConfig("log.cleaner.threads", 0, "2")) == 0
    assert alter(group, "g", AlterableConfig("consumer.session.timeout.ms", 0, "45000")) == 0
    assert h.controller.configs.config(group, "g") == {"consumer.session.timeout.ms": "45000"}
    assert alter(8, "x", AlterableConfig("a", 0, "b")) is ErrorCode.invalid_request
    assert h.rebuilt().configs.configs == h.controller.configs.configs


def test_a_topic_id_is_never_reused_even_when_the_rng_repeats_itself() -> None:
    h = Harness()
    h.start_brokers(1)
    h.restart()  # the restarted controller's RNG is seeded as every later restart's
    first = h.create_topic("a").topic_id
    h.run(h.controller.handle_delete_topics(["a"], [], h.now_ms))
    h.restart()  # same RNG state again: its first draw is `first`
    second = h.create_topic("b").topic_id
    assert first != second
    assert h.rebuilt().replication.topics_by_name == {"b": second}
