"""Power loss: `odradek.storage.mode=lazy` makes kill -9 lose exactly what was not fsynced.

acks=all (with `odradek.acks.all.fsync`) is acknowledged only after the fdatasync, so every
acknowledged message survives; acks=1 is acknowledged from memory, so a power cut loses what was
not flushed yet -- where a plain kill -9 (the `os` mode, the page cache survives) loses nothing.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from serve_process import ServeProcess


def _producer(bootstrap: str, acks: str) -> Producer:
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": acks,
            "enable.idempotence": False,
            "linger.ms": 1,
            "message.timeout.ms": 3000,
            "retries": 0,
        }
    )


def _read_to_end(
    bootstrap: str, topic: str, partitions: int
) -> tuple[set[bytes], dict[int, list[int]]]:
    """Every value in the topic and each partition's offsets; fails unless it reads to the end."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{topic}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    offsets: dict[int, list[int]] = {p: [] for p in range(partitions)}
    values: set[bytes] = set()
    at_end: set[int] = set()
    deadline = time.monotonic() + 60
    try:
        while len(at_end) < partitions and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error():
                assert message.error().code() == KafkaError._PARTITION_EOF
                at_end.add(message.partition())
                continue
            offsets[message.partition()].append(message.offset())
            values.add(message.value())
    finally:
        consumer.close()
    assert at_end == set(range(partitions)), f"{topic}: the log did not read to its end"
    for partition, found in offsets.items():
        assert found == list(range(len(found))), f"{topic}-{partition}: offsets not contiguous"
    return values, offsets


@pytest.mark.parametrize("mode", ["lazy", "os"])
def test_power_loss_keeps_acks_all_and_drops_unsynced_acks_1(tmp_path: Path, mode: str) -> None:
    overrides = (f"odradek.storage.mode={mode}", "odradek.acks.all.fsync=true")
    broker = ServeProcess(tmp_path, *overrides)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for future in admin.create_topics([NewTopic("durable", 2, 1), NewTopic("fast", 1, 1)]).values():
        future.result(timeout=10)
    durable = _producer(broker.bootstrap, "all")
    fast = _producer(broker.bootstrap, "1")
    acknowledged: dict[str, set[bytes]] = {"durable": set(), "fast": set()}
    lock = threading.Lock()

    def on_delivery(error: KafkaError | None, message: Any) -> None:
        if error is None:
            with lock:
                acknowledged[message.topic()].add(message.value())

    sent = 0
    stop_at = time.monotonic() + 1.5
    while time.monotonic() < stop_at:
        durable.produce("durable", value=b"d-%08d" % sent, on_delivery=on_delivery)
        fast.produce("fast", value=b"f-%08d" % sent, on_delivery=on_delivery)
        sent += 1
        durable.poll(0)
        fast.poll(0)
        if sent % 500 == 0:
            time.sleep(0.005)
    # Every acks=1 message acknowledged (from memory); acks=all still streaming at the kill.
    assert fast.flush(10) == 0
    for extra in range(200):
        durable.produce("durable", value=b"x-%08d" % extra, on_delivery=on_delivery)
    durable.poll(0.05)
    broker.kill()
    durable.flush(10)
    assert acknowledged["durable"], "no acks=all message was acknowledged before the kill"
    assert len(acknowledged["fast"]) == sent

    restarted = ServeProcess(tmp_path, *overrides)
    try:
        durable_values, _ = _read_to_end(restarted.bootstrap, "durable", 2)
        lost = acknowledged["durable"] - durable_values
        assert not lost, f"lost {len(lost)} acknowledged acks=all messages"

        fast_values, _ = _read_to_end(restarted.bootstrap, "fast", 1)
        lost_fast = acknowledged["fast"] - fast_values
        if mode == "lazy":
            # Nothing fsynced the acks=1 topic (no flush.messages / flush.ms): the power cut
            # took what only the broker's memory held.
            assert lost_fast, "lazy mode lost no unsynced acks=1 message"
        else:
            assert not lost_fast, f"a plain kill -9 lost {len(lost_fast)} acks=1 messages"

        # The log goes on after the cut: a new message lands right after what survived.
        producer = _producer(restarted.bootstrap, "all")
        offsets: list[int] = []
        producer.produce(
            "fast", value=b"after", on_delivery=lambda e, m: offsets.append(m.offset())
        )
        assert producer.flush(10) == 0
        assert offsets == [len(fast_values)]
    finally:
        assert restarted.terminate() == 0
    assert any("odradek.storage.mode=lazy" in line for line in broker.output) == (mode == "lazy")
