"""Protocol-level behaviour with raw frames: version negotiation, bad input, ordering, acks."""

from __future__ import annotations

import datetime
import struct
import uuid
from typing import Any

import pytest
from kio.schema.errors import ErrorCode
from raw_client import RawClient, encode_body, encode_request, request_of

from odradek.broker.server import Broker
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import nested, request_module
from odradek.protocol.record_batch import COMPRESSION_GZIP, Record, encode_batch

TIMEOUT = datetime.timedelta(seconds=5)


def create_topic(client: RawClient, name: str, partitions: int = 1, **configs: str) -> None:
    module = request_module(ApiKey.CREATE_TOPICS, 7)
    topic = nested(module, "CreatableTopic")(
        name=name,
        num_partitions=partitions,
        replication_factor=1,
        assignments=(),
        configs=tuple(
            nested(module, "CreatableTopicConfig")(name=key.replace("_", "."), value=value)
            for key, value in configs.items()
        ),
    )
    response = client.request(
        request_of(ApiKey.CREATE_TOPICS, 7)(topics=(topic,), timeout=TIMEOUT, validate_only=False)
    )
    assert response.topics[0].error_code == ErrorCode.none


def produce_request(
    version: int, topic: str, records: bytes | None, acks: int = 1, partition: int = 0
) -> Any:
    module = request_module(ApiKey.PRODUCE, version)
    return request_of(ApiKey.PRODUCE, version)(
        transactional_id=None,
        acks=acks,
        timeout=TIMEOUT,
        topic_data=(
            nested(module, "TopicProduceData")(
                name=topic,
                partition_data=(
                    nested(module, "PartitionProduceData")(index=partition, records=records),
                ),
            ),
        ),
    )


def latest_offset(client: RawClient, topic: str, partition: int = 0) -> int:
    module = request_module(ApiKey.LIST_OFFSETS, 7)
    response = client.request(
        request_of(ApiKey.LIST_OFFSETS, 7)(
            replica_id=-1,
            isolation_level=0,
            topics=(
                nested(module, "ListOffsetsTopic")(
                    name=topic,
                    partitions=(
                        nested(module, "ListOffsetsPartition")(
                            partition_index=partition, current_leader_epoch=-1, timestamp=-1
                        ),
                    ),
                ),
            ),
        )
    )
    result = response.topics[0].partitions[0]
    assert result.error_code == ErrorCode.none
    return int(result.offset)


def batch(count: int = 3, **kwargs: Any) -> bytes:
    return encode_batch(
        [Record(key=b"k%d" % i, value=b"v%d" % i, timestamp=1000 + i) for i in range(count)],
        **kwargs,
    )


@pytest.fixture
def client(odradek_broker: Broker) -> Any:
    with RawClient(odradek_broker.bootstrap_servers) as raw:
        yield raw


@pytest.mark.parametrize("version", [0, 1, 2, 3, 4])
def test_api_versions_every_version(client: RawClient, version: int) -> None:
    request = request_of(ApiKey.API_VERSIONS, version)
    entity = (
        request(client_software_name="raw", client_software_version="1")
        if version >= 3
        else request()
    )
    response = client.request(entity, version)
    assert response.error_code == ErrorCode.none
    advertised = {
        entry.api_key: (entry.min_version, entry.max_version) for entry in response.api_keys
    }
    # Produce v3+ is served; v0 is listed as Kafka 4 lists it (KAFKA-18659) so that older
    # librdkafka keeps compressing.
    assert advertised[ApiKey.PRODUCE] == (0, 12)
    assert advertised[ApiKey.FETCH] == (4, 17)
    assert ApiKey.API_VERSIONS in advertised
    if version >= 3:
        # KIP-890 part 2 is implemented whole, so transaction.version 2 is finalized.
        supported = {(f.name, f.min_version, f.max_version) for f in response.supported_features}
        assert ("transaction.version", 0, 2) in supported
        finalized = {
            (f.name, f.min_version_level, f.max_version_level) for f in response.finalized_features
        }
        assert ("transaction.version", 2, 2) in finalized
        assert response.finalized_features_epoch >= 0


def test_unknown_api_versions_version_gets_v0_unsupported_answer(client: RawClient) -> None:
    # ApiVersions v9 does not exist: the answer is v0-format UNSUPPORTED_VERSION with ranges.
    client.send_raw(encode_request(ApiKey.API_VERSIONS, 9, b"\x00\x00\x00", 7, flexible=True))
    correlation_id, response = client.read_response(ApiKey.API_VERSIONS, 0)
    assert correlation_id == 7
    assert response.error_code == ErrorCode.unsupported_version
    assert {entry.api_key for entry in response.api_keys} >= {ApiKey.PRODUCE, ApiKey.FETCH}


