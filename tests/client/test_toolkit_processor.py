"""The Processor in-process: bad input, dead letters, the idempotent consumer, output topics."""

from __future__ import annotations

import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    OFFSET_INVALID,
    Consumer,
    Message,
    Producer,
    TopicPartition,
)
from toolkit_helpers import create_topic, produce_values, require_transactions, unique

from odradek.broker.server import Broker
from odradek.client import (
    MESSAGE_ID_HEADER,
    GuaranteeProducer,
    IdempotentConsumer,
    IncompatibleSettingsError,
    Processor,
    SqliteSink,
    message_id,
)

pytestmark = pytest.mark.timeout(60)


def read_all(
    bootstrap: str, topic: str, expected: int, *, committed: bool = False
) -> list[Message]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique("reader"),
            "enable.auto.commit": False,
            "isolation.level": "read_committed" if committed else "read_uncommitted",
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    messages: list[Message] = []
    for _ in range(40):
        messages += [m for m in consumer.consume(100, 0.25) if m.error() is None]
        if len(messages) >= expected:
            break
    consumer.close()
    return messages


def headers(message: Message) -> dict[str, bytes]:
    return {name: value for name, value in message.headers() or [] if value is not None}


def committed_offset(bootstrap: str, group: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    (partition,) = consumer.committed([TopicPartition(topic, 0)], timeout=10)
    consumer.close()
    return int(partition.offset)


def test_a_failing_handler_is_retried_then_dead_lettered_without_partial_writes(
    odradek_broker: Broker, tmp_path: Path
) -> None:
    bootstrap = odradek_broker.bootstrap_servers
    topic = create_topic(bootstrap, unique("orders"))
    group = unique("group")
    dead_letters = create_topic(bootstrap, f"{group}.dead-letter")
    produce_values(bootstrap, topic, range(1, 21))
    sink = SqliteSink(tmp_path / "sink.db")
    with sink, sink.transaction() as tx:
        tx.execute("CREATE TABLE rows (value INTEGER)")
    flaky_attempts: Counter[int] = Counter()

    def handler(message: Message, tx: Any) -> None:
        value = int(message.value() or b"0")
        tx.execute("INSERT INTO rows (value) VALUES (?)", (value,))  # undone if we raise
        if value == 13:
            raise ValueError("poison")
        if value == 7 and flaky_attempts[value] == 0:
            flaky_attempts[value] += 1
            raise TimeoutError("flaky")

    stats = Processor(
        bootstrap, group, [topic], "at-least-once", handler, sink=sink, max_attempts=3
    ).run(idle_timeout=1)

    assert stats.retries == 1 + 2  # the flaky message once, the poison twice
    assert stats.dead_lettered == 1
    assert stats.dropped == 0
    with sqlite3.connect(tmp_path / "sink.db") as connection:
        values = sorted(v for (v,) in connection.execute("SELECT value FROM rows"))
    assert values == [v for v in range(1, 21) if v != 13], "no partial write, nothing twice"
    (dead,) = read_all(bootstrap, dead_letters, 1)
    assert dead.value() == b"13"
    assert headers(dead)["odradek-error"] == b"ValueError('poison')"
    assert headers(dead)["odradek-source-offset"] == b"12"
    assert committed_offset(bootstrap, group, topic) == 20


def test_at_most_once_drops_and_dead_letters_a_failure_without_retrying(
    odradek_broker: Broker,
) -> None:
    bootstrap = odradek_broker.bootstrap_servers
    topic = create_topic(bootstrap, unique("logs"))
    group = unique("group")
    create_topic(bootstrap, f"{group}.dead-letter")
    produce_values(bootstrap, topic, range(1, 11))
    handled: list[int] = []

    def handler(message: Message) -> None:
        value = int(message.value() or b"0")
        if value == 4:
            raise ValueError("bad line")
        handled.append(value)

    stats = Processor(bootstrap, group, [topic], "at-most-once", handler).run(idle_timeout=1)
    assert (stats.dropped, stats.dead_lettered, stats.retries) == (1, 1, 0)
    assert handled == [v for v in range(1, 11) if v != 4]
    assert committed_offset(bootstrap, group, topic) == 10


def test_the_idempotent_consumer_drops_a_producer_retry_duplicate(
    odradek_broker: Broker, tmp_path: Path
) -> None:
    """A retried produce appends the same record twice at two offsets: same id, applied once."""
    bootstrap = odradek_broker.bootstrap_servers
    topic = create_topic(bootstrap, unique("notifications"))
    with GuaranteeProducer(bootstrap, "at-least-once") as producer:
        first = producer.produce(topic, b"welcome", key=b"user-1")
        producer.produce(topic, b"welcome", key=b"user-1", message_id=first)  # the "retry"
        producer.produce(topic, b"goodbye", key=b"user-2")
    sink = SqliteSink(tmp_path / "sent.db")
    sent: list[bytes] = []

    def send(message: Message, tx: Any) -> None:
        assert message_id(message) is not None
        sent.append(message.value() or b"")

    stats = Processor(
        bootstrap,
        unique("group"),
        [topic],
        "at-least-once",
        IdempotentConsumer(sink, send, scope="email"),
        sink=sink,
    ).run(idle_timeout=1)
    assert sent == [b"welcome", b"goodbye"]
    assert (stats.consumed, stats.duplicates_skipped) == (3, 1)


def test_at_least_once_into_an_output_topic_stamps_derived_message_ids(
    odradek_broker: Broker,
) -> None:
    bootstrap = odradek_broker.bootstrap_servers
    topic = create_topic(bootstrap, unique("in"))
    output = create_topic(bootstrap, unique("out"))
    produce_values(bootstrap, topic, range(1, 6))
    stats = Processor(
        bootstrap,
        unique("group"),
        [topic],
        "at-least-once",
        lambda message: [(b"k", message.value()), message.value()],
        output_topic=output,
    ).run(idle_timeout=1)
    assert stats.produced == 10
    messages = read_all(bootstrap, output, 10)
    assert [m.value() for m in messages] == [str(v).encode() for v in range(1, 6) for _ in "ab"]
    ids = [headers(m)[MESSAGE_ID_HEADER] for m in messages]
    assert ids[:2] == [f"{topic}:0:0:0".encode(), f"{topic}:0:0:1".encode()]
    assert len(set(ids)) == 10


def test_exactly_once_into_an_output_topic_dead_letters_inside_the_transaction(
    odradek_broker: Broker,
) -> None:
    bootstrap = odradek_broker.bootstrap_servers
    require_transactions(bootstrap)
    topic = create_topic(bootstrap, unique("in"))
    output = create_topic(bootstrap, unique("out"))
    group = unique("group")
    dead_letters = create_topic(bootstrap, f"{group}.dead-letter")
    produce_values(bootstrap, topic, range(1, 11))

    def double(message: Message) -> bytes:
        value = int(message.value() or b"0")
        if value == 5:
            raise ValueError("poison")
        return str(2 * value).encode()

    processor = Processor(bootstrap, group, [topic], "exactly-once", double, output_topic=output)
    stats = processor.run(idle_timeout=1)
    assert stats.dead_lettered == 1
    assert processor.transactional_id is not None
    assert processor.transactional_id.startswith(f"odradek-{group}-")
    values = [m.value() for m in read_all(bootstrap, output, 9, committed=True)]
    assert values == [str(2 * v).encode() for v in range(1, 11) if v != 5]
    assert [m.value() for m in read_all(bootstrap, dead_letters, 1, committed=True)] == [b"5"]
    assert committed_offset(bootstrap, group, topic) == 10


def test_the_transactional_id_is_per_instance_and_stable_across_restarts() -> None:
    def processor(**arguments: Any) -> Processor:
        return Processor(
            "127.0.0.1:9",
            "billing",
            ["orders"],
            "exactly-once",
            print,
            output_topic="out",
            **arguments,
        )

    first, second, restarted = processor(), processor(), processor()
    try:
        first_id = first._derive_transactional_id()
        assert second._derive_transactional_id() != first_id, "two live instances, two ids"
        first._close()  # the first instance stops (or dies): its slot is free again
        assert restarted._derive_transactional_id() == first_id
    finally:
        for instance in (first, second, restarted):
            instance._close()
    named = processor(instance_id="eu-1")
    assert named._derive_transactional_id() == "odradek-billing-eu-1"


def test_raw_producer_records_without_an_id_are_deduplicated_by_position(
    odradek_broker: Broker, tmp_path: Path
) -> None:
    bootstrap = odradek_broker.bootstrap_servers
    topic = create_topic(bootstrap, unique("plain"))
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, b"x")
    producer.flush(10)
    sink = SqliteSink(tmp_path / "s.db")
    seen: list[bytes] = []
    idempotent = IdempotentConsumer(sink, lambda m, tx: seen.append(m.value() or b""))
    Processor(bootstrap, unique("g"), [topic], "at-least-once", idempotent, sink=sink).run(1)
    with sink, sink.transaction() as tx:
        assert not sink.mark_applied(tx, "default", f"offset:{topic}:0:0")
    assert seen == [b"x"]


