"""Where the consumer commits decides the guarantee, proven with SIGKILL on real processes.

Three confluent-kafka consumers share a 6-partition topic. One is killed at a fixed point:
  - commit after processing (at-least-once): nothing is lost, and the only records processed
    twice are the victim's uncommitted window (plus records of any commit that failed);
  - commit before processing (at-most-once): exactly the victim's committed-but-unprocessed
    window is lost, nothing else.
"""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from consumer_processes import ConsumerProcess, Key, wait_until

from odradek.broker.server import Broker

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

PARTITIONS = 6
PER_PARTITION = 50
_names = itertools.count()


def produce_all(bootstrap: str, topic: str) -> set[Key]:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for partition in range(PARTITIONS):
        for index in range(PER_PARTITION):
            producer.produce(topic, f"{partition}-{index}".encode(), partition=partition)
    assert producer.flush(15) == 0
    return {(p, o) for p in range(PARTITIONS) for o in range(PER_PARTITION)}


def start_group(bootstrap: str, tmp_path: Path, mode: str) -> tuple[str, list[ConsumerProcess]]:
    name = f"kill-{next(_names)}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, PARTITIONS, 1)])[name].result(10)
    consumers = [
        ConsumerProcess.start(
            tmp_path / f"consumer-{index}.log",
            bootstrap,
            name,
            f"group-{name}",
            mode,
            *(["--kill-after", "20"] if index == 0 else []),
        )
        for index in range(3)
    ]
    wait_until(
        lambda: (
            all(c.assigned() for c in consumers)
            and sum(len(c.assigned() or []) for c in consumers) == PARTITIONS
        ),
        30,
        "each consumer owns partitions",
    )
    return name, consumers


def run_with_kill(
    bootstrap: str, tmp_path: Path, mode: str
) -> tuple[set[Key], list[ConsumerProcess]]:
    topic, consumers = start_group(bootstrap, tmp_path, mode)
    victim, _survivors = consumers[0], consumers[1:]
    try:
        produced = produce_all(bootstrap, topic)
        wait_until(lambda: "PAUSE" in victim.lines(), 30, "the victim reaches its kill point")
        victim.process.kill()
        victim.process.wait(timeout=10)
        lost_window = victim.committed_unprocessed()

        def everything_accounted() -> bool:
            seen = {key for c in consumers for key in c.processed()}
            return seen | lost_window >= produced

        wait_until(everything_accounted, 60, "the survivors process the rest")
    finally:
        for consumer in consumers:
            consumer.stop()
    return produced, consumers


def test_commit_after_processing_is_at_least_once(odradek_broker: Broker, tmp_path: Path) -> None:
    produced, consumers = run_with_kill(odradek_broker.bootstrap_servers, tmp_path, "after")
    victim = consumers[0]
    counts = Counter(key for c in consumers for key in c.processed())
    assert set(counts) == produced, "a record was lost"
    duplicates = {key for key, count in counts.items() if count > 1}
    window = victim.uncommitted_window()
    assert window, "the victim was killed with processed, uncommitted records"
    allowed = window | set().union(*(c.failed_windows() for c in consumers))
    assert window <= duplicates <= allowed
    assert all(counts[key] == 2 for key in duplicates)


def test_commit_before_processing_is_at_most_once(odradek_broker: Broker, tmp_path: Path) -> None:
    produced, consumers = run_with_kill(odradek_broker.bootstrap_servers, tmp_path, "before")
    victim = consumers[0]
    window = victim.committed_unprocessed()
    assert window, "the victim was killed with committed, unprocessed records"
    seen = {key for c in consumers for key in c.processed()}
    assert produced - seen == window
