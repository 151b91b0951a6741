"""A produced record's timestamp must lie within the topic's bounds (KIP-937, Kafka 4 defaults).

Kafka's LogValidator.validateTimestamp: on a CreateTime topic a record whose timestamp is more
than `message.timestamp.after.max.ms` (Kafka 4: one hour) ahead of the broker's clock, or more
than `message.timestamp.before.max.ms` (unbounded by default) behind it, refuses its whole batch
with INVALID_TIMESTAMP and one record error per record at fault; nothing is appended. A
LogAppendTime topic takes any timestamp (the broker stamps the batch), but no producer may mark
its batch LogAppendTime.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import aiokafka
import aiokafka.errors
import kafka
import kafka.errors
import pytest
from confluent_kafka import KafkaError, Producer
from kio.schema.errors import ErrorCode
from raw_client import RawClient
from test_protocol_edges import create_topic, latest_offset, produce_request

from odradek.broker.server import Broker
from odradek.protocol.record_batch import (
    COMPRESSION_LZ4,
    TIMESTAMP_LOG_APPEND_TIME,
    Record,
    encode_batch,
)

HOUR_MS = 3_600_000


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with Broker(data_dir=tmp_path_factory.mktemp("timestamp-bounds")) as running:
        yield running


@pytest.fixture(scope="module")
def raw(broker: Broker) -> Iterator[RawClient]:
    with RawClient(broker.bootstrap_servers) as client:
        create_topic(client, "create-time")
        create_topic(client, "append-time", message_timestamp_type="LogAppendTime")
        create_topic(
            client,
            "recent-only",
            **{"message.timestamp.before.max.ms": "60000", "message.timestamp.after.max.ms": "0"},
        )
        yield client


def _now_ms() -> int:
    return int(time.time() * 1000)


def _produce(raw: RawClient, topic: str, records: bytes, version: int = 10) -> object:
    response = raw.request(produce_request(version, topic, records), api_version=version)
    return response.responses[0].partition_responses[0]


@pytest.mark.parametrize("version", range(3, 11))
def test_a_record_over_an_hour_ahead_refuses_its_batch(raw: RawClient, version: int) -> None:
    now = _now_ms()
    before = latest_offset(raw, "create-time")
    batch = encode_batch(
        [
            Record(key=None, value=b"now", timestamp=now),
            Record(key=None, value=b"future", timestamp=now + 2 * HOUR_MS),
            Record(key=None, value=b"now again", timestamp=now),
        ]
    )
    result = _produce(raw, "create-time", batch, version)
    assert result.error_code == ErrorCode.invalid_timestamp  # type: ignore[attr-defined]
    if version >= 8:
        errors = result.record_errors  # type: ignore[attr-defined]
        assert [error.batch_index for error in errors] == [1]
        message = errors[0].batch_index_error_message
        assert message.startswith(f"Timestamp {now + 2 * HOUR_MS} of message with offset 1 is")
        assert "out of range. The timestamp should be within [" in message
    assert latest_offset(raw, "create-time") == before  # nothing of the batch was appended
    # Half an hour ahead is within Kafka 4's default bound; so is any past timestamp.
    ok = encode_batch(
        [
            Record(key=None, value=b"soon", timestamp=now + HOUR_MS // 2),
            Record(key=None, value=b"1970", timestamp=0),
        ]
    )
    assert _produce(raw, "create-time", ok, version).error_code == ErrorCode.none  # type: ignore[attr-defined]
    assert latest_offset(raw, "create-time") == before + 2


def test_compressed_batches_and_a_record_below_its_base_timestamp(raw: RawClient) -> None:
    now = _now_ms()
    before = latest_offset(raw, "recent-only")
    # The base timestamp is recent; the second record lies an hour before it (a negative
    # delta): only reading the records finds it, as Kafka does.
    batch = encode_batch(
        [
            Record(key=None, value=b"a", timestamp=now),
            Record(key=None, value=b"b", timestamp=now - HOUR_MS),
        ],
        compression=COMPRESSION_LZ4,
    )
    result = _produce(raw, "recent-only", batch)
    assert result.error_code == ErrorCode.invalid_timestamp  # type: ignore[attr-defined]
    assert [e.batch_index for e in result.record_errors] == [1]  # type: ignore[attr-defined]
    # after.max.ms=0 refuses a record a minute ahead.
    ahead = encode_batch([Record(key=None, value=b"c", timestamp=now + 60_000)])
    assert _produce(raw, "recent-only", ahead).error_code == ErrorCode.invalid_timestamp  # type: ignore[attr-defined]
    assert latest_offset(raw, "recent-only") == before
    # No timestamp (-1) is never out of range.
    untimed = encode_batch([Record(key=None, value=b"d", timestamp=-1)], base_timestamp=-1)
    assert _produce(raw, "recent-only", untimed).error_code == ErrorCode.none  # type: ignore[attr-defined]
    assert latest_offset(raw, "recent-only") == before + 1


def test_log_append_time_topics_take_any_timestamp_but_not_from_producers(
    raw: RawClient,
) -> None:
    now = _now_ms()
    future = encode_batch([Record(key=None, value=b"f", timestamp=now + 10 * HOUR_MS)])
    assert _produce(raw, "append-time", future).error_code == ErrorCode.none  # type: ignore[attr-defined]
    stamped = encode_batch(
        [Record(key=None, value=b"x", timestamp=now)], timestamp_type=TIMESTAMP_LOG_APPEND_TIME
    )
    for topic in ("append-time", "create-time"):
        result = _produce(raw, topic, stamped)
        assert result.error_code == ErrorCode.invalid_timestamp  # type: ignore[attr-defined]
        message = result.record_errors[0].batch_index_error_message  # type: ignore[attr-defined]
        assert "Producer should not set timestamp type to LogAppendTime" in message


def test_every_client_gets_invalid_timestamp(broker: Broker) -> None:
    future = _now_ms() + 3 * HOUR_MS
    outcome: list[KafkaError] = []
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
    producer.produce(
        "clients-ts", b"future", timestamp=future, on_delivery=lambda e, _m: outcome.append(e)
    )
    producer.flush(10)  # alone in its batch: a batch is refused whole
    producer.produce("clients-ts", b"now", on_delivery=lambda e, _m: outcome.append(e))
    producer.flush(10)
    assert [e.code() if e else None for e in outcome] == [KafkaError.INVALID_TIMESTAMP, None]

    kafka_producer = kafka.KafkaProducer(bootstrap_servers=broker.bootstrap_servers)
    try:
        with pytest.raises(kafka.errors.InvalidTimestampError):
            kafka_producer.send("clients-ts", b"future", timestamp_ms=future).get(10)
    finally:
        kafka_producer.close()

    async def with_aiokafka() -> None:
        producer = aiokafka.AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers)
        await producer.start()
        try:
            with pytest.raises(aiokafka.errors.KafkaError):
                await producer.send_and_wait("clients-ts", b"future", timestamp_ms=future)
        finally:
            await producer.stop()

    asyncio.run(with_aiokafka())


def test_broker_defaults_set_the_bounds(tmp_path: Path) -> None:
    config = {"log.message.timestamp.after.max.ms": str(10 * HOUR_MS)}
    with (
        Broker(data_dir=tmp_path, config=config) as broker,
        RawClient(broker.bootstrap_servers) as raw,
    ):
        create_topic(raw, "wide")
        create_topic(raw, "narrow", **{"message.timestamp.after.max.ms": "1000"})
        now = _now_ms()
        batch = encode_batch([Record(key=None, value=b"v", timestamp=now + 5 * HOUR_MS)])
        assert _produce(raw, "wide", batch).error_code == ErrorCode.none  # type: ignore[attr-defined]
        assert _produce(raw, "narrow", batch).error_code == ErrorCode.invalid_timestamp  # type: ignore[attr-defined]
