"""A clean restart keeps topics, topic ids, configs, offsets and data; flush settings apply."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from odradek.broker.server import Broker


def test_topics_and_data_survive_a_clean_restart(tmp_path: Path) -> None:
    with Broker(data_dir=tmp_path) as broker:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
        admin.create_topics([NewTopic("kept", 3, 1, config={"retention.ms": "123456"})])[
            "kept"
        ].result(10)
        producer = Producer(
            {"bootstrap.servers": broker.bootstrap_servers, "enable.idempotence": False}
        )
        for i in range(30):
            producer.produce("kept", value=b"%d" % i, partition=i % 3)
        assert producer.flush(10) == 0
        assert broker.context is not None
        topic_id = broker.context.logs.topics()["kept"].topic_id
        cluster_id = broker.context.cluster_id

    with Broker(data_dir=tmp_path) as broker:
        assert broker.context is not None
        assert broker.context.cluster_id == cluster_id
        assert broker.context.logs.topics()["kept"].topic_id == topic_id
        admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
        resource = ConfigResource(ResourceType.TOPIC, "kept")
        configs = admin.describe_configs([resource])[resource].result(10)
        assert configs["retention.ms"].value == "123456"
        consumer = Consumer(
            {
                "bootstrap.servers": broker.bootstrap_servers,
                "group.id": "restart",
                "enable.auto.commit": False,
            }
        )
        consumer.assign([TopicPartition("kept", p, OFFSET_BEGINNING) for p in range(3)])
        values = set()
        deadline = time.monotonic() + 20
        while len(values) < 30 and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and not message.error():
                values.add(message.value())
        consumer.close()
        assert values == {b"%d" % i for i in range(30)}


def test_flush_messages_makes_acks_one_durable(tmp_path: Path) -> None:
    async def scenario() -> int:
        config = {"log.flush.interval.messages": "1", "odradek.acks.all.fsync": "false"}
        async with Broker(data_dir=tmp_path, config=config) as broker:
            assert broker.context is not None
            broker.context.logs.create_topic("flushed", 1, {})
            producer = Producer(
                {"bootstrap.servers": broker.bootstrap_servers, "enable.idempotence": False}
            )
            producer.produce("flushed", value=b"x")
            while producer.flush(0) > 0:
                await asyncio.sleep(0.01)
            log = broker.context.logs.log("flushed", 0)
            assert log is not None
            return log.recovery_point

    assert asyncio.run(scenario()) == 1


def test_flush_ms_flushes_in_the_background(tmp_path: Path) -> None:
    async def scenario() -> int:
        async with Broker(data_dir=tmp_path, config={"log.flush.interval.ms": "50"}) as broker:
            assert broker.context is not None
            broker.context.logs.create_topic("timed", 1, {})
            producer = Producer(
                {
                    "bootstrap.servers": broker.bootstrap_servers,
                    "enable.idempotence": False,
                    "acks": 1,
                }
            )
            producer.produce("timed", value=b"x")
            while producer.flush(0) > 0:
                await asyncio.sleep(0.01)
            log = broker.context.logs.log("timed", 0)
            assert log is not None
            deadline = time.monotonic() + 10
            while log.recovery_point < 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            return log.recovery_point

    assert asyncio.run(scenario()) == 1
