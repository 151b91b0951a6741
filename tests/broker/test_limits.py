"""Inputs at Kafka's legal limits work end to end and across a restart; inputs just past them get
Kafka's error code, the connection stays usable and the broker logs no traceback.

Limits (Kafka's): topic names up to 249 characters of [a-zA-Z0-9._-] (Topic.validate), group and
transactional ids up to 32767 bytes (an int16-length string), at most 10000 partitions per
CreateTopics request (ReplicationControlManager.MAX_PARTITIONS_PER_BATCH), a batch of at most
`message.max.bytes` / `max.message.bytes` (12-byte log overhead included), a request frame of at
most `socket.request.max.bytes`, and a produce partition with at least one batch
(ProduceRequest.validateRecords).
"""

from __future__ import annotations

import dataclasses
import datetime
import struct
import typing
import uuid
from pathlib import Path
from typing import Any

import crc32c
import pytest
from kio.schema.errors import ErrorCode
from raw_client import RawClient, child, commit, committed, encode_body, encode_request, request_of
from test_protocol_edges import latest_offset, produce_request

from odradek.broker import dispatcher
from odradek.broker.server import Broker
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import make, request_type
from odradek.protocol.record_batch import Record, encode_batch

pytestmark = pytest.mark.timeout(60)

LONGEST_TOPIC = "t" * 249
LONGEST_GROUP = "g" * 32767
LONGEST_TRANSACTIONAL_ID = "x" * 32767
TIMEOUT = datetime.timedelta(seconds=5)
LIST_TYPE = 7  # Kafka's ConfigType.LIST in DescribeConfigs v3+
TOPIC_RESOURCE = 2


def create_topics(
    client: RawClient,
    topics: list[tuple[str, int, int, dict[str, str]]],
    validate_only: bool = False,
    version: int = 7,
) -> list[Any]:
    """(name, partitions, replication factor, configs) each; returns the per-topic results."""
    entries = tuple(
        child(
            ApiKey.CREATE_TOPICS,
            version,
            "CreatableTopic",
            name=name,
            num_partitions=partitions,
            replication_factor=replication_factor,
            assignments=(),
            configs=tuple(
                child(ApiKey.CREATE_TOPICS, version, "CreatableTopicConfig", name=k, value=v)
                for k, v in configs.items()
            ),
        )
        for name, partitions, replication_factor, configs in topics
    )
    response = client.request(
        make(
            request_type(ApiKey.CREATE_TOPICS, version),
            topics=entries,
            timeout=TIMEOUT,
            validate_only=validate_only,
        ),
        version,
    )
    return list(response.topics)


def create_one(client: RawClient, name: str, partitions: int = 1, **configs: str) -> Any:
    """`configs` by Kafka name, or with '_' for '.' (max_message_bytes)."""
    named = {key.replace("_", "."): value for key, value in configs.items()}
    (result,) = create_topics(client, [(name, partitions, 1, named)])
    return result


def still_answers(client: RawClient) -> bool:
    return bool(client.request(request_of(ApiKey.API_VERSIONS, 0)()).error_code == ErrorCode.none)


def produce_error(client: RawClient, topic: str, records: bytes | None, partition: int = 0) -> int:
    response = client.request(produce_request(10, topic, records, partition=partition))
    return int(response.responses[0].partition_responses[0].error_code)


def init_producer_id(client: RawClient, transactional_id: str | None) -> Any:
    return client.request(
        make(
            request_type(ApiKey.INIT_PRODUCER_ID, 4),
            transactional_id=transactional_id,
            transaction_timeout=datetime.timedelta(seconds=60),
            producer_id=-1,
            producer_epoch=-1,
        ),
        4,
    )


def describe_topic_configs(client: RawClient, topic: str, version: int = 4) -> dict[str, Any]:
    resource = child(
        ApiKey.DESCRIBE_CONFIGS,
        version,
        "DescribeConfigsResource",
        resource_type=TOPIC_RESOURCE,
        resource_name=topic,
        configuration_keys=None,
    )
    response = client.request(
        make(
            request_type(ApiKey.DESCRIBE_CONFIGS, version),
            resources=(resource,),
            include_synonyms=True,
            include_documentation=False,
        ),
        version,
    )
    (result,) = response.results
    assert result.error_code == ErrorCode.none
    return {entry.name: entry for entry in result.configs}


