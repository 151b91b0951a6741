"""Inputs at Kafka's limits with each real client (each sends its own versions and fields):
a 249-character topic name (250 is refused with INVALID_TOPIC_EXCEPTION), a list-valued topic
config, the smallest records (null key and value) and headers, a 32767-byte group id and
transactional id, a batch over the topic's `max.message.bytes` (MESSAGE_TOO_LARGE, the producer
goes on) —
and all of it is still there after a broker restart."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from odradek.broker.server import Broker

pytestmark = pytest.mark.timeout(90)

CLIENTS = ["confluent-kafka", "kafka-python", "aiokafka"]
MESSAGE_MAX_BYTES = 4000
# A list-valued config that does not make the topic compacted: records without a key are part of
# the smallest inputs, and a compacted topic refuses them (as Kafka does).
LIST_CONFIG = "leader.replication.throttled.replicas"
TOPIC_CONFIG = {LIST_CONFIG: "0:1,0:2", "max.message.bytes": str(MESSAGE_MAX_BYTES)}
BROKER_CONFIG = {"group.initial.rebalance.delay.ms": "0"}
INVALID_TOPIC_EXCEPTION = 17


def names(client: str) -> tuple[str, str, str]:
    """The longest legal topic name, group id and transactional id, one set per client."""
    letter = {"confluent-kafka": "c", "kafka-python": "k", "aiokafka": "a"}[client]
    return letter * 249, letter * 32767, letter.upper() * 32767


# The records every client sends: (key, value, headers); committed at offset 2.
RECORDS: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]]]] = [
    (None, None, []),
    (None, b"v", [("h" * 300, b""), ("", None)]),
]
# kafka-python and aiokafka refuse, on their own side, a record with neither key nor value;
# kafka-python also refuses a header with a null value.
PURE_PYTHON_RECORDS: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]]]] = [
    (None, b"", []),
    (None, b"v", [("h" * 300, b""), ("", b"")]),
]


def records_for(client: str) -> list[tuple[bytes | None, bytes | None, list[Any]]]:
    return list(RECORDS) if client == "confluent-kafka" else PURE_PYTHON_RECORDS


def write_with_confluent(bootstrap: str, topic: str, group: str, transactional_id: str) -> str:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1, config=TOPIC_CONFIG)])[topic].result(10)
    with pytest.raises(KafkaException) as refused:
        admin.create_topics([NewTopic(topic + "x", 1, 1)])[topic + "x"].result(10)
    assert refused.value.args[0].code() == KafkaError.TOPIC_EXCEPTION
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": transactional_id})
    producer.init_transactions(10)
    producer.begin_transaction()
    for key, value, headers in RECORDS:
        producer.produce(topic, key=key, value=value, headers=headers, partition=0)
    producer.commit_transaction(10)
    errors: list[KafkaError] = []

    def on_delivery(error: KafkaError | None, _message: Any) -> None:
        if error is not None:
            errors.append(error)

    plain = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    plain.produce(topic, value=b"x" * MESSAGE_MAX_BYTES, partition=0, on_delivery=on_delivery)
    plain.flush(10)
    assert [error.code() for error in errors] == [KafkaError.MSG_SIZE_TOO_LARGE]
    plain.produce(topic, value=b"after", partition=0, on_delivery=on_delivery)
    assert plain.flush(10) == 0
    assert len(errors) == 1
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    consumer.commit(offsets=[TopicPartition(topic, 0, 2)], asynchronous=False)
    consumer.close()
    resource = ConfigResource(ResourceType.TOPIC, topic)
    return str(admin.describe_configs([resource])[resource].result(10)[LIST_CONFIG].value)


def write_with_kafka_python(bootstrap: str, topic: str, group: str, transactional_id: str) -> str:
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.admin import ConfigResource as KafkaConfigResource
    from kafka.admin import ConfigResourceType, KafkaAdminClient
    from kafka.admin import NewTopic as KafkaNewTopic
    from kafka.errors import InvalidTopicError, MessageSizeTooLargeError
    from kafka.structs import OffsetAndMetadata
    from kafka.structs import TopicPartition as KafkaTopicPartition

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    producer = KafkaProducer(bootstrap_servers=bootstrap, transactional_id=transactional_id)
    plain = KafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, retries=0)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        admin.create_topics([KafkaNewTopic(topic, 1, 1, topic_configs=TOPIC_CONFIG)])
        with pytest.raises(InvalidTopicError):
            admin.create_topics([KafkaNewTopic(topic + "x", 1, 1)], raise_errors=True)
        producer.init_transactions()
        producer.begin_transaction()
        for key, value, headers in PURE_PYTHON_RECORDS:
            producer.send(topic, key=key, value=value, headers=headers, partition=0)
        producer.commit_transaction()
        with pytest.raises(MessageSizeTooLargeError):
            plain.send(topic, value=b"x" * MESSAGE_MAX_BYTES, partition=0).get(timeout=10)
        plain.send(topic, value=b"after", partition=0).get(timeout=10)
        consumer.commit({KafkaTopicPartition(topic, 0): OffsetAndMetadata(2, "", -1)})
        described = admin.describe_configs(
            [KafkaConfigResource(ConfigResourceType.TOPIC, topic)], config_filter="all"
        )
    finally:
        producer.close()
        plain.close()
        consumer.close()
        admin.close()
    (values,) = (by_name[topic] for by_name in described.values())
    return str(values[LIST_CONFIG]["value"])


def write_with_aiokafka(bootstrap: str, topic: str, group: str, transactional_id: str) -> str:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka import TopicPartition as AioTopicPartition
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin import NewTopic as AioNewTopic
    from aiokafka.admin.config_resource import ConfigResource as AioConfigResource
    from aiokafka.admin.config_resource import ConfigResourceType as AioConfigResourceType
    from aiokafka.errors import MessageSizeTooLargeError as AioMessageSizeTooLargeError
    from aiokafka.structs import OffsetAndMetadata as AioOffsetAndMetadata

    async def scenario() -> str:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics([AioNewTopic(topic, 1, 1, topic_configs=TOPIC_CONFIG)])
            refused = await admin.create_topics([AioNewTopic(topic + "x", 1, 1)])
            assert [error[1] for error in refused.topic_errors] == [INVALID_TOPIC_EXCEPTION]
            producer = AIOKafkaProducer(
                bootstrap_servers=bootstrap, transactional_id=transactional_id
            )
            await producer.start()
            try:
                async with producer.transaction():
                    for key, value, headers in PURE_PYTHON_RECORDS:
                        await producer.send(
                            topic, key=key, value=value, headers=headers, partition=0
                        )
            finally:
                await producer.stop()
            plain = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
            await plain.start()
            try:
                with pytest.raises(AioMessageSizeTooLargeError):
                    await plain.send_and_wait(topic, value=b"x" * MESSAGE_MAX_BYTES, partition=0)
                await plain.send_and_wait(topic, value=b"after", partition=0)
            finally:
                await plain.stop()
            consumer = AIOKafkaConsumer(
                bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
            )
            await consumer.start()
            try:
                consumer.assign([AioTopicPartition(topic, 0)])
                await consumer.commit({AioTopicPartition(topic, 0): AioOffsetAndMetadata(2, "")})
            finally:
                await consumer.stop()
            described = await admin.describe_configs(
                [AioConfigResource(AioConfigResourceType.TOPIC, topic)]
            )
            configs = {entry[0]: entry[1] for entry in described[0].resources[0][4]}
            return str(configs[LIST_CONFIG])
        finally:
            await admin.close()

    return asyncio.run(scenario())


WRITERS = {
    "confluent-kafka": write_with_confluent,
    "kafka-python": write_with_kafka_python,
    "aiokafka": write_with_aiokafka,
}


def read_back(bootstrap: str, topic: str, group: str) -> tuple[list[Any], int, str]:
    """(records read_committed, the group's committed offset, the list config)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    (committed,) = consumer.committed([TopicPartition(topic, 0)], timeout=10)
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    records = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None:
            continue
        if message.error():
            break
        records.append((message.key(), message.value(), message.headers() or []))
    consumer.close()
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(ResourceType.TOPIC, topic)
    policy = admin.describe_configs([resource])[resource].result(10)[LIST_CONFIG].value
    return records, committed.offset, str(policy)


@pytest.mark.parametrize("client", CLIENTS)
def test_limits_end_to_end_and_across_a_restart(
    tmp_path: Path, client: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="odradek")
    topic, group, transactional_id = names(client)
    expected = [*records_for(client), (None, b"after", [])]
    with Broker(data_dir=tmp_path, config=BROKER_CONFIG) as broker:
        policy = WRITERS[client](broker.bootstrap_servers, topic, group, transactional_id)
        assert policy == TOPIC_CONFIG[LIST_CONFIG]
        assert read_back(broker.bootstrap_servers, topic, group) == (expected, 2, policy)
    with Broker(data_dir=tmp_path, config=BROKER_CONFIG) as broker:
        assert read_back(broker.bootstrap_servers, topic, group) == (expected, 2, policy)
    # Each refusal cost at most a warning line: no error, no traceback.
    assert [
        record.getMessage()
        for record in caplog.records
        if record.name.startswith("odradek")
        and (record.levelno >= logging.ERROR or record.exc_info is not None)
    ] == []
