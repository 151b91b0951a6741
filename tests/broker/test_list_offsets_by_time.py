"""ListOffsets by timestamp and MAX_TIMESTAMP answer with a record, not with its batch.

Kafka's UnifiedLog.fetchOffsetByTimestamp decodes the batch the time index points at and
returns the first record whose timestamp reaches the target (and, for MAX_TIMESTAMP, the first
record carrying the largest timestamp). A batch-level answer makes a consumer seeking by time,
or `odradek group reset-offsets --to-datetime`, re-read records older than asked.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import aiokafka
import kafka
import pytest
from click.testing import CliRunner
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from odradek.broker.server import Broker
from odradek.cli.main import cli
from odradek.protocol.record_batch import iter_batch_headers

T = 1_700_000_000_000  # a whole second: T + n ms round-trips through ISO text exactly
FIRST_BATCH = [T + 2, T + 4, T + 6, T + 8]  # offsets 0-3
SECOND_BATCH = [T + 10, T + 30, T + 20]  # offsets 4-6
# target -> offset of the first record at or after it (-1: none).
EXPECTED = {
    T + 1: 0,
    T + 2: 0,
    T + 3: 1,
    T + 4: 1,
    T + 5: 2,
    T + 7: 3,
    T + 8: 3,
    T + 9: 4,
    T + 11: 5,
    T + 21: 5,
    T + 30: 5,
    T + 31: -1,
}


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with Broker(data_dir=tmp_path_factory.mktemp("list-offsets"), config={}) as running:
        yield running


def _create(broker: Broker, name: str, **config: str) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    admin.create_topics([NewTopic(name, 1, 1, config=config)])[name].result(10)


def _produce_batches(
    broker: Broker, topic: str, batches: list[list[int]], compression: str = "none"
) -> None:
    """Each list of timestamps becomes one batch (checked on the broker's log)."""
    assert broker.context is not None
    log = broker.context.logs.log(topic, 0)
    assert log is not None
    start = log.log_end_offset
    producer = Producer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "linger.ms": 100,
            "compression.type": compression,
        }
    )
    for timestamps in batches:
        for index, timestamp in enumerate(timestamps):
            producer.produce(topic, key=b"k%d" % index, value=b"v" * 20, timestamp=timestamp)
        assert producer.flush(10) == 0
    data = log.read(start, 1 << 20, log.log_end_offset, min_one_batch=True).records
    sizes = [header.records_count for _, header in iter_batch_headers(data)]
    assert sizes == [len(timestamps) for timestamps in batches]


def _confluent_offsets(broker: Broker, topic: str, targets: list[int]) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": "seeker"})
    try:
        return {
            target: consumer.offsets_for_times([TopicPartition(topic, 0, target)], 10)[0].offset
            for target in targets
        }
    finally:
        consumer.close()


def _admin_offset(broker: Broker, topic: str, spec: OffsetSpec) -> tuple[int, int]:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    partition = TopicPartition(topic, 0)
    result = admin.list_offsets({partition: spec})[partition].result(10)
    return int(result.offset), int(result.timestamp)


@pytest.mark.parametrize("compression", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_confluent_offsets_for_times_and_max_timestamp_inside_batches(
    broker: Broker, compression: str
) -> None:
    topic = f"by-time-{compression}"
    _create(broker, topic)
    _produce_batches(broker, topic, [FIRST_BATCH], compression)
    # The report: one batch of T+2, T+4, T+6, T+8; T+3 is the record at offset 1.
    assert _confluent_offsets(broker, topic, [T + 3])[T + 3] == 1
    _produce_batches(broker, topic, [SECOND_BATCH], compression)
    assert _confluent_offsets(broker, topic, list(EXPECTED)) == EXPECTED
    assert _admin_offset(broker, topic, OffsetSpec.for_timestamp(T + 5)) == (2, T + 6)
    # MAX_TIMESTAMP (KIP-734): T+30 is the middle record of the second batch.
    assert _admin_offset(broker, topic, OffsetSpec.max_timestamp()) == (5, T + 30)


def test_max_timestamp_of_a_single_out_of_order_batch(broker: Broker) -> None:
    _create(broker, "max-single")
    _produce_batches(broker, "max-single", [[T + 10, T + 30, T + 20]])
    assert _admin_offset(broker, "max-single", OffsetSpec.max_timestamp()) == (1, T + 30)


def test_kafka_python_and_aiokafka_offsets_for_times(broker: Broker) -> None:
    _create(broker, "by-time-py")
    _produce_batches(broker, "by-time-py", [FIRST_BATCH, SECOND_BATCH], "gzip")
    partition = kafka.TopicPartition("by-time-py", 0)
    consumer = kafka.KafkaConsumer(bootstrap_servers=broker.bootstrap_servers)
    try:
        found = {
            target: consumer.offsets_for_times({partition: target})[partition]
            for target in EXPECTED
        }
    finally:
        consumer.close()
    assert {target: -1 if hit is None else hit.offset for target, hit in found.items()} == EXPECTED
    assert found[T + 3] is not None
    assert found[T + 3].timestamp == T + 4

    async def with_aiokafka() -> dict[int, int]:
        async_consumer = aiokafka.AIOKafkaConsumer(bootstrap_servers=broker.bootstrap_servers)
        await async_consumer.start()
        try:
            tp = aiokafka.TopicPartition("by-time-py", 0)
            answers = {}
            for target in EXPECTED:
                hit = (await async_consumer.offsets_for_times({tp: target}))[tp]
                answers[target] = -1 if hit is None else hit.offset
            return answers
        finally:
            await async_consumer.stop()

    assert asyncio.run(with_aiokafka()) == EXPECTED


def test_log_append_time_topic_answers_with_the_batch_first_record(broker: Broker) -> None:
    topic = "append-time"
    _create(broker, topic, **{"message.timestamp.type": "LogAppendTime"})
    _produce_batches(broker, topic, [[T + 1, T + 2, T + 3]])
    time.sleep(0.005)  # the second batch gets a later broker time
    _produce_batches(broker, topic, [[T + 1, T + 2, T + 3]], "zstd")
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "group.id": "append-time",
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 10,
        }
    )
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    stamps = []
    while (message := consumer.poll(10)) is not None and not message.error():
        stamps.append(message.timestamp()[1])
    consumer.close()
    assert message is not None
    assert message.error().code() == KafkaError._PARTITION_EOF
    first, second = stamps[0], stamps[3]
    assert stamps == [first] * 3 + [second] * 3
    assert second > first
    answers = _confluent_offsets(broker, topic, [first - 1, first, first + 1, second + 1])
    assert answers == {first - 1: 0, first: 0, first + 1: 3, second + 1: -1}
    assert _admin_offset(broker, topic, OffsetSpec.max_timestamp()) == (3, second)


def test_group_reset_offsets_to_datetime_lands_on_the_record(broker: Broker) -> None:
    _create(broker, "reset-by-time")
    _produce_batches(broker, "reset-by-time", [FIRST_BATCH])
    runner = CliRunner(env={"ODRADEK_BOOTSTRAP": broker.bootstrap_servers})
    moment = datetime.fromtimestamp((T + 3) / 1000, UTC).isoformat()
    result = runner.invoke(
        cli,
        [
            *("group", "reset-offsets", "by-time", "--topic", "reset-by-time"),
            *("--to-datetime", moment, "--json"),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert [row["new_offset"] for row in rows] == [1]
