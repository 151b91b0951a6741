"""Where a `Processor` starts reading each assigned partition, per guarantee, against Kafka's
consumer semantics: the group's committed offset, else `auto.offset.reset` (earliest by the
toolkit's default, latest, error); a committed offset below the log start resets by the policy
(Kafka's OffsetOutOfRange handling); `latest` under read_committed is the last stable offset
(KIP-98: seekToEnd under read_committed); offsets staged by an open transaction are waited for
(KIP-447 `require_stable`); partitions moving between two processors (classic and KIP-848
protocols) lose and repeat nothing; and a failed committed-offset lookup falls back to
librdkafka's own. Every test asserts the exact (partition, offset, value) records processed.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from toolkit_helpers import (
    create_topic,
    produce_values,
    require_transactions,
    unique,
    wait_until,
)

import odradek.client.processor as processor_module
from odradek.broker.server import Broker
from odradek.client import Processor, RunStats
from odradek.client.messages import position

pytestmark = pytest.mark.timeout(120)

GUARANTEES = ["at-most-once", "at-least-once", "exactly-once"]
Record = tuple[int, int, int]  # (partition, offset, value)


@dataclass
class Running:
    """A Processor running in a thread, with every record its handler was given."""

    processor: Processor
    seen: list[Record]
    output_topic: str | None
    thread: threading.Thread | None = None
    stats: list[RunStats] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)

    def start(self, idle_timeout: float | None = None) -> Running:
        def body() -> None:
            try:
                self.stats.append(self.processor.run(idle_timeout=idle_timeout))
            except BaseException as error:  # reported by `join`
                self.errors.append(error)

        self.thread = threading.Thread(target=body, daemon=True)
        self.thread.start()
        return self

    def join(self, timeout: float = 60) -> Running:
        assert self.thread is not None
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the processor did not return"
        if self.errors:
            raise self.errors[0]
        return self

    def stop(self) -> Running:
        self.processor.stop()
        return self.join()

    def wait_assigned(self) -> None:
        wait_until(
            lambda: self.processor._assigned or bool(self.errors), 45, "the processor is assigned"
        )
        if self.errors:
            raise self.errors[0]


def processor(
    bootstrap: str,
    group: str,
    topic: str,
    guarantee: str,
    config: Mapping[str, Any] | None = None,
) -> Running:
    """A Processor of `topic` whose handler records (partition, offset, value); under
    exactly-once it forwards the value to `<group>.out` (a transaction per interval)."""
    seen: list[Record] = []
    lock = threading.Lock()

    def record(message: Message) -> bytes | None:
        with lock:
            _, partition, offset = position(message)
            seen.append((partition, offset, int(message.value() or b"0")))
        return message.value()

    output_topic = None
    if guarantee == "exactly-once":
        output_topic = f"{group}.out"
        with contextlib.suppress(KafkaException):  # the group's second processor
            create_topic(bootstrap, output_topic)

        def handler(message: Message) -> Any:
            return record(message)

    else:

        def handler(message: Message) -> Any:
            record(message)
            return None

    return Running(
        Processor(
            bootstrap,
            group,
            [topic],
            guarantee,
            handler,
            output_topic=output_topic,
            config=config,
            run_preflight=False,
        ),
        seen,
        output_topic,
    )


def log_of(bootstrap: str, topic: str, partitions: int = 1) -> dict[int, list[tuple[int, int]]]:
    """Every record of `topic` (read_uncommitted): partition → [(offset, value)]."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique("reader"),
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
    records: dict[int, list[tuple[int, int]]] = {p: [] for p in range(partitions)}
    at_end: set[int] = set()
    deadline = time.monotonic() + 30
    while len(at_end) < partitions:
        assert time.monotonic() < deadline, "could not read the whole topic"
        for message in consumer.consume(500, 0.2):
            _, partition, offset = position(message)
            if message.error() is None:
                records[partition].append((offset, int(message.value() or b"0")))
            else:
                at_end.add(partition)
    consumer.close()
    return records