@pytest.mark.parametrize(
    ("api_key", "api_version"),
    [(ApiKey.PRODUCE, 2), (ApiKey.PRODUCE, 13), (ApiKey.FETCH, 18), (11, 5), (9999, 0)],
)
def test_unsupported_api_or_version_closes_the_connection(
    odradek_broker: Broker, api_key: int, api_version: int
) -> None:
    with RawClient(odradek_broker.bootstrap_servers) as raw:
        raw.send_raw(encode_request(api_key, api_version, b"\x00" * 8, 1, flexible=False))
        assert raw.read_frame() == b""
    # The broker is unharmed: a new connection works.
    with RawClient(odradek_broker.bootstrap_servers) as raw:
        assert raw.request(request_of(ApiKey.API_VERSIONS, 0)()).error_code == ErrorCode.none


def test_malformed_body_closes_only_that_connection(odradek_broker: Broker) -> None:
    with RawClient(odradek_broker.bootstrap_servers) as bystander:
        with RawClient(odradek_broker.bootstrap_servers) as raw:
            raw.send_raw(encode_request(ApiKey.METADATA, 12, b"\xff\xff\xff", 1))
            assert raw.read_frame() == b""
        assert bystander.request(request_of(ApiKey.API_VERSIONS, 0)()).error_code == 0


def test_frame_over_socket_request_max_bytes_is_refused_before_buffering(tmp_path: Any) -> None:
    with Broker(data_dir=tmp_path, config={"socket.request.max.bytes": "1000"}) as broker:
        with RawClient(broker.bootstrap_servers) as raw:
            # Only the size prefix is sent: the broker must refuse without waiting for the body.
            raw.send_raw(struct.pack(">i", 50_000_000))
            assert raw.read_frame() == b""
        with RawClient(broker.bootstrap_servers) as raw:
            raw.send_raw(struct.pack(">i", -5))
            assert raw.read_frame() == b""


def test_truncated_header_closes(client: RawClient) -> None:
    client.send_raw(struct.pack(">i", 3) + b"\x00\x03\x00")
    assert client.read_frame() == b""


def test_unknown_tagged_fields_are_skipped(client: RawClient) -> None:
    body = encode_body(
        request_of(ApiKey.METADATA, 12)(
            topics=None, allow_auto_topic_creation=False, include_topic_authorized_operations=False
        )
    )
    # Header and body both carry an unknown tagged field (tag 42, 2 bytes).
    body = body[:-1] + b"\x01\x2a\x02\xab\xcd"
    client.send_raw(encode_request(ApiKey.METADATA, 12, body, 5, header_tags=b"\x01\x2a\x01\xee"))
    correlation_id, response = client.read_response(ApiKey.METADATA, 12)
    assert correlation_id == 5
    assert len(response.brokers) == 1


def test_bad_crc_is_corrupt_message_and_appends_nothing(client: RawClient) -> None:
    create_topic(client, "crc")
    good = bytearray(batch())
    good[-1] ^= 0xFF
    response = client.request(produce_request(10, "crc", bytes(good)))
    assert response.responses[0].partition_responses[0].error_code == ErrorCode.corrupt_message
    assert latest_offset(client, "crc") == 0


def test_batch_over_max_message_bytes(client: RawClient) -> None:
    create_topic(client, "small", max_message_bytes="500")
    big = encode_batch([Record(key=None, value=b"x" * 1000)])
    response = client.request(produce_request(10, "small", big))
    assert response.responses[0].partition_responses[0].error_code == ErrorCode.message_too_large
    ok = client.request(produce_request(10, "small", batch()))
    assert ok.responses[0].partition_responses[0].error_code == ErrorCode.none
    assert latest_offset(client, "small") == 3


def test_two_batches_in_one_partition_are_invalid_record(client: RawClient) -> None:
    create_topic(client, "two-batches")
    response = client.request(produce_request(10, "two-batches", batch(1) + batch(1)))
    assert response.responses[0].partition_responses[0].error_code == ErrorCode.invalid_record
    assert latest_offset(client, "two-batches") == 0


def test_produce_to_unknown_topic_or_partition(client: RawClient) -> None:
    response = client.request(produce_request(10, "nope", batch()))
    assert (
        response.responses[0].partition_responses[0].error_code
        == ErrorCode.unknown_topic_or_partition
    )
    create_topic(client, "one")
    response = client.request(produce_request(10, "one", batch(), partition=3))
    assert (
        response.responses[0].partition_responses[0].error_code
        == ErrorCode.unknown_topic_or_partition
    )


