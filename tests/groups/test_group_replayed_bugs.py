"""Issue 9, items 4-6, with real clients: committed offsets of a deleted topic, static members
with `odradek.acks.all.fsync=true`, and commits from consumers that never subscribed."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_INVALID, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from odradek.broker.server import Broker
from odradek.testing.pytest_plugin import TEST_CONFIG

pytestmark = pytest.mark.timeout(90)
_names = itertools.count()
FSYNC_CONFIG = {**TEST_CONFIG, "odradek.acks.all.fsync": "true"}


def create(bootstrap: str, *names: str, partitions: int = 1) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(n, partitions, 1) for n in names]).values():
        future.result(10)


def delete(bootstrap: str, name: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.delete_topics([name])[name].result(10)


def produce(bootstrap: str, topic: str, count: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 2})
    for index in range(count):
        producer.produce(topic, b"%d" % index, partition=index % 2 if count > 10 else 0)
    assert producer.flush(10) == 0


def committed(bootstrap: str, group: str, *topics: str) -> dict[str, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        answer = consumer.committed([TopicPartition(t, 0) for t in topics], timeout=10)
    finally:
        consumer.close()
    return {tp.topic: tp.offset for tp in answer}


def commit(bootstrap: str, group: str, offsets: dict[str, int]) -> None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        consumer.commit(
            offsets=[TopicPartition(t, 0, o) for t, o in offsets.items()], asynchronous=False
        )
    finally:
        consumer.close()


def test_a_recreated_topic_has_no_committed_offsets_also_after_restart(tmp_path: Path) -> None:
    """Item 4: deleting one of several committed topics drops its offsets only; the group
    reads the new topic from 0; after a restart the tombstones keep them gone."""
    topic, kept = "recreated", "kept"
    with Broker(data_dir=tmp_path, config=TEST_CONFIG) as broker:
        bootstrap = broker.bootstrap_servers
        create(bootstrap, topic, kept)
        commit(bootstrap, "g", {topic: 7, kept: 3})
        assert committed(bootstrap, "g", topic, kept) == {topic: 7, kept: 3}
        delete(bootstrap, topic)
        create(bootstrap, topic)
        produce(bootstrap, topic, 10)
        assert committed(bootstrap, "g", topic, kept) == {topic: OFFSET_INVALID, kept: 3}
        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "g",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        try:
            consumer.subscribe([topic])
            offsets: list[int] = []
            deadline = time.monotonic() + 20
            while len(offsets) < 10 and time.monotonic() < deadline:
                message = consumer.poll(0.5)
                if message is not None and message.error() is None:
                    offsets.append(message.offset() or 0)
        finally:
            consumer.close()
        assert offsets == list(range(10))
    with Broker(data_dir=tmp_path, config=TEST_CONFIG) as broker:
        assert committed(broker.bootstrap_servers, "g", topic, kept) == {
            topic: OFFSET_INVALID,
            kept: 3,
        }


def test_offsets_a_transaction_staged_on_a_deleted_topic_never_appear(
    odradek_broker: Broker,
) -> None:
    bootstrap = odradek_broker.bootstrap_servers
    topic = f"txn-deleted-{next(_names)}"
    create(bootstrap, topic)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "txn-group"})
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": "tx-deleted"})
    try:
        producer.init_transactions(10)
        producer.begin_transaction()
        producer.send_offsets_to_transaction(
            [TopicPartition(topic, 0, 5)], consumer.consumer_group_metadata(), 10
        )
        delete(bootstrap, topic)
        producer.commit_transaction(10)
    finally:
        consumer.close()
    create(bootstrap, topic)
    assert committed(bootstrap, "txn-group", topic) == {topic: OFFSET_INVALID}


def test_kip848_consumer_that_never_subscribed_commits_twice(odradek_broker: Broker) -> None:
    """Item 6: librdkafka with group.protocol=consumer sends its member id with epoch -1."""
    bootstrap = odradek_broker.bootstrap_servers
    topic = f"no-subscribe-{next(_names)}"
    create(bootstrap, topic)
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "kip848-simple", "group.protocol": "consumer"}
    )
    try:
        for offset in (3, 5):
            answer = consumer.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
            assert answer is not None
            assert answer[0].error is None
            assert answer[0].offset == offset
    finally:
        consumer.close()
    assert committed(bootstrap, "kip848-simple", topic) == {topic: 5}


def test_classic_assign_and_commit_twice_with_kafka_python(odradek_broker: Broker) -> None:
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KafkaTopicPartition
    from kafka.structs import OffsetAndMetadata

    bootstrap = odradek_broker.bootstrap_servers
    topic = f"assign-{next(_names)}"
    create(bootstrap, topic)
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, group_id="kp-simple", enable_auto_commit=False
    )
    partition = KafkaTopicPartition(topic, 0)
    try:
        consumer.assign([partition])
        for offset in (3, 5):
            consumer.commit({partition: OffsetAndMetadata(offset, "", -1)})
        assert consumer.committed(partition) == 5
    finally:
        consumer.close()


@pytest.mark.asyncio
async def test_aiokafka_assign_commit_twice_and_static_members_with_fsync(
    tmp_path: Path,
) -> None:
    """Item 5: aiokafka's KIP-345 static members with every group write fsynced; and item
    6's simple commit from aiokafka."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import OffsetAndMetadata
    from aiokafka.structs import TopicPartition as AioTopicPartition

    with Broker(data_dir=tmp_path, config=FSYNC_CONFIG) as broker:
        bootstrap = broker.bootstrap_servers
        topic = f"static-{uuid.uuid4().hex[:8]}"
        create(bootstrap, topic, partitions=2)
        await asyncio.to_thread(produce, bootstrap, topic, 20)

        simple = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id="aio-simple")
        await simple.start()
        try:
            partition = AioTopicPartition(topic, 0)
            simple.assign([partition])
            for offset in (3, 5):
                await simple.commit({partition: OffsetAndMetadata(offset, "")})
            assert await simple.committed(partition) == 5
        finally:
            await simple.stop()

        def static(instance: str) -> AIOKafkaConsumer:
            return AIOKafkaConsumer(
                topic,
                bootstrap_servers=bootstrap,
                group_id="aio-static",
                group_instance_id=instance,
                auto_offset_reset="earliest",
                enable_auto_commit=False,
                session_timeout_ms=10_000,
                heartbeat_interval_ms=300,
            )

        members = [static("a"), static("b")]
        for member in members:
            await member.start()
        try:
            values: list[bytes] = []
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not (
                len(values) == 20 and all(len(m.assignment()) == 1 for m in members)
            ):
                for member in members:
                    batches = await member.getmany(timeout_ms=200)
                    values += [m.value for msgs in batches.values() for m in msgs]
            assert sorted(values) == sorted(b"%d" % i for i in range(20))
            owned = {frozenset(m.assignment()) for m in members}
            assert len(owned) == 2
            for member in members:
                await member.commit()
            # A static member restarts: it gets its partition back, without a rebalance.
            before = members[0].assignment()
            await members[0].stop()
            members[0] = static("a")
            await members[0].start()
            deadline = time.monotonic() + 20
            while members[0].assignment() != before and time.monotonic() < deadline:
                await members[0].getmany(timeout_ms=200)
                await members[1].getmany(timeout_ms=50)
            assert members[0].assignment() == before
            assert len(members[1].assignment()) == 1
        finally:
            for member in members:
                await member.stop()
