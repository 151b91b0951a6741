"""Topic `compression.type` with real clients: a producer's batches in one codec are stored in
the topic's codec (Kafka's LogValidator recompression), and every client reads them back with
keys, values, headers and timestamps intact; transactional batches keep their producer id,
epoch and transactional flag, so read_committed still hides the aborted ones."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka import TopicPartition as AioTopicPartition
from client_helpers import create_topic
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KafkaPythonTopicPartition

from odradek.broker.server import Broker
from odradek.protocol.record_batch import (
    COMPRESSION_GZIP,
    COMPRESSION_LZ4,
    COMPRESSION_NONE,
    COMPRESSION_SNAPPY,
    COMPRESSION_ZSTD,
    BatchHeader,
    iter_batch_headers,
)

pytestmark = pytest.mark.timeout(90)

COUNT = 30
CODECS = {
    "uncompressed": COMPRESSION_NONE,
    "gzip": COMPRESSION_GZIP,
    "snappy": COMPRESSION_SNAPPY,
    "lz4": COMPRESSION_LZ4,
    "zstd": COMPRESSION_ZSTD,
}
# (producing client, the producer's codec, the topic's compression.type)
CASES = [
    ("confluent", "lz4", "zstd"),
    ("kafka-python", "gzip", "lz4"),
    ("aiokafka", "snappy", "gzip"),
    ("confluent", "zstd", "uncompressed"),
    ("kafka-python", None, "snappy"),
    ("aiokafka", "zstd", "lz4"),
]


def message(i: int) -> dict[str, Any]:
    return {
        "key": b"key-%d" % (i % 4),
        "value": b"value-%d-" % i + b"x" * 200,
        "headers": [("n", b"%d" % i)],
        "timestamp": 1_600_000_000_000 + i,
    }


def produce_confluent(bootstrap: str, topic: str, codec: str | None) -> None:
    producer = Producer(
        {"bootstrap.servers": bootstrap, "compression.type": codec or "none", "linger.ms": 20}
    )
    for i in range(COUNT):
        m = message(i)
        producer.produce(
            topic, key=m["key"], value=m["value"], headers=m["headers"], timestamp=m["timestamp"]
        )
    assert producer.flush(30) == 0


def produce_kafka_python(bootstrap: str, topic: str, codec: str | None) -> None:
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, compression_type=codec, acks="all", linger_ms=20
    )
    futures = []
    for i in range(COUNT):
        m = message(i)
        futures.append(
            producer.send(
                topic,
                key=m["key"],
                value=m["value"],
                headers=m["headers"],
                timestamp_ms=m["timestamp"],
            )
        )
    for future in futures:
        future.get(timeout=30)
    producer.close()


async def produce_aiokafka(bootstrap: str, topic: str, codec: str | None) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, compression_type=codec, acks="all", linger_ms=20
    )
    await producer.start()
    try:
        for i in range(COUNT):
            m = message(i)
            await producer.send(
                topic,
                key=m["key"],
                value=m["value"],
                headers=m["headers"],
                timestamp_ms=m["timestamp"],
            )
        await producer.flush()
    finally:
        await producer.stop()


def stored_headers(broker: Broker, topic: str) -> list[BatchHeader]:
    assert broker.context is not None
    log = broker.context.logs.log(topic, 0)
    assert log is not None
    read = log.read(0, 1 << 22, log.log_end_offset, True)
    return [header for _position, header in iter_batch_headers(bytes(read.records or b""))]


def read_confluent(bootstrap: str, topics: list[str]) -> dict[str, list[tuple[Any, ...]]]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0) for topic in topics])
    received: dict[str, list[tuple[Any, ...]]] = {topic: [] for topic in topics}
    at_end: set[str] = set()
    try:
        while len(at_end) < len(topics):
            msg = consumer.poll(10)
            assert msg is not None, "no data within 10 s"
            if msg.error():
                at_end.add(msg.topic())
                continue
            headers = [(key, value) for key, value in msg.headers() or []]
            received[msg.topic()].append((msg.key(), msg.value(), headers, msg.timestamp()[1]))
    finally:
        consumer.close()
    return received


def read_kafka_python(bootstrap: str, topics: list[str]) -> dict[str, list[tuple[Any, ...]]]:
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=10_000
    )
    partitions = [KafkaPythonTopicPartition(topic, 0) for topic in topics]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    received: dict[str, list[tuple[Any, ...]]] = {topic: [] for topic in topics}
    for total, msg in enumerate(consumer, start=1):
        received[msg.topic].append((msg.key, msg.value, list(msg.headers), msg.timestamp))
        if total == COUNT * len(topics):
            break
    consumer.close()
    return received


async def read_aiokafka(bootstrap: str, topics: list[str]) -> dict[str, list[tuple[Any, ...]]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    received: dict[str, list[tuple[Any, ...]]] = {topic: [] for topic in topics}
    try:
        partitions = [AioTopicPartition(topic, 0) for topic in topics]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        total = 0
        while total < COUNT * len(topics):
            batches = await consumer.getmany(timeout_ms=10_000)
            assert batches, "no data within 10 s"
            for messages in batches.values():
                for msg in messages:
                    received[msg.topic].append(
                        (msg.key, msg.value, list(msg.headers), msg.timestamp)
                    )
                    total += 1
    finally:
        await consumer.stop()
    return received


def test_every_client_reads_batches_recompressed_to_the_topic_codec(
    broker: Broker, bootstrap: str, admin: AdminClient
) -> None:
    topics = []
    for client, producer_codec, topic_codec in CASES:
        topic = create_topic(admin, 1, **{"compression.type": topic_codec})
        topics.append(topic)
        if client == "confluent":
            produce_confluent(bootstrap, topic, producer_codec)
        elif client == "kafka-python":
            produce_kafka_python(bootstrap, topic, producer_codec)
        else:
            asyncio.run(produce_aiokafka(bootstrap, topic, producer_codec))
        headers = stored_headers(broker, topic)
        assert sum(header.records_count for header in headers) == COUNT
        assert {header.compression for header in headers} == {CODECS[topic_codec]}, (
            client,
            producer_codec,
            topic_codec,
        )

    expected = [
        (m["key"], m["value"], m["headers"], m["timestamp"]) for m in map(message, range(COUNT))
    ]
    for read in (
        read_confluent(bootstrap, topics),
        read_kafka_python(bootstrap, topics),
        asyncio.run(read_aiokafka(bootstrap, topics)),
    ):
        for topic in topics:
            assert read[topic] == expected, topic


def test_transactional_and_idempotent_batches_keep_their_flags_after_recompression(
    broker: Broker, bootstrap: str, admin: AdminClient
) -> None:
    topic = create_topic(admin, 1, **{"compression.type": "zstd"})
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": f"recompress-{uuid.uuid4().hex[:6]}",
            "compression.type": "lz4",
            "linger.ms": 5,
        }
    )
    producer.init_transactions(30)
    for outcome in ("commit", "abort", "commit"):
        producer.begin_transaction()
        for i in range(5):
            producer.produce(topic, value=b"%s-%d" % (outcome.encode(), i))
        producer.flush(10)
        if outcome == "commit":
            producer.commit_transaction(30)
        else:
            producer.abort_transaction(30)
    idempotent = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "compression.type": "gzip",
            "linger.ms": 5,
        }
    )
    for i in range(5):
        idempotent.produce(topic, value=b"idempotent-%d" % i)
    assert idempotent.flush(10) == 0

    data = [header for header in stored_headers(broker, topic) if not header.is_control]
    assert {header.compression for header in data} == {COMPRESSION_ZSTD}
    transactional = [header for header in data if header.is_transactional]
    plain = [header for header in data if not header.is_transactional]
    assert sum(header.records_count for header in transactional) == 15
    assert sum(header.records_count for header in plain) == 5
    for header in data:
        assert header.producer_id >= 0
        assert header.producer_epoch >= 0
        assert header.base_sequence >= 0

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"committed-{uuid.uuid4().hex}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    values = []
    while True:
        msg = consumer.poll(10)
        assert msg is not None
        if msg.error():
            break
        values.append(msg.value())
    consumer.close()
    assert values == [b"commit-%d" % i for i in range(5)] * 2 + [
        b"idempotent-%d" % i for i in range(5)
    ]
