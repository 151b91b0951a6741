"""Replication with real processes: a controller and three brokers (odradek.Cluster), RF=3
topics with min.insync.replicas=2, confluent-kafka producers and consumers.

The seed's Durability row (a): an idempotent acks=all producer loses nothing and duplicates
nothing when the leader is killed -9 mid-stream; followers' logs equal the leader's; the ISR
shrinks after replica.lag.time.max.ms and grows back; a broker restarted on an empty disk
rejoins the ISR only once caught up; a broker that does not lead answers
NOT_LEADER_OR_FOLLOWER naming the leader (KIP-951)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
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
    wait_until(
        lambda: all(p.isr_nodes and len(p.isr_nodes) == 3 for p in describe(cluster, name).values())
    )


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


def log_bytes(cluster: Cluster, node: int, topic: str, partition: int = 0) -> bytes:
    """Every segment of `topic`-`partition` on `node`, in offset order, as one byte string
    (followers append the leader's batches exactly as written, so replicas compare equal)."""
    directory = cluster.data_dir / f"node-{node}" / f"{topic}-{partition}"
    return b"".join(path.read_bytes() for path in sorted(directory.glob("*.log")))


def test_leader_killed_mid_stream_loses_and_duplicates_nothing(cluster: Cluster) -> None:
    """Durability row (a): idempotent acks=all, kill -9 the leader while producing."""
    topic = "rf3-leader-kill"
    create_topic(cluster, topic)
    old_leader = leader_of(cluster, topic)
    client = producer(cluster)
    acknowledged: list[tuple[bytes, int]] = []
    failed: list[Any] = []
    lock = threading.Lock()

    def on_delivery(error: Any, message: Any) -> None:
        with lock:
            if error is None:
                acknowledged.append((message.value(), message.offset()))
            else:
                failed.append(error)

    total = 3000
    for number in range(total):
        client.produce(topic, value=b"%06d" % number, on_delivery=on_delivery)
        client.poll(0)
        if number == total // 3:
            # Mid-stream: some records acknowledged, later ones still in flight.
            deadline = time.monotonic() + 20
            while len(acknowledged) < 200 and time.monotonic() < deadline:
                client.poll(0.005)
            cluster.kill(old_leader)
            acknowledged_before_kill = len(acknowledged)
        if number % 50 == 0:
            time.sleep(0.005)
    assert client.flush(90) == 0
    new_leader = leader_of(cluster, topic)
    assert new_leader != old_leader
    messages = consume_all(cluster, topic, len(acknowledged))
    values = [m.value() for m in messages]
    offsets = [m.offset() for m in messages]
    # Every acknowledged record is read back exactly once, at the offset it was acknowledged
    # with, and the offsets are contiguous.
    assert offsets == list(range(len(messages)))
    assert len(values) == len(set(values))
    assert sorted(acknowledged, key=lambda pair: pair[1]) == list(zip(values, offsets, strict=True))
    assert failed == []
    assert len(acknowledged) == total
    assert 200 <= acknowledged_before_kill < total
    # Followers' logs equal the leader's.
    cluster.restart(old_leader)
    cluster.wait_for_brokers(cluster.node_ids)
    wait_until(lambda: isr_of(cluster, topic) == cluster.node_ids, message="ISR back to 3")
    leader_log = log_bytes(cluster, new_leader, topic)
    assert leader_log
    wait_until(
        lambda: all(log_bytes(cluster, node, topic) == leader_log for node in cluster.node_ids),
        message="replica logs equal the leader's",
    )