def commit(bootstrap: str, group: str, offsets: Mapping[tuple[str, int], int]) -> None:
    """Commit offsets for `group` from outside it (a simple, generation-less commit)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
    )
    consumer.commit(
        offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False
    )
    consumer.close()


def output_values(bootstrap: str, topic: str) -> list[int]:
    """The committed values of an exactly-once output topic (read_committed)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique("reader"),
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    values: list[int] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        messages = consumer.consume(500, 0.3)
        done = False
        for message in messages:
            error = message.error()
            if error is None:
                values.append(int(message.value() or b"0"))
            else:
                done = True
        if done:
            break
    consumer.close()
    return values


def probe_until_seen(bootstrap: str, running: Running, topic: str, partition: int) -> int:
    """Produce probe records (values 1000, 1001, ...) to `partition` until the processor has
    handled one from it; returns the offset of the first it handled. Under `latest` the start is
    "the end at the time of the lookup", which a test cannot observe: the probes make the
    lookup's moment irrelevant, the assertion being that the records handled are exactly the
    log from that offset on."""
    value = 1000
    deadline = time.monotonic() + 45
    while not any(p == partition and v >= 1000 for p, _, v in running.seen):
        assert time.monotonic() < deadline, "no probe record was handled"
        produce_to(bootstrap, topic, partition, [value])
        value += 1
        time.sleep(0.2)
    return min(o for p, o, v in running.seen if p == partition and v >= 1000)


def produce_to(bootstrap: str, topic: str, partition: int, values: list[int]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0})
    for value in values:
        producer.produce(topic, str(value).encode(), partition=partition)
    assert producer.flush(15) == 0


def by_partition(seen: list[Record]) -> dict[int, list[tuple[int, int]]]:
    partitions: dict[int, list[tuple[int, int]]] = {}
    for partition, offset, value in seen:
        partitions.setdefault(partition, []).append((offset, value))
    return partitions


def assert_exactly(
    seen: list[Record], log: Mapping[int, list[tuple[int, int]]], starts: Mapping[int, int | None]
) -> None:
    """The processor handled exactly the log of each partition from its start offset on (None:
    nothing), in order, each record once."""
    handled = by_partition(seen)
    for partition, start in starts.items():
        expected = [] if start is None else [(o, v) for o, v in log[partition] if o >= start]
        assert handled.get(partition, []) == expected, f"partition {partition}"
    assert set(handled) <= set(starts)


# -- 1. a new group: the reset policy ------------------------------------------------------------
@pytest.mark.parametrize("guarantee", GUARANTEES)
@pytest.mark.parametrize("reset", [None, "earliest", "latest"])
def test_a_new_group_starts_where_the_reset_policy_says(
    odradek_broker: Broker, guarantee: str, reset: str | None
) -> None:
    """None: the toolkit's default, which is earliest (`Guarantee.consumer_config`)."""
    bootstrap = odradek_broker.bootstrap_servers
    if guarantee == "exactly-once":
        require_transactions(bootstrap)
    topic = create_topic(bootstrap, unique("events"))
    produce_values(bootstrap, topic, range(5))  # before the processor starts
    config = {} if reset is None else {"auto.offset.reset": reset}
    running = processor(bootstrap, unique("group"), topic, guarantee, config).start()
    running.wait_assigned()
    if reset == "latest":
        first = probe_until_seen(bootstrap, running, topic, 0)
        assert first >= 5, "latest never starts before the records produced before the start"
    else:
        first = 0
    produce_values(bootstrap, topic, range(100, 105))  # after the processor started
    wait_until(lambda: any(v == 104 for _, _, v in running.seen), 30, "the last record is handled")
    running.stop()
    assert_exactly(running.seen, log_of(bootstrap, topic), {0: first})
    if running.output_topic is not None:
        assert output_values(bootstrap, running.output_topic) == [v for _, _, v in running.seen]


