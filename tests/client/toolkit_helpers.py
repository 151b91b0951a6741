"""Helpers for the toolkit tests: produce integer values, run `toolkit_process.py`, read its log."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from odradek.client import GuaranteeProducer

SCRIPT = Path(__file__).resolve().parent / "toolkit_process.py"

INIT_PRODUCER_ID = 22
_names = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{next(_names)}"


def create_topic(bootstrap: str, name: str, partitions: int = 1, **config: str) -> str:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1, config=config)])[name].result(10)
    return name


def api_versions(bootstrap: str) -> dict[int, tuple[int, int]]:
    """The broker's ApiVersions (v0, by hand: the toolkit tests must not lean on broker code)."""
    host, port = bootstrap.split(",", maxsplit=1)[0].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as connection:
        client_id = b"odradek-probe"
        body = struct.pack(">hhih", 18, 0, 1, len(client_id)) + client_id
        connection.sendall(struct.pack(">i", len(body)) + body)
        (size,) = struct.unpack(">i", _read(connection, 4))
        data = _read(connection, size)
    _correlation, _error, count = struct.unpack(">ihi", data[:10])
    versions = {}
    for index in range(count):
        key, low, high = struct.unpack(">hhh", data[10 + 6 * index : 16 + 6 * index])
        versions[key] = (low, high)
    return versions


def _read(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        data += chunk
    return data


def require_transactions(bootstrap: str) -> None:
    """Skip unless the broker advertises InitProducerId (stage 3: transactions)."""
    if INIT_PRODUCER_ID not in api_versions(bootstrap):
        pytest.skip("the broker does not advertise InitProducerId: no transactions (stage 3) yet")


def produce_values(bootstrap: str, topic: str, values: Iterable[int], partitions: int = 1) -> None:
    """Produce each value (round-robin over partitions) with a message id, acks=all."""
    with GuaranteeProducer(bootstrap, "at-least-once", {"linger.ms": 5}) as producer:
        for index, value in enumerate(values):
            producer.produce(topic, str(value).encode(), partition=index % partitions)
    assert producer.flush(15) == 0


def processor_command(
    bootstrap: str, topic: str, group: str, guarantee: str, log: Path, *options: str
) -> list[str]:
    return [sys.executable, str(SCRIPT), bootstrap, topic, group, guarantee, str(log), *options]


def run_processor(
    bootstrap: str, topic: str, group: str, guarantee: str, log: Path, *options: str
) -> int:
    """Run one processor to its end (idle timeout or its own SIGKILL); returns its exit code."""
    completed = subprocess.run(
        processor_command(bootstrap, topic, group, guarantee, log, *options),
        timeout=90,
        check=False,
    )
    return completed.returncode


def start_processor(
    bootstrap: str, topic: str, group: str, guarantee: str, log: Path, *options: str
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(processor_command(bootstrap, topic, group, guarantee, log, *options))


KILLED = -signal.SIGKILL


def log_lines(log: Path, kind: str) -> list[list[str]]:
    if not log.exists():
        return []
    return [line.split()[1:] for line in log.read_text().splitlines() if line.startswith(kind)]


def positions(log: Path, kind: str) -> list[tuple[int, int]]:
    return [(int(p), int(o)) for p, o in log_lines(log, kind)]


def run_stats(log: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line.removeprefix("STATS "))
        for line in log.read_text().splitlines()
        if line.startswith("STATS ")
    ]


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.05)
