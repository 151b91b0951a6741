"""Helpers shared by the cluster tests (imported by name, as tests/broker/raw_client.py is):
waiting for a condition, creating a replicated topic, reading a topic's metadata from one
running broker and reading partition 0 from offset 0."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import Consumer, Message, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from odradek.cli.wire import WireClient
from odradek.cluster import Cluster


def wait_until(condition: Any, timeout_s: float = 20.0, message: str = "condition") -> None:
    """Poll `condition()` every 0.1 s until it is true; fail naming `message` after
    `timeout_s` seconds."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{message} not met in {timeout_s} s"
        time.sleep(0.1)


def describe_topic(cluster: Cluster, topic: str, via: int | None = None) -> Any:
    """Metadata v12's description of `topic` from broker `via` (default: the first running
    broker)."""
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
    return described


def create_replicated_topic(cluster: Cluster, name: str, partitions: int) -> None:
    """Create `name` through confluent-kafka's AdminClient with `partitions` partitions,
    replication factor 3 and min.insync.replicas=2; waits up to 15 s for the controller's
    answer (raises KafkaException on an error), not for the ISR."""
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


def consume_messages(
    cluster: Cluster,
    topic: str,
    until: Callable[[list[Message]], bool],
    timeout_s: float,
    poll_s: float,
    **extra: Any,
) -> list[Message]:
    """Messages of partition 0 of `topic` read from offset 0 by a confluent-kafka consumer
    (no group commits; `extra` adds settings) until `until(messages)` holds or `timeout_s`
    passes; polls `poll_s` seconds at a time and skips error events."""
    consumer = Consumer(
        {
            "bootstrap.servers": cluster.bootstrap_servers,
            "group.id": f"reader-{topic}-{time.monotonic_ns()}",
            "enable.auto.commit": False,
            "log_level": 0,
            **extra,
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    messages: list[Message] = []
    deadline = time.monotonic() + timeout_s
    try:
        while not until(messages) and time.monotonic() < deadline:
            message = consumer.poll(poll_s)
            if message is None or message.error() is not None:
                continue
            messages.append(message)
    finally:
        consumer.close()
    return messages


GROUP_KEY_TYPE = 0
TRANSACTION_KEY_TYPE = 1


def find_coordinator(
    cluster: Cluster, key: str, key_type: int, avoid: int = -1, timeout_s: float = 30.0
) -> int:
    """The broker FindCoordinator v3 names for `key` (`key_type` 0: a group, whose coordinator
    leads its `__consumer_offsets` partition; 1: a transactional.id, whose coordinator leads its
    `__transaction_state` partition), asked of the running, unpaused brokers; waits until one
    answers with a coordinator other than `avoid`."""
    found: list[int] = []

    def ask() -> bool:
        for node in cluster.node_ids:
            if not cluster.is_running(node) or cluster.is_paused(node):
                continue
            try:
                with WireClient(cluster.broker_address(node), timeout=5) as client:
                    response = client.request(10, 3, key=key, key_type=key_type)
            except Exception:
                continue
            if response.error_code == 0 and int(response.node_id) != avoid:
                found.append(int(response.node_id))
                return True
        return False

    wait_until(ask, timeout_s=timeout_s, message=f"a coordinator for {key!r}")
    return found[-1]


def produce_values(
    cluster: Cluster, topic: str, values: Sequence[bytes | tuple[str, bytes]], **extra: Any
) -> None:
    """Produce `values` (each a value, or a (key, value) pair) to partition 0 of `topic`
    (idempotent, acks=all; `extra` adds producer settings); fails unless every one is
    acknowledged."""
    from confluent_kafka import Producer

    producer = Producer(
        {
            "bootstrap.servers": cluster.bootstrap_servers,
            "enable.idempotence": True,
            "linger.ms": 5,
            "log_level": 0,
            **extra,
        }
    )
    failures: list[Any] = []

    def delivered(error: Any, _message: Any) -> None:
        if error is not None:
            failures.append(error)

    for entry in values:
        key, value = entry if isinstance(entry, tuple) else (None, entry)
        producer.produce(topic, key=key, value=value, partition=0, on_delivery=delivered)
        producer.poll(0)
    assert producer.flush(60) == 0
    assert failures == [], failures[:3]


def group_committed_offset(cluster: Cluster, group: str, topic: str) -> int:
    """The offset `group` committed for partition 0 of `topic` (OffsetFetch with
    require_stable, as a read_committed consumer asks); -1 when none is, or when the group
    coordinator cannot answer now (ask again later)."""
    from confluent_kafka import KafkaException

    consumer = Consumer(
        {
            "bootstrap.servers": cluster.bootstrap_servers,
            "group.id": group,
            "isolation.level": "read_committed",
            "log_level": 0,
        }
    )
    try:
        (position,) = consumer.committed([TopicPartition(topic, 0)], timeout=10)
    except KafkaException:
        return -1
    finally:
        consumer.close()
    return int(position.offset)