def alter_configs(client: RawClient, topic: str, configs: dict[str, str]) -> tuple[int, Any]:
    """Legacy AlterConfigs (v1): the topic's overrides become exactly `configs`."""
    resource = child(
        ApiKey.ALTER_CONFIGS,
        1,
        "AlterConfigsResource",
        resource_type=TOPIC_RESOURCE,
        resource_name=topic,
        configs=tuple(
            child(ApiKey.ALTER_CONFIGS, 1, "AlterableConfig", name=k, value=v)
            for k, v in configs.items()
        ),
    )
    response = client.request(
        make(request_type(ApiKey.ALTER_CONFIGS, 1), resources=(resource,), validate_only=False),
        1,
    )
    (result,) = response.responses
    return int(result.error_code), result.error_message


SET, DELETE, APPEND, SUBTRACT = 0, 1, 2, 3


def incremental_alter(
    client: RawClient, topic: str, operations: list[tuple[str, int, str | None]]
) -> tuple[int, Any]:
    version = 1
    resource = child(
        ApiKey.INCREMENTAL_ALTER_CONFIGS,
        version,
        "AlterConfigsResource",
        resource_type=TOPIC_RESOURCE,
        resource_name=topic,
        configs=tuple(
            child(
                ApiKey.INCREMENTAL_ALTER_CONFIGS,
                version,
                "AlterableConfig",
                name=name,
                config_operation=operation,
                value=value,
            )
            for name, operation, value in operations
        ),
    )
    response = client.request(
        make(
            request_type(ApiKey.INCREMENTAL_ALTER_CONFIGS, version),
            resources=(resource,),
            validate_only=False,
        ),
        version,
    )
    (result,) = response.responses
    return int(result.error_code), result.error_message


def test_longest_names_ids_and_smallest_batches_work_and_survive_a_restart(
    tmp_path: Path, no_tracebacks: None
) -> None:
    with Broker(data_dir=tmp_path) as broker, RawClient(broker.bootstrap_servers) as client:
        assert create_one(client, LONGEST_TOPIC, 2).error_code == ErrorCode.none
        # Just past the limits: Kafka's INVALID_TOPIC_EXCEPTION, and the connection stays up.
        for name in ("t" * 250, ".", "..", "", "bad/name"):
            result = create_one(client, name)
            assert result.error_code == ErrorCode.invalid_topic_exception, name
        assert create_one(client, "dots.and_underscores").error_code == ErrorCode.none
        # '.' and '_' collide in metric names: Kafka refuses the second topic.
        colliding = create_one(client, "dots_and.underscores")
        assert colliding.error_code == ErrorCode.invalid_topic_exception
        assert still_answers(client)

        # The smallest batch: one record, null key and null value; then one with headers.
        tiny = encode_batch([Record(key=None, value=None)])
        assert produce_error(client, LONGEST_TOPIC, tiny) == ErrorCode.none
        with_headers = encode_batch(
            [Record(key=b"k", value=b"", headers=[("h" * 1000, None), ("", b"v" * 1000)])]
        )
        assert produce_error(client, LONGEST_TOPIC, with_headers, partition=1) == ErrorCode.none
        # Nothing to append is INVALID_RECORD (not retriable), as ProduceRequest.validateRecords.
        empty_batch = bytearray(encode_batch([Record(key=None, value=b"v")]))
        struct.pack_into(">i", empty_batch, 57, 0)  # record count 0 ...
        struct.pack_into(">I", empty_batch, 17, crc32c.crc32c(empty_batch[21:]))  # ... valid CRC
        for records in (b"", None, bytes(empty_batch)):
            assert produce_error(client, LONGEST_TOPIC, records) == ErrorCode.invalid_record
        assert latest_offset(client, LONGEST_TOPIC, 0) == 1
        assert latest_offset(client, LONGEST_TOPIC, 1) == 1

        assert commit(client, LONGEST_GROUP, LONGEST_TOPIC, 1, 1) == ErrorCode.none
        assert committed(client, LONGEST_GROUP, LONGEST_TOPIC, 1) == 1
        first = init_producer_id(client, LONGEST_TRANSACTIONAL_ID)
        assert first.error_code == ErrorCode.none
        # An empty transactional id is not a transactional id: Kafka answers INVALID_REQUEST.
        assert init_producer_id(client, "").error_code == ErrorCode.invalid_request
        assert still_answers(client)

    with Broker(data_dir=tmp_path) as broker, RawClient(broker.bootstrap_servers) as client:
        assert latest_offset(client, LONGEST_TOPIC, 0) == 1
        assert latest_offset(client, LONGEST_TOPIC, 1) == 1
        assert committed(client, LONGEST_GROUP, LONGEST_TOPIC, 1) == 1
        again = init_producer_id(client, LONGEST_TRANSACTIONAL_ID)
        assert again.error_code == ErrorCode.none
        assert again.producer_id == first.producer_id
        assert again.producer_epoch == first.producer_epoch + 1
        assert create_one(client, LONGEST_TOPIC).error_code == ErrorCode.topic_already_exists
        assert produce_error(client, LONGEST_TOPIC, tiny) == ErrorCode.none


