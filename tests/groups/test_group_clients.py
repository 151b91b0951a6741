"""Consumer groups with real clients: kafka-python, aiokafka, librdkafka (classic, static
membership and the KIP-848 consumer protocol), and offsets surviving a broker kill -9."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from consumer_processes import ConsumerProcess
from serve_process import ServeProcess

from odradek.broker.server import Broker
from odradek.coordinator.group import ClassicGroup
from odradek.testing.pytest_plugin import TEST_CONFIG

pytestmark = pytest.mark.timeout(90)
_names = itertools.count()


def new_topic(bootstrap: str, partitions: int) -> str:
    name = f"groups-{next(_names)}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(10)
    return name


def produce(bootstrap: str, topic: str, count: int, start: int = 0, partitions: int = 1) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 2})
    for index in range(start, start + count):
        producer.produce(topic, b"%d" % index, partition=index % partitions)
    assert producer.flush(10) == 0


def test_kafka_python_group_consume_commit_rejoin(odradek_broker: Broker) -> None:
    from kafka import KafkaConsumer

    bootstrap = odradek_broker.bootstrap_servers
    topic = new_topic(bootstrap, 2)
    produce(bootstrap, topic, 20, partitions=2)

    def consume(expected: int) -> list[bytes]:
        consumer = KafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id="kp-group",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            consumer_timeout_ms=3000 if expected == 0 else 15_000,
            session_timeout_ms=6000,
            heartbeat_interval_ms=500,
        )
        values = []
        for message in consumer:
            values.append(message.value)
            if len(values) == expected:
                break
        consumer.commit()
        consumer.close()
        return values

    assert sorted(consume(20)) == sorted(b"%d" % i for i in range(20))
    produce(bootstrap, topic, 5, start=20, partitions=2)
    assert sorted(consume(5)) == sorted(b"%d" % i for i in range(20, 25))
    assert consume(0) == []


@pytest.mark.asyncio
async def test_aiokafka_group_consume_commit_rejoin(odradek_broker: Broker) -> None:
    from aiokafka import AIOKafkaConsumer

    bootstrap = odradek_broker.bootstrap_servers
    topic = new_topic(bootstrap, 2)
    produce(bootstrap, topic, 20, partitions=2)

    async def consume(expected: int) -> list[bytes]:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id="aio-group",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=6000,
            heartbeat_interval_ms=500,
        )
        await consumer.start()
        values: list[bytes] = []
        try:
            deadline = time.monotonic() + 15
            while len(values) < expected and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=500)
                for messages in batches.values():
                    values += [message.value for message in messages]
            if expected == 0:
                batches = await consumer.getmany(timeout_ms=2000)
                values += [m.value for messages in batches.values() for m in messages]
            await consumer.commit()
        finally:
            await consumer.stop()
        return values

    assert sorted(await consume(20)) == sorted(b"%d" % i for i in range(20))
    produce(bootstrap, topic, 5, start=20, partitions=2)
    assert sorted(await consume(5)) == sorted(b"%d" % i for i in range(20, 25))
    assert await consume(0) == []


def _poll_all(consumers: list[Consumer]) -> None:
    for consumer in consumers:
        consumer.poll(0.05)


def _owned(consumer: Consumer) -> set[int]:
    return {tp.partition for tp in consumer.assignment()}


def test_librdkafka_kip848_assignment_spreads_and_rebalances(odradek_broker: Broker) -> None:
    bootstrap = odradek_broker.bootstrap_servers
    topic = new_topic(bootstrap, 6)
    config = {"bootstrap.servers": bootstrap, "group.id": "kip848", "group.protocol": "consumer"}
    consumers = [Consumer(dict(config)) for _ in range(3)]
    try:
        for consumer in consumers:
            consumer.subscribe([topic])

        def spread(members: list[Consumer], sizes: list[int]) -> bool:
            _poll_all(members)
            owned = [_owned(c) for c in members]
            disjoint = sum(map(len, owned)) == len(set().union(*owned))
            return disjoint and sorted(map(len, owned)) == sizes

        deadline = time.monotonic() + 30
        while not spread(consumers, [2, 2, 2]):
            assert time.monotonic() < deadline, [_owned(c) for c in consumers]
        admin = AdminClient({"bootstrap.servers": bootstrap})
        description = admin.describe_consumer_groups(["kip848"])["kip848"].result(10)
        assert len(description.members) == 3
        assert str(description.state).endswith("STABLE")

        consumers[0].close()
        survivors = consumers[1:]
        deadline = time.monotonic() + 30
        while not spread(survivors, [3, 3]):
            assert time.monotonic() < deadline, [_owned(c) for c in survivors]
    finally:
        for consumer in consumers[1:]:
            consumer.close()


def test_kip848_member_that_stops_heartbeating_is_removed(
    odradek_broker: Broker, tmp_path: Path
) -> None:
    """SIGSTOP a KIP-848 consumer: after group.consumer.session.timeout.ms (6 s in tests) the
    broker removes it and the other member gets every partition."""
    bootstrap = odradek_broker.bootstrap_servers
    topic = new_topic(bootstrap, 4)
    stopped = ConsumerProcess.start(
        tmp_path / "stopped.log", bootstrap, topic, "stop-group", "after", "--protocol", "consumer"
    )
    other = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "stop-group", "group.protocol": "consumer"}
    )
    try:
        other.subscribe([topic])
        deadline = time.monotonic() + 30
        while not (stopped.assigned() and len(_owned(other)) == 2):
            other.poll(0.1)
            assert time.monotonic() < deadline
        stopped.process.send_signal(19)  # SIGSTOP
        started = time.monotonic()
        while len(_owned(other)) != 4:
            other.poll(0.1)
            assert time.monotonic() - started < 30
        assert time.monotonic() - started > 3  # not before the session timeout
    finally:
        stopped.process.send_signal(18)  # SIGCONT, so it can be stopped
        stopped.stop()
        other.close()


def test_static_member_restarts_without_rebalance(odradek_broker: Broker) -> None:
    bootstrap = odradek_broker.bootstrap_servers
    topic = new_topic(bootstrap, 4)

    def static(instance: str) -> Consumer:
        return Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "static",
                "group.instance.id": instance,
                "session.timeout.ms": 10_000,
                "heartbeat.interval.ms": 300,
            }
        )

    assignments: list[list[int]] = []
    first, second = static("a"), static("b")
    second.subscribe(
        [topic], on_assign=lambda _c, parts: assignments.append([p.partition for p in parts])
    )
    first.subscribe([topic])
    group = None
    try:
        deadline = time.monotonic() + 30
        while not (len(_owned(first)) == 2 and len(_owned(second)) == 2):
            _poll_all([first, second])
            assert time.monotonic() < deadline
        group = odradek_broker.context.groups.coordinator.group("static")  # type: ignore[union-attr]
        assert isinstance(group, ClassicGroup)
        generation, before = group.generation_id, _owned(first)
        rebalances = len(assignments)
        first.close()  # a static member sends no LeaveGroup
        first = static("a")
        first.subscribe([topic])
        deadline = time.monotonic() + 20
        while _owned(first) != before:
            _poll_all([first, second])
            assert time.monotonic() < deadline
        for _ in range(10):
            _poll_all([first, second])
        assert group.generation_id == generation
        assert len(assignments) == rebalances
        assert len(_owned(second)) == 2
    finally:
        first.close()
        second.close()


@pytest.mark.slow
def test_committed_offsets_survive_broker_kill(tmp_path: Path) -> None:
    overrides = [f"{key}={value}" for key, value in TEST_CONFIG.items()]
    broker = ServeProcess(tmp_path, *overrides)
    try:
        topic = new_topic(broker.bootstrap, 3)
        produce(broker.bootstrap, topic, 30, partitions=3)
        consumer = Consumer(
            {
                "bootstrap.servers": broker.bootstrap,
                "group.id": "durable",
                "enable.auto.commit": False,
            }
        )
        offsets = [TopicPartition(topic, p, 5 + p) for p in range(3)]
        consumer.commit(offsets=offsets, asynchronous=False)
        consumer.commit(offsets=[TopicPartition(topic, 0, 9)], asynchronous=False)
        consumer.close()
        broker.kill()
        broker = ServeProcess(tmp_path, *overrides)
        consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "durable"})
        committed = consumer.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
        consumer.close()
        assert [tp.offset for tp in committed] == [9, 6, 7]
    finally:
        broker.kill()