# -- 2. committed offsets on some partitions, none on others -----------------------------------
@pytest.mark.parametrize("guarantee", GUARANTEES)
@pytest.mark.parametrize("reset", ["earliest", "latest"])
def test_committed_partitions_resume_and_the_others_follow_the_reset_policy(
    odradek_broker: Broker, guarantee: str, reset: str
) -> None:
    bootstrap = odradek_broker.bootstrap_servers
    if guarantee == "exactly-once":
        require_transactions(bootstrap)
    topic = create_topic(bootstrap, unique("events"), partitions=3)
    produce_values(bootstrap, topic, range(30), partitions=3)  # ten records per partition
    group = unique("group")
    commit(bootstrap, group, {(topic, 0): 4, (topic, 1): 10})  # 1: at its end; 2: none
    running = processor(bootstrap, group, topic, guarantee, {"auto.offset.reset": reset}).start()
    running.wait_assigned()
    if reset == "latest":
        start_2 = probe_until_seen(bootstrap, running, topic, 2)
        assert start_2 >= 10
    else:
        start_2 = 0
    produce_to(bootstrap, topic, 1, [500])  # offset 10 of partition 1, after the start
    wait_until(
        lambda: {(0, 9), (1, 10)} <= {(p, o) for p, o, _ in running.seen}, 30, "all is handled"
    )
    if reset == "earliest":
        wait_until(lambda: (2, 9) in {(p, o) for p, o, _ in running.seen}, 30, "2 is handled")
    running.stop()
    assert_exactly(running.seen, log_of(bootstrap, topic, 3), {0: 4, 1: 10, 2: start_2})


# -- 3. a committed offset below the log start ---------------------------------------------------
@pytest.mark.parametrize("guarantee", GUARANTEES)
@pytest.mark.parametrize("reset", ["earliest", "latest"])
def test_a_committed_offset_out_of_range_resets_by_the_policy(
    odradek_broker: Broker, guarantee: str, reset: str
) -> None:
    """Kafka: a fetch at an offset below the log start answers OFFSET_OUT_OF_RANGE and the
    consumer resets by auto.offset.reset (earliest: the new log start)."""
    bootstrap = odradek_broker.bootstrap_servers
    if guarantee == "exactly-once":
        require_transactions(bootstrap)
    topic = create_topic(bootstrap, unique("events"))
    produce_values(bootstrap, topic, range(10))
    group = unique("group")
    commit(bootstrap, group, {(topic, 0): 3})
    admin = AdminClient({"bootstrap.servers": bootstrap})
    (deleted,) = admin.delete_records([TopicPartition(topic, 0, 6)]).values()
    assert deleted.result(10).low_watermark == 6, "the log now starts at 6"
    running = processor(bootstrap, group, topic, guarantee, {"auto.offset.reset": reset}).start()
    running.wait_assigned()
    if reset == "latest":
        first = probe_until_seen(bootstrap, running, topic, 0)
        assert first >= 10
    else:
        first = 6
        wait_until(lambda: (0, 9) in {(p, o) for p, o, _ in running.seen}, 30, "all is handled")
    running.stop()
    assert_exactly(running.seen, log_of(bootstrap, topic), {0: first})


@pytest.mark.parametrize("guarantee", GUARANTEES)
def test_a_committed_offset_out_of_range_under_reset_error_processes_nothing(
    odradek_broker: Broker, guarantee: str
) -> None:
    """auto.offset.reset=error: no reset, the consumer reports the error instead."""
    bootstrap = odradek_broker.bootstrap_servers
    if guarantee == "exactly-once":
        require_transactions(bootstrap)
    topic = create_topic(bootstrap, unique("events"))
    produce_values(bootstrap, topic, range(10))
    group = unique("group")
    commit(bootstrap, group, {(topic, 0): 3})
    admin = AdminClient({"bootstrap.servers": bootstrap})
    (deleted,) = admin.delete_records([TopicPartition(topic, 0, 6)]).values()
    deleted.result(10)
    running = processor(bootstrap, group, topic, guarantee, {"auto.offset.reset": "error"})
    running.start(idle_timeout=2).join(90)
    assert running.seen == []


