"""Configs as metadata on a cluster (issue 12): AlterConfigs / IncrementalAlterConfigs sent to
any broker become ConfigRecords in the controller's metadata log, every broker applies them from
its image, and DescribeConfigs on every broker reports the same value with the same source —
topic, broker, cluster-default broker ("") and group configs. Also DeleteRecords on a cluster:
the low watermark moves on every live replica before the answer."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import click
import pytest
from cluster_helpers import wait_until
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from odradek.broker.context import DEFAULT_CONFIG, DYNAMIC_DEFAULT_BROKER_CONFIG
from odradek.broker.dynamic_configs import GROUP_CONFIG
from odradek.broker.topics import DYNAMIC_TOPIC_CONFIG
from odradek.cli.wire import WireClient
from odradek.cluster import Cluster

TOPIC, BROKER, GROUP = 2, 4, 32
SET, DELETE = 0, 1
DESCRIBE_CONFIGS, INCREMENTAL_ALTER_CONFIGS, ALTER_CONFIGS = 32, 44, 33


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(
        brokers=3,
        data_dir=tmp_path_factory.mktemp("configs"),  # node logs kept for a failure's reader
        log_level="INFO",
        config={
            "broker.session.timeout.ms": "3000",
            "broker.heartbeat.interval.ms": "500",
            "replica.lag.time.max.ms": "2000",
        },
    ) as running:
        yield running


def create_topic(cluster: Cluster, name: str, rf: int = 3, **configs: str) -> None:
    cluster.wait_for_brokers(running(cluster), timeout_s=30)  # a restarted one registered
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap_servers, "log_level": 0})
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=1, replication_factor=rf, config=configs)]
    )
    futures[name].result(15)
    for node in running(cluster):  # metadata reaches every broker a moment later
        wait_until(
            lambda node=node: (
                cluster.describe_partition(name, 0) is not None and known(cluster, node, name)
            ),
            message=f"{name} on broker {node}",
        )


def known(cluster: Cluster, node: int, topic: str) -> bool:
    with WireClient(cluster.broker_address(node), timeout=10) as client:
        resource = client.build(
            DESCRIBE_CONFIGS,
            4,
            "DescribeConfigsResource",
            resource_type=TOPIC,
            resource_name=topic,
            configuration_keys=("retention.ms",),
        )
        response = client.request(
            DESCRIBE_CONFIGS,
            4,
            resources=(resource,),
            include_synonyms=False,
            include_documentation=False,
        )
    return bool(response.results[0].error_code.value == 0)


def describe(cluster: Cluster, node: int, kind: int, name: str) -> dict[str, tuple[str, int]]:
    """DescribeConfigs v4 sent to broker `node`: config name -> (value, source)."""
    with WireClient(cluster.broker_address(node), timeout=10) as client:
        resource = client.build(
            DESCRIBE_CONFIGS,
            4,
            "DescribeConfigsResource",
            resource_type=kind,
            resource_name=name,
            configuration_keys=None,
        )
        response = client.request(
            DESCRIBE_CONFIGS,
            4,
            resources=(resource,),
            include_synonyms=False,
            include_documentation=False,
        )
    (result,) = response.results
    assert result.error_code.value == 0, result.error_message
    return {entry.name: (entry.value, int(entry.config_source)) for entry in result.configs}


def value_on(cluster: Cluster, node: int, kind: int, name: str, key: str) -> tuple[str, int] | None:
    """One config as broker `node` describes it; None while it cannot (e.g. still starting)."""
    try:
        return describe(cluster, node, kind, name).get(key)
    except (AssertionError, click.ClickException):
        return None


def wait_for_value(
    cluster: Cluster, kind: int, name: str | None, key: str, expected: tuple[str, int] | None
) -> None:
    """Until every broker describes `key` of the resource as `expected` (a ConfigRecord reaches
    each broker's image a moment after the controller wrote it, as in Kafka). `name` None:
    each broker's own broker resource."""
    for node in cluster.node_ids:
        resource = str(node) if name is None else name
        wait_until(
            lambda node=node, resource=resource: (
                value_on(cluster, node, kind, resource, key) == expected
            ),
            message=f"{key} of {resource} on broker {node} is {expected}",
        )


def alter(
    cluster: Cluster, node: int, kind: int, name: str, changes: dict[str, str | None]
) -> tuple[int, str | None]:
    """IncrementalAlterConfigs v1 (SET, or DELETE for None) sent to broker `node`."""
    with WireClient(cluster.broker_address(node), timeout=15) as client:
        configs = tuple(
            client.build(
                INCREMENTAL_ALTER_CONFIGS,
                1,
                "AlterableConfig",
                name=key,
                config_operation=SET if value is not None else DELETE,
                value=value,
            )
            for key, value in changes.items()
        )
        resource = client.build(
            INCREMENTAL_ALTER_CONFIGS,
            1,
            "AlterConfigsResource",
            resource_type=kind,
            resource_name=name,
            configs=configs,
        )
        response = client.request(
            INCREMENTAL_ALTER_CONFIGS, 1, resources=(resource,), validate_only=False
        )
    (answer,) = response.responses
    return answer.error_code.value, answer.error_message


def running(cluster: Cluster) -> list[int]:
    return [node for node in cluster.node_ids if cluster.is_running(node)]


def test_topic_configs_are_metadata_every_broker_reports_and_applies(cluster: Cluster) -> None:
    create_topic(cluster, "configured", rf=3, **{"retention.ms": "600000"})
    create_topic(cluster, "single-copy", rf=1)
    for node in cluster.node_ids:
        # CreateTopics' configs are ConfigRecords too: every broker reports them.
        assert describe(cluster, node, TOPIC, "configured")["retention.ms"] == (
            "600000",
            DYNAMIC_TOPIC_CONFIG,
        )
    # Altered through broker 1, seen on all three (also where the topic has no replica).
    assert (
        alter(cluster, cluster.node_ids[0], TOPIC, "configured", {"min.insync.replicas": "3"})[0]
        == 0
    )
    assert (
        alter(cluster, cluster.node_ids[1], TOPIC, "single-copy", {"cleanup.policy": "compact"})[0]
        == 0
    )
    wait_for_value(cluster, TOPIC, "configured", "min.insync.replicas", ("3", DYNAMIC_TOPIC_CONFIG))
    wait_for_value(
        cluster, TOPIC, "single-copy", "cleanup.policy", ("compact", DYNAMIC_TOPIC_CONFIG)
    )
    # A bad value is refused before it reaches the metadata log, with Kafka's error.
    error, message = alter(
        cluster, cluster.node_ids[2], TOPIC, "configured", {"min.insync.replicas": "zero"}
    )
    assert error != 0
    assert message
    assert alter(cluster, cluster.node_ids[2], TOPIC, "nowhere", {"retention.ms": "1"})[0] == 3

    # The leader enforces the new min.insync.replicas: with one replica gone, acks=all fails.
    producer = Producer(
        {
            "bootstrap.servers": cluster.bootstrap_servers,
            "acks": "all",
            "retries": 0,
            "message.timeout.ms": 10000,
            "log_level": 0,
        }
    )
    producer.produce("configured", b"before")
    assert producer.flush(15) == 0
    leader = cluster.leader_of("configured", 0)
    follower = next(node for node in cluster.node_ids if node != leader)
    cluster.kill(follower)
    try:
        cluster.wait_for_isr("configured", 0, size=2, timeout_s=20)
        errors: list[Any] = []
        producer.produce(
            "configured", b"after", on_delivery=lambda error, _message: errors.append(error)
        )
        producer.flush(15)
        assert errors
        assert errors[0] is not None
        assert errors[0].name() == "NOT_ENOUGH_REPLICAS"
        # Deleted while the follower is down: on restart it replays the log and drops it too.
        assert (
            alter(cluster, leader or 1, TOPIC, "configured", {"min.insync.replicas": None})[0] == 0
        )
    finally:
        cluster.restart(follower)
    for node in cluster.node_ids:
        wait_until(
            lambda node=node: (
                value_on(cluster, node, TOPIC, "configured", "min.insync.replicas")
                == ("1", DEFAULT_CONFIG)
            ),
            message=f"broker {node} drops the deleted override",
        )


def test_broker_default_and_group_configs_are_the_same_on_every_broker(
    cluster: Cluster,
) -> None:
    first, second, third = cluster.node_ids
    assert alter(cluster, first, BROKER, "", {"unclean.leader.election.enable": "true"})[0] == 0
    assert alter(cluster, second, BROKER, "", {"log.retention.ms": "7200000"})[0] == 0
    default = DYNAMIC_DEFAULT_BROKER_CONFIG
    wait_for_value(cluster, BROKER, None, "unclean.leader.election.enable", ("true", default))
    wait_for_value(cluster, BROKER, None, "log.retention.ms", ("7200000", default))
    wait_for_value(cluster, BROKER, "", "log.retention.ms", ("7200000", default))
    for node in cluster.node_ids:
        # The topic default follows the cluster-wide broker default on every broker.
        create_topic(cluster, f"defaults-{node}", rf=1)
        assert describe(cluster, node, TOPIC, f"defaults-{node}")["retention.ms"] == (
            "7200000",
            default,
        )
    # A broker-level group bound is checked by the receiving broker, the value stored by all.
    assert alter(cluster, third, GROUP, "orders", {"consumer.session.timeout.ms": "50000"})[0] == 0
    error, message = alter(cluster, third, GROUP, "orders", {"consumer.session.timeout.ms": "1"})
    assert error != 0
    assert message
    wait_for_value(cluster, GROUP, "orders", "consumer.session.timeout.ms", ("50000", GROUP_CONFIG))
    for key in ("unclean.leader.election.enable", "log.retention.ms"):
        assert alter(cluster, third, BROKER, "", {key: None})[0] == 0
    wait_for_value(cluster, BROKER, "", "log.retention.ms", None)
    wait_for_value(
        cluster, BROKER, None, "unclean.leader.election.enable", ("false", DEFAULT_CONFIG)
    )


def test_delete_records_moves_the_low_watermark_on_every_live_replica(cluster: Cluster) -> None:
    create_topic(cluster, "trimmed", rf=3)
    producer = Producer(
        {"bootstrap.servers": cluster.bootstrap_servers, "acks": "all", "log_level": 0}
    )
    for index in range(100):
        producer.produce("trimmed", f"record-{index}".encode())
    assert producer.flush(15) == 0
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap_servers, "log_level": 0})
    futures = admin.delete_records([TopicPartition("trimmed", 0, 40)], request_timeout=15)
    deleted = futures[TopicPartition("trimmed", 0, 40)].result(20)
    assert deleted.low_watermark == 40
    # Every live replica's log start moved before the answer: kill the leader at once, and
    # whichever follower takes over starts at 40.
    leader = cluster.leader_of("trimmed", 0)
    assert leader is not None
    cluster.kill(leader)
    try:
        wait_until(
            lambda: cluster.leader_of("trimmed", 0) not in (None, leader),
            message="a new leader",
        )
        consumer = Consumer(
            {
                "bootstrap.servers": cluster.bootstrap_servers,
                "group.id": "trimmed-reader",
                "log_level": 0,
            }
        )
        try:
            for attempt in range(3):  # the client may still ask the killed leader first
                try:
                    low, high = consumer.get_watermark_offsets(
                        TopicPartition("trimmed", 0), timeout=10
                    )
                    break
                except KafkaException:
                    if attempt == 2:
                        raise
                    time.sleep(1)
        finally:
            consumer.close()
        assert (low, high) == (40, 100)
    finally:
        cluster.restart(leader)
    # Beyond the high watermark: OFFSET_OUT_OF_RANGE, nothing deleted.
    # An admin client that knew the restarted broker may route to a former leader
    # (NOT_LEADER_FOR_PARTITION, which librdkafka returns instead of retrying) or fail on the
    # old connection (_DESTROY_BROKER): ask again, from a fresh client, until the broker answers.
    error = None
    for _attempt in range(10):
        beyond = TopicPartition("trimmed", 0, 1000)
        fresh = AdminClient({"bootstrap.servers": cluster.bootstrap_servers, "log_level": 0})
        with pytest.raises(KafkaException) as caught:
            fresh.delete_records([beyond], request_timeout=15)[beyond].result(20)
        error = str(caught.value)
        if "NOT_LEADER" not in error and "_DESTROY" not in error and "_TRANSPORT" not in error:
            break
        time.sleep(1)
    assert error is not None
    assert "OFFSET_OUT_OF_RANGE" in error