def test_invalid_required_acks(client: RawClient) -> None:
    create_topic(client, "acks")
    response = client.request(produce_request(10, "acks", batch(), acks=2))
    assert (
        response.responses[0].partition_responses[0].error_code == ErrorCode.invalid_required_acks
    )


@pytest.mark.parametrize("version", range(3, 11))
def test_produce_every_version_assigns_contiguous_offsets(client: RawClient, version: int) -> None:
    create_topic(client, f"produce-v{version}")
    first = client.request(produce_request(version, f"produce-v{version}", batch(3)), version)
    second = client.request(
        produce_request(version, f"produce-v{version}", batch(2, compression=COMPRESSION_GZIP)),
        version,
    )
    assert first.responses[0].partition_responses[0].base_offset == 0
    assert second.responses[0].partition_responses[0].base_offset == 3
    assert latest_offset(client, f"produce-v{version}") == 5


def test_acks_zero_gets_no_response_and_ordering_holds(client: RawClient) -> None:
    create_topic(client, "fire")
    client.send(produce_request(10, "fire", batch(), acks=0))
    # The next response on the connection belongs to the next request.
    assert latest_offset(client, "fire") == 3


def test_pipelined_requests_answer_in_order(client: RawClient) -> None:
    create_topic(client, "pipe")
    ids = [client.send(produce_request(10, "pipe", batch(1))) for _ in range(20)]
    got = [client.read_response(ApiKey.PRODUCE, 10) for _ in ids]
    assert [correlation_id for correlation_id, _ in got] == ids
    assert [r.responses[0].partition_responses[0].base_offset for _, r in got] == list(range(20))


def test_large_frames_in_pieces_and_frames_glued_together(client: RawClient) -> None:
    create_topic(client, "large", max_message_bytes=str(4 << 20))
    big = encode_batch([Record(key=None, value=bytes(range(256)) * 8192)])  # 2 MiB
    small = batch(1)
    frames = b"".join(
        encode_request(ApiKey.PRODUCE, 10, encode_body(produce_request(10, "large", records)), i)
        for i, records in enumerate([small, big, small, big, small], start=100)
    )
    # Odd-sized pieces: size prefixes and frames straddle every read boundary.
    for start in range(0, len(frames), 77_777):
        client.send_raw(frames[start : start + 77_777])
    offsets = []
    for expected in range(100, 105):
        correlation_id, response = client.read_response(ApiKey.PRODUCE, 10)
        assert correlation_id == expected
        partition = response.responses[0].partition_responses[0]
        assert partition.error_code == ErrorCode.none
        offsets.append(partition.base_offset)
    assert offsets == [0, 1, 2, 3, 4]


def test_acks_all_is_fsynced_before_the_answer(odradek_broker: Broker, client: RawClient) -> None:
    create_topic(client, "durable")
    response = client.request(produce_request(10, "durable", batch(5), acks=-1))
    assert response.responses[0].partition_responses[0].error_code == ErrorCode.none
    assert odradek_broker.context is not None
    log = odradek_broker.context.logs.log("durable", 0)
    assert log is not None
    assert log.recovery_point >= 5


def test_acks_one_does_not_wait_for_fsync(odradek_broker: Broker, client: RawClient) -> None:
    create_topic(client, "fast")
    client.request(produce_request(10, "fast", batch(5), acks=1))
    assert odradek_broker.context is not None
    log = odradek_broker.context.logs.log("fast", 0)
    assert log is not None
    assert log.recovery_point == 0


def test_min_insync_replicas_above_isr_refuses_acks_all(client: RawClient) -> None:
    create_topic(client, "needs-two", min_insync_replicas="2")
    refused = client.request(produce_request(10, "needs-two", batch(), acks=-1))
    assert refused.responses[0].partition_responses[0].error_code == ErrorCode.not_enough_replicas
    accepted = client.request(produce_request(10, "needs-two", batch(), acks=1))
    assert accepted.responses[0].partition_responses[0].error_code == ErrorCode.none
    assert latest_offset(client, "needs-two") == 3