def test_transactional_id_too_large_for_its_topic_is_refused_as_kafka_does(
    tmp_path: Path, no_tracebacks: None
) -> None:
    # A 32767-byte id cannot fit a 4000-byte message.max.bytes (which __transaction_state
    # inherits, as in Kafka): UNKNOWN_SERVER_ERROR, not a retriable NOT_COORDINATOR forever.
    config = {"message.max.bytes": "4000"}
    with (
        Broker(data_dir=tmp_path, config=config) as broker,
        RawClient(broker.bootstrap_servers) as client,
    ):
        refused = init_producer_id(client, LONGEST_TRANSACTIONAL_ID)
        assert refused.error_code == ErrorCode.unknown_server_error
        assert init_producer_id(client, "short").error_code == ErrorCode.none
        assert init_producer_id(client, "x" * 3000).error_code == ErrorCode.none


def batch_of_size(size: int) -> bytes:
    """One uncompressed batch of exactly `size` bytes, log overhead included."""
    records = encode_batch([Record(key=None, value=b"")])
    value = b"v" * (size - len(records))
    batch = encode_batch([Record(key=None, value=value)])
    # The record's value length is a varint: trim if its own length byte(s) grew.
    batch = encode_batch([Record(key=None, value=value[: len(value) - (len(batch) - size)])])
    assert len(batch) == size
    return batch


def test_batch_at_message_max_bytes_is_accepted_one_byte_more_is_refused(
    tmp_path: Path, no_tracebacks: None
) -> None:
    with (
        Broker(data_dir=tmp_path, config={"message.max.bytes": "5000"}) as broker,
        RawClient(broker.bootstrap_servers) as client,
    ):
        assert create_one(client, "broker-limit").error_code == ErrorCode.none
        assert create_one(client, "topic-limit", max_message_bytes="300").error_code == 0
        for topic, limit in (("broker-limit", 5000), ("topic-limit", 300)):
            assert produce_error(client, topic, batch_of_size(limit)) == ErrorCode.none
            over = produce_error(client, topic, batch_of_size(limit + 1))
            assert over == ErrorCode.message_too_large
            assert produce_error(client, topic, batch_of_size(61 + 7)) == ErrorCode.none
            assert latest_offset(client, topic) == 2


def test_frame_at_socket_request_max_bytes_is_read_one_byte_more_closes(
    tmp_path: Path, no_tracebacks: None
) -> None:
    limit = 4000
    config = {"socket.request.max.bytes": str(limit)}
    with Broker(data_dir=tmp_path, config=config) as broker:
        with RawClient(broker.bootstrap_servers) as client:
            assert create_one(client, "framed").error_code == ErrorCode.none

        def frame(size: int, correlation_id: int) -> bytes:
            empty = encode_request(
                ApiKey.PRODUCE, 10, encode_body(produce_request(10, "framed", b"")), 0
            )
            records = batch_of_size(size + 4 - len(empty) - 1)  # compact bytes: 1 length byte
            framed = encode_request(
                ApiKey.PRODUCE,
                10,
                encode_body(produce_request(10, "framed", records)),
                correlation_id,
            )
            assert struct.unpack(">i", framed[:4])[0] == size
            return framed

        with RawClient(broker.bootstrap_servers) as client:
            client.send_raw(frame(limit, 1))
            correlation_id, response = client.read_response(ApiKey.PRODUCE, 10)
            assert correlation_id == 1
            assert response.responses[0].partition_responses[0].error_code == ErrorCode.none
            assert latest_offset(client, "framed") == 1
        # One byte over: Kafka refuses the frame from its size and closes the connection.
        with RawClient(broker.bootstrap_servers) as client:
            client.send_raw(frame(limit + 1, 2))
            assert client.read_frame() == b""
        with RawClient(broker.bootstrap_servers) as client:
            assert latest_offset(client, "framed") == 1


