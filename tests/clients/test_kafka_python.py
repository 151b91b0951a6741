"""Round trips with kafka-python (older, non-flexible protocol versions)."""

from __future__ import annotations

import pytest
from client_helpers import create_topic
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic


@pytest.mark.parametrize("codec", [None, "gzip", "snappy", "lz4", "zstd"])
def test_produce_consume(bootstrap: str, admin: object, codec: str | None) -> None:
    topic = create_topic(admin, partitions=2)  # type: ignore[arg-type]
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        compression_type=codec,
        enable_idempotence=False,
        acks="all",
        linger_ms=5,
    )
    futures = [
        producer.send(
            topic,
            key=b"k%d" % (i % 3),
            value=b"v%d" % i,
            headers=[("n", b"%d" % i)],
            timestamp_ms=1_600_000_000_000 + i,
        )
        for i in range(100)
    ]
    metadata = [future.get(timeout=30) for future in futures]
    producer.close()
    assert {m.partition for m in metadata} <= {0, 1}

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=10_000
    )
    partitions = [TopicPartition(topic, p) for p in (0, 1)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    received = []
    for message in consumer:
        received.append(message)
        if len(received) == 100:
            break
    consumer.close()
    assert sorted(m.value for m in received) == sorted(b"v%d" % i for i in range(100))
    for message in received:
        i = int(message.value[1:])
        assert message.key == b"k%d" % (i % 3)
        assert message.headers == [("n", b"%d" % i)]
        assert message.timestamp == 1_600_000_000_000 + i


def test_admin_client(bootstrap: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic("kp-admin", num_partitions=3, replication_factor=1)])
    assert "kp-admin" in admin.list_topics()
    described = admin.describe_topics(["kp-admin"])
    assert len(described[0]["partitions"]) == 3
    # The legacy AlterConfigs API replaces the whole override set; kafka-python sends the
    # other dynamic keys along so that nothing is reset.
    for overrides in ({"retention.ms": "1000"}, {"segment.bytes": "1048576"}):
        admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, "kp-admin", overrides)], incremental=False
        )
    described_configs = admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, "kp-admin")], config_filter="all"
    )
    (values,) = (by_name["kp-admin"] for by_name in described_configs.values())
    assert values["segment.bytes"]["value"] == "1048576"
    assert values["retention.ms"]["value"] == "1000"
    assert values["retention.ms"]["config_source"] == "DYNAMIC_TOPIC_CONFIG"
    admin.delete_topics(["kp-admin"])
    admin.close()
