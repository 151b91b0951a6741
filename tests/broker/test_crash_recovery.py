"""kill -9 during an acks=all produce stream: every acknowledged message survives."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from serve_process import ServeProcess


@pytest.mark.parametrize("acks", ["all", "1"])
def test_kill_9_during_produce_stream_loses_nothing_acknowledged(tmp_path: Path, acks: str) -> None:
    # A process crash: acks=1 data is with the OS, acks=all data is also fsynced.
    broker = ServeProcess(tmp_path)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("stream", 2, 1)])["stream"].result(timeout=10)
    producer = Producer(
        {
            "bootstrap.servers": broker.bootstrap,
            "acks": acks,
            "enable.idempotence": False,
            "linger.ms": 1,
            "message.timeout.ms": 3000,
            "retries": 0,
        }
    )
    acknowledged: set[bytes] = set()
    lock = threading.Lock()

    def on_delivery(error: KafkaError | None, message: Any) -> None:
        if error is None:
            with lock:
                acknowledged.add(message.value())

    sent = 0
    killed_at = time.monotonic() + 1.5
    while time.monotonic() < killed_at:
        producer.produce("stream", value=b"m-%08d" % sent, on_delivery=on_delivery)
        sent += 1
        producer.poll(0)
        if sent % 1000 == 0:
            time.sleep(0.005)
    broker.kill()
    producer.flush(10)
    assert acknowledged, "nothing was acknowledged before the kill"

    restarted = ServeProcess(tmp_path)
    try:
        consumer = Consumer(
            {
                "bootstrap.servers": restarted.bootstrap,
                "group.id": "reader",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            }
        )
        consumer.assign([TopicPartition("stream", p, OFFSET_BEGINNING) for p in (0, 1)])
        found: dict[int, list[int]] = {0: [], 1: []}
        values: set[bytes] = set()
        at_end: set[int] = set()
        deadline = time.monotonic() + 60
        while len(at_end) < 2 and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error():
                assert message.error().code() == KafkaError._PARTITION_EOF
                at_end.add(message.partition())
                continue
            found[message.partition()].append(message.offset())
            values.add(message.value())
        consumer.close()
        assert at_end == {0, 1}, "the log did not read to its end"
        assert acknowledged <= values, f"lost {len(acknowledged - values)} acknowledged messages"
        for offsets in found.values():
            assert offsets == list(range(len(offsets))), "offsets are not contiguous"
    finally:
        assert restarted.terminate() == 0


@pytest.mark.parametrize("signal_name", ["SIGTERM"])
def test_sigterm_shuts_down_cleanly(tmp_path: Path, signal_name: str) -> None:
    broker = ServeProcess(tmp_path)
    assert broker.terminate() == 0
    assert any("stopped cleanly" in line for line in broker.output)
