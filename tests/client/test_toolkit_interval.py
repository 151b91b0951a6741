"""Exactly-once into an output topic with one transaction per commit interval (issue 16).

A transaction spans several poll batches; it commits on its interval or size bound, before its
partitions are revoked, and an abort rewinds every partition it read to the committed position.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from confluent_kafka import Consumer, Message, TopicPartition
from toolkit_helpers import create_topic, produce_values, require_transactions, unique, wait_until

from odradek.broker.server import Broker
from odradek.client import IncompatibleSettingsError, OutputRecord, Processor

pytestmark = pytest.mark.timeout(90)


def committed_output(bootstrap: str, topic: str, expected: int) -> list[int]:
    """Every committed value of a one-partition output topic (read_committed)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique("reader"),
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    values: list[int] = []
    idle_polls = 0
    while idle_polls < (3 if len(values) >= expected else 20):
        messages = [m for m in consumer.consume(200, 0.25) if m.error() is None]
        idle_polls = 0 if messages else idle_polls + 1
        values += [int(m.value() or b"0") for m in messages]
    consumer.close()
    return values


def test_the_transaction_timeout_must_exceed_the_commit_interval() -> None:
    with pytest.raises(IncompatibleSettingsError, match=r"transaction\.timeout\.ms=1000"):
        Processor(
            "127.0.0.1:1",
            "group",
            ["in"],
            "exactly-once",
            lambda message: message.value(),
            output_topic="out",
            config={"transaction.timeout.ms": 1000},
            commit_interval=1.0,
        )


def test_one_transaction_spans_poll_batches_up_to_its_size_bound(
    odradek_broker: Broker,
) -> None:
    bootstrap = odradek_broker.bootstrap_servers
    require_transactions(bootstrap)
    topic = create_topic(bootstrap, unique("interval-in"))
    output = create_topic(bootstrap, unique("interval-out"))
    values = list(range(1, 201))
    produce_values(bootstrap, topic, values)
    transactions: list[int] = []
    processor = Processor(
        bootstrap,
        unique("group"),
        [topic],
        "exactly-once",
        lambda message: message.value(),
        output_topic=output,
        batch_size=10,
        commit_interval=30.0,
        max_transaction_messages=50,
        run_preflight=False,
        on_after_commit=lambda batch: transactions.append(len(batch)),
    )
    stats = processor.run(idle_timeout=1)
    assert transactions == [50, 50, 50, 50], "five poll batches per transaction"
    assert stats.committed_batches == 4
    assert sorted(committed_output(bootstrap, output, len(values))) == values


def test_an_error_in_an_open_interval_transaction_replays_from_the_committed_position(
    odradek_broker: Broker,
) -> None:
    """A produce refused halfway through a 200-message transaction aborts it; every partition
    it read is rewound to its committed position (not just the last poll batch), and the
    output holds each input once. A generator handler that fails after yielding is retried
    without its first records reaching the transaction."""
    bootstrap = odradek_broker.bootstrap_servers
    require_transactions(bootstrap)
    topic = create_topic(bootstrap, unique("abort-in"), partitions=2)
    output = create_topic(bootstrap, unique("abort-out"))
    values = list(range(1, 201))
    produce_values(bootstrap, topic, values, partitions=2)
    seen: Counter[tuple[int, int]] = Counter()

    def handler(message: Message) -> Iterator[Any]:
        key = (message.partition(), message.offset())
        seen[key] += 1
        if key == (1, 80) and seen[key] == 1:
            # Partition 7 does not exist: the producer refuses the record.
            yield OutputRecord(message.value(), partition=7)
            return
        yield message.value()
        if key == (0, 30) and seen[key] == 1:
            raise RuntimeError("fails after its first record")

    processor = Processor(
        bootstrap,
        unique("group"),
        [topic],
        "exactly-once",
        handler,
        output_topic=output,
        batch_size=10,
        commit_interval=30.0,
        run_preflight=False,
    )
    stats = processor.run(idle_timeout=1)
    assert stats.aborted_transactions == 1
    assert stats.retries == 1
    assert sorted(committed_output(bootstrap, output, len(values))) == values, (
        "each input forwarded exactly once"
    )
    # Nothing was committed before the abort: each partition the transaction read is replayed
    # from offset 0, not from the start of the poll batch in hand.
    replayed = {key for key, count in seen.items() if count > 1} - {(0, 30)}
    assert (1, 0) in replayed
    assert (0, 0) in replayed or not any(partition == 0 for partition, _ in replayed)


def _drain(processor: Processor, stats: list[Any]) -> None:
    stats.append(processor.run(idle_timeout=3))


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_a_rebalance_inside_an_open_interval_transaction_neither_loses_nor_duplicates(
    odradek_broker: Broker, protocol: str
) -> None:
    """A second processor joins while the first holds an open transaction with 30 s left in its
    interval: the first commits it in its revocation callback (eager under the classic
    protocol, incremental under KIP-848) before the partitions move."""
    bootstrap = odradek_broker.bootstrap_servers
    require_transactions(bootstrap)
    topic = create_topic(bootstrap, unique("rebalance-in"), partitions=2)
    output = create_topic(bootstrap, unique("rebalance-out"))
    values = list(range(1, 401))
    produce_values(bootstrap, topic, values, partitions=2)
    group = unique("group")
    config: dict[str, str | int] = (
        {"group.protocol": "consumer"}
        if protocol == "consumer"
        else {"session.timeout.ms": 6000, "heartbeat.interval.ms": 200}
    )
    handled: Counter[str] = Counter()
    partitions_read: set[int] = set()
    revoked_with: list[int] = []

    def make(instance: str) -> Processor:
        def handler(message: Message) -> bytes:
            handled[instance] += 1
            if instance == "first":
                partitions_read.add(int(message.partition() or 0))
            time.sleep(0.01)  # slow enough that the input outlasts the rebalance
            return str(2 * int(message.value() or b"0")).encode()

        def before_commit(batch: Sequence[Message]) -> None:
            if instance == "first" and not revoked_with:
                revoked_with.append(len(batch))

        return Processor(
            bootstrap,
            group,
            [topic],
            "exactly-once",
            handler,
            output_topic=output,
            config=config,
            instance_id=instance,
            batch_size=5,
            commit_interval=30.0,
            run_preflight=False,
            on_before_commit=before_commit,
        )

    first, second = make("first"), make("second")
    stats: list[Any] = []
    threads = [threading.Thread(target=_drain, args=(p, stats)) for p in (first, second)]
    threads[0].start()
    try:
        # Whichever partition moves, the open transaction has read from it.
        wait_until(lambda: len(partitions_read) == 2, 30, "the first processor reads both")
        threads[1].start()
        wait_until(lambda: bool(revoked_with), 40, "the first processor commits")
    finally:
        for thread in threads:
            if thread.is_alive():
                thread.join(80)
    assert revoked_with[0] < len(values), (
        "the first commit came from the revocation, with the transaction still open"
    )
    forwarded = committed_output(bootstrap, output, len(values))
    duplicates = [value for value, count in Counter(forwarded).items() if count > 1]
    assert duplicates == [], "nothing forwarded twice"
    assert sorted(forwarded) == sorted(2 * v for v in values), "nothing lost"
    assert [s.aborted_transactions for s in stats] == [0, 0], (
        "the open transaction was committed, not fenced and aborted after the partitions moved"
    )
