"""Replication with real processes: a controller and three brokers (odradek.Cluster), RF=3
topics with min.insync.replicas=2, confluent-kafka producers and consumers.

The seed's Durability row (a): an idempotent acks=all producer loses nothing and duplicates
nothing when the leader is killed -9 mid-stream; followers' logs equal the leader's; the ISR
shrinks after replica.lag.time.max.ms and grows back; a broker restarted on an empty disk
rejoins the ISR only once caught up; a broker that does not lead answers
NOT_LEADER_OR_FOLLOWER naming the leader (KIP-951)."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from odradek.cli.wire import WireClient
from odradek.cluster import Cluster

LAG_TIME_MS = 3000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(
        brokers=3,
        data_dir=tmp_path_factory.mktemp("replication"),  # node logs kept for a failure's reader
        log_level="INFO",
        config={
            "broker.session.timeout.ms": "3000",
            "broker.heartbeat.interval.ms": "500",
            "replica.lag.time.max.ms": str(LAG_TIME_MS),
        },
    ) as running:
        yield running


def wait_until(condition: Any, timeout_s: float = 20.0, message: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{message} not met in {timeout_s} s"
        time.sleep(0.1)


def create_topic(cluster: Cluster, name: str, partitions: int = 1) -> None:
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap_servers, "log_level": 0})
    futures = admin.create_topics(
        [
            NewTopic(
                name,
                num_partitions=partitions,
                replication_factor=3,
                config={"min.insync.replicas": "2"},
            )
        ]
    )
    futures[name].result(15)
    wait_until(lambda: all(p.isr_nodes and len(p.isr_nodes) == 3 for p in describe(cluster, name).values()))


def describe(cluster: Cluster, topic: str, via: int | None = None) -> dict[int, Any]:
    """Metadata v12 of `topic` from one running broker: partition index -> partition."""
    node = via if via is not None else next(n for n in cluster.node_ids if cluster.is_running(n))
    with WireClient(cluster.broker_address(node), timeout=5) as client:
        topic_type = client.build(3, 12, "MetadataRequestTopic", name=topic, topic_id=None)
        response = client.request(
            3,
            12,
            topics=(topic_type,),
            allow_auto_topic_creation=False,
            include_topic_authorized_operations=False,
        )
    (described,) = response.topics
    return {int(p.partition_index): p for p in described.partitions}


def leader_of(cluster: Cluster, topic: str, partition: int = 0) -> int:
    return int(describe(cluster, topic)[partition].leader_id)


def isr_of(cluster: Cluster, topic: str, partition: int = 0, via: int | None = None) -> list[int]:
    return sorted(int(node) for node in describe(cluster, topic, via)[partition].isr_nodes)


def producer(cluster: Cluster, **extra: Any) -> Producer:
    return Producer(
        {
            "bootstrap.servers": cluster.bootstrap_servers,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "message.timeout.ms": 60000,
            "log_level": 0,
            **extra,
        }
    )


def consume_all(cluster: Cluster, topic: str, expected: int, timeout_s: float = 30.0) -> list[Any]:
    consumer = Consumer(
        {
            "bootstrap.servers": cluster.bootstrap_servers,
            "group.id": f"reader-{topic}-{time.monotonic_ns()}",
            "enable.auto.commit": False,
            "log_level": 0,
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    messages: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(messages) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error() is not None:
                continue
            messages.append(message)
    finally:
        consumer.close()
    return messages


def test_acks_all_round_trip_on_three_replicas(cluster: Cluster) -> None:
    create_topic(cluster, "rf3-basic")
    client = producer(cluster)
    delivered: list[Any] = []
    for number in range(200):
        client.produce(
            "rf3-basic",
            value=str(number).encode(),
            on_delivery=lambda error, message: delivered.append((error, message)),
        )
    assert client.flush(30) == 0
    assert [error for error, _ in delivered if error is not None] == []
    messages = consume_all(cluster, "rf3-basic", 200)
    assert [m.value() for m in messages] == [str(n).encode() for n in range(200)]
    assert [m.offset() for m in messages] == list(range(200))