# -- 4. latest under read_committed: the last stable offset --------------------------------------
def test_latest_under_read_committed_starts_at_the_last_stable_offset(
    odradek_broker: Broker,
) -> None:
    """An open transaction on the input: `latest` is the LSO (the open transaction's first
    offset), not the high watermark, so the transaction's records and those after it, produced
    before the processor started, are processed once the transaction commits."""
    bootstrap = odradek_broker.bootstrap_servers
    require_transactions(bootstrap)
    topic = create_topic(bootstrap, unique("events"))
    produce_values(bootstrap, topic, range(5))  # offsets 0-4
    transactional = Producer(
        {"bootstrap.servers": bootstrap, "transactional.id": unique("txn"), "linger.ms": 0}
    )
    transactional.init_transactions(10)
    transactional.begin_transaction()
    for value in (5, 6, 7):  # offsets 5-7, open
        transactional.produce(topic, str(value).encode(), partition=0)
    transactional.flush(10)
    produce_to(bootstrap, topic, 0, [8, 9])  # offsets 8-9, after the open transaction
    running = processor(
        bootstrap, unique("group"), topic, "exactly-once", {"auto.offset.reset": "latest"}
    ).start()
    running.wait_assigned()
    time.sleep(1.0)  # the start position is looked up while the transaction is open
    assert running.seen == [], "nothing beyond the LSO is readable yet"
    transactional.commit_transaction(10)  # marker at offset 10
    produce_to(bootstrap, topic, 0, [11])  # offset 11
    wait_until(lambda: any(v == 11 for _, _, v in running.seen), 30, "the last record is handled")
    running.stop()
    assert running.seen == [(0, 5, 5), (0, 6, 6), (0, 7, 7), (0, 8, 8), (0, 9, 9), (0, 11, 11)]
    assert running.output_topic is not None
    assert output_values(bootstrap, running.output_topic) == [5, 6, 7, 8, 9, 11]


# -- 5. offsets staged by an open transaction; partitions moving between processors ----------
def test_exactly_once_waits_for_offsets_an_open_transaction_has_staged(
    odradek_broker: Broker,
) -> None:
    """The previous owner's transaction holds offsets for the group (TxnOffsetCommit) and has
    not committed: the start must be those offsets once it commits (KIP-447 require_stable:
    OffsetFetch answers UNSTABLE_OFFSET_COMMIT meanwhile), not the older committed ones."""
    bootstrap = odradek_broker.bootstrap_servers
    require_transactions(bootstrap)
    topic = create_topic(bootstrap, unique("events"))
    produce_values(bootstrap, topic, range(10))
    group = unique("group")
    commit(bootstrap, group, {(topic, 0): 2})
    member = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    transactional = Producer({"bootstrap.servers": bootstrap, "transactional.id": unique("txn")})
    transactional.init_transactions(10)
    transactional.begin_transaction()
    transactional.send_offsets_to_transaction(
        [TopicPartition(topic, 0, 6)], member.consumer_group_metadata(), 10
    )
    running = processor(bootstrap, group, topic, "exactly-once").start()
    running.wait_assigned()
    time.sleep(1.5)
    transactional.commit_transaction(10)
    member.close()
    wait_until(lambda: any(o == 9 for _, o, _ in running.seen), 30, "the last record is handled")
    running.stop()
    assert running.seen == [(0, o, o) for o in range(6, 10)]
    assert running.output_topic is not None
    assert output_values(bootstrap, running.output_topic) == [6, 7, 8, 9]


