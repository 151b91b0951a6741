"""Real clients pinned to old protocol versions, as old applications pin them: kafka-python's
`api_version=(0, 11)`, aiokafka's `api_version="0.10.2"`, librdkafka's
`api.version.request=false` + `broker.version.fallback=...` (confluent-kafka and kcat).

Each pinned version that a Kafka 4 broker still serves does a keyed and keyless round trip with
headers and timestamps through a consumer group (subscribe, commit, restart, resume from the
committed offset, every record exactly once) and, where the version has them, idempotent and
transactional produce, ListOffsets by timestamp, admin create/delete topics and DescribeConfigs,
and each compression codec it may use (the codec checked in the stored batches).

Kafka 4 removed the request versions of clients older than Kafka 2.1 (KIP-896): message formats
v0/v1, Produce v0-v2, Fetch v0-v3, ListOffsets v0, OffsetCommit v0-v1, OffsetFetch v0,
CreateTopics v0-v1, DeleteTopics v0, DescribeConfigs v0 ... Odradek serves Kafka 4's ranges
(and, like Kafka 4 after KAFKA-18659, lists Produce from v0 while refusing v0-v2). A client
pinned below them fails as it fails against Kafka 4: the broker closes the connection on the
request's header (Kafka's SocketServer: "Received request for api with key 0 (Produce) and
unsupported version 2"; Odradek logs one WARNING line naming the API and version), and the
client reports a timeout or a disconnect -- bounded by its own timeouts, never a hang. Those
cases are marked `KAFKA_4_REFUSES` below (and their test ids start with "kafka-4-refuses") and
assert exactly that.

Client limitations found on the way (documented where they bite):
- aiokafka >= 0.13 ignores `api_version` (a no-op with a DeprecationWarning): it always
  negotiates, so a pinned aiokafka is today's aiokafka.
- librdkafka (confluent-kafka 2.x and kcat) treats every `broker.version.fallback` >= 0.10 as
  "ask the broker" and sends ApiVersions even with `api.version.request=false`; only the pre-0.10
  tables (0.8.x, 0.9.0) really pin, and they use Produce v0/v1, which Kafka 4 refuses.
- librdkafka 2.16 cannot parse a one-topic Metadata v0 answer ("tmpabuf memory shortage"); the
  same bytes parse with librdkafka 2.0 (kcat), and Kafka 4 sends those bytes too.
- kafka-python refuses zstd on its own side below 2.1 (Produce v7), as Kafka's clients do.

Odradek bug found on the way (fixed): ApiVersions listed Produce from v3, where Kafka 4 lists
v0 (KAFKA-18659); librdkafka 2.0 (kcat) then sent gzip, snappy and lz4 batches uncompressed
(`test_kcat_fallback_round_trip_with_codec` checks the stored codec).

No broker log line at ERROR or with a traceback during any of it (`no_tracebacks`).
"""

from __future__ import annotations

import asyncio
import gc
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from client_helpers import create_topic
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka import TopicPartition as ConfluentTopicPartition
from confluent_kafka.admin import AdminClient, ResourceType
from confluent_kafka.admin import ConfigResource as ConfluentConfigResource
from confluent_kafka.admin import NewTopic as ConfluentNewTopic
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import KafkaConnectionError, KafkaTimeoutError
from test_recompression import stored_headers

from odradek.broker.server import Broker
from odradek.protocol.record_batch import (
    COMPRESSION_GZIP,
    COMPRESSION_LZ4,
    COMPRESSION_SNAPPY,
    COMPRESSION_ZSTD,
)
from odradek.testing.pytest_plugin import TEST_CONFIG

pytestmark = [pytest.mark.timeout(90), pytest.mark.usefixtures("no_tracebacks")]

CODECS = {
    "gzip": COMPRESSION_GZIP,
    "snappy": COMPRESSION_SNAPPY,
    "lz4": COMPRESSION_LZ4,
    "zstd": COMPRESSION_ZSTD,
}
#: Marks a pinned version whose requests Kafka 4 (KIP-896) no longer serves (a test id prefix).
KAFKA_4_REFUSES = "kafka-4-refuses"


