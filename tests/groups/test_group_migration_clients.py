"""KIP-848 online migration with real clients: classic consumers (librdkafka, kafka-python) hold
a group, a librdkafka `group.protocol=consumer` member joins and the group converts; the
partitions spread over everyone, nobody gets a fatal error, and with offsets committed after
each record none is consumed twice or skipped; when the consumer-protocol member leaves the
group goes back to classic. The policies refuse as Kafka does; a restart keeps the group."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from odradek.broker.server import Broker
from odradek.coordinator.group import ClassicGroup, ConsumerGroup
from odradek.testing.pytest_plugin import TEST_CONFIG

pytestmark = pytest.mark.timeout(120)
_names = itertools.count()
PARTITIONS = 4


def new_topic(bootstrap: str) -> str:
    name = f"migration-{next(_names)}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, PARTITIONS, 1)])[name].result(10)
    return name


def produce(bootstrap: str, topic: str, start: int, count: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 2})
    for index in range(start, start + count):
        producer.produce(topic, b"%d" % index, partition=index % PARTITIONS)
    assert producer.flush(10) == 0


class Member:
    """A librdkafka consumer that commits each record before taking the next."""

    def __init__(self, bootstrap: str, group: str, protocol: str, log: list[Any]) -> None:
        self.fatal: list[KafkaError] = []
        self.commit_errors: list[KafkaError] = []
        config: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "group.protocol": protocol,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "error_cb": self._error,
        }
        if protocol == "classic":
            config |= {"session.timeout.ms": 6000, "heartbeat.interval.ms": 300}
        self.consumer = Consumer(config)
        self.log = log
        self.closed = False

    def _error(self, error: KafkaError) -> None:
        if error.fatal():
            self.fatal.append(error)

    def subscribe(self, topic: str) -> None:
        self.consumer.subscribe([topic])

    def step(self) -> None:
        if self.closed:
            return
        message: Message | None = self.consumer.poll(0.05)
        if message is None or message.error():
            return
        self.log.append((message.partition(), message.offset()))
        for _ in range(50):
            try:
                self.consumer.commit(message=message, asynchronous=False)
                return
            except KafkaException as error:  # a rebalance moved the epoch: commit again
                self.commit_errors.append(error.args[0])
                self.consumer.poll(0.05)
        raise AssertionError(f"cannot commit {message.partition()}@{message.offset()}")

    def owned(self) -> set[int]:
        return {tp.partition for tp in self.consumer.assignment()}

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.consumer.close()


def run_until(members: list[Member], done: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 45
    while not done():
        assert time.monotonic() < deadline, (what, [m.owned() for m in members])
        for member in members:
            member.step()
        for member in members:
            assert not member.fatal, member.fatal
            assert not any(error.fatal() for error in member.commit_errors)


def spread(members: list[Member]) -> Callable[[], bool]:
    def check() -> bool:
        owned = [member.owned() for member in members]
        every = set().union(*owned)
        disjoint = sum(map(len, owned)) == len(every)
        return disjoint and every == set(range(PARTITIONS)) and all(owned)

    return check


def group_of(broker: Broker, group_id: str) -> Any:
    return broker.context.groups.coordinator.group(group_id)  # type: ignore[union-attr]


def test_librdkafka_classic_group_upgrades_and_downgrades(odradek_broker: Broker) -> None:
    bootstrap = odradek_broker.bootstrap_servers
    topic = new_topic(bootstrap)
    log: list[tuple[int, int]] = []
    produce(bootstrap, topic, 0, 100)
    classic = [Member(bootstrap, "mig", "classic", log) for _ in range(2)]
    members = list(classic)
    try:
        for member in classic:
            member.subscribe(topic)
        run_until(classic, spread(classic), "classic members share the topic")
        assert isinstance(group_of(odradek_broker, "mig"), ClassicGroup)

        modern = Member(bootstrap, "mig", "consumer", log)
        members.append(modern)
        modern.subscribe(topic)
        produce(bootstrap, topic, 100, 100)
        run_until(members, spread(members), "everyone shares the topic after the upgrade")
        group = group_of(odradek_broker, "mig")
        assert isinstance(group, ConsumerGroup)
        assert sum(member.uses_classic_protocol for member in group.members.values()) == 2

        # The classic members leave: the consumer-protocol member takes everything.
        for member in classic:
            member.close()
        run_until([modern], spread([modern]), "the KIP-848 member alone")
        produce(bootstrap, topic, 200, 100)
        run_until([modern], lambda: len(set(log)) >= 300, "the KIP-848 member consumes")

        # A classic member joins the consumer group, then the last KIP-848 member leaves:
        # the group goes back to classic and the classic member gets every partition.
        late = Member(bootstrap, "mig", "classic", log)
        members.append(late)
        late.subscribe(topic)
        run_until([modern, late], spread([modern, late]), "a classic member in a consumer group")
        modern.close()
        produce(bootstrap, topic, 300, 100)
        run_until([late], lambda: len(set(log)) >= 400, "the classic member consumes it all")
        assert isinstance(group_of(odradek_broker, "mig"), ClassicGroup)
        assert late.owned() == set(range(PARTITIONS))
    finally:
        for member in members:
            member.close()
    assert len(log) == len(set(log)), "a record was consumed twice"
    assert len(set(log)) == 400


def test_mixed_python_classic_clients_and_librdkafka_consumer_protocol(
    odradek_broker: Broker,
) -> None:
    from kafka import KafkaConsumer

    bootstrap = odradek_broker.bootstrap_servers
    topic = new_topic(bootstrap)
    produce(bootstrap, topic, 0, 40)
    python_consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id="mixed",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=300,
    )
    seen: list[tuple[int, int]] = []
    modern = Member(bootstrap, "mixed", "consumer", seen)
    try:
        deadline = time.monotonic() + 30
        while len(python_consumer.assignment()) < PARTITIONS:
            assert time.monotonic() < deadline
            for records in python_consumer.poll(timeout_ms=100).values():
                seen += [(r.partition, r.offset) for r in records]
            python_consumer.commit()
        modern.subscribe(topic)
        deadline = time.monotonic() + 45
        while True:
            for records in python_consumer.poll(timeout_ms=100).values():
                seen += [(r.partition, r.offset) for r in records]
            python_consumer.commit()
            modern.step()
            assert not modern.fatal, modern.fatal
            python_owned = {tp.partition for tp in python_consumer.assignment()}
            owned = [python_owned, modern.owned()]
            if all(owned) and not owned[0] & owned[1] and len(owned[0] | owned[1]) == PARTITIONS:
                break
            assert time.monotonic() < deadline, owned
        assert isinstance(group_of(odradek_broker, "mixed"), ConsumerGroup)
    finally:
        modern.close()
        python_consumer.close()
    assert len(seen) == len(set(seen))
    assert len(set(seen)) == 40


@pytest.mark.parametrize("policy", ["disabled", "downgrade"])
def test_policies_without_upgrade_answer_group_id_not_found(tmp_path: Path, policy: str) -> None:
    config = TEST_CONFIG | {"group.consumer.migration.policy": policy}
    with Broker(data_dir=tmp_path, config=config) as broker:
        bootstrap = broker.bootstrap_servers
        topic = new_topic(bootstrap)
        log: list[tuple[int, int]] = []
        holder = Member(bootstrap, "refused", "classic", log)
        modern = Member(bootstrap, "refused", "consumer", log)
        try:
            holder.subscribe(topic)
            run_until([holder], spread([holder]), "the classic member")
            modern.subscribe(topic)
            deadline = time.monotonic() + 20
            fatal: list[KafkaError] = []
            while not fatal:
                assert time.monotonic() < deadline
                holder.step()
                message = modern.consumer.poll(0.05)
                error = None if message is None else message.error()
                if error is not None and error.code() == KafkaError._FATAL:
                    fatal.append(error)
            # librdkafka reports Kafka's answer to its heartbeat as a fatal error.
            assert "ConsumerGroupHeartbeat" in fatal[0].str()
            assert "The group id does not exist" in fatal[0].str()
            assert isinstance(group_of(broker, "refused"), ClassicGroup)
        finally:
            holder.close()
            modern.closed = True  # a fatally failed consumer is not closed cleanly


def test_restart_keeps_the_converted_group(tmp_path: Path) -> None:
    log: list[tuple[int, int]] = []
    with Broker(data_dir=tmp_path, config=TEST_CONFIG) as broker:
        bootstrap = broker.bootstrap_servers
        port = int(bootstrap.rsplit(":", 1)[1])
        topic = new_topic(bootstrap)
        members = [
            Member(bootstrap, "kept", "classic", log),
            Member(bootstrap, "kept", "consumer", log),
        ]
        members[0].subscribe(topic)
        run_until(members[:1], spread(members[:1]), "the classic member")
        members[1].subscribe(topic)
        run_until(members, spread(members), "both members")
        before = group_of(broker, "kept")
        assert isinstance(before, ConsumerGroup)
        expected = {
            member_id: (member.classic, member.member_epoch, member.assigned)
            for member_id, member in before.members.items()
        }
        epoch = before.group_epoch
    with Broker(data_dir=tmp_path, port=port, config=TEST_CONFIG) as broker:
        try:
            after = group_of(broker, "kept")
            assert isinstance(after, ConsumerGroup)
            assert after.group_epoch == epoch
            assert {
                member_id: (member.classic, member.member_epoch, member.assigned)
                for member_id, member in after.members.items()
            } == expected
            # Both members carry on in the restored group.
            produce(bootstrap, topic, 0, 20)
            run_until(members, lambda: len(set(log)) >= 20, "consuming after the restart")
            assert isinstance(group_of(broker, "kept"), ConsumerGroup)
        finally:
            for member in members:
                member.close()
    assert len(log) == len(set(log)) == 20
