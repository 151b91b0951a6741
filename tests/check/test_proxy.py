"""The fault proxy on its own: address rewriting (bytes, then a real client), cut, delay, drop."""

from __future__ import annotations

import datetime
import importlib
import io
import struct
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from kio.schema.errors import ErrorCode
from kio.schema.types import BrokerId
from kio.serial import entity_reader, entity_writer
from kio.static.primitive import i8, i32, i32Timedelta

from odradek.check.proxy import FaultProxy
from odradek.check.wire import (
    DESCRIBE_CLUSTER,
    FIND_COORDINATOR,
    METADATA,
    flexible,
    response_addresses,
    rewrite_response,
)

UPSTREAM = ("broker-1.internal", 9092)
PROXIED = ("127.0.0.1", 40001)


def _module(api: str, version: int) -> Any:
    return importlib.import_module(f"kio.schema.{api}.v{version}.response")


def _frame(api_key: int, version: int, entity: Any) -> bytes:
    buffer = io.BytesIO()
    buffer.write(struct.pack(">i", 7))  # correlation id
    if flexible(api_key, version):
        buffer.write(b"\x00")  # response header v1: no tagged fields
    entity_writer(type(entity))(buffer, entity)
    return buffer.getvalue()


def _decode(frame: bytes, api_key: int, version: int, entity_type: type) -> Any:
    body = frame[4 + (1 if flexible(api_key, version) else 0) :]
    entity, _ = entity_reader(entity_type)(body, 0)
    return entity


def _metadata(version: int) -> Any:
    module = _module("metadata", version)
    fields: dict[str, Any] = {"node_id": BrokerId(1), "host": UPSTREAM[0], "port": i32(UPSTREAM[1])}
    if version >= 1:
        fields["rack"] = "rack-a"
    brokers = (module.MetadataResponseBroker(**fields),)
    top: dict[str, Any] = {"brokers": brokers, "topics": ()}
    if version >= 3:
        top["throttle_time"] = i32Timedelta.parse(datetime.timedelta(0))
    if version >= 1:
        top["controller_id"] = BrokerId(1)
    if version >= 2:
        top["cluster_id"] = "odradek-cluster"
    names = set(module.MetadataResponse.__dataclass_fields__)
    if "cluster_authorized_operations" in names:
        top["cluster_authorized_operations"] = i32(-2147483648)
    return module.MetadataResponse(**top)


def _find_coordinator(version: int) -> Any:
    module = _module("find_coordinator", version)
    if version >= 4:
        coordinator = module.Coordinator(
            key="group-a",
            node_id=BrokerId(1),
            host=UPSTREAM[0],
            port=i32(UPSTREAM[1]),
            error_code=ErrorCode.none,
            error_message=None,
        )
        return module.FindCoordinatorResponse(
            throttle_time=i32Timedelta.parse(datetime.timedelta(0)), coordinators=(coordinator,)
        )
    fields: dict[str, Any] = {
        "error_code": ErrorCode.none,
        "node_id": BrokerId(1),
        "host": UPSTREAM[0],
        "port": i32(UPSTREAM[1]),
    }
    if version >= 1:
        fields["throttle_time"] = i32Timedelta.parse(datetime.timedelta(0))
        fields["error_message"] = None
    return module.FindCoordinatorResponse(**fields)


def _describe_cluster(version: int) -> Any:
    module = _module("describe_cluster", version)
    broker_fields: dict[str, Any] = {
        "broker_id": BrokerId(1),
        "host": UPSTREAM[0],
        "port": i32(UPSTREAM[1]),
        "rack": None,
    }
    if version >= 2:
        broker_fields["is_fenced"] = False
    fields: dict[str, Any] = {
        "throttle_time": i32Timedelta.parse(datetime.timedelta(0)),
        "error_code": ErrorCode.none,
        "error_message": None,
        "cluster_id": "odradek-cluster",
        "controller_id": BrokerId(1),
        "brokers": (module.DescribeClusterBroker(**broker_fields),),
        "cluster_authorized_operations": i32(-2147483648),
    }
    if version >= 1:
        fields["endpoint_type"] = i8(1)
    return module.DescribeClusterResponse(**fields)


CASES = [
    *[(METADATA, version, _metadata) for version in (0, 1, 3, 7, 9, 12)],
    *[(FIND_COORDINATOR, version, _find_coordinator) for version in (0, 1, 3, 4)],
    *[(DESCRIBE_CLUSTER, version, _describe_cluster) for version in (0, 1)],
]


@pytest.mark.parametrize(("api_key", "version", "build"), CASES)
def test_rewrites_every_advertised_address_and_keeps_the_rest(
    api_key: int, version: int, build: Any
) -> None:
    entity = build(version)
    frame = _frame(api_key, version, entity)
    assert response_addresses(frame, api_key, version) == [UPSTREAM]
    rewritten = rewrite_response(frame, api_key, version, lambda address: PROXIED)
    assert response_addresses(rewritten, api_key, version) == [PROXIED]
    decoded = _decode(rewritten, api_key, version, type(entity))
    # Only the addresses changed: rewriting them back gives the original entity.
    restored = rewrite_response(rewritten, api_key, version, lambda address: UPSTREAM)
    assert restored == frame
    assert _decode(restored, api_key, version, type(entity)) == entity
    assert decoded != entity