def test_partition_counts_and_replication_factors_at_their_bounds(
    tmp_path: Path, no_tracebacks: None
) -> None:
    with Broker(data_dir=tmp_path) as broker, RawClient(broker.bootstrap_servers) as client:
        cases = [
            ((0, 1), ErrorCode.invalid_partitions),
            ((-2, 1), ErrorCode.invalid_partitions),
            ((-(2**31), 1), ErrorCode.invalid_partitions),
            ((2**31 - 1, 1), ErrorCode.policy_violation),
            ((10_001, 1), ErrorCode.policy_violation),
            ((1, 0), ErrorCode.invalid_replication_factor),
            ((1, -2), ErrorCode.invalid_replication_factor),
            ((1, 2**15 - 1), ErrorCode.invalid_replication_factor),
            ((-1, -1), ErrorCode.none),  # both mean the broker default
        ]
        for index, ((partitions, replication_factor), expected) in enumerate(cases):
            (result,) = create_topics(
                client, [(f"bounds-{index}", partitions, replication_factor, {})]
            )
            assert result.error_code == expected, (partitions, replication_factor)
        # Exactly 10000 partitions is allowed (checked without creating them) ...
        (at_limit,) = create_topics(client, [("ten-thousand", 10_000, 1, {})], validate_only=True)
        assert at_limit.error_code == ErrorCode.none
        # ... and the bound is per request: two topics of 5001 are both refused, neither made.
        halves = create_topics(client, [("half-a", 5001, 1, {}), ("half-b", 5001, 1, {})])
        assert [r.error_code for r in halves] == [ErrorCode.policy_violation] * 2
        grow = client.request(
            make(
                request_type(ApiKey.CREATE_PARTITIONS, 3),
                topics=(
                    child(
                        ApiKey.CREATE_PARTITIONS,
                        3,
                        "CreatePartitionsTopic",
                        name="bounds-8",
                        count=2**31 - 1,
                        assignments=None,
                    ),
                ),
                timeout=TIMEOUT,
                validate_only=False,
            ),
            3,
        )
        assert grow.results[0].error_code == ErrorCode.policy_violation
        assert broker.context is not None
        assert sorted(broker.context.logs.topics()) == ["bounds-8"]
        assert broker.context.logs.topics()["bounds-8"].partitions == 1
        assert sorted(path.name for path in tmp_path.glob("*-*")) == ["bounds-8-0"]


def test_numbers_and_lists_at_their_bounds_in_topic_configs_survive_a_restart(
    tmp_path: Path, no_tracebacks: None
) -> None:
    long_max, int_max = str(2**63 - 1), str(2**31 - 1)
    accepted = {
        "retention.ms": long_max,
        "retention.bytes": str(-(2**63)),
        "segment.ms": long_max,
        "max.message.bytes": int_max,
        "delete.retention.ms": long_max,
        "cleanup.policy": "compact,delete",
        "leader.replication.throttled.replicas": "*",
        "follower.replication.throttled.replicas": "0:1,1:1",
    }
    refused = [
        ("retention.ms", str(2**63)),
        ("retention.ms", "-2"),
        ("max.message.bytes", str(2**31)),
        ("segment.ms", "0"),
        ("cleanup.policy", "compact,forever"),
        ("leader.replication.throttled.replicas", "0:1,*"),
        ("follower.replication.throttled.replicas", "p:b"),
        ("no.such.config", "1"),
    ]
    with Broker(data_dir=tmp_path) as broker, RawClient(broker.bootstrap_servers) as client:
        assert create_one(client, "bounded", 2, **accepted).error_code == ErrorCode.none
        for name, value in refused:
            result = create_one(client, f"refused-{len(name)}", **{name: value})
            assert result.error_code == ErrorCode.invalid_config, (name, value)
            code, _ = alter_configs(client, "bounded", {**accepted, name: value})
            assert code == ErrorCode.invalid_config, (name, value)
        assert still_answers(client)
        described = describe_topic_configs(client, "bounded")
        for name, value in accepted.items():
            assert described[name].value == value
        assert described["leader.replication.throttled.replicas"].config_type == LIST_TYPE
        # A topic with no throttle shows Kafka's default: the empty list, from the default.
        assert create_one(client, "plain").error_code == ErrorCode.none
        plain = describe_topic_configs(client, "plain")["follower.replication.throttled.replicas"]
        assert (plain.value, plain.config_source) == ("", 5)

        # List configs take APPEND and SUBTRACT; other configs do not.
        code, _ = incremental_alter(
            client,
            "plain",
            [
                ("follower.replication.throttled.replicas", APPEND, "0:1,1:1"),
                ("leader.replication.throttled.replicas", APPEND, "*"),
                ("cleanup.policy", APPEND, "compact"),
            ],
        )
        assert code == ErrorCode.none
        code, _ = incremental_alter(
            client,
            "plain",
            [
                ("follower.replication.throttled.replicas", SUBTRACT, "0:1"),
                ("cleanup.policy", SUBTRACT, "delete"),
            ],
        )
        assert code == ErrorCode.none
        code, _ = incremental_alter(client, "plain", [("retention.ms", APPEND, "5")])
        assert code == ErrorCode.invalid_config
        code, _ = incremental_alter(
            client, "plain", [("leader.replication.throttled.replicas", APPEND, "x:y")]
        )
        assert code == ErrorCode.invalid_config
        assert still_answers(client)

    with Broker(data_dir=tmp_path) as broker, RawClient(broker.bootstrap_servers) as client:
        described = describe_topic_configs(client, "bounded")
        for name, value in accepted.items():
            assert described[name].value == value
        plain_after = describe_topic_configs(client, "plain")
        assert plain_after["follower.replication.throttled.replicas"].value == "1:1"
        assert plain_after["leader.replication.throttled.replicas"].value == "*"
        assert plain_after["cleanup.policy"].value == "compact"


