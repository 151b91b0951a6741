"""Helpers shared by the cluster tests (imported by name, as tests/broker/raw_client.py is):
waiting for a condition, creating a replicated topic, reading a topic's metadata from one
running broker and reading partition 0 from offset 0."""

from __future__ import annotations

import time
from collections.abc import Callable
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
