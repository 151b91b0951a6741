"""`__consumer_offsets` is compacted: repeated commits do not grow it without bound."""

from __future__ import annotations

import time
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from odradek.broker.server import Broker


def test_offset_commits_are_compacted_and_the_latest_survives_restart(tmp_path: Path) -> None:
    config = {
        "log.cleaner.backoff.ms": "100",
        "offsets.topic.segment.bytes": "4096",
        "offsets.topic.num.partitions": "1",
        "group.initial.rebalance.delay.ms": "0",
    }
    with Broker(data_dir=tmp_path, config=config) as broker:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
        admin.create_topics([NewTopic("input", 1, 1)])["input"].result(10)
        consumer = Consumer(
            {
                "bootstrap.servers": broker.bootstrap_servers,
                "group.id": "committer",
                "enable.auto.commit": False,
            }
        )
        for offset in range(1, 401):
            consumer.commit(offsets=[TopicPartition("input", 0, offset)], asynchronous=False)
        consumer.close()
        assert broker.context is not None
        log = broker.context.logs.log("__consumer_offsets", 0)
        assert log is not None
        written = log.log_end_offset
        deadline = time.monotonic() + 15
        while log.size_in_bytes > 4096 * 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        # 400 commits of one key: what is left is a few segments, not 400 records' worth.
        assert written >= 400
        assert log.size_in_bytes <= 4096 * 3

    with Broker(data_dir=tmp_path, config=config) as broker:
        consumer = Consumer(
            {
                "bootstrap.servers": broker.bootstrap_servers,
                "group.id": "committer",
                "enable.auto.commit": False,
            }
        )
        (committed,) = consumer.committed([TopicPartition("input", 0)], timeout=10)
        consumer.close()
        assert committed.offset == 400
