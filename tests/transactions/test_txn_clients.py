"""Transactions and idempotence with real clients: commit/abort visibility under both
isolation levels (confluent-kafka and kafka-python), zombie fencing, a timed-out transaction
that releases the last stable offset, and idempotent producers of all three clients."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from confluent_kafka import IsolationLevel, KafkaException, Producer
from confluent_kafka import TopicPartition as ConfluentPartition
from confluent_kafka.admin import AdminClient, OffsetSpec
from eos_helpers import create_topic, read_all, transactional_producer

from odradek.broker.server import Broker

pytestmark = pytest.mark.timeout(90)


def latest_offsets(bootstrap: str, topic: str) -> tuple[int, int]:
    """(read_uncommitted latest = high watermark, read_committed latest = LSO)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    answers = []
    for level in (IsolationLevel.READ_UNCOMMITTED, IsolationLevel.READ_COMMITTED):
        futures = admin.list_offsets(
            {ConfluentPartition(topic, 0): OffsetSpec.latest()}, isolation_level=level
        )
        (future,) = futures.values()
        answers.append(int(future.result(timeout=10).offset))
    return answers[0], answers[1]


def test_confluent_commit_and_abort_visibility(bootstrap: str) -> None:
    topic = create_topic(bootstrap, partitions=2)
    producer = transactional_producer(bootstrap, f"tx-{uuid.uuid4().hex}")
    producer.begin_transaction()
    for i in range(6):
        producer.produce(topic, value=b"committed-%d" % i, partition=i % 2)
    producer.commit_transaction(30)

    producer.begin_transaction()
    for i in range(4):
        producer.produce(topic, value=b"aborted-%d" % i, partition=i % 2)
    producer.flush(10)
    # Open transaction: read_committed stops at the LSO, read_uncommitted sees everything.
    assert sorted(read_all(bootstrap, topic, "read_committed", 2, timeout_s=3)) == sorted(
        b"committed-%d" % i for i in range(6)
    )
    assert len(read_all(bootstrap, topic, "read_uncommitted", 2, expect=10)) == 10
    high_watermark, last_stable = latest_offsets(bootstrap, topic)
    assert (high_watermark, last_stable) == (6, 4)  # 3 committed + marker, then 2 open
    producer.abort_transaction(30)

    producer.begin_transaction()
    producer.produce(topic, value=b"after", partition=0)
    producer.commit_transaction(30)
    committed = read_all(bootstrap, topic, "read_committed", 2, expect=7)
    assert sorted(committed) == sorted([b"after", *(b"committed-%d" % i for i in range(6))])
    # read_uncommitted returns aborted data too (as Kafka does); markers are never records.
    uncommitted = read_all(bootstrap, topic, "read_uncommitted", 2, expect=11)
    assert sorted(uncommitted) == sorted(
        [b"after", *(b"committed-%d" % i for i in range(6)), *(b"aborted-%d" % i for i in range(4))]
    )
    high_watermark, last_stable = latest_offsets(bootstrap, topic)
    assert high_watermark == last_stable


def test_kafka_python_transactional_producer(bootstrap: str) -> None:
    from kafka import KafkaConsumer, KafkaProducer
    from kafka import TopicPartition as KafkaPartition

    topic = create_topic(bootstrap)
    producer = KafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"kp-{uuid.uuid4().hex}")
    try:
        producer.init_transactions()
        producer.begin_transaction()
        for i in range(3):
            producer.send(topic, value=b"kp-committed-%d" % i)
        producer.commit_transaction()
        producer.begin_transaction()
        for i in range(3):
            producer.send(topic, value=b"kp-aborted-%d" % i)
        producer.flush()
        producer.abort_transaction()
        producer.begin_transaction()
        producer.send(topic, value=b"kp-last")
        producer.commit_transaction()
    finally:
        producer.close(timeout=5)

    def consume(isolation_level: str, expect: int) -> list[bytes]:
        consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            isolation_level=isolation_level,
            enable_auto_commit=False,
            consumer_timeout_ms=3000,
        )
        try:
            consumer.assign([KafkaPartition(topic, 0)])
            consumer.seek_to_beginning()
            values: list[bytes] = []
            deadline = time.monotonic() + 15
            while len(values) < expect and time.monotonic() < deadline:
                for records in consumer.poll(timeout_ms=500).values():
                    values += [record.value for record in records]
            return values
        finally:
            consumer.close()

    committed = [b"kp-committed-0", b"kp-committed-1", b"kp-committed-2", b"kp-last"]
    assert consume("read_committed", 4) == committed
    assert read_all(bootstrap, topic, "read_committed", expect=4) == committed
    assert len(consume("read_uncommitted", 7)) == 7


