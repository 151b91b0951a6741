"""Round trips with aiokafka."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from client_helpers import create_topic


@pytest.mark.asyncio
@pytest.mark.parametrize("codec", [None, "gzip", "snappy", "lz4", "zstd"])
async def test_produce_consume(bootstrap: str, admin: object, codec: str | None) -> None:
    topic = create_topic(admin, partitions=2)  # type: ignore[arg-type]
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, compression_type=codec, acks="all", linger_ms=5
    )
    await producer.start()
    try:
        for i in range(100):
            await producer.send(
                topic,
                key=b"k%d" % (i % 3),
                value=b"v%d" % i,
                headers=[("n", b"%d" % i)],
                timestamp_ms=1_600_000_000_000 + i,
            )
        await producer.flush()
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in (0, 1)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        received = []
        while len(received) < 100:
            batches = await consumer.getmany(timeout_ms=10_000)
            assert batches, "no data within 10 s"
            for messages in batches.values():
                received.extend(messages)
    finally:
        await consumer.stop()
    assert sorted(m.value for m in received) == sorted(b"v%d" % i for i in range(100))
    for message in received:
        i = int(message.value[1:])
        assert message.key == b"k%d" % (i % 3)
        assert list(message.headers) == [("n", b"%d" % i)]
        assert message.timestamp == 1_600_000_000_000 + i