def refused_id(pinned: object) -> str:
    """The test id of a pinned version Kafka 4 refuses."""
    text = ".".join(map(str, pinned)) if isinstance(pinned, tuple) else str(pinned)
    return f"{KAFKA_4_REFUSES}-{text}"


BASE_TIMESTAMP = 1_600_000_000_000

# (key, value, headers, timestamp ms): keyed and keyless, with and without headers.
Message = tuple[bytes | None, bytes, list[tuple[str, bytes]], int]


def messages(batch: int, headers: bool = True) -> list[Message]:
    """Four records of batch `batch`: keyed and keyless, with headers (where the version has
    them: record format v2) and without; distinct CreateTime timestamps."""
    result: list[Message] = []
    for i in range(4):
        key = b"key-%d-%d" % (batch, i) if i % 2 == 0 else None
        record_headers = [("h", b"%d-%d" % (batch, i)), ("empty", b"")] if headers and i < 2 else []
        result.append(
            (key, b"value-%d-%d" % (batch, i), record_headers, BASE_TIMESTAMP + 10 * batch + i)
        )
    return result


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One broker for the module (each test uses its own topics, groups and transactional ids):
    a broker per pinned version would cost more than the version's test."""
    with Broker(data_dir=tmp_path_factory.mktemp("old-clients"), config=TEST_CONFIG) as running:
        yield running


def refused(caplog: pytest.LogCaptureFixture, api_key: int) -> list[str]:
    """The broker's lines for requests of `api_key` it closed the connection on, as Kafka 4's
    SocketServer does for a version it does not serve."""
    return [
        record.getMessage()
        for record in caplog.records
        if record.name.startswith("odradek")
        and f"unsupported API key {api_key} version" in record.getMessage()
    ]


def stored_codecs(broker: Broker, topic: str) -> set[int]:
    return {header.compression for header in stored_headers(broker, topic)}


# ---------------------------------------------------------------------------------------------
# kafka-python: `api_version` selects a table of the broker's ranges recorded from real brokers
# (kafka/protocol/broker_version_data.py); requests use the highest version in it.

PRODUCE = 0
FETCH = 1
LIST_OFFSETS = 2
DESCRIBE_CONFIGS = 32

KAFKA_PYTHON_SERVED = [(0, 11), (1, 0), (1, 1), (2, 0), (2, 1), (2, 5), (3, 0), (4, 0)]
# Produce v2 and Fetch v2/v3: message formats v0/v1, removed in Kafka 4.
#: Record format v2 from 0.11 on; zstd from 2.1.
KAFKA_PYTHON_COMPRESSION = [(0, 11), (1, 0), (2, 0), (2, 1), (3, 0)]
KAFKA_PYTHON_REFUSED = [(0, 10, 0), (0, 10, 1), (0, 10, 2)]


def version_id(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def kafka_python_produce(
    bootstrap: str, topic: str, version: tuple[int, ...], records: list[Message], **config: Any
) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, api_version=version, **config)
    try:
        futures = [
            producer.send(topic, key=key, value=value, headers=headers, timestamp_ms=timestamp)
            for key, value, headers, timestamp in records
        ]
        for future in futures:
            future.get(timeout=20)
    finally:
        producer.close(timeout=5)


