"""Garbage on some connections while a producer streams: nothing acknowledged is harmed."""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from raw_client import encode_body, encode_request
from test_protocol_edges import batch, produce_request

from odradek.broker.server import Broker
from odradek.protocol.api_keys import ApiKey


def garbage_frames(rng: random.Random) -> list[bytes]:
    valid = encode_request(
        ApiKey.PRODUCE, 10, encode_body(produce_request(10, "victim", batch(5))), 1
    )
    frames = []
    for _ in range(120):
        kind = rng.randrange(5)
        if kind == 0:  # random bytes behind a plausible size
            body = rng.randbytes(rng.randrange(0, 300))
            frames.append(struct.pack(">i", len(body)) + body)
        elif kind == 1:  # a valid produce with bytes flipped (mostly CRC failures)
            mutated = bytearray(valid)
            for _ in range(rng.randrange(1, 6)):
                position = rng.randrange(4, len(mutated))
                mutated[position] ^= 1 << rng.randrange(8)
            frames.append(bytes(mutated))
        elif kind == 2:  # truncated frame, then the connection closes
            frames.append(valid[: rng.randrange(1, len(valid))])
        elif kind == 3:  # absurd size prefix
            frames.append(struct.pack(">i", rng.choice([-1, 2**31 - 1, 200_000_000])))
        else:  # unknown API key
            frames.append(encode_request(rng.randrange(100, 30000), 0, b"", 1, flexible=False))
    return frames


def send_garbage(bootstrap: str, frames: list[bytes]) -> None:
    host, port = bootstrap.rsplit(":", 1)
    for frame in frames:
        try:
            with socket.create_connection((host, int(port)), timeout=2) as sock:
                sock.sendall(frame)
                sock.settimeout(0.05)
                try:
                    while sock.recv(65536):
                        pass
                except (TimeoutError, ConnectionError):
                    pass
        except ConnectionError:
            pass


def test_garbage_beside_a_producer_loses_nothing(tmp_path: Any) -> None:
    with Broker(data_dir=tmp_path) as broker:
        bootstrap = broker.bootstrap_servers
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic("victim", 2, 1)])["victim"].result(10)
        acknowledged: set[bytes] = set()

        def on_delivery(error: KafkaError | None, message: Any) -> None:
            if error is None:
                acknowledged.add(message.value())

        producer = Producer(
            {"bootstrap.servers": bootstrap, "enable.idempotence": False, "linger.ms": 2}
        )
        rng = random.Random(20261127)
        attackers = [
            threading.Thread(target=send_garbage, args=(bootstrap, garbage_frames(rng)))
            for _ in range(3)
        ]
        for attacker in attackers:
            attacker.start()
        sent = 0
        while any(attacker.is_alive() for attacker in attackers) or sent < 2000:
            try:
                producer.produce("victim", value=b"ok-%06d" % sent, on_delivery=on_delivery)
            except BufferError:  # a slow (loaded) machine: let the queue drain, then go on
                producer.poll(0.1)
                continue
            sent += 1
            producer.poll(0)
            if sent % 200 == 0:
                time.sleep(0.01)
        for attacker in attackers:
            attacker.join()
        assert producer.flush(30) == 0
        assert len(acknowledged) == sent

        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "check",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            }
        )
        consumer.assign([TopicPartition("victim", p, OFFSET_BEGINNING) for p in (0, 1)])
        values: list[bytes] = []
        offsets: dict[int, list[int]] = {0: [], 1: []}
        at_end: set[int] = set()
        deadline = time.monotonic() + 30
        while len(at_end) < 2 and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error():
                at_end.add(message.partition())
                continue
            values.append(message.value())
            offsets[message.partition()].append(message.offset())
        consumer.close()
        ours = [value for value in values if value.startswith(b"ok-")]
        assert set(ours) == acknowledged
        assert len(ours) == len(acknowledged)  # no duplicates either
        # Only whole, valid batches were appended: offsets are contiguous from 0.
        for partition_offsets in offsets.values():
            assert partition_offsets == list(range(len(partition_offsets)))
