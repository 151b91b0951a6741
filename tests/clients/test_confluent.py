"""Round trips with confluent-kafka (librdkafka) against a real Odradek broker."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from client_helpers import create_topic
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    OffsetSpec,
    ResourceType,
)

from odradek.broker.server import Broker

# Until consumer groups and idempotence land (stages 2 and 3) the tests produce without
# idempotence and consume with assign() and explicit offsets.
PRODUCER_BASE = {"enable.idempotence": False, "linger.ms": 5}


def producer(bootstrap: str, **config: Any) -> Producer:
    return Producer({"bootstrap.servers": bootstrap, **PRODUCER_BASE, **config})


def produce_all(p: Producer, topic: str, messages: list[dict[str, Any]]) -> list[Any]:
    delivered: list[Any] = []

    def on_delivery(error: KafkaError | None, message: Any) -> None:
        if error is not None:
            raise KafkaException(error)
        delivered.append(message)

    for message in messages:
        p.produce(topic, on_delivery=on_delivery, **message)
    assert p.flush(30) == 0
    return delivered


@pytest.fixture
def consumer_factory(bootstrap: str) -> Iterator[Any]:
    consumers: list[Consumer] = []

    def make(**config: Any) -> Consumer:
        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "assign-only",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 100,
                **config,
            }
        )
        consumers.append(consumer)
        return consumer

    yield make
    for consumer in consumers:
        consumer.close()


def consume_n(consumer: Consumer, count: int, timeout: float = 30) -> list[Any]:
    messages: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(messages) < count and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None:
            continue
        if message.error():
            if message.error().code() == KafkaError._PARTITION_EOF:
                continue
            raise KafkaException(message.error())
        messages.append(message)
    assert len(messages) == count, f"got {len(messages)} of {count}"
    return messages


def read_partitions(consumer: Consumer, topic: str, partitions: int, count: int) -> list[Any]:
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    return consume_n(consumer, count)


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_round_trip_keys_headers_timestamps_every_codec(
    bootstrap: str, admin: AdminClient, consumer_factory: Any, codec: str
) -> None:
    topic = create_topic(admin, partitions=3)
    p = producer(bootstrap, **{"compression.codec": codec, "acks": "all"})
    sent = [
        {
            "key": f"key-{i % 7}".encode(),
            "value": f"value-{i}".encode() * (1 + i % 5),
            "headers": [("h", f"{i}".encode()), ("empty", b"")],
            "timestamp": 1_700_000_000_000 + i,
        }
        for i in range(300)
    ]
    delivered = produce_all(p, topic, sent)
    assert len(delivered) == 300
    received = read_partitions(consumer_factory(), topic, 3, 300)
    by_value = {m.value(): m for m in received}
    for message in sent:
        got = by_value[message["value"]]
        assert got.key() == message["key"]
        assert got.headers() == message["headers"]
        assert got.timestamp()[1] == message["timestamp"]
    # Per-key order: the same key always lands in one partition, in send order.
    per_key: dict[bytes, list[int]] = {}
    for m in sorted(received, key=lambda m: (m.partition(), m.offset())):
        per_key.setdefault(m.key(), []).append(int(m.headers()[0][1]))
    for sequence in per_key.values():
        assert sequence == sorted(sequence)
    # Offsets are contiguous per partition.
    for partition in range(3):
        offsets = sorted(m.offset() for m in received if m.partition() == partition)
        assert offsets == list(range(len(offsets)))


@pytest.mark.parametrize("acks", ["0", "1", "all"])
def test_every_acks_setting(
    bootstrap: str, admin: AdminClient, consumer_factory: Any, acks: str
) -> None:
    topic = create_topic(admin)
    produce_all(producer(bootstrap, acks=acks), topic, [{"value": b"%d" % i} for i in range(50)])
    received = read_partitions(consumer_factory(), topic, 1, 50)
    assert [m.value() for m in received] == [b"%d" % i for i in range(50)]


def test_record_up_to_message_max_bytes(
    bootstrap: str, admin: AdminClient, consumer_factory: Any
) -> None:
    topic = create_topic(admin, **{"max.message.bytes": "600000"})
    p = producer(bootstrap, **{"message.max.bytes": 2_000_000, "linger.ms": 0})
    big = bytes(range(256)) * 2300  # 588,800 bytes: a frame larger than the read buffer
    produce_all(p, topic, [{"value": big}])
    with pytest.raises(KafkaException) as raised:
        produce_all(p, topic, [{"value": b"y" * 700_000}])
    assert raised.value.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE
    received = read_partitions(
        consumer_factory(
            **{
                "fetch.max.bytes": 1000,
                "max.partition.fetch.bytes": 1000,
                "message.max.bytes": 1000,
            }
        ),
        topic,
        1,
        1,
    )
    # KIP-74: one batch larger than the fetch limits still comes back whole.
    assert received[0].value() == big


def test_unknown_topic_without_auto_create(tmp_path: Any) -> None:
    with Broker(data_dir=tmp_path, config={"auto.create.topics.enable": "false"}) as broker:
        p = producer(broker.bootstrap_servers, **{"message.timeout.ms": 2000})
        errors: list[KafkaError] = []
        p.produce("missing", b"v", on_delivery=lambda e, m: errors.append(e))
        p.flush(10)
        assert errors
        assert errors[0].code() in (
            KafkaError.UNKNOWN_TOPIC_OR_PART,
            KafkaError._UNKNOWN_TOPIC,
            KafkaError._MSG_TIMED_OUT,
        )
        metadata = AdminClient({"bootstrap.servers": broker.bootstrap_servers}).list_topics(
            timeout=10
        )
        assert "missing" not in metadata.topics


def test_auto_create_on_metadata(bootstrap: str, consumer_factory: Any) -> None:
    produce_all(producer(bootstrap), "auto-created", [{"value": b"hello"}])
    received = read_partitions(consumer_factory(), "auto-created", 1, 1)
    assert received[0].value() == b"hello"


def test_long_poll_fetch_wakes_on_produce(
    bootstrap: str, admin: AdminClient, consumer_factory: Any
) -> None:
    topic = create_topic(admin)
    consumer = consumer_factory(**{"fetch.wait.max.ms": 5000, "fetch.min.bytes": 1})
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    assert consumer.poll(0.5) is None
    produce_all(producer(bootstrap), topic, [{"value": b"late"}])
    assert consume_n(consumer, 1, timeout=10)[0].value() == b"late"


def test_admin_topics_configs_partitions(bootstrap: str, admin: AdminClient) -> None:
    topic = create_topic(admin, partitions=2, **{"retention.ms": "3600000"})
    metadata = admin.list_topics(timeout=10)
    assert len(metadata.topics[topic].partitions) == 2
    assert metadata.topics[topic].partitions[0].leader == 1

    resource = ConfigResource(ResourceType.TOPIC, topic)
    configs = admin.describe_configs([resource])[resource].result(timeout=10)
    assert configs["retention.ms"].value == "3600000"
    assert configs["retention.ms"].source == 1  # DYNAMIC_TOPIC_CONFIG
    assert configs["segment.bytes"].value == "1073741824"

    change = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[
            ConfigEntry("retention.ms", "7200000", incremental_operation=AlterConfigOpType.SET),
            ConfigEntry(
                "cleanup.policy", "compact", incremental_operation=AlterConfigOpType.APPEND
            ),
        ],
    )
    admin.incremental_alter_configs([change])[change].result(timeout=10)
    configs = admin.describe_configs([resource])[resource].result(timeout=10)
    assert configs["retention.ms"].value == "7200000"
    assert configs["cleanup.policy"].value == "delete,compact"

    bad = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[
            ConfigEntry("retention.ms", "soon", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    with pytest.raises(KafkaException) as raised:
        admin.incremental_alter_configs([bad])[bad].result(timeout=10)
    assert raised.value.args[0].code() == KafkaError.INVALID_CONFIG
    # A bad value changes nothing.
    configs = admin.describe_configs([resource])[resource].result(timeout=10)
    assert configs["retention.ms"].value == "7200000"

    admin.create_partitions([NewPartitions(topic, 5)])[topic].result(timeout=10)
    assert len(admin.list_topics(timeout=10).topics[topic].partitions) == 5
    with pytest.raises(KafkaException) as raised:
        admin.create_partitions([NewPartitions(topic, 3)])[topic].result(timeout=10)
    assert raised.value.args[0].code() == KafkaError.INVALID_PARTITIONS

    admin.delete_topics([topic], operation_timeout=10)[topic].result(timeout=10)
    deadline = time.monotonic() + 10
    while topic in admin.list_topics(timeout=10).topics and time.monotonic() < deadline:
        time.sleep(0.1)
    assert topic not in admin.list_topics(timeout=10).topics


def test_create_topic_errors(admin: AdminClient) -> None:
    from confluent_kafka.admin import NewTopic

    topic = create_topic(admin)
    futures = admin.create_topics(
        [
            NewTopic(topic, 1, 1),
            NewTopic("replicated", 1, 3),
            NewTopic("bad/name", 1, 1),
            NewTopic("bad-config", 1, 1, config={"no.such.config": "1"}),
            NewTopic("bad-value", 1, 1, config={"delete.retention.ms": "tomorrow"}),
            NewTopic("bad-codec", 1, 1, config={"compression.type": "brotli"}),
            NewTopic(
                "good-extras",
                1,
                1,
                config={"compression.type": "producer", "min.compaction.lag.ms": "10"},
            ),
        ]
    )
    expected = {
        topic: KafkaError.TOPIC_ALREADY_EXISTS,
        "replicated": KafkaError.INVALID_REPLICATION_FACTOR,
        "bad/name": KafkaError.TOPIC_EXCEPTION,
        "bad-config": KafkaError.INVALID_CONFIG,
        "bad-value": KafkaError.INVALID_CONFIG,
        "bad-codec": KafkaError.INVALID_CONFIG,
    }
    for name, code in expected.items():
        with pytest.raises(KafkaException) as raised:
            futures[name].result(timeout=10)
        assert raised.value.args[0].code() == code, name
    futures["good-extras"].result(timeout=10)


def test_list_offsets_and_delete_records(bootstrap: str, admin: AdminClient) -> None:
    topic = create_topic(admin)
    p = producer(bootstrap, **{"linger.ms": 0})
    for i in range(10):
        produce_all(p, topic, [{"value": b"%d" % i, "timestamp": 1_000_000 + i * 1000}])
    partition = TopicPartition(topic, 0)

    def offset(spec: OffsetSpec) -> Any:
        return admin.list_offsets({partition: spec})[partition].result(timeout=10)

    assert offset(OffsetSpec.earliest()).offset == 0
    assert offset(OffsetSpec.latest()).offset == 10
    assert offset(OffsetSpec.for_timestamp(1_004_500)).offset == 5
    assert offset(OffsetSpec.for_timestamp(9_999_999)).offset == -1
    max_timestamp = offset(OffsetSpec.max_timestamp())
    assert (max_timestamp.offset, max_timestamp.timestamp) == (9, 1_009_000)

    futures = admin.delete_records([TopicPartition(topic, 0, 4)])
    (result,) = futures.values()
    assert result.result(timeout=10).low_watermark == 4
    assert offset(OffsetSpec.earliest()).offset == 4