def kafka_python_consume_group(
    bootstrap: str, topic: str, group: str, version: tuple[int, ...], expected: int
) -> list[Message]:
    """Subscribe as `group`, read `expected` records (and make sure no more follow), commit,
    leave."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        api_version=version,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    received: list[Message] = []
    try:
        deadline = time.monotonic() + 30
        while len(received) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                received.extend((m.key, m.value, list(m.headers), m.timestamp) for m in batch)
        # Nothing past what was produced (no record twice).
        for batch in consumer.poll(timeout_ms=500).values():
            received.extend((m.key, m.value, list(m.headers), m.timestamp) for m in batch)
        consumer.commit()
    finally:
        consumer.close()
    return received


@pytest.mark.parametrize("version", KAFKA_PYTHON_SERVED, ids=version_id)
def test_kafka_python_round_trip(
    bootstrap: str, admin: AdminClient, version: tuple[int, ...]
) -> None:
    topic = create_topic(admin)
    group = f"group-{uuid.uuid4().hex[:8]}"
    first, second = messages(0), messages(1)
    kafka_python_produce(bootstrap, topic, version, first)
    assert kafka_python_consume_group(bootstrap, topic, group, version, 4) == first
    # Restarted, the group resumes at its committed offset: only the new records.
    kafka_python_produce(bootstrap, topic, version, second)
    assert kafka_python_consume_group(bootstrap, topic, group, version, 4) == second


@pytest.mark.parametrize("version", KAFKA_PYTHON_REFUSED, ids=refused_id)
def test_kafka_python_below_0_11_is_refused_as_kafka_4_refuses_it(
    bootstrap: str, admin: AdminClient, caplog: pytest.LogCaptureFixture, version: tuple[int, ...]
) -> None:
    """KAFKA_4_REFUSES: Produce v2 and Fetch v2/v3 (message formats v0/v1) are gone in Kafka 4;
    the producer's batch expires after its delivery timeout and the consumer gets nothing."""
    topic = create_topic(admin)
    with pytest.raises(KafkaTimeoutError):
        kafka_python_produce(
            bootstrap,
            topic,
            version,
            messages(0, headers=False)[:1],
            request_timeout_ms=1000,
            delivery_timeout_ms=1500,
        )
    assert refused(caplog, PRODUCE), "the broker did not say why it closed the connection"
    # The data is there (written at today's versions); the pinned consumer cannot fetch it.
    kafka_python_produce(bootstrap, topic, (2, 1), messages(0))
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        api_version=version,
        group_id=f"group-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    try:
        deadline = time.monotonic() + 2
        received = []
        while time.monotonic() < deadline:
            received.extend(consumer.poll(timeout_ms=500).values())
    finally:
        consumer.close()
    assert received == []
    # 0.10.0 asks for the earliest offset with ListOffsets v0 (gone in Kafka 4) and stops there;
    # 0.10.1 and 0.10.2 get it with v1, then fetch with Fetch v3 (gone in Kafka 4).
    assert refused(caplog, LIST_OFFSETS if version == (0, 10, 0) else FETCH)