def test_a_batch_handler_writes_each_poll_batch_at_once_and_isolates_a_poison_message(
    odradek_broker: Broker, tmp_path: Path
) -> None:
    bootstrap = odradek_broker.bootstrap_servers
    topic = create_topic(bootstrap, unique("orders"))
    group = unique("group")
    dead_letters = create_topic(bootstrap, f"{group}.dead-letter")
    produce_values(bootstrap, topic, range(1, 41))
    sink = SqliteSink(tmp_path / "sink.db")
    with sink, sink.transaction() as tx:
        tx.execute("CREATE TABLE rows (value INTEGER)")
    calls: list[int] = []

    def handler(messages: list[Message], tx: Any) -> None:
        calls.append(len(messages))
        values = [int(m.value() or b"0") for m in messages]
        tx.executemany("INSERT INTO rows (value) VALUES (?)", [(v,) for v in values])
        if 13 in values:
            raise ValueError("poison")  # the whole call's rows are undone

    stats = Processor(
        bootstrap, group, [topic], "at-least-once", handler, sink=sink, handle_batches=True
    ).run(idle_timeout=1)

    assert max(calls) > 1, "the handler got whole poll batches"
    assert calls.count(1) >= 3, "the poison message alone was tried max_attempts times"
    assert stats.processed == 39
    assert stats.dead_lettered == 1
    with sqlite3.connect(tmp_path / "sink.db") as connection:
        values = sorted(v for (v,) in connection.execute("SELECT value FROM rows"))
    assert values == [v for v in range(1, 41) if v != 13], "no partial write, nothing twice"
    (dead,) = read_all(bootstrap, dead_letters, 1)
    assert dead.value() == b"13"
    assert committed_offset(bootstrap, group, topic) == 40