@pytest.mark.parametrize("guarantee", GUARANTEES)
@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_partitions_moving_between_two_processors_lose_and_repeat_nothing(
    odradek_broker: Broker, guarantee: str, protocol: str
) -> None:
    """A second processor joins mid-stream, then the first leaves: every record is handled
    exactly once in all (a clean handover commits on revocation, so even at-least-once repeats
    nothing), and each partition's records are handled in offset order across the owners."""
    bootstrap = odradek_broker.bootstrap_servers
    if guarantee == "exactly-once":
        require_transactions(bootstrap)
    partitions = 4
    topic = create_topic(bootstrap, unique("events"), partitions=partitions)
    group = unique("group")
    total = 600
    produced = threading.Event()

    def produce() -> None:
        for start in range(0, total, 20):
            produce_values(bootstrap, topic, range(start, start + 20), partitions=partitions)
            time.sleep(0.05)
        produced.set()

    first = processor(bootstrap, group, topic, guarantee, _protocol_config(protocol))
    first.start()
    first.wait_assigned()
    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    wait_until(lambda: len(first.seen) >= 100, 45, "the first processor is under way")
    second = processor(bootstrap, group, topic, guarantee, _protocol_config(protocol))
    second.start()
    wait_until(lambda: len(second.seen) >= 50, 45, "the second processor took partitions")
    first.stop()
    producer.join(60)
    assert produced.is_set()
    wait_until(lambda: len(first.seen) + len(second.seen) >= total, 45, "all is handled")
    time.sleep(1.0)  # anything handled twice shows now
    second.stop()
    handled = Counter((p, o) for p, o, _ in first.seen + second.seen)
    log = log_of(bootstrap, topic, partitions)
    everything = {(p, o) for p, records in log.items() for o, _ in records}
    assert set(handled) == everything, "nothing lost"
    assert [k for k, n in handled.items() if n > 1] == [], "nothing handled twice"
    assert len(everything) == total
    if first.output_topic is not None:
        # The output partition interleaves the input partitions; each value once, all there.
        values = sorted(v for records in log.values() for _, v in records)
        assert sorted(output_values(bootstrap, first.output_topic)) == values


def _protocol_config(protocol: str) -> dict[str, Any]:
    if protocol == "consumer":
        # KIP-848: the coordinator owns the session and heartbeat intervals.
        return {"group.protocol": "consumer"}
    return {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}


# -- 6. the committed-offset lookup failing --------------------------------------------------------
@pytest.mark.parametrize("guarantee", GUARANTEES)
def test_a_failed_committed_offset_lookup_falls_back_to_librdkafka(
    odradek_broker: Broker,
    guarantee: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The lookup times out at once: librdkafka's own OffsetFetch (and reset) place the
    partitions, at the same offsets."""
    caplog.set_level(logging.INFO, logger="odradek.client")
    bootstrap = odradek_broker.bootstrap_servers
    if guarantee == "exactly-once":
        require_transactions(bootstrap)
    monkeypatch.setattr(processor_module, "COMMITTED_TIMEOUT_SECONDS", 0.0)
    topic = create_topic(bootstrap, unique("events"), partitions=3)
    produce_values(bootstrap, topic, range(30), partitions=3)
    group = unique("group")
    commit(bootstrap, group, {(topic, 0): 4, (topic, 1): 10})
    running = processor(bootstrap, group, topic, guarantee).start()
    running.wait_assigned()
    produce_to(bootstrap, topic, 1, [500])
    wait_until(
        lambda: {(0, 9), (1, 10), (2, 9)} <= {(p, o) for p, o, _ in running.seen},
        30,
        "all is handled",
    )
    running.stop()
    assert_exactly(running.seen, log_of(bootstrap, topic, 3), {0: 4, 1: 10, 2: 0})
    assert "librdkafka will look them up" in caplog.text, "the fallback was taken"