@pytest.mark.parametrize("version", KAFKA_PYTHON_SERVED, ids=version_id)
def test_kafka_python_transactions_offsets_by_time_and_admin(
    bootstrap: str, broker: Broker, version: tuple[int, ...], caplog: pytest.LogCaptureFixture
) -> None:
    """0.11+: idempotent and transactional produce, ListOffsets by timestamp (0.10.1+), and
    admin CreateTopics / DeleteTopics / DescribeConfigs at the pinned versions."""
    topic = f"old-{uuid.uuid4().hex[:8]}"
    doomed = topic + "-deleted"
    client = KafkaAdminClient(bootstrap_servers=bootstrap, api_version=version)
    try:
        client.create_topics(
            [
                NewTopic(topic, 1, 1, topic_configs={"retention.ms": "86400000"}),
                NewTopic(doomed, 1, 1),
            ]
        )
        if version < (1, 1):
            # KAFKA_4_REFUSES: DescribeConfigs v0 (Kafka 0.11 and 1.0) is gone in Kafka 4.
            with pytest.raises(KafkaConnectionError):
                client.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
            assert refused(caplog, DESCRIBE_CONFIGS)
        else:
            described = client.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
            assert described["topic"][topic]["retention.ms"]["value"] == "86400000"
        client.delete_topics([doomed])
        assert doomed not in client.list_topics()
    finally:
        client.close()

    idempotent, transactional = messages(0), messages(1)
    kafka_python_produce(bootstrap, topic, version, idempotent, enable_idempotence=True)
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, api_version=version, transactional_id=f"tx-{topic}"
    )
    try:
        producer.init_transactions()
        producer.begin_transaction()
        for key, value, headers, timestamp in transactional:
            producer.send(topic, key=key, value=value, headers=headers, timestamp_ms=timestamp)
        producer.commit_transaction()
        producer.begin_transaction()
        producer.send(topic, key=b"aborted", value=b"aborted", timestamp_ms=BASE_TIMESTAMP + 99)
        producer.abort_transaction()
    finally:
        producer.close(timeout=5)
    batches = stored_headers(broker, topic)
    assert all(header.producer_id >= 0 for header in batches)

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, api_version=version, isolation_level="read_committed"
    )
    try:
        partition = TopicPartition(topic, 0)
        found = consumer.offsets_for_times({partition: BASE_TIMESTAMP + 10})
        assert found[partition] is not None
        assert (found[partition].offset, found[partition].timestamp) == (4, BASE_TIMESTAMP + 10)
        consumer.assign([partition])
        consumer.seek_to_beginning(partition)
        received: list[Message] = []
        deadline = time.monotonic() + 20
        while len(received) < 8 and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                received.extend((m.key, m.value, list(m.headers), m.timestamp) for m in batch)
        for batch in consumer.poll(timeout_ms=500).values():
            received.extend((m.key, m.value, list(m.headers), m.timestamp) for m in batch)
    finally:
        consumer.close()
    assert received == idempotent + transactional


@pytest.mark.parametrize("version", KAFKA_PYTHON_COMPRESSION, ids=version_id)
def test_kafka_python_compression(
    bootstrap: str, admin: AdminClient, broker: Broker, version: tuple[int, ...]
) -> None:
    """Every codec the pinned version may use is stored as sent and read back intact (record
    format v2 from 0.11; zstd from 2.1)."""
    topic = create_topic(admin)
    codecs = [codec for codec in CODECS if codec != "zstd" or version >= (2, 1)]
    sent: list[Message] = []
    for batch, codec in enumerate(codecs):
        records = [(k, v * 50, h, t) for k, v, h, t in messages(batch)]
        kafka_python_produce(
            bootstrap, topic, version, records, compression_type=codec, linger_ms=20
        )
        sent.extend(records)
    assert stored_codecs(broker, topic) == {CODECS[codec] for codec in codecs}
    group = f"group-{uuid.uuid4().hex[:8]}"
    assert kafka_python_consume_group(bootstrap, topic, group, version, len(sent)) == sent


# Client limitation: kafka-python raises from KafkaProducer's constructor after it opened its
# wakeup socket pair, and never closes it (a ResourceWarning at garbage collection).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("version", [(0, 11), (2, 0)], ids=version_id)
def test_kafka_python_refuses_zstd_below_2_1(bootstrap: str, version: tuple[int, ...]) -> None:
    """Client limitation: zstd needs Produce v7 (Kafka 2.1); kafka-python refuses it itself."""
    with pytest.raises(ValueError, match="Zstd"):
        KafkaProducer(bootstrap_servers=bootstrap, api_version=version, compression_type="zstd")
    gc.collect()  # the leaked sockets are reported here, under this test's filter


# ---------------------------------------------------------------------------------------------
# aiokafka: `api_version` has been a no-op since 0.13 (a DeprecationWarning); it always asks the
# broker. A pinned aiokafka application runs as today's aiokafka.

AIOKAFKA_PINNED = ["0.10.2", "0.11", "1.0", "2.0"]