def test_at_most_once_drops_a_failed_batch_call_whole_without_calling_again(
    odradek_broker: Broker,
) -> None:
    bootstrap = odradek_broker.bootstrap_servers
    topic = create_topic(bootstrap, unique("logs"))
    group = unique("group")
    create_topic(bootstrap, f"{group}.dead-letter")
    produce_values(bootstrap, topic, range(1, 21))
    seen: Counter[int] = Counter()

    def handler(messages: list[Message]) -> None:
        values = [int(m.value() or b"0") for m in messages]
        seen.update(values)
        if 13 in values:
            raise ValueError("poison")

    stats = Processor(
        bootstrap, group, [topic], "at-most-once", handler, handle_batches=True, batch_size=5
    ).run(idle_timeout=1)

    assert set(seen) == set(range(1, 21))
    assert all(count == 1 for count in seen.values()), "at-most-once never calls twice"
    # Only the poll batch holding 13 (at most 5 messages) is dropped, and dead-lettered.
    assert stats.dropped == stats.dead_lettered == 20 - stats.processed
    assert 1 <= stats.dropped <= 5


def test_at_least_once_commits_offsets_once_per_interval_not_per_poll_batch(
    odradek_broker: Broker,
) -> None:
    bootstrap = odradek_broker.bootstrap_servers
    topic = create_topic(bootstrap, unique("events"))
    produce_values(bootstrap, topic, range(100))
    committed: list[int] = []

    def run(commit_interval: float) -> int:
        group = unique("group")
        stats = Processor(
            bootstrap,
            group,
            [topic],
            "at-least-once",
            lambda message: None,
            batch_size=10,
            commit_interval=commit_interval,
            max_transaction_messages=50,
            on_after_commit=lambda batch: committed.append(len(batch)),
        ).run(idle_timeout=1)
        assert committed_offset(bootstrap, group, topic) == 100
        return stats.committed_batches

    assert run(60.0) == 2, "bounded by max_transaction_messages: two commits of 50"
    assert committed[-2:] == [50, 50], "the hooks see every message of the interval"
    assert run(0.0) == 10, "commit_interval=0: every poll batch"


