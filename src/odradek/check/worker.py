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
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Message, TopicPartition

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


class CheckProcessor(Processor):
    """A Processor that also writes each assignment to the history (Jepsen's `assign` op) and
    what each batch cost (a `batch` op: the time in poll, in the sink, in a synchronous Kafka
    offset commit, and in all, in ms)."""

    history: HistoryWriter
    process: str
    history_sink: HistorySink
    _fetch_ms = 0.0
    _commit_ms = 0.0

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.history.write(self.process, OK, ASSIGN, sorted(tp.partition for tp in partitions))
        super()._on_assign(consumer, partitions)

    def _poll(self) -> list[Message]:
        started = time.perf_counter()
        batch = super()._poll()
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
    signal.signal(signal.SIGTERM, lambda *_: processor.stop())
    processor.run()


def main(argv: Sequence[str] | None = None) -> None:
    arguments = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    run(WorkerSpec.load(Path(arguments[0])))


if __name__ == "__main__":
    main()