async def aiokafka_round_trip(bootstrap: str, topic: str, pinned: str) -> None:
    group = f"group-{uuid.uuid4().hex[:8]}"

    async def produce(records: list[Message]) -> None:
        with pytest.warns(DeprecationWarning, match="api_version"):
            producer = AIOKafkaProducer(bootstrap_servers=bootstrap, api_version=pinned)
        await producer.start()
        try:
            for key, value, headers, timestamp in records:
                await producer.send_and_wait(
                    topic, key=key, value=value, headers=headers, timestamp_ms=timestamp
                )
        finally:
            await producer.stop()

    async def consume(expected: int) -> list[Message]:
        with pytest.warns(DeprecationWarning, match="api_version"):
            consumer = AIOKafkaConsumer(
                topic,
                bootstrap_servers=bootstrap,
                api_version=pinned,
                group_id=group,
                auto_offset_reset="earliest",
                enable_auto_commit=False,
            )
        await consumer.start()
        received: list[Message] = []
        try:
            deadline = time.monotonic() + 30
            while len(received) < expected and time.monotonic() < deadline:
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    received.extend((m.key, m.value, list(m.headers), m.timestamp) for m in batch)
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                received.extend((m.key, m.value, list(m.headers), m.timestamp) for m in batch)
            await consumer.commit()
        finally:
            await consumer.stop()
        return received

    first, second = messages(0), messages(1)
    await produce(first)
    assert await consume(4) == first
    await produce(second)
    assert await consume(4) == second


@pytest.mark.parametrize("pinned", AIOKAFKA_PINNED)
def test_aiokafka_pinned_version_is_ignored(
    bootstrap: str, admin: AdminClient, pinned: str
) -> None:
    """Client limitation: aiokafka >= 0.13 cannot be pinned; with `api_version` set it warns and
    negotiates, so even "0.10.2" gets headers (record format v2) through a group."""
    asyncio.run(aiokafka_round_trip(bootstrap, create_topic(admin), pinned))


# ---------------------------------------------------------------------------------------------
# confluent-kafka (librdkafka 2.x): `api.version.request=false` + `broker.version.fallback`.
# librdkafka documents fallbacks >= 0.10 as "enables ApiVersionRequests": they negotiate like
# today's client; 0.9.0 and 0.8.x really pin (Produce v1 / v0, Metadata v0).

CONFLUENT_NEGOTIATED = ["0.10.0", "0.11.0", "1.0.0", "2.0.0"]
CONFLUENT_PRE_0_10 = ["0.8.2", "0.9.0"]


def pinned_config(bootstrap: str, fallback: str) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "api.version.request": False,
        "broker.version.fallback": fallback,
        # The deprecation warnings for both properties, not a failure.
        "log_level": 3,
    }


def confluent_produce(config: dict[str, Any], topic: str, records: list[Message]) -> None:
    producer = Producer(config)
    errors: list[Any] = []
    for key, value, headers, timestamp in records:
        producer.produce(
            topic,
            key=key,
            value=value,
            headers=headers,
            timestamp=timestamp,
            on_delivery=lambda error, _message: errors.append(error),
        )
    assert producer.flush(20) == 0
    assert errors == [None] * len(records)


def confluent_consume_group(
    config: dict[str, Any], topic: str, group: str, expected: int, **extra: Any
) -> list[Message]:
    consumer = Consumer(
        {
            **config,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            **extra,
        }
    )
    received: list[Message] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 30
        extra_poll_until = None
        while time.monotonic() < deadline:
            if len(received) >= expected:
                # Nothing past what was produced (no record twice).
                extra_poll_until = extra_poll_until or time.monotonic() + 0.5
                if time.monotonic() > extra_poll_until:
                    break
            message = consumer.poll(0.2)
            if message is None:
                continue
            assert message.error() is None, message.error()
            received.append(
                (
                    message.key(),
                    message.value(),
                    list(message.headers() or []),
                    message.timestamp()[1],
                )
            )
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return received


