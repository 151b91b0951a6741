"""The workloads: per guarantee, producer -> input topic -> processor -> SQLite sink; and the
transactional workload (`TxnWorkload`, Jepsen's queue workload with transactions).

Configured through `odradek.client`: the producer is a `GuaranteeProducer`, the processor an
`odradek.client.Processor` (in its own process, see `worker.py`), both with the guarantee's
settings plus the checker's shortened timeouts. Every produced value is a unique integer.
"""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported, not in __all__
    AdminClient,
    NewTopic,
)

from odradek.check.history import (
    ASSIGN,
    FAIL,
    FINAL_POLL,
    FINAL_SINK,
    INFO,
    INVOKE,
    OK,
    SEND,
    TXN,
    HistoryWriter,
)
from odradek.check.worker import SINK_SCHEMA, SINK_TABLE, WorkerSpec
from odradek.client import Guarantee, GuaranteeProducer

# The checker's own workloads wait less than production clients, so a 20-second run has room to
# recover from several faults: quick reconnects and retries, short sessions.
PRODUCER_OVERRIDES: dict[str, str | int | bool] = {
    "log_level": 0,  # the faults make librdkafka log every disconnection; the history has them
    "linger.ms": 5,
    "request.timeout.ms": 3000,
    "socket.timeout.ms": 5000,
    "delivery.timeout.ms": 30000,
    "retry.backoff.ms": 50,
    "retry.backoff.max.ms": 500,
    "reconnect.backoff.ms": 50,
    "reconnect.backoff.max.ms": 500,
    "metadata.max.age.ms": 5000,
}
PROCESSOR_OVERRIDES: dict[str, str | int | bool] = {
    "log_level": 0,
    # The processor reports the log end it reached (worker.py); the final drain waits for it.
    "consumer.enable.partition.eof": True,
    "session.timeout.ms": 3000,
    "heartbeat.interval.ms": 300,
    "max.poll.interval.ms": 15000,
    "fetch.wait.max.ms": 100,
    "socket.timeout.ms": 5000,
    "reconnect.backoff.ms": 50,
    "reconnect.backoff.max.ms": 500,
    "producer.request.timeout.ms": 3000,
    "producer.delivery.timeout.ms": 30000,
}


def admin_config(bootstrap: str) -> dict[str, Any]:
    return {"bootstrap.servers": bootstrap, "socket.timeout.ms": 5000, "log_level": 0}


def create_topic(bootstrap: str, topic: str, partitions: int, timeout: float = 30.0) -> None:
    admin = AdminClient(admin_config(bootstrap))
    deadline = time.monotonic() + timeout
    while True:
        futures = admin.create_topics([NewTopic(topic, partitions, 1)], operation_timeout=10)
        try:
            futures[topic].result(timeout=15)
            return
        except KafkaException as error:
            if "TOPIC_ALREADY_EXISTS" in str(error) or time.monotonic() > deadline:
                if "TOPIC_ALREADY_EXISTS" in str(error):
                    return
                raise
            time.sleep(0.5)


def create_sink(path: Path) -> None:
    """The sink table, in WAL mode so the checker can count rows while the processor writes."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(SINK_SCHEMA)
    finally:
        connection.close()


class SinkReader:
    """Read-only looks at the sink while the run goes on."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _query(self, statement: str) -> list[tuple[Any, ...]]:
        connection = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10)
        try:
            return connection.execute(statement).fetchall()
        finally:
            connection.close()

    def rows(self) -> int:
        with contextlib.suppress(sqlite3.Error):
            return int(self._query(f"SELECT COALESCE(MAX(rowid), 0) FROM {SINK_TABLE}")[0][0])
        return 0

    def values(self) -> list[int]:
        return [
            int(row[0]) for row in self._query(f"SELECT value FROM {SINK_TABLE} ORDER BY rowid")
        ]

    def stored_offsets(self, group: str) -> dict[int, int]:
        with contextlib.suppress(sqlite3.Error):
            rows = self._query(
                "SELECT partition_id, next_offset FROM odradek_offsets"
                f" WHERE group_id = '{group}' AND next_offset IS NOT NULL"
            )
            return {int(partition): int(offset) for partition, offset in rows}
        return {}


