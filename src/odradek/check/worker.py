"""The processor of a check run, as its own process (`python -m odradek.check.worker SPEC`).

It is an `odradek.client.Processor` consuming the input topic into a SQLite sink table
`check_values(value, partition_id, offset_id, process)`, and it writes its side of the history:
an `assign` op for each assignment, a `poll` op for each sink transaction — `ok` with the
values it committed, `fail` with those it rolled back — and a `batch` op per batch with what the
batch cost (ms waiting in poll, in the sink transaction, in a synchronous Kafka offset commit, in
all), from which the report explains the measured speed order.

The fixed point of the processor-kill fault is the Processor's commit hook: when the checker has
armed the kill (it creates `kill_flag`), the next batch kills this process with SIGKILL between
processing and committing (under at-most-once, between committing and processing, where the
commit is).

For the final drain it also reports how far it has read: at the start of each poll (so after the
previous batch was processed) it rewrites `positions_path` with, per assigned partition, the
offset after the last record it processed, or the log end its consumer reached (librdkafka's
partition EOF event, `enable.partition.eof`; it also comes after an out-of-range committed offset
was reset per `auto.offset.reset` and the log read up to its end). `Consumer.position` cannot
serve: it stays unknown until a record was consumed, so a partition already read to its end never
reports one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from odradek.check.history import ASSIGN, BATCH, FAIL, INFO, OK, POLL, Clock, HistoryWriter
from odradek.client import Guarantee, Processor, SqliteSink

SINK_TABLE = "check_values"
SINK_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {SINK_TABLE} (value INTEGER NOT NULL,"
    " partition_id INTEGER NOT NULL, offset_id INTEGER NOT NULL, process TEXT NOT NULL)"
)


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    bootstrap: str
    group: str
    topic: str
    guarantee: str
    sink_path: str
    history_path: str
    process: str
    clock_origin: int
    kill_flag: str
    config: dict[str, str | int | bool]
    positions_path: str = ""

    def dump(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: Path) -> WorkerSpec:
        return cls(**json.loads(path.read_text()))


class HistorySink(SqliteSink):
    """A SqliteSink that writes a `poll` op when each of its transactions commits or rolls back."""

    def __init__(self, path: str, history: HistoryWriter, process: str) -> None:
        super().__init__(path)
        self.history = history
        self.process = process
        self.written: list[tuple[int, int, int]] = []  # (value, partition, offset) in this tx
        self.elapsed_ms = 0.0  # time spent in transactions since the processor last reset it

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        self.written = []
        started = time.perf_counter()
        try:
            with super().transaction() as tx:
                yield tx
        except BaseException:
            self.elapsed_ms += (time.perf_counter() - started) * 1000
            if self.written:
                self._record(FAIL)
            raise
        self.elapsed_ms += (time.perf_counter() - started) * 1000
        if self.written:
            self._record(OK)

    def _record(self, type_: str) -> None:
        values = [value for value, _, _ in self.written]
        offsets = [[partition, offset] for _, partition, offset in self.written]
        self.history.write(self.process, type_, POLL, values, offsets)
        self.written = []


def read_positions(path: Path) -> tuple[str, int, dict[int, int]] | None:
    """A processor's last position report: (process, history-clock ns it was written at,
    partition -> offset it has read up to); None if there is none (yet)."""
    try:
        report = json.loads(path.read_text())
        positions = {int(partition): int(offset) for partition, offset in report["positions"]}
        return str(report["process"]), int(report["time"]), positions
    except (OSError, ValueError, KeyError, TypeError):
        return None


class CheckProcessor(Processor):
    """A Processor that also writes each assignment to the history (Jepsen's `assign` op), what
    each batch cost (a `batch` op: the time in poll, in the sink, in a synchronous Kafka
    offset commit, and in all after poll, in ms), and how far it has read (`positions_path`)."""

    history: HistoryWriter
    process: str
    history_sink: HistorySink
    positions_path: Path | None = None
    _fetch_ms = 0.0
    _commit_ms = 0.0

    def _start(self) -> None:
        # Per partition: the offset read up to once the batch in hand is processed (`_pending`),
        # and as of the last batch processed (`_positions`).
        self._positions: dict[int, int] = {}
        self._pending: dict[int, int] = {}
        super()._start()

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.history.write(self.process, OK, ASSIGN, sorted(tp.partition for tp in partitions))
        self._drop(tp.partition for tp in partitions)
        super()._on_assign(consumer, partitions)

    def _forget(self, partitions: Iterable[TopicPartition]) -> None:
        partitions = list(partitions)
        self._drop(tp.partition for tp in partitions)
        super()._forget(partitions)

    def _rewind(self, batch: Sequence[Message]) -> None:
        self._drop(int(message.partition() or 0) for message in batch)
        super()._rewind(batch)

    def _drop(self, partitions: Iterable[int]) -> None:
        for partition in partitions:
            self._positions.pop(partition, None)
            self._pending.pop(partition, None)

    def _report_positions(self) -> None:
        self._positions.update(self._pending)
        self._pending = {}
        if self.positions_path is None:
            return
        report = {
            "process": self.process,
            "time": self.history.clock.now(),
            "positions": sorted(self._positions.items()),
        }
        scratch = self.positions_path.with_suffix(".tmp")
        scratch.write_text(json.dumps(report))
        os.replace(scratch, self.positions_path)

    def _poll(self) -> list[Message]:
        """`Processor._poll`, keeping the partition EOF events it drops (the consumer runs with
        `enable.partition.eof`) as positions."""
        self._report_positions()  # the previous batch is processed: its positions hold
        started = time.perf_counter()
        messages = self._consumer.consume(num_messages=self.batch_size, timeout=self.poll_timeout)
        batch = []
        for message in messages:
            error = message.error()
            if error is None:
                batch.append(message)
                self._pending[int(message.partition() or 0)] = int(message.offset() or 0) + 1
            elif error.code() == KafkaError._PARTITION_EOF:
                self._pending[int(message.partition() or 0)] = int(message.offset() or 0)
            elif error.fatal():
                raise KafkaException(error)
            else:
                logging.getLogger(__name__).warning("consumer error: %s", error)
        self._fetch_ms = (time.perf_counter() - started) * 1000
        return batch

    def _commit_to_kafka(self, batch: Sequence[Message]) -> bool:
        started = time.perf_counter()
        try:
            return super()._commit_to_kafka(batch)
        finally:
            self._commit_ms += (time.perf_counter() - started) * 1000

    def _process_batch(self, batch: Sequence[Message]) -> None:
        self._commit_ms = 0.0
        self.history_sink.elapsed_ms = 0.0
        started = time.perf_counter()
        super()._process_batch(batch)
        self.history.write(
            self.process,
            OK,
            BATCH,
            len(batch),
            None,
            fetch_ms=round(self._fetch_ms, 3),
            sink_ms=round(self.history_sink.elapsed_ms, 3),
            commit_ms=round(self._commit_ms, 3),
            total_ms=round((time.perf_counter() - started) * 1000, 3),
        )


def run(spec: WorkerSpec) -> None:
    clock = Clock(spec.clock_origin)
    history = HistoryWriter(Path(spec.history_path), clock)
    sink = HistorySink(spec.sink_path, history, spec.process)
    guarantee = Guarantee(spec.guarantee)

    def handle(message: Any, tx: Any) -> None:
        value = int(message.value())
        partition, offset = int(message.partition()), int(message.offset())
        tx.execute(
            f"INSERT INTO {SINK_TABLE} (value, partition_id, offset_id, process)"
            " VALUES (?, ?, ?, ?)",
            (value, partition, offset, spec.process),
        )
        sink.written.append((value, partition, offset))

    def maybe_kill(batch: Sequence[Message]) -> None:
        try:
            os.unlink(spec.kill_flag)
        except FileNotFoundError:
            return
        history.write(
            "nemesis",
            INFO,
            "processor-kill",
            spec.process,
            batch_size=len(batch),
            batch_values=[int(message.value() or 0) for message in batch],
        )
        os.kill(os.getpid(), signal.SIGKILL)

    at_most_once = guarantee is Guarantee.AT_MOST_ONCE
    processor = CheckProcessor(
        spec.bootstrap,
        spec.group,
        [spec.topic],
        guarantee,
        handle,
        sink=sink,
        config=spec.config,
        instance_id=spec.group,
        # At-most-once commits first: its crash window is between commit and processing.
        on_before_commit=None if at_most_once else maybe_kill,
        on_after_commit=maybe_kill if at_most_once else None,
        run_preflight=False,
        transaction_timeout=10.0,
    )
    processor.history = history
    processor.process = spec.process
    processor.history_sink = sink
    processor.positions_path = Path(spec.positions_path) if spec.positions_path else None
    _stop_on_sigterm(processor)
    processor.run()


# After SIGTERM the processor gets this long to finish its batch and close; then it exits anyway.
STOP_GRACE_SECONDS = 15.0


def _stop_on_sigterm(processor: Processor) -> None:
    """SIGTERM stops `processor` after its batch in hand, and ends the process
    `STOP_GRACE_SECONDS` later if that has not happened (a call blocked on a broker that is gone).

    A Python signal handler runs only when the main thread is back in Python code, which a call
    into librdkafka waiting for a dead broker may not be for minutes; so SIGTERM is blocked here,
    before any client thread starts (they inherit the mask), and a thread takes it with `sigwait`.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})

    def wait() -> None:
        signal.sigwait({signal.SIGTERM})
        processor.stop()
        time.sleep(STOP_GRACE_SECONDS)
        logging.getLogger(__name__).warning(
            "not stopped %.0f s after SIGTERM; exiting", STOP_GRACE_SECONDS
        )
        os._exit(128 + signal.SIGTERM)

    threading.Thread(target=wait, name="odradek-check-sigterm", daemon=True).start()


def main(argv: Sequence[str] | None = None) -> None:
    arguments = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    run(WorkerSpec.load(Path(arguments[0])))


if __name__ == "__main__":
    main()