def test_zombie_is_fenced_by_a_new_producer(bootstrap: str) -> None:
    topic = create_topic(bootstrap)
    transactional_id = f"zombie-{uuid.uuid4().hex}"
    zombie = transactional_producer(bootstrap, transactional_id)
    zombie.begin_transaction()
    zombie.produce(topic, value=b"zombie")
    zombie.flush(10)
    successor = transactional_producer(bootstrap, transactional_id)  # fences and aborts
    successor.begin_transaction()
    successor.produce(topic, value=b"successor")
    successor.commit_transaction(30)
    zombie.produce(topic, value=b"zombie-late")
    with pytest.raises(KafkaException) as raised:
        zombie.commit_transaction(10)
    assert raised.value.args[0].fatal() or raised.value.args[0].txn_requires_abort()
    assert read_all(bootstrap, topic, "read_committed", expect=1) == [b"successor"]


def test_abandoned_transaction_times_out_and_releases_the_lso(bootstrap: str) -> None:
    topic = create_topic(bootstrap)
    abandoned = transactional_producer(
        bootstrap, f"abandoned-{uuid.uuid4().hex}", **{"transaction.timeout.ms": 1500}
    )
    abandoned.begin_transaction()
    abandoned.produce(topic, value=b"never-committed")
    abandoned.flush(10)
    other = transactional_producer(bootstrap, f"other-{uuid.uuid4().hex}")
    other.begin_transaction()
    other.produce(topic, value=b"committed-behind")
    other.commit_transaction(30)
    high_watermark, last_stable = latest_offsets(bootstrap, topic)
    assert (high_watermark, last_stable) == (3, 0)  # held by the abandoned transaction
    deadline = time.monotonic() + 15
    # The two offsets come from two ListOffsets requests; the abort marker may land between
    # them, so wait for the settled state rather than for the first time they look equal.
    while time.monotonic() < deadline and not high_watermark == last_stable == 4:
        time.sleep(0.2)
        high_watermark, last_stable = latest_offsets(bootstrap, topic)
    assert high_watermark == last_stable == 4  # + the coordinator's ABORT marker
    assert read_all(bootstrap, topic, "read_committed", expect=1) == [b"committed-behind"]


def _expect_exactly(bootstrap: str, topic: str, values: list[bytes]) -> None:
    assert read_all(bootstrap, topic, "read_uncommitted", expect=len(values)) == values


def test_confluent_idempotent_producer(bootstrap: str) -> None:
    topic = create_topic(bootstrap)
    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 2}
    )
    values = [b"idem-%d" % i for i in range(500)]
    for value in values:
        producer.produce(topic, value=value)
    assert producer.flush(30) == 0
    _expect_exactly(bootstrap, topic, values)


def test_kafka_python_idempotent_producer(bootstrap: str) -> None:
    from kafka import KafkaProducer

    topic = create_topic(bootstrap)
    producer = KafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all")
    values = [b"kp-idem-%d" % i for i in range(200)]
    try:
        for value in values:
            producer.send(topic, value=value)
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=5)
    _expect_exactly(bootstrap, topic, values)


def test_aiokafka_idempotent_producer(bootstrap: str) -> None:
    from aiokafka import AIOKafkaProducer

    topic = create_topic(bootstrap)
    values = [b"aio-idem-%d" % i for i in range(200)]

    async def run() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
        await producer.start()
        try:
            for value in values:
                await producer.send(topic, value=value)
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(run())
    _expect_exactly(bootstrap, topic, values)


def test_idempotent_producer_survives_a_restart(tmp_path_factory: pytest.TempPathFactory) -> None:
    """librdkafka keeps its producer id and sequences across a broker restart."""
    data_dir = tmp_path_factory.mktemp("restart")
    first = Broker(data_dir=data_dir)
    with first:
        topic = create_topic(first.bootstrap_servers)
        port = first.port
    producer_config = {"enable.idempotence": True, "linger.ms": 2, "message.timeout.ms": 20000}
    with Broker(data_dir=data_dir, port=port) as broker:
        producer = Producer({"bootstrap.servers": broker.bootstrap_servers, **producer_config})
        for i in range(100):
            producer.produce(topic, value=b"r-%d" % i)
        assert producer.flush(30) == 0
    with Broker(data_dir=data_dir, port=port) as broker:
        for i in range(100, 200):
            producer.produce(topic, value=b"r-%d" % i)
        assert producer.flush(30) == 0
        _expect_exactly(broker.bootstrap_servers, topic, [b"r-%d" % i for i in range(200)])