class ProducerWorkload:
    """Sends unique values until the deadline or the cap, keeping at most `window` in flight
    end to end (sent but not yet in the sink), so the rate is the pipeline's, not the producer's."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        partitions: int,
        guarantee: Guarantee,
        history: HistoryWriter,
        delivered: Callable[[], int],
        *,
        window: int = 2000,
    ) -> None:
        self.topic = topic
        self.partitions = partitions
        self.history = history
        self.delivered = delivered
        self.window = window
        self.producer = GuaranteeProducer(bootstrap, guarantee, dict(PRODUCER_OVERRIDES))
        self.sent = 0
        self.next_value = 0  # values are unique across every `run` of one workload
        self.acked = 0
        self.unknown = 0
        self._written_off = 0  # in-flight values the window stopped waiting for
        self._stop = threading.Event()

    def _on_delivery(self, value: int) -> Callable[[Any, Any], None]:
        def report(error: Any, message: Any) -> None:
            if error is None:
                offset = message.offset()
                offsets = (
                    [message.partition(), offset] if offset is not None and offset >= 0 else None
                )
                self.history.write("producer", OK, SEND, value, offsets)
                self.acked += 1
            else:
                # A send that errors may still have been written (a lost acknowledgement): unknown.
                self.history.write("producer", INFO, SEND, value, None, error=str(error))
                self.unknown += 1

        return report

    def stop(self) -> None:
        self._stop.set()

    def run(self, deadline: float, messages: int | None) -> None:
        """Send until `deadline` (monotonic s) or until `messages` more values were sent, then
        wait for their delivery reports."""
        self.send(deadline, messages)
        self.flush()

    def send(self, deadline: float, messages: int | None) -> None:
        """Send until `deadline` (monotonic s) or until `messages` more values were sent; the
        delivery reports may still be outstanding (`flush`)."""
        first = value = self.next_value
        blocked_since = 0.0
        while not self._stop.is_set() and time.monotonic() < deadline:
            if messages is not None and value - first >= messages:
                break
            if self.sent - self.delivered() - self._written_off >= self.window:
                blocked_since = blocked_since or time.monotonic()
                if time.monotonic() - blocked_since > 1.0:
                    # Nothing arrived for a second: what is in flight may be lost (at-most-once)
                    # or held up by a fault; stop waiting for it.
                    self._written_off = self.sent - self.delivered()
                self.producer.producer.poll(0.01)
                continue
            blocked_since = 0.0
            self.history.write("producer", INVOKE, SEND, value, None)
            self.producer.produce(
                self.topic,
                str(value).encode(),
                partition=value % self.partitions,
                on_delivery=self._on_delivery(value),
            )
            self.sent += 1
            value += 1
            self.next_value = value

    def flush(self) -> None:
        remaining = self.producer.flush(35)
        if remaining:
            # Never reported: indeterminate, like a timeout.
            self.unknown += remaining


class ProcessorSupervisor:
    """Keeps one processor process running; a killed one is restarted as a new process name."""

    def __init__(self, spec: WorkerSpec, directory: Path) -> None:
        self.spec = spec
        self.directory = directory
        self.incarnation = 0
        self.restarts = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._watch, name="odradek-check-processor", daemon=True
        )
        self._log = (directory / "processor.log").open("ab")

    def history_paths(self) -> list[Path]:
        return sorted(self.directory.glob("history-processor-*.jsonl"))

    def _spawn(self) -> None:
        self.incarnation += 1
        name = f"processor-{self.incarnation}"
        history = self.directory / f"history-{name}.jsonl"
        spec_path = self.directory / f"{name}.json"
        replace(self.spec, process=name, history_path=str(history)).dump(spec_path)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "odradek.check.worker", str(spec_path)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def start(self) -> None:
        self._spawn()
        self._thread.start()

    def _watch(self) -> None:
        while not self._stopping.is_set():
            process = self.process
            if process is not None and process.poll() is not None and not self._stopping.is_set():
                self.restarts += 1
                self._spawn()
            self._stopping.wait(0.05)

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)
        process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._log.close()


def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = Consumer({**admin_config(bootstrap), "group.id": f"{topic}-watermarks"})
    try:
        return {
            partition: int(consumer.get_watermark_offsets(TopicPartition(topic, partition), 10)[1])
            for partition in range(partitions)
        }
    finally:
        consumer.close()


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = Consumer({**admin_config(bootstrap), "group.id": group})
    try:
        result = consumer.committed(
            [TopicPartition(topic, partition) for partition in range(partitions)], timeout=10
        )
        return {tp.partition: int(tp.offset) for tp in result if tp.offset >= 0}
    finally:
        consumer.close()


def final_poll(bootstrap: str, topic: str, partitions: int, history: HistoryWriter) -> None:
    """Read the whole input topic (read_committed) into one `final-poll` op: the version order."""
    ends = end_offsets(bootstrap, topic, partitions)
    consumer = Consumer(
        {
            **admin_config(bootstrap),
            "group.id": f"{topic}-final-poll",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    values: list[int] = []
    offsets: list[list[int]] = []
    try:
        consumer.assign(
            [TopicPartition(topic, partition, OFFSET_BEGINNING) for partition in range(partitions)]
        )
        finished = {partition for partition, end in ends.items() if end == 0}
        deadline = time.monotonic() + 60
        while len(finished) < partitions and time.monotonic() < deadline:
            received: list[Any] = consumer.consume(1000, 0.5)
            for message in received:
                error = message.error()
                if error is not None:
                    if error.code() == -191:  # _PARTITION_EOF
                        finished.add(message.partition())
                    continue
                values.append(int(message.value()))
                offsets.append([message.partition(), message.offset()])
                if message.offset() + 1 >= ends.get(message.partition(), 0):
                    finished.add(message.partition())
    finally:
        consumer.close()
    history.write("drain", OK, FINAL_POLL, values, offsets)


def final_sink(reader: SinkReader, history: HistoryWriter) -> None:
    history.write("drain", OK, FINAL_SINK, reader.values(), None)


# -- the transactional workload (Jepsen's "queue" workload with transactions) --------------------
TXN_PRODUCER_OVERRIDES: dict[str, str | int | bool] = {
    **PRODUCER_OVERRIDES,
    "transaction.timeout.ms": 10000,
    "delivery.timeout.ms": 10000,  # librdkafka: at most transaction.timeout.ms
}
TXN_CONSUMER_CONFIG: dict[str, str | int | bool] = {
    "log_level": 0,
    "isolation.level": "read_committed",
    "enable.auto.commit": False,
    "auto.offset.reset": "earliest",
    "session.timeout.ms": 6000,
    "fetch.wait.max.ms": 50,
    "socket.timeout.ms": 5000,
    "reconnect.backoff.ms": 50,
    "reconnect.backoff.max.ms": 500,
}
TXN_TIMEOUT_SECONDS = 10.0  # commit and abort calls give up after this; the outcome is then info
MAX_MOPS = 4  # Jepsen's max-txn-length with transactions


class TxnWorkload:
    """Jepsen's transactional queue workload: `processes` client threads, each with its own
    transactional producer (a `transactional.id` per thread, kept across restarts so a restart
    fences the previous producer) and a read_committed consumer assigned every partition from
    the start. Each operation is one Kafka transaction of 1 to `MAX_MOPS` micro-operations,
    each a send of a unique value to a random partition or a poll, written to the history as a
    `txn` op (history.py): `ok` when the commit returned, `fail` when it was aborted, `info`
    when the outcome is unknown. After `fail` or `info` the thread closes both clients and starts
    again as a new process (`txn-N.K`), as a crashed Jepsen client does.

    `send`, `flush`, `stop`, `sent` and `acked` mirror `ProducerWorkload`; `delivered` counts
    the distinct values some committed transaction read."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        partitions: int,
        history: HistoryWriter,
        *,
        processes: int = 2,
        seed: int = 0,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.partitions = partitions
        self.history = history
        self.processes = processes
        self.random = random.Random(seed)
        self.sent = 0
        self.acked = 0
        self.failed = 0
        self.unknown = 0
        self._seen: set[int] = set()
        self._next_value = 0
        self._incarnations = [0] * processes
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.run_id = f"{topic}-{os.getpid()}"

    @property
    def delivered(self) -> int:
        return len(self._seen)

    def stop(self) -> None:
        self._stop.set()

    def flush(self) -> None:
        """Nothing is left in flight: each thread ends on a completed transaction."""

    def send(self, deadline: float, messages: int | None) -> None:
        """Run every client until `deadline` (monotonic s) or until `messages` more values were
        sent; each finishes the transaction in hand."""
        limit = None if messages is None else self.sent + messages
        threads = [
            threading.Thread(
                target=self._client, args=(number, deadline, limit), name=f"odradek-txn-{number}"
            )
            for number in range(self.processes)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _values(self, count: int) -> list[int]:
        with self._lock:
            first = self._next_value
            self._next_value += count
            self.sent += count
        return list(range(first, first + count))

    def _plan(self) -> list[tuple[str, int]]:
        """Micro-operations: ("send", partition) or ("poll", 0)."""
        with self._lock:
            length = self.random.randint(1, MAX_MOPS)
            return [
                ("send", self.random.randrange(self.partitions))
                if self.random.random() < 0.5
                else ("poll", 0)
                for _ in range(length)
            ]

    def _open(self, number: int) -> tuple[str, Producer, Consumer]:
        self._incarnations[number] += 1
        incarnation = self._incarnations[number]
        process = f"txn-{number}" if incarnation == 1 else f"txn-{number}.{incarnation - 1}"
        producer = self._producer(number)
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"{self.run_id}-{process}",
                **TXN_CONSUMER_CONFIG,
            }
        )
        assigned = [
            TopicPartition(self.topic, partition, OFFSET_BEGINNING)
            for partition in range(self.partitions)
        ]
        consumer.assign(assigned)
        self.history.write(process, OK, ASSIGN, list(range(self.partitions)))
        return process, producer, consumer

    def _producer(self, number: int) -> Producer:
        """The thread's transactional producer; `init_transactions` fences (and aborts what is
        left open by) the thread's previous producer."""
        producer = Producer(
            {
                "bootstrap.servers": self.bootstrap,
                "transactional.id": f"{self.run_id}-{number}",
                "enable.idempotence": True,
                "acks": "all",
                **TXN_PRODUCER_OVERRIDES,
            }
        )
        producer.init_transactions(30)
        return producer

    def _client(self, number: int, deadline: float, limit: int | None) -> None:
        clients: tuple[str, Producer, Consumer] | None = None
        clean = True
        while not self._stop.is_set() and time.monotonic() < deadline:
            if limit is not None and self.sent >= limit:
                break
            if clients is None:
                try:
                    clients = self._open(number)
                except KafkaException:
                    time.sleep(0.2)  # the broker may be down: try again
                    continue
            clean = self._transaction(*clients)
            if not clean:
                with contextlib.suppress(Exception):
                    clients[2].close()
                clients = None
        if clients is not None:
            with contextlib.suppress(Exception):
                clients[2].close()
        if not clean:
            # The last transaction's outcome is unknown: fence it, so it cannot hold the last
            # stable offset (and the final drain) until its timeout.
            with contextlib.suppress(KafkaException):
                self._producer(number)

    def _transaction(self, process: str, producer: Producer, consumer: Consumer) -> bool:
        """One transaction; False when the client must start afresh (aborted or unknown)."""
        plan = self._plan()
        values = iter(self._values(sum(1 for kind, _ in plan if kind == "send")))
        invoked: list[list[Any]] = []
        planned: list[tuple[str, int, int]] = []
        for kind, partition in plan:
            if kind == "send":
                value = next(values)
                invoked.append(["send", partition, value])
                planned.append((kind, partition, value))
            else:
                invoked.append(["poll"])
                planned.append((kind, 0, 0))
        self.history.write(process, INVOKE, TXN, invoked)
        offsets: dict[int, int | None] = {}
        completed: list[list[Any]] = []

        def delivered(value: int) -> Callable[[Any, Any], None]:
            def report(error: Any, message: Any) -> None:
                offsets[value] = None if error is not None else message.offset()

            return report

        try:
            producer.begin_transaction()
            for kind, partition, value in planned:
                if kind == "send":
                    producer.produce(
                        self.topic,
                        str(value).encode(),
                        partition=partition,
                        on_delivery=delivered(value),
                    )
                    completed.append(["send", partition, value])
                else:
                    reads = []
                    for message in consumer.consume(100, 0.05):
                        if message.error() is None:
                            reads.append(
                                [message.partition(), message.offset(), int(message.value() or 0)]
                            )
                    completed.append(["poll", reads])
            producer.flush(TXN_TIMEOUT_SECONDS)
            producer.commit_transaction(TXN_TIMEOUT_SECONDS)
        except KafkaException as error:
            return self._abort(process, producer, invoked, completed, offsets, error)
        result = [
            ["send", mop[1], [offsets.get(mop[2]), mop[2]]] if mop[0] == "send" else mop
            for mop in completed
        ]
        self.history.write(process, OK, TXN, result)
        with self._lock:
            self.acked += sum(1 for mop in completed if mop[0] == "send")
            self._seen.update(read[2] for mop in completed if mop[0] == "poll" for read in mop[1])
        return True

    def _abort(
        self,
        process: str,
        producer: Producer,
        invoked: list[list[Any]],
        completed: list[list[Any]],
        offsets: dict[int, int | None],
        error: KafkaException,
    ) -> bool:
        """Abort after `error`: `fail` when the abort went through (nothing of it is visible),
        else `info`. The polls' reads are not recorded (Jepsen's failed ops carry none)."""
        sends = [
            ["send", mop[1], [offsets.get(mop[2]), mop[2]]] if mop[0] == "send" else ["poll"]
            for mop in completed
        ]
        sends += invoked[len(completed) :]
        outcome = INFO
        try:
            producer.abort_transaction(TXN_TIMEOUT_SECONDS)
            outcome = FAIL
        except KafkaException:
            pass
        self.history.write(process, outcome, TXN, sends, error=str(error.args[0]))
        with self._lock:
            if outcome == FAIL:
                self.failed += sum(1 for mop in invoked if mop[0] == "send")
            else:
                self.unknown += sum(1 for mop in invoked if mop[0] == "send")
        return False
