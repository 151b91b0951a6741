"""A `Processor` run as a subprocess, so tests can kill it with SIGKILL at chosen points.

    python toolkit_process.py BOOTSTRAP TOPIC GROUP GUARANTEE LOG [options]

Every input value is an integer. The handler adds it to a running total (not idempotent: a
duplicate or a loss shows in the total) and records its position. With --sink, both go into the
database in the handler's transaction; with --output, the value is forwarded, doubled; with
neither, the position is appended to LOG ("P partition offset").

LOG also receives, line-buffered so a SIGKILL loses nothing already written:
  SEEN p o            the processor handed the message to the toolkit's handler chain
  COMMITTED p:o,...   offsets of a batch (an interval transaction's batches), after its commit
  WINDOW p o          at-most-once: committed, about to be processed (the kill window)
  PAUSED              stopped itself with SIGSTOP (zombie test)
  STATS {...}         run statistics at a clean exit
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
from collections.abc import Sequence
from typing import Any

from confluent_kafka import Message

from odradek.client import (
    Guarantee,
    IdempotentConsumer,
    PostgresSink,
    Processor,
    Sink,
    SqliteSink,
)

SCHEMA = [
    "CREATE TABLE IF NOT EXISTS totals (id INTEGER PRIMARY KEY, total BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS applied (partition_id INTEGER, offset_id BIGINT, value BIGINT)",
]


def make_sink(spec: str) -> Sink | None:
    if spec.startswith("sqlite:"):
        return SqliteSink(spec.removeprefix("sqlite:"))
    if spec.startswith("postgres:"):
        return PostgresSink(spec.removeprefix("postgres:"))
    return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("bootstrap")
    parser.add_argument("topic")
    parser.add_argument("group")
    parser.add_argument("guarantee")
    parser.add_argument("log")
    parser.add_argument("--sink", default="")
    parser.add_argument("--output", default=None)
    parser.add_argument("--idempotent", action="store_true")
    parser.add_argument("--batch-size", type=int, default=10)
    # An interval transaction (--output) holds at most this many messages, so the kill points
    # (before/after commit N) fall inside the input whatever the machine's speed.
    parser.add_argument("--transaction-messages", type=int, default=30)
    parser.add_argument("--kill-before-commit", type=int, default=0, help="at batch N")
    parser.add_argument("--kill-after-commit", type=int, default=0, help="at batch N")
    parser.add_argument("--stop-before-commit", type=int, default=0, help="SIGSTOP at batch N")
    parser.add_argument("--idle-timeout", type=float, default=None)
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    log = open(arguments.log, "a", buffering=1)  # noqa: SIM115 -- lives as long as we do
    sink = make_sink(arguments.sink)
    guarantee = Guarantee(arguments.guarantee)
    if sink is not None:
        with sink, sink.transaction() as tx:
            for statement in SCHEMA:
                tx.execute(statement)
            # A plain read first: an INSERT .. ON CONFLICT would wait for a frozen zombie's
            # lock on the row.
            if tx.execute("SELECT count(*) FROM totals").fetchone()[0] == 0:
                tx.execute("INSERT INTO totals (id, total) VALUES (1, 0)")

    def apply(message: Message, tx: Any) -> None:
        value = int(message.value() or b"0")
        marker = sink.placeholder if sink else "?"
        tx.execute(f"UPDATE totals SET total = total + {marker} WHERE id = 1", (value,))
        tx.execute(
            f"INSERT INTO applied (partition_id, offset_id, value) VALUES ({marker}, {marker},"
            f" {marker})",
            (message.partition(), message.offset(), value),
        )

    def seen(message: Message) -> None:
        log.write(f"SEEN {message.partition()} {message.offset()}\n")

    handler: Any
    if sink is not None:
        inner: Any = IdempotentConsumer(sink, apply) if arguments.idempotent else apply

        def handler(message: Message, tx: Any) -> Any:
            seen(message)
            return inner(message, tx)

    elif arguments.output:

        def handler(message: Message) -> Any:
            seen(message)
            return str(2 * int(message.value() or b"0")).encode()

    else:

        def handler(message: Message) -> None:
            seen(message)
            log.write(f"P {message.partition()} {message.offset()}\n")

    batches = {"before": 0, "after": 0}

    def before_commit(batch: Sequence[Message]) -> None:
        batches["before"] += 1
        if batches["before"] == arguments.kill_before_commit:
            os.kill(os.getpid(), signal.SIGKILL)
        if batches["before"] == arguments.stop_before_commit:
            log.write("PAUSED\n")
            os.kill(os.getpid(), signal.SIGSTOP)
            log.write("CONTINUED\n")

    def after_commit(batch: Sequence[Message]) -> None:
        batches["after"] += 1
        positions = ",".join(f"{m.partition()}:{m.offset()}" for m in batch)
        log.write(f"COMMITTED {positions}\n")
        if guarantee is Guarantee.AT_MOST_ONCE and batches["after"] == arguments.kill_after_commit:
            for message in batch:
                log.write(f"WINDOW {message.partition()} {message.offset()}\n")
        if batches["after"] == arguments.kill_after_commit:
            os.kill(os.getpid(), signal.SIGKILL)

    processor = Processor(
        arguments.bootstrap,
        arguments.group,
        [arguments.topic],
        guarantee,
        handler,
        sink=sink,
        output_topic=arguments.output,
        config={
            "session.timeout.ms": 1500,
            "heartbeat.interval.ms": 300,
            "transaction.timeout.ms": 10000,
        },
        batch_size=arguments.batch_size,
        max_transaction_messages=arguments.transaction_messages,
        on_before_commit=before_commit,
        on_after_commit=after_commit,
        run_preflight=False,
    )
    signal.signal(signal.SIGTERM, lambda *_: processor.stop())
    stats = processor.run(idle_timeout=arguments.idle_timeout)
    log.write(f"STATS {json.dumps(stats.as_dict())}\n")
    log.close()


if __name__ == "__main__":
    main()
