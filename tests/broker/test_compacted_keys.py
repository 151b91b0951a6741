"""A compacted topic refuses records without a key, whole batch, with Kafka's record errors.

Kafka's LogValidator.validateKey: on a `cleanup.policy` containing compact, a batch holding a
keyless record is refused with INVALID_RECORD and nothing of it is appended; from Produce v8 the
response lists the index of every keyless record in `record_errors`. Compressed batches are
decompressed to check. The cleaner keeps keyless records already on disk (a topic switched from
delete to compact) and logs their offsets.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiokafka
import kafka
import kafka.errors
import pytest
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
    NewTopic,
    ResourceType,
)
from kio.schema.errors import ErrorCode
from raw_client import RawClient
from test_protocol_edges import create_topic, latest_offset, produce_request

from odradek.broker.server import Broker
from odradek.protocol.record_batch import (
    COMPRESSION_GZIP,
    COMPRESSION_LZ4,
    COMPRESSION_NONE,
    COMPRESSION_SNAPPY,
    COMPRESSION_ZSTD,
    Record,
    encode_batch,
)

CODECS = {
    "none": COMPRESSION_NONE,
    "gzip": COMPRESSION_GZIP,
    "snappy": COMPRESSION_SNAPPY,
    "lz4": COMPRESSION_LZ4,
    "zstd": COMPRESSION_ZSTD,
}


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    config = {"log.cleaner.backoff.ms": "100", "transaction.state.log.replication.factor": "1"}
    with Broker(data_dir=tmp_path_factory.mktemp("compacted-keys"), config=config) as running:
        yield running


@pytest.fixture(scope="module")
def raw(broker: Broker) -> Iterator[RawClient]:
    with RawClient(broker.bootstrap_servers) as client:
        create_topic(client, "compacted", cleanup_policy="compact")
        create_topic(client, "compacted-deleted", cleanup_policy="compact,delete")
        create_topic(client, "plain")
        yield client


def _every_tenth_keyless(count: int = 100, compression: int = COMPRESSION_NONE) -> bytes:
    return encode_batch(
        [
            Record(key=None if i % 10 == 0 else b"k%d" % i, value=b"v%d" % i, timestamp=1_000)
            for i in range(count)
        ],
        compression=compression,
    )


def _partition_response(raw: RawClient, version: int, topic: str, records: bytes) -> Any:
    response = raw.request(produce_request(version, topic, records), api_version=version)
    return response.responses[0].partition_responses[0]


@pytest.mark.parametrize("version", range(3, 11))
def test_keyless_records_refuse_the_whole_batch_in_every_produce_version(
    raw: RawClient, version: int
) -> None:
    before = latest_offset(raw, "compacted")
    result = _partition_response(raw, version, "compacted", _every_tenth_keyless())
    assert result.error_code == ErrorCode.invalid_record
    assert result.base_offset == -1
    if version >= 8:
        assert [error.batch_index for error in result.record_errors] == list(range(0, 100, 10))
        assert all(
            error.batch_index_error_message
            == "Compacted topic cannot accept message without key in topic partition compacted-0."
            for error in result.record_errors
        )
        assert result.error_message.startswith(
            "One or more records have been rejected due to 10 record errors in total"
        )
    assert latest_offset(raw, "compacted") == before  # nothing of the batch was appended


@pytest.mark.parametrize("codec", CODECS)
def test_compressed_batches_are_checked_with_every_codec(raw: RawClient, codec: str) -> None:
    before = latest_offset(raw, "compacted-deleted")
    bad = _every_tenth_keyless(compression=CODECS[codec])
    result = _partition_response(raw, 10, "compacted-deleted", bad)
    assert result.error_code == ErrorCode.invalid_record
    assert [error.batch_index for error in result.record_errors] == list(range(0, 100, 10))
    assert latest_offset(raw, "compacted-deleted") == before
    # Keys everywhere, a tombstone included: accepted.
    good = encode_batch(
        [Record(key=b"a", value=b"1"), Record(key=b"b", value=None)], compression=CODECS[codec]
    )
    assert _partition_response(raw, 10, "compacted-deleted", good).error_code == ErrorCode.none
    assert latest_offset(raw, "compacted-deleted") == before + 2


def test_a_batch_of_only_keyless_records_and_other_policies(raw: RawClient) -> None:
    only_keyless = encode_batch([Record(key=None, value=b"x%d" % i) for i in range(3)])
    result = _partition_response(raw, 9, "compacted", only_keyless)
    assert result.error_code == ErrorCode.invalid_record
    assert [error.batch_index for error in result.record_errors] == [0, 1, 2]
    # A keyless tombstone is keyless all the same.
    tombstone = encode_batch([Record(key=None, value=None)])
    assert _partition_response(raw, 9, "compacted", tombstone).error_code == (
        ErrorCode.invalid_record
    )
    # An empty key is a key (Kafka's Record.hasKey is "not null").
    empty_key = encode_batch([Record(key=b"", value=b"x")])
    assert _partition_response(raw, 9, "compacted", empty_key).error_code == ErrorCode.none
    # A delete-only topic takes keyless records.
    before = latest_offset(raw, "plain")
    assert _partition_response(raw, 9, "plain", only_keyless).error_code == ErrorCode.none
    assert latest_offset(raw, "plain") == before + 3


def _admin_create(broker: Broker, name: str, **config: str) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    admin.create_topics([NewTopic(name, 1, 1, config=config)])[name].result(10)


def _end_offsets(broker: Broker, topic: str) -> tuple[int, int]:
    consumer = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": "probe"})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    finally:
        consumer.close()
    return int(low), int(high)


def _read_all(broker: Broker, topic: str, isolation: str = "read_uncommitted") -> list[Any]:
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "group.id": "reader",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": isolation,
        }
    )
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    messages = []
    try:
        while True:
            message = consumer.poll(10)
            assert message is not None
            if message.error():
                assert message.error().code() == KafkaError._PARTITION_EOF
                return messages
            messages.append(message)
    finally:
        consumer.close()


def test_confluent_batch_with_every_tenth_key_null(broker: Broker) -> None:
    # The report: librdkafka sends 100 records in one batch (Produce v10); Kafka fails
    # the ten keyless ones with INVALID_RECORD and the other ninety with them.
    _admin_create(broker, "table-confluent", **{"cleanup.policy": "compact"})
    producer = Producer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "linger.ms": 1000,
            "batch.num.messages": 100,
            "compression.type": "lz4",
        }
    )
    reports: list[tuple[int, Any]] = []
    for i in range(100):
        producer.produce(
            "table-confluent",
            key=None if i % 10 == 0 else b"k%d" % i,
            value=b"v%d" % i,
            on_delivery=lambda error, message, i=i: reports.append((i, error)),
        )
    assert producer.flush(10) == 0
    codes = {i: error.code() if error else None for i, error in reports}
    assert len(codes) == 100
    assert {i for i, code in codes.items() if code == KafkaError.INVALID_RECORD} == set(
        range(0, 100, 10)
    )
    assert all(code == KafkaError._INVALID_DIFFERENT_RECORD for i, code in codes.items() if i % 10)
    assert _end_offsets(broker, "table-confluent") == (0, 0)
    # The producer goes on: keyed records are acknowledged and stored.
    producer.produce("table-confluent", key=b"k", value=b"after")
    assert producer.flush(10) == 0
    assert [m.value() for m in _read_all(broker, "table-confluent")] == [b"after"]


def test_idempotent_producer_continues_after_a_refused_batch(broker: Broker) -> None:
    _admin_create(broker, "table-idempotent", **{"cleanup.policy": "compact"})
    producer = Producer(
        {"bootstrap.servers": broker.bootstrap_servers, "enable.idempotence": True, "linger.ms": 0}
    )
    errors: list[Any] = []
    producer.produce("table-idempotent", key=b"a", value=b"1")
    assert producer.flush(10) == 0
    producer.produce(
        "table-idempotent", value=b"keyless", on_delivery=lambda e, m: errors.append(e)
    )
    assert producer.flush(10) == 0
    assert errors[0] is not None
    assert errors[0].code() == KafkaError.INVALID_RECORD
    # The refused batch advanced no producer state: later batches are in sequence.
    for i in range(3):
        producer.produce("table-idempotent", key=b"b%d" % i, value=b"2")
    assert producer.flush(10) == 0
    values = [(m.key(), m.value()) for m in _read_all(broker, "table-idempotent")]
    assert values == [(b"a", b"1"), (b"b0", b"2"), (b"b1", b"2"), (b"b2", b"2")]


def test_transactional_producer_aborts_after_a_refused_batch(broker: Broker) -> None:
    _admin_create(broker, "table-txn", **{"cleanup.policy": "compact"})
    producer = Producer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "transactional.id": "keyless-txn",
            "linger.ms": 0,
        }
    )
    producer.init_transactions(10)
    producer.begin_transaction()
    producer.produce("table-txn", key=b"a", value=b"aborted")
    producer.produce("table-txn", value=b"keyless")
    with pytest.raises(KafkaException) as raised:
        producer.commit_transaction(10)
    assert raised.value.args[0].txn_requires_abort()
    producer.abort_transaction(10)
    # librdkafka numbers the next batch after the refused one, while the ABORT marker left the
    # producer at no sequence (as in Kafka): the first try may fail with
    # OUT_OF_ORDER_SEQUENCE_NUMBER, then an abort with an epoch bump lets the next one through.
    failures: list[KafkaError] = []
    for _ in range(2):
        producer.begin_transaction()
        producer.produce("table-txn", key=b"a", value=b"committed")
        try:
            producer.commit_transaction(10)
        except KafkaException as error:
            failures.append(error.args[0])
            producer.abort_transaction(10)
        else:
            break
    assert len(failures) <= 1
    assert all(failure.txn_requires_abort() for failure in failures)
    committed = _read_all(broker, "table-txn", isolation="read_committed")
    assert [(m.key(), m.value()) for m in committed] == [(b"a", b"committed")]


def test_kafka_python_v9_and_aiokafka_v7_get_invalid_record(broker: Broker) -> None:
    _admin_create(broker, "table-py", **{"cleanup.policy": "compact"})
    # Not idempotent: kafka-python's idempotent producer stays failed after a refused batch.
    producer = kafka.KafkaProducer(
        bootstrap_servers=broker.bootstrap_servers, linger_ms=50, enable_idempotence=False
    )
    try:
        futures = [
            producer.send("table-py", key=None if i == 2 else b"k%d" % i, value=b"v")
            for i in range(5)
        ]
        producer.flush(10)
        # kafka-python reads record_errors: the keyless record is the invalid one, the
        # others failed with it.
        for i, future in enumerate(futures):
            with pytest.raises(kafka.errors.KafkaError) as raised:
                future.get(10)
            assert isinstance(raised.value, kafka.errors.InvalidRecordError) == (i == 2)
        producer.send("table-py", key=b"k", value=b"kafka-python").get(10)
    finally:
        producer.close()

    async def with_aiokafka() -> None:
        async_producer = aiokafka.AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers)
        await async_producer.start()
        try:
            with pytest.raises(aiokafka.errors.KafkaError):
                await async_producer.send_and_wait("table-py", value=b"keyless")
            await async_producer.send_and_wait("table-py", key=b"k", value=b"aiokafka")
        finally:
            await async_producer.stop()

    asyncio.run(with_aiokafka())
    assert [m.value() for m in _read_all(broker, "table-py")] == [b"kafka-python", b"aiokafka"]


def test_cleaner_keeps_keyless_records_of_a_topic_switched_to_compact(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = {"log.cleaner.backoff.ms": "50"}
    with Broker(data_dir=tmp_path, config=config) as broker:
        _admin_create(
            broker,
            "switched",
            **{"segment.bytes": "200", "min.cleanable.dirty.ratio": "0.01"},
        )
        producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 0})
        rows: list[tuple[bytes | None, bytes]] = [(None, b"no key")]
        rows += [(b"k", b"v%d" % i) for i in range(10)]
        for key, value in rows:
            producer.produce("switched", key=key, value=value)
            producer.flush(10)
        admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
        change = ConfigResource(
            ResourceType.TOPIC,
            "switched",
            incremental_configs=[
                ConfigEntry(
                    "cleanup.policy", "compact", incremental_operation=AlterConfigOpType.SET
                )
            ],
        )
        with caplog.at_level("WARNING", logger="odradek.storage.log"):
            admin.incremental_alter_configs([change])[change].result(10)
            deadline = time.monotonic() + 10
            while "without a key" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.05)
        assert "kept 1 record(s) without a key at offset(s) 0" in caplog.text
        remaining = [(m.offset(), m.key(), m.value()) for m in _read_all(broker, "switched")]
        assert remaining[0] == (0, None, b"no key")
        assert remaining[-1] == (10, b"k", b"v9")
        assert len(remaining) < len(rows)  # the superseded values of k were compacted
