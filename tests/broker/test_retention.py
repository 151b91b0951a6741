"""The broker's retention task deletes old segments and advances the log start offset."""

from __future__ import annotations

import time
from pathlib import Path

from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from odradek.broker.server import Broker


def test_retention_by_size_and_time_advances_the_log_start(tmp_path: Path) -> None:
    config = {"log.retention.check.interval.ms": "100"}
    with Broker(data_dir=tmp_path, config=config) as broker:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
        topics = {
            "by-size": {"segment.bytes": "2000", "retention.bytes": "4000"},
            "by-time": {"segment.bytes": "2000", "retention.ms": "1000"},
            "kept": {"segment.bytes": "2000"},
        }
        for name, topic_config in topics.items():
            admin.create_topics([NewTopic(name, 1, 1, config=topic_config)])[name].result(10)
        producer = Producer(
            {
                "bootstrap.servers": broker.bootstrap_servers,
                "enable.idempotence": False,
                "linger.ms": 0,
            }
        )
        now = int(time.time() * 1000)
        for _ in range(100):
            for name in topics:
                # by-time's records carry old timestamps: retention.ms measures record time.
                stamp = now - 60_000 if name == "by-time" else now
                producer.produce(name, value=b"x" * 100, timestamp=stamp)
            producer.flush(10)

        def earliest(name: str) -> int:
            partition = TopicPartition(name, 0)
            spec = {partition: OffsetSpec.earliest()}
            return int(admin.list_offsets(spec)[partition].result(10).offset)

        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and (
            earliest("by-size") == 0 or earliest("by-time") == 0
        ):
            time.sleep(0.2)
        assert earliest("by-size") > 0
        assert earliest("by-time") > 0
        assert earliest("kept") == 0
        assert broker.context is not None
        by_size = broker.context.logs.log("by-size", 0)
        assert by_size is not None
        deadline = time.monotonic() + 10
        while by_size.size_in_bytes > 4000 + 2000 and time.monotonic() < deadline:
            time.sleep(0.1)
        # What is left: at most retention.bytes plus the segment that crosses it.
        assert by_size.size_in_bytes <= 4000 + 2000