@pytest.fixture
def proxy(odradek_broker: Any) -> Iterator[FaultProxy]:
    # The broker advertises its own address, as an external cluster would: the proxy must
    # rewrite it or the client would bypass the proxy after bootstrap.
    with FaultProxy([("127.0.0.1", odradek_broker.port)]) as running:
        yield running


def _consume_all(bootstrap: str, topic: str, expected: int) -> list[bytes]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex, "log_level": 0}
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    values: list[bytes] = []
    try:
        for _ in range(100):
            for message in consumer.consume(100, 0.2):
                if message.error() is None:
                    values.append(message.value())
            if len(values) >= expected:
                consumer.consume(100, 0.5)  # anything beyond expected shows up here
                break
    finally:
        consumer.close()
    return values


def test_a_client_bootstrapped_through_the_proxy_keeps_using_it(
    proxy: FaultProxy, odradek_broker: Any
) -> None:
    bootstrap = proxy.bootstrap_servers
    assert bootstrap != odradek_broker.bootstrap_servers
    producer = Producer({"bootstrap.servers": bootstrap, "log_level": 0})
    metadata = producer.list_topics(timeout=10)
    assert {(broker.host, broker.port) for broker in metadata.brokers.values()} == {
        (*tuple(bootstrap.rsplit(":", 1)[0:1]), int(bootstrap.rsplit(":", 1)[1]))
    }
    topic = f"proxied-{uuid.uuid4().hex[:6]}"
    for value in range(20):
        producer.produce(topic, str(value).encode(), partition=0)
    assert producer.flush(15) == 0
    values = _consume_all(bootstrap, topic, 20)
    assert values == [str(value).encode() for value in range(20)]
    assert proxy.stats.rewritten_responses > 0
    # Every connection went through the proxy: bootstrap, the broker connection and the consumer
    # group coordinator connection.
    assert proxy.stats.connections >= 3


def test_cut_after_the_request_makes_the_classic_retry_duplicate(proxy: FaultProxy) -> None:
    bootstrap = proxy.bootstrap_servers
    topic = f"cut-{uuid.uuid4().hex[:6]}"
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": False,
            "retries": 10,
            "retry.backoff.ms": 50,
            "log_level": 0,
        }
    )
    producer.produce(topic, b"warm-up", partition=0)
    assert producer.flush(15) == 0
    proxy.cut_nth(1)
    delivered: list[Any] = []
    producer.produce(topic, b"once", partition=0, on_delivery=lambda e, m: delivered.append(e))
    assert producer.flush(15) == 0
    assert delivered == [None]  # the producer believes it wrote the value once
    assert proxy.stats.cuts == 1
    # The broker appended it, the response was cut, the retry appended it again.
    assert _consume_all(bootstrap, topic, 3) == [b"warm-up", b"once", b"once"]


def test_cut_with_the_idempotent_producer_leaves_one_copy(proxy: FaultProxy) -> None:
    bootstrap = proxy.bootstrap_servers
    topic = f"cut-idempotent-{uuid.uuid4().hex[:6]}"
    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "log_level": 0}
    )
    producer.produce(topic, b"warm-up", partition=0)
    assert producer.flush(15) == 0
    proxy.cut_nth(1)
    producer.produce(topic, b"once", partition=0)
    assert producer.flush(15) == 0
    assert proxy.stats.cuts == 1
    assert _consume_all(bootstrap, topic, 2) == [b"warm-up", b"once"]


def test_cut_of_an_acks_0_write_loses_it(proxy: FaultProxy) -> None:
    bootstrap = proxy.bootstrap_servers
    topic = f"cut-acks0-{uuid.uuid4().hex[:6]}"
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "0", "retries": 0, "log_level": 0})
    producer.produce(topic, b"warm-up", partition=0)
    assert producer.flush(15) == 0
    # acks=0 reports "sent" before the proxy has forwarded it: wait until it is in the log, so
    # the cut is armed for the next produce and not this one.
    assert _consume_all(bootstrap, topic, 1) == [b"warm-up"]
    proxy.cut_nth(1)
    delivered: list[Any] = []
    producer.produce(topic, b"lost", partition=0, on_delivery=lambda e, m: delivered.append(e))
    assert producer.flush(15) == 0
    assert delivered == [None]  # fire and forget: reported as sent
    assert _consume_all(bootstrap, topic, 1) == [b"warm-up"]


def test_delay_and_drop(proxy: FaultProxy) -> None:
    bootstrap = proxy.bootstrap_servers
    topic = f"delay-{uuid.uuid4().hex[:6]}"
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "message.timeout.ms": 1500,
            "enable.idempotence": False,
            "log_level": 0,
        }
    )
    producer.produce(topic, b"first", partition=0)
    assert producer.flush(15) == 0
    proxy.set_delay(0.2)
    producer.produce(topic, b"delayed", partition=0)
    assert producer.flush(15) == 0
    assert proxy.stats.delayed_responses > 0
    proxy.set_delay(0)
    proxy.set_drop(True)
    errors: list[Any] = []
    producer.produce(topic, b"dropped", partition=0, on_delivery=lambda e, m: errors.append(e))
    producer.flush(10)
    assert errors
    assert errors[0] is not None
    assert proxy.stats.dropped_frames > 0
    proxy.set_drop(False)
    proxy.cut_all()
    producer.produce(topic, b"after", partition=0)
    assert producer.flush(15) == 0
    values = _consume_all(bootstrap, topic, 3)
    assert values[:2] == [b"first", b"delayed"]
    assert values[-1] == b"after"
