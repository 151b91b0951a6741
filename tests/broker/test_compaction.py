"""The broker's log cleaner compacts `cleanup.policy=compact` topics: latest value per key."""

from __future__ import annotations

import time
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from odradek.broker.server import Broker


def test_compacted_topic_keeps_the_latest_value_per_key(tmp_path: Path) -> None:
    config = {"log.cleaner.backoff.ms": "100"}
    with Broker(data_dir=tmp_path, config=config) as broker:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
        # Written as a delete topic (kept whole), then switched to compact: on a loaded machine
        # the cleaner could otherwise compact between produce rounds, before `size_before`.
        topic_config = {
            "cleanup.policy": "delete",
            "retention.ms": "-1",
            "segment.bytes": "1000",
            "min.cleanable.dirty.ratio": "0.01",
        }
        admin.create_topics([NewTopic("table", 1, 1, config=topic_config)])["table"].result(10)
        producer = Producer(
            {
                "bootstrap.servers": broker.bootstrap_servers,
                "enable.idempotence": False,
                "linger.ms": 0,
            }
        )
        for round_number in range(20):
            for key in range(5):
                producer.produce("table", key=b"k%d" % key, value=b"v%d-%d" % (key, round_number))
            producer.flush(10)
        assert broker.context is not None
        log = broker.context.logs.log("table", 0)
        assert log is not None
        size_before = log.size_in_bytes
        compact = ConfigResource(
            ResourceType.TOPIC,
            "table",
            incremental_configs=[
                ConfigEntry(
                    "cleanup.policy", "compact", incremental_operation=AlterConfigOpType.SET
                )
            ],
        )
        admin.incremental_alter_configs([compact])[compact].result(10)
        deadline = time.monotonic() + 15
        while log.size_in_bytes >= size_before * 0.6 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert log.size_in_bytes < size_before * 0.6

        consumer = Consumer(
            {
                "bootstrap.servers": broker.bootstrap_servers,
                "group.id": "reader",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            }
        )
        consumer.assign([TopicPartition("table", 0, OFFSET_BEGINNING)])
        latest: dict[bytes, bytes] = {}
        offsets: list[int] = []
        while True:
            message = consumer.poll(5)
            assert message is not None
            if message.error():
                break
            latest[message.key()] = message.value()
            offsets.append(message.offset())
        consumer.close()
        assert latest == {b"k%d" % key: b"v%d-19" % key for key in range(5)}
        assert offsets == sorted(offsets)  # offsets kept, in order, gaps allowed
        assert len(offsets) < 100