# -- every API at its field limits --------------------------------------------------------------

_INT_BOUNDS = {
    "int8": (-(2**7), 2**7 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1),
}
_NAME_FIELDS = ("topic", "name", "resource_name")


def _limit_value(kafka_type: str | None, annotation: Any, flavour: str, name: str) -> Any:
    """A field's value for one flavour of limit: "low" (minimum numbers, empty strings),
    "high" (maximum numbers, 32767-byte strings), "null" (nulls, empty arrays, -1) and "past"
    (names just past 249 characters, everything else small)."""
    arguments = typing.get_args(annotation)
    if flavour == "null" and type(None) in arguments:
        return None
    present = [a for a in arguments if a is not type(None)]
    if typing.get_origin(annotation) is not tuple and present:
        annotation = present[0]
    if typing.get_origin(annotation) is tuple:
        if flavour == "null":
            return ()
        return (_limit_value(kafka_type, typing.get_args(annotation)[0], flavour, name),)
    if dataclasses.is_dataclass(annotation):
        return _limit_entity(annotation, flavour)
    if kafka_type in _INT_BOUNDS:
        low, high = _INT_BOUNDS[kafka_type]
        return {"low": low, "high": high, "null": -1, "past": 1}[flavour]
    if kafka_type == "bool":
        return flavour == "high"
    if kafka_type == "string":
        is_name = "TopicName" in str(annotation) or name in _NAME_FIELDS
        past = "p" * 250 if is_name else "s" * 32767
        return {"low": "", "high": "s" * 32767, "null": "", "past": past}[flavour]
    if kafka_type in ("bytes", "records"):
        return b"\xff" * 100 if flavour == "high" else b""
    if kafka_type == "uuid":
        return uuid.UUID(int=2**128 - 1 if flavour == "high" else 0)
    if kafka_type is not None and kafka_type.startswith("timedelta"):
        milliseconds = {"low": -(2**31), "high": 2**31 - 1, "null": -1, "past": 100}[flavour]
        return datetime.timedelta(milliseconds=milliseconds)
    raise AssertionError(f"no limit value for {kafka_type} {annotation}")


def _limit_entity(entity_type: Any, flavour: str) -> Any:
    hints = typing.get_type_hints(entity_type)
    return entity_type(
        **{
            field.name: _limit_value(
                field.metadata.get("kafka_type"), hints[field.name], flavour, field.name
            )
            for field in dataclasses.fields(entity_type)
        }
    )


def _every_api_version() -> list[tuple[int, int]]:
    dispatcher.load_handlers()
    return [
        (handler.api_key, version)
        for handler in sorted(dispatcher.HANDLERS.values(), key=lambda h: h.api_key)
        for version in range(handler.min_version, handler.max_version + 1)
    ]


@pytest.mark.parametrize("flavour", ["low", "high", "null", "past"])
def test_every_api_at_its_field_limits_answers_on_an_open_connection(
    tmp_path: Path, no_tracebacks: None, flavour: str
) -> None:
    with Broker(data_dir=tmp_path) as broker:
        with RawClient(broker.bootstrap_servers) as client:
            assert create_one(client, LONGEST_TOPIC, 2).error_code == ErrorCode.none
        unanswered = []
        for api_key, version in _every_api_version():
            entity = _limit_entity(request_type(api_key, version), flavour)
            with RawClient(broker.bootstrap_servers, timeout=10) as client:
                correlation_id = client.send(entity, version)
                frame = client.read_frame()
                if not frame or struct.unpack_from(">i", frame)[0] != correlation_id:
                    unanswered.append((ApiKey(api_key).name, version))
                    continue
                # The same connection serves the next request.
                assert still_answers(client)
        assert unanswered == []
        with RawClient(broker.bootstrap_servers) as client:
            assert produce_error(client, LONGEST_TOPIC, encode_batch([Record(None, b"v")])) == 0