def fetch_request(version: int, topic: str, topic_id: uuid.UUID, offset: int, **kw: Any) -> Any:
    module = request_module(ApiKey.FETCH, version)
    partition = nested(module, "FetchPartition")
    fields = partition.__dataclass_fields__
    partition_values = {
        "partition": 0,
        "current_leader_epoch": -1,
        "fetch_offset": offset,
        "last_fetched_epoch": -1,
        "log_start_offset": -1,
        "partition_max_bytes": kw.get("partition_max_bytes", 1 << 20),
    }
    topic_type = nested(module, "FetchTopic")
    topic_values = {"topic": topic, "topic_id": topic_id}
    request_type = request_of(ApiKey.FETCH, version)
    request_values: dict[str, Any] = {
        "cluster_id": None,
        "replica_id": -1,
        "replica_state": nested(module, "ReplicaState")(replica_id=-1, replica_epoch=-1)
        if "ReplicaState" in vars(module)
        else None,
        "max_wait": datetime.timedelta(milliseconds=kw.get("max_wait_ms", 0)),
        "min_bytes": kw.get("min_bytes", 0),
        "max_bytes": kw.get("max_bytes", 1 << 24),
        "isolation_level": kw.get("isolation_level", 0),
        "session_id": 0,
        "session_epoch": -1,
        "topics": (
            topic_type(
                **{k: v for k, v in topic_values.items() if k in topic_type.__dataclass_fields__},
                partitions=(
                    partition(**{k: v for k, v in partition_values.items() if k in fields}),
                ),
            ),
        ),
        "forgotten_topics_data": (),
        "rack_id": "",
    }
    return request_type(
        **{k: v for k, v in request_values.items() if k in request_type.__dataclass_fields__}
    )


@pytest.mark.parametrize("version", range(4, 18))
@pytest.mark.parametrize("isolation_level", [0, 1])
def test_fetch_every_version(
    odradek_broker: Broker, client: RawClient, version: int, isolation_level: int
) -> None:
    name = f"fetch-v{version}-{isolation_level}"
    create_topic(client, name)
    client.request(produce_request(10, name, batch(4)))
    assert odradek_broker.context is not None
    topic_id = odradek_broker.context.logs.topics()[name].topic_id
    response = client.request(
        fetch_request(version, name, topic_id, 0, isolation_level=isolation_level), version
    )
    partition = response.responses[0].partitions[0]
    assert partition.error_code == ErrorCode.none
    assert partition.high_watermark == 4
    assert partition.last_stable_offset == 4
    if version >= 5:
        assert partition.log_start_offset == 0
    # Kafka sends null to read_uncommitted and a (here empty) list to read_committed.
    assert partition.aborted_transactions == (() if isolation_level else None)
    if version >= 11:
        assert partition.preferred_read_replica == -1
    assert partition.records is not None
    assert len(partition.records) > 0
    out_of_range = client.request(fetch_request(version, name, topic_id, 99), version)
    assert out_of_range.responses[0].partitions[0].error_code == ErrorCode.offset_out_of_range


def test_fetch_unknown_topic_id(client: RawClient) -> None:
    response = client.request(fetch_request(16, "", uuid.uuid4(), 0), 16)
    assert response.responses[0].partitions[0].error_code == ErrorCode.unknown_topic_id


def test_fetch_long_poll_returns_empty_after_max_wait(
    odradek_broker: Broker, client: RawClient
) -> None:
    create_topic(client, "idle")
    assert odradek_broker.context is not None
    topic_id = odradek_broker.context.logs.topics()["idle"].topic_id
    response = client.request(
        fetch_request(16, "idle", topic_id, 0, min_bytes=1, max_wait_ms=200), 16
    )
    partition = response.responses[0].partitions[0]
    assert partition.error_code == ErrorCode.none
    assert partition.records in (b"", None)


# -- the records' shape, as Kafka's ProduceRequest.validateRecords checks it ---------------------


def _with_magic(records: bytes, magic: int) -> bytes:
    patched = bytearray(records)
    patched[16] = magic
    return bytes(patched)


def _with_length(records: bytes, batch_length: int) -> bytes:
    patched = bytearray(records)
    struct.pack_into(">i", patched, 8, batch_length)
    return bytes(patched)


# A legacy v1 message set of one message: offset, size, crc, magic 1, attributes, timestamp,
# null key, 1-byte value. Kafka reads it as a complete (legacy) batch, then refuses its magic.
_LEGACY_V1 = struct.pack(">qiIbbqii", 0, 23, 0, 1, 0, 1000, -1, 1) + b"v"

_ONE_BATCH = "must have at least one record batch per partition"
_MAGIC_2 = "are only allowed to contain record batches with magic version 2"
_EXACTLY_ONE = "are only allowed to contain exactly one record batch per partition"


