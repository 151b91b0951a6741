"""Exactly-once under crashes: a consume-transform-produce copier (a process) is killed with
SIGKILL several times and the broker (`odradek serve`) once; afterwards a read_committed reader
of the output finds every input exactly once."""

from __future__ import annotations

import collections
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer
from eos_helpers import create_topic, read_all
from serve_process import ServeProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

COPIER = Path(__file__).with_name("copier.py")
BROKER_OVERRIDES = (
    "group.initial.rebalance.delay.ms=0",
    "group.min.session.timeout.ms=1000",
    "transaction.abort.timed.out.transaction.cleanup.interval.ms=100",
)


class Broker(ServeProcess):
    """`odradek serve` whose output is drained by a thread (a full pipe would block it)."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir, *BROKER_OVERRIDES)
        self._drain = threading.Thread(target=self._read_output, daemon=True)
        self._drain.start()

    def _read_output(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)

    def _collect(self) -> None:
        self._drain.join(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()


def start_copier(bootstrap: str, source: str, target: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(COPIER), bootstrap, source, target, "copy-group", "copier-1", "0.05"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        text=True,
    )


def kill(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)


def test_copier_and_broker_killed_every_input_copied_exactly_once(tmp_path: Path) -> None:
    rng = random.Random(447)
    broker = Broker(tmp_path / "data")
    copier: subprocess.Popen[str] | None = None
    try:
        source = create_topic(broker.bootstrap, partitions=2, name="copy-in")
        target = create_topic(broker.bootstrap, partitions=2, name="copy-out")
        inputs = [b"message-%04d" % i for i in range(1500)]
        producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
        for index, value in enumerate(inputs):
            producer.produce(source, value=value, partition=index % 2)
        assert producer.flush(30) == 0
        del producer

        progress = []
        for round_number in range(4):
            copier = start_copier(broker.bootstrap, source, target)
            time.sleep(rng.uniform(2.5, 4.0))
            if round_number == 2:
                broker.kill()  # the broker dies under a running copier
                kill(copier)
                broker = Broker(tmp_path / "data")
            else:
                kill(copier)
            progress.append(
                len(read_all(broker.bootstrap, target, "read_committed", 2, timeout_s=2))
            )
        # The kills landed while there was work left (not after the copy was done).
        assert progress[0] > 0, progress
        assert progress[-1] < len(inputs), progress

        copier = start_copier(broker.bootstrap, source, target)
        deadline = time.monotonic() + 90
        copied: list[bytes] = []
        while time.monotonic() < deadline:
            copied = read_all(broker.bootstrap, target, "read_committed", 2, timeout_s=5)
            if len(copied) >= len(inputs):
                break
            time.sleep(1)
        kill(copier)
        copier = None
        copied = read_all(broker.bootstrap, target, "read_committed", 2, expect=len(inputs))
        counts = collections.Counter(copied)
        duplicates = {value: n for value, n in counts.items() if n > 1}
        missing = set(inputs) - set(counts)
        assert not duplicates, f"{len(duplicates)} duplicated, e.g. {list(duplicates)[:3]}"
        assert not missing, f"{len(missing)} missing, e.g. {sorted(missing)[:3]}"
        assert len(copied) == len(inputs)
    finally:
        if copier is not None:
            kill(copier)
        broker.kill()