def test_at_least_once_refuses_a_sqlite_sink_whose_commits_a_power_loss_can_undo(
    tmp_path: Path,
) -> None:
    lossy = SqliteSink(tmp_path / "sink.db", synchronous="NORMAL")
    with pytest.raises(IncompatibleSettingsError, match="synchronous=FULL"):
        Processor("127.0.0.1:1", "g", ["t"], "at-least-once", print, sink=lossy)
    # Exactly-once rolls its offsets back with the rows: NORMAL keeps the guarantee.
    Processor("127.0.0.1:1", "g", ["t"], "exactly-once", print, sink=lossy)
    with pytest.raises(ValueError, match="OFF"):
        SqliteSink(tmp_path / "sink.db", synchronous="OFF")


def test_a_batch_handler_cannot_feed_an_output_topic() -> None:
    with pytest.raises(IncompatibleSettingsError, match="per input"):
        Processor(
            "127.0.0.1:1",
            "g",
            ["t"],
            "at-least-once",
            print,
            output_topic="out",
            handle_batches=True,
        )


def test_at_least_once_into_a_sink_commits_one_database_transaction_per_interval(
    odradek_broker: Broker, tmp_path: Path
) -> None:
    bootstrap = odradek_broker.bootstrap_servers
    topic = create_topic(bootstrap, unique("events"))
    group = unique("group")
    produce_values(bootstrap, topic, range(100))
    commits: list[int] = []

    class CountingSink(SqliteSink):
        def commit(self) -> None:
            (rows,) = self.connection.execute("SELECT count(*) FROM rows").fetchone()
            commits.append(int(rows))
            super().commit()

    with sqlite3.connect(tmp_path / "sink.db") as connection:
        connection.execute("CREATE TABLE rows (value INTEGER)")
    sink = CountingSink(tmp_path / "sink.db")
    sink.open()
    commits.clear()  # the sink's own schema transaction

    def handler(messages: list[Message], tx: Any) -> None:
        tx.executemany("INSERT INTO rows VALUES (?)", [(int(m.value() or b"0"),) for m in messages])

    stats = Processor(
        bootstrap,
        group,
        [topic],
        "at-least-once",
        handler,
        sink=sink,
        handle_batches=True,
        batch_size=10,
        commit_interval=60.0,
        max_transaction_messages=50,
    ).run(idle_timeout=1)

    assert commits == [50, 100], "two transactions of five poll batches each"
    assert stats.committed_batches == 2
    assert committed_offset(bootstrap, group, topic) == 100


def test_assigned_partitions_start_at_the_committed_offset_or_where_the_reset_policy_says(
    odradek_broker: Broker,
) -> None:
    """The Processor looks up the start itself: librdkafka would wait a fixed 100 ms before
    resetting a partition without a committed offset."""
    bootstrap = odradek_broker.bootstrap_servers
    topic = create_topic(bootstrap, unique("events"))
    produce_values(bootstrap, topic, range(10))
    committed_group = unique("group")
    Processor(bootstrap, committed_group, [topic], "at-least-once", lambda message: None).run(
        idle_timeout=1
    )
    assert committed_offset(bootstrap, committed_group, topic) == 10

    def start(group: str, reset: str) -> list[int]:
        processor = Processor(
            bootstrap,
            group,
            [topic],
            "at-least-once",
            lambda message: None,
            config={"auto.offset.reset": reset},
        )
        consumer = Consumer(processor.consumer_config())
        try:
            unset = [TopicPartition(topic, 0)]
            return [tp.offset for tp in processor._start_positions(consumer, unset)]
        finally:
            consumer.close()

    assert start(unique("group"), "earliest") == [OFFSET_BEGINNING]
    assert start(unique("group"), "latest") == [OFFSET_END]
    assert start(unique("group"), "error") == [OFFSET_INVALID], "librdkafka reports it"
    assert start(committed_group, "latest") == [10]

    # End to end: the committed group resumes where it stopped (with the committed offset's
    # leader epoch, as librdkafka's own lookup would).
    produce_values(bootstrap, topic, range(10, 15))
    handled: list[int] = []
    Processor(
        bootstrap,
        committed_group,
        [topic],
        "at-least-once",
        lambda message: handled.append(int(message.value() or b"0")),
    ).run(idle_timeout=1)
    assert handled == [10, 11, 12, 13, 14]
    assert committed_offset(bootstrap, committed_group, topic) == 15