_SHAPES = [
    ("magic 0", _with_magic(batch(), 0), ErrorCode.invalid_record, _MAGIC_2),
    ("magic 1", _with_magic(batch(), 1), ErrorCode.invalid_record, _MAGIC_2),
    ("legacy v1 message set", _LEGACY_V1, ErrorCode.invalid_record, _MAGIC_2),
    ("truncated by one byte", batch()[:-1], ErrorCode.invalid_record, _ONE_BATCH),
    ("truncated header", batch()[:40], ErrorCode.invalid_record, _ONE_BATCH),
    ("truncated before the magic", batch()[:15], ErrorCode.invalid_record, _ONE_BATCH),
    ("shorter than a length field", batch()[:10], ErrorCode.invalid_record, _ONE_BATCH),
    ("two batches", batch(1) + batch(1), ErrorCode.invalid_record, _EXACTLY_ONE),
    ("length below any format", _with_length(batch(), 13), ErrorCode.corrupt_message, None),
    ("unknown magic", _with_magic(batch(), 3), ErrorCode.corrupt_message, None),
    ("negative magic", _with_magic(batch(), 0xFF), ErrorCode.corrupt_message, None),
    (
        "a second batch with a length below any format",
        batch(1) + _with_length(batch(1), 5)[:20],
        ErrorCode.corrupt_message,
        None,
    ),
]


@pytest.mark.parametrize(
    ("shape", "records", "error", "message"), _SHAPES, ids=[shape[0] for shape in _SHAPES]
)
def test_produce_records_shape_gets_kafkas_error(
    client: RawClient, shape: str, records: bytes, error: ErrorCode, message: str | None
) -> None:
    topic = "shape-" + shape.replace(" ", "-")
    create_topic(client, topic)
    response = client.request(produce_request(10, topic, records))
    partition = response.responses[0].partition_responses[0]
    assert partition.error_code == error, shape
    if message is not None:
        assert partition.error_message == f"Produce requests with version 10 {message}"
    assert latest_offset(client, topic) == 0


def test_produce_trailing_partial_batch_is_trimmed_as_kafka_does(client: RawClient) -> None:
    # Kafka's batch iterator ends at an incomplete batch and UnifiedLog trims the bytes after the
    # last complete one: the first batch is appended, the partial second is not.
    create_topic(client, "trailing")
    response = client.request(produce_request(10, "trailing", batch(3) + batch(2)[:70]))
    assert response.responses[0].partition_responses[0].error_code == ErrorCode.none
    assert latest_offset(client, "trailing") == 3
    assert (
        client.request(produce_request(10, "trailing", batch(2)))
        .responses[0]
        .partition_responses[0]
        .base_offset
        == 3
    )


def test_zstd_before_produce_v7_is_unsupported_compression_type(client: RawClient) -> None:
    create_topic(client, "zstd-v6")
    zstd = batch(compression=4)
    refused = client.request(produce_request(6, "zstd-v6", zstd), 6)
    assert (
        refused.responses[0].partition_responses[0].error_code
        == ErrorCode.unsupported_compression_type
    )
    assert latest_offset(client, "zstd-v6") == 0
    accepted = client.request(produce_request(7, "zstd-v6", zstd), 7)
    assert accepted.responses[0].partition_responses[0].error_code == ErrorCode.none
    assert latest_offset(client, "zstd-v6") == 3


def test_failed_acks_zero_produce_closes_the_connection(
    client: RawClient, caplog: pytest.LogCaptureFixture
) -> None:
    # KafkaApis: an acks=0 producer reads no answer, so an error is told by closing the
    # connection (the client then refreshes its metadata); answers to earlier requests go first.
    create_topic(client, "fire-and-fail")
    earlier = client.send(produce_request(10, "fire-and-fail", batch(), acks=1))
    with caplog.at_level("WARNING", logger="odradek.broker.connection"):
        client.send(produce_request(10, "no-such-topic", batch(), acks=0))
        correlation_id, response = client.read_response(ApiKey.PRODUCE, 10)
        assert correlation_id == earlier
        assert response.responses[0].partition_responses[0].error_code == ErrorCode.none
        assert client.read_frame() == b""
    closing = [record for record in caplog.records if "with ack=0" in record.getMessage()]
    assert len(closing) == 1
    assert closing[0].exc_info is None
    assert "no-such-topic-0: UNKNOWN_TOPIC_OR_PARTITION" in closing[0].getMessage()


def test_failed_acks_zero_produce_with_bad_records_closes_and_appends_nothing(
    odradek_broker: Broker,
) -> None:
    with RawClient(odradek_broker.bootstrap_servers) as raw:
        create_topic(raw, "fire-bad")
        raw.send(produce_request(10, "fire-bad", batch(1) + batch(1), acks=0))
        assert raw.read_frame() == b""
    with RawClient(odradek_broker.bootstrap_servers) as raw:
        assert latest_offset(raw, "fire-bad") == 0