@pytest.mark.parametrize("fallback", CONFLUENT_NEGOTIATED)
def test_confluent_fallback_round_trip_transactions_and_codecs(
    bootstrap: str, broker: Broker, admin: AdminClient, fallback: str
) -> None:
    config = pinned_config(bootstrap, fallback)
    pinned_admin = AdminClient(config)
    topic, doomed = f"old-{uuid.uuid4().hex[:8]}", f"old-{uuid.uuid4().hex[:8]}"
    created = pinned_admin.create_topics(
        [
            ConfluentNewTopic(topic, 1, 1, config={"retention.ms": "86400000"}),
            ConfluentNewTopic(doomed, 1, 1),
        ]
    )
    for future in created.values():
        future.result(10)
    resource = ConfluentConfigResource(ResourceType.TOPIC, topic)
    described = pinned_admin.describe_configs([resource])[resource].result(10)
    assert described["retention.ms"].value == "86400000"
    pinned_admin.delete_topics([doomed])[doomed].result(10)
    group = f"group-{uuid.uuid4().hex[:8]}"
    first, second = messages(0), messages(1)
    confluent_produce(config, topic, first)
    assert confluent_consume_group(config, topic, group, 4) == first
    confluent_produce(config, topic, second)
    assert confluent_consume_group(config, topic, group, 4) == second
    # ListOffsets by timestamp: the first record at or after the second batch's first timestamp.
    consumer = Consumer({**config, "group.id": group})
    try:
        (found,) = consumer.offsets_for_times(
            [ConfluentTopicPartition(topic, 0, BASE_TIMESTAMP + 10)], timeout=10
        )
    finally:
        consumer.close()
    assert found.offset == 4

    # Transactional produce; read_committed sees the committed transaction only.
    transactional = messages(2)
    producer = Producer({**config, "transactional.id": f"tx-{topic}"})
    producer.init_transactions(10)
    producer.begin_transaction()
    for key, value, headers, timestamp in transactional:
        producer.produce(topic, key=key, value=value, headers=headers, timestamp=timestamp)
    producer.commit_transaction(10)
    producer.begin_transaction()
    producer.produce(topic, key=b"aborted", value=b"aborted")
    producer.abort_transaction(10)
    assert confluent_consume_group(config, topic, group, 4) == transactional

    # Each codec, stored as sent.
    compressed = create_topic(admin)
    sent: list[Message] = []
    for batch, codec in enumerate(CODECS):
        records = [(k, v * 50, h, t) for k, v, h, t in messages(batch)]
        confluent_produce(
            {**config, "compression.type": codec, "linger.ms": 20}, compressed, records
        )
        sent.extend(records)
    assert stored_codecs(broker, compressed) == set(CODECS.values())
    assert confluent_consume_group(config, compressed, group, len(sent)) == sent


@pytest.mark.parametrize("fallback", CONFLUENT_PRE_0_10, ids=refused_id)
def test_confluent_pre_0_10_fallback_fails_with_a_timeout(
    bootstrap: str, admin: AdminClient, fallback: str
) -> None:
    """KAFKA_4_REFUSES: the 0.8.x/0.9.0 tables produce with Produce v0/v1 (message formats
    v0/v1), which Kafka 4 refuses. Client limitation on top: librdkafka 2.16 does not get that
    far -- it cannot parse the one-topic Metadata v0 answer ("tmpabuf memory shortage"; the same
    62 bytes Kafka sends, which librdkafka 2.0 parses, see the kcat test). Either way the record
    fails with a local timeout after `message.timeout.ms`, not a hang."""
    topic = create_topic(admin)
    producer = Producer({**pinned_config(bootstrap, fallback), "message.timeout.ms": 1500})
    errors: list[Any] = []
    producer.produce(topic, value=b"v", on_delivery=lambda error, _m: errors.append(error))
    producer.flush(15)
    assert [error.code() for error in errors] == [KafkaError._MSG_TIMED_OUT]


# ---------------------------------------------------------------------------------------------
# kcat (Debian's build on librdkafka 2.0): `-X api.version.request=false -X
# broker.version.fallback=...`. As in librdkafka 2.x, fallbacks >= 0.10 negotiate.

