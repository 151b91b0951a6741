"""Pitfalls other Kafka-compatible brokers shipped (PITFALLS.md, Tansu #716): an aborted
offsets-only transaction must not leak its offsets into the next transaction, and offsets sent
by a fenced producer must never become visible."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition
from eos_helpers import create_topic, transactional_producer

pytestmark = pytest.mark.timeout(90)


def group_member(bootstrap: str, group: str, topic: str) -> Consumer:
    """A consumer that has joined `group` (its metadata carries a real generation)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([topic])
    deadline = time.monotonic() + 30
    while not consumer.assignment():
        consumer.poll(0.1)
        assert time.monotonic() < deadline, "the consumer never got its partition"
    return consumer


def committed(consumer: Consumer, topic: str) -> int:
    (partition,) = consumer.committed([TopicPartition(topic, 0)], timeout=10)
    return int(partition.offset)


def test_aborted_offsets_only_transaction_does_not_leak_into_the_next(bootstrap: str) -> None:
    topic = create_topic(bootstrap)
    output = create_topic(bootstrap)
    group = f"leak-{uuid.uuid4().hex[:6]}"
    consumer = group_member(bootstrap, group, topic)
    producer = transactional_producer(bootstrap, f"leak-{uuid.uuid4().hex[:6]}")
    try:
        producer.begin_transaction()
        producer.send_offsets_to_transaction(
            [TopicPartition(topic, 0, 42)], consumer.consumer_group_metadata(), 30
        )
        producer.abort_transaction(30)
        # The next transaction commits offsets of another partition: its COMMIT marker lands on
        # the same __consumer_offsets partition, where a leaky broker would also apply the 42.
        producer.begin_transaction()
        producer.produce(output, b"data")
        producer.send_offsets_to_transaction(
            [TopicPartition(output, 0, 1)], consumer.consumer_group_metadata(), 30
        )
        producer.commit_transaction(30)
        assert committed(consumer, output) == 1
        assert committed(consumer, topic) < 0, "the aborted offset leaked into the next commit"

        producer.begin_transaction()
        producer.send_offsets_to_transaction(
            [TopicPartition(topic, 0, 7)], consumer.consumer_group_metadata(), 30
        )
        producer.commit_transaction(30)
        assert committed(consumer, topic) == 7
    finally:
        consumer.close()


def test_offsets_from_a_fenced_producer_never_become_visible(bootstrap: str) -> None:
    topic = create_topic(bootstrap)
    group = f"fenced-{uuid.uuid4().hex[:6]}"
    transactional_id = f"fenced-{uuid.uuid4().hex[:6]}"
    consumer = group_member(bootstrap, group, topic)
    zombie = transactional_producer(bootstrap, transactional_id)
    try:
        zombie.begin_transaction()
        zombie.send_offsets_to_transaction(
            [TopicPartition(topic, 0, 5)], consumer.consumer_group_metadata(), 30
        )
        # A new instance with the same transactional.id fences the zombie and aborts its
        # open transaction, offsets included.
        successor = transactional_producer(bootstrap, transactional_id)

        def zombie_commits() -> None:
            zombie.send_offsets_to_transaction(
                [TopicPartition(topic, 0, 9)], consumer.consumer_group_metadata(), 30
            )
            zombie.commit_transaction(30)

        with pytest.raises(KafkaException):
            zombie_commits()
        assert committed(consumer, topic) < 0, "a fenced producer's offsets became visible"
        successor.begin_transaction()
        successor.send_offsets_to_transaction(
            [TopicPartition(topic, 0, 3)], consumer.consumer_group_metadata(), 30
        )
        successor.commit_transaction(30)
        assert committed(consumer, topic) == 3
    finally:
        consumer.close()


def test_a_plain_commit_appended_after_a_transactional_offset_wins(bootstrap: str) -> None:
    """Kafka applies a transaction's offsets at its COMMIT marker only where no plain commit
    was appended after them (GroupMetadata.onTransactionCompleted): one ordered path for every
    offset write, so committed offsets never go backwards (Redpanda PR #31483)."""
    topic = create_topic(bootstrap)
    group = f"race-{uuid.uuid4().hex[:6]}"
    consumer = group_member(bootstrap, group, topic)
    producer = transactional_producer(bootstrap, f"race-{uuid.uuid4().hex[:6]}")
    try:
        producer.begin_transaction()
        producer.send_offsets_to_transaction(
            [TopicPartition(topic, 0, 5)], consumer.consumer_group_metadata(), 30
        )
        consumer.commit(offsets=[TopicPartition(topic, 0, 10)], asynchronous=False)
        producer.commit_transaction(30)
        assert committed(consumer, topic) == 10

        # And the other way round: the transaction's offset record is the later one.
        consumer.commit(offsets=[TopicPartition(topic, 0, 12)], asynchronous=False)
        producer.begin_transaction()
        producer.send_offsets_to_transaction(
            [TopicPartition(topic, 0, 15)], consumer.consumer_group_metadata(), 30
        )
        producer.commit_transaction(30)
        assert committed(consumer, topic) == 15
    finally:
        consumer.close()
