"""Helpers shared by the transaction tests: topics, producers and readers with real clients."""

from __future__ import annotations

import itertools
import time
import uuid
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

_names = itertools.count()


def create_topic(bootstrap: str, partitions: int = 1, name: str | None = None) -> str:
    name = name or f"txn-topic-{next(_names)}-{uuid.uuid4().hex[:6]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1)], operation_timeout=10
    )
    futures[name].result(timeout=10)
    return name


def transactional_producer(bootstrap: str, transactional_id: str, **config: Any) -> Producer:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": transactional_id,
            "linger.ms": 5,
            **config,
        }
    )
    producer.init_transactions(30)
    return producer


def read_all(
    bootstrap: str,
    topic: str,
    isolation_level: str,
    partitions: int = 1,
    expect: int | None = None,
    timeout_s: float = 10,
) -> list[bytes]:
    """Every value readable from the start of `topic` (in partition order, then offset)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "isolation.level": isolation_level,
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        values: dict[int, list[bytes]] = {p: [] for p in range(partitions)}
        at_end: set[int] = set()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    at_end.add(message.partition())
                    count = sum(len(v) for v in values.values())
                    if len(at_end) == partitions and (expect is None or count >= expect):
                        break
                    continue
                raise KafkaException(error)
            at_end.discard(message.partition())
            values[message.partition()].append(message.value())
        return [value for p in range(partitions) for value in values[p]]
    finally:
        consumer.close()


def watermarks(bootstrap: str, topic: str, partition: int = 0) -> tuple[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "watermarks"})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        return int(low), int(high)
    finally:
        consumer.close()