#: (fallback, codec): every fallback and every codec once.
KCAT_NEGOTIATED = [("0.10.0", "gzip"), ("0.11.0", "snappy"), ("1.0.0", "lz4"), ("2.0.0", "zstd")]
# Produce v0 (0.8.2) and v1 (0.9.0).
KCAT_PRE_0_10 = {"0.8.2": 0, "0.9.0": 1}


def needs_kcat(test: Any) -> Any:
    """Marked `kcat`; skipped where the binary is not installed."""
    test = pytest.mark.kcat(test)
    return pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed")(test)


def kcat(
    bootstrap: str, fallback: str, *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "kcat",
            "-b",
            bootstrap,
            "-X",
            "api.version.request=false",
            "-X",
            f"broker.version.fallback={fallback}",
            *args,
        ],
        input=stdin,
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
    )


def kcat_produce(bootstrap: str, fallback: str, topic: str, lines: list[str], *args: str) -> None:
    produced = kcat(bootstrap, fallback, "-P", "-t", topic, *args, stdin="".join(lines))
    assert produced.returncode == 0, produced.stderr


def kcat_consume_group(bootstrap: str, fallback: str, topic: str, group: str) -> list[str]:
    """A balanced consumer in `group` from its committed offset to the end (then it commits and
    leaves): one `key|value|headers` line per record, NULL for a null key."""
    consumed = kcat(
        bootstrap,
        fallback,
        "-X",
        "auto.offset.reset=earliest",  # `-o` would override the committed offset
        "-G",
        group,
        topic,
        "-e",
        "-Z",
        "-f",
        "%k|%s|%h\n",
    )
    assert consumed.returncode == 0, consumed.stderr
    return consumed.stdout.splitlines()


@pytest.mark.parametrize(("fallback", "codec"), KCAT_NEGOTIATED)
@needs_kcat
def test_kcat_fallback_round_trip_with_codec(
    bootstrap: str, broker: Broker, admin: AdminClient, fallback: str, codec: str
) -> None:
    """Keyed and keyless records with a header, compressed with `codec` and stored so (this
    librdkafka compresses only when the broker lists Produce down to v0, as Kafka 4 does after
    KAFKA-18659), consumed through a group that resumes from its commit."""
    topic = create_topic(admin)
    group = f"group-{uuid.uuid4().hex[:8]}"
    padding = "x" * 500  # compressible: librdkafka sends a batch raw when it does not shrink
    kcat_produce(
        bootstrap, fallback, topic, [f"k0:a{padding}\n"], "-K", ":", "-H", "h=1", "-z", codec
    )
    kcat_produce(bootstrap, fallback, topic, [f"b{padding}\n"], "-z", codec)
    assert stored_codecs(broker, topic) == {CODECS[codec]}
    assert kcat_consume_group(bootstrap, fallback, topic, group) == [
        f"k0|a{padding}|h=1",
        f"NULL|b{padding}|",
    ]
    kcat_produce(bootstrap, fallback, topic, ["k1:c\n"], "-K", ":", "-z", codec)
    assert kcat_consume_group(bootstrap, fallback, topic, group) == ["k1|c|"]


@pytest.mark.parametrize(
    ("fallback", "produce_version"),
    [pytest.param(*item, id=refused_id(item[0])) for item in KCAT_PRE_0_10.items()],
)
@needs_kcat
def test_kcat_pre_0_10_fallback_is_refused_as_kafka_4_refuses_it(
    bootstrap: str,
    admin: AdminClient,
    caplog: pytest.LogCaptureFixture,
    fallback: str,
    produce_version: int,
) -> None:
    """KAFKA_4_REFUSES: Produce v0/v1 is gone in Kafka 4; the broker closes the connection on
    it and says why, and kcat stops with "All broker connections are down" and exit status 1."""
    topic = create_topic(admin)
    produced = kcat(
        bootstrap, fallback, "-P", "-t", topic, "-X", "message.timeout.ms=3000", stdin="v\n"
    )
    assert produced.returncode == 1
    assert "ERROR" in produced.stderr
    assert any(f"version {produce_version} " in line for line in refused(caplog, PRODUCE))
