"""Issue 16's toolkit workload: drain a pre-filled topic with one `Processor`, per guarantee.

Starts `odradek serve` in a temporary directory. For each case a fresh input topic (one
partition) is pre-filled with N records of 100 bytes, then one `Processor` (in this process,
default settings: poll batches of 500) drains it, copying every record into an output topic,
or into a SQLite sink (one INSERT per message, or, with a batch handler, one `executemany` per
poll batch). Throughput is records drained per second, from `run()` until the last record was
handled and committed (the processor is stopped as soon as its committed position reaches the
end, so idle time does not count); the last column starts the clock at the first message handled
instead, leaving out the start (connecting, group join, assignment, first fetch). Each case runs
`--repeat` times; the table shows the median and the spread. The default cases are the README's
table (about a minute).
Prints a table; asserts nothing.

    .venv/bin/python benchmarks/toolkit_drain_bench.py [--messages 30000] [--repeat 3]
        [--cases at-most-once,at-least-once,exactly-once,...]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import Message, Producer

from _common import BrokerProcess, create_topic, median, print_table
from odradek.client import Processor, SqliteSink

# name -> (guarantee, target, Processor keyword arguments, SqliteSink keyword arguments)
BATCHES: dict[str, Any] = {"handle_batches": True}
CASES: dict[str, tuple[str, str, dict[str, Any], dict[str, Any]]] = {
    "at-most-once": ("at-most-once", "topic", {}, {}),
    "at-least-once": ("at-least-once", "topic", {}, {}),
    "exactly-once": ("exactly-once", "topic", {}, {}),
    "exactly-once (txn per batch)": ("exactly-once", "topic", {"commit_interval": 0.0}, {}),
    "at-least-once → SQLite": ("at-least-once", "sqlite", {}, {}),
    "exactly-once → SQLite": ("exactly-once", "sqlite", {}, {}),
    "at-least-once → SQLite (batch handler)": ("at-least-once", "sqlite", BATCHES, {}),
    "exactly-once → SQLite (batch handler)": ("exactly-once", "sqlite", BATCHES, {}),
    "exactly-once → SQLite (batch handler; synchronous=NORMAL)": (
        "exactly-once",
        "sqlite",
        BATCHES,
        {"synchronous": "NORMAL"},
    ),
    "at-least-once → SQLite (poll 100)": ("at-least-once", "sqlite", {"batch_size": 100}, {}),
    "at-least-once → SQLite (batch handler; poll 2000)": (
        "at-least-once",
        "sqlite",
        {**BATCHES, "batch_size": 2000},
        {},
    ),
    "at-least-once (poll 100)": ("at-least-once", "topic", {"batch_size": 100}, {}),
}
# The README's table.
DEFAULT_CASES = [
    "at-most-once",
    "at-least-once",
    "exactly-once",
    "at-least-once → SQLite",
    "exactly-once → SQLite",
    "at-least-once → SQLite (batch handler)",
    "exactly-once → SQLite (batch handler)",
    "exactly-once → SQLite (batch handler; synchronous=NORMAL)",
    "at-least-once → SQLite (poll 100)",
]


def fill(bootstrap: str, topic: str, count: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "acks": "all"})
    payload = os.urandom(100)
    for _ in range(count):
        while True:
            try:
                producer.produce(topic, payload)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(60) > 0:
        raise RuntimeError("pre-fill was not acknowledged")


def run_case(
    bootstrap: str, name: str, count: int, run: int, directory: Path
) -> tuple[float, float]:
    """(msg/s from `run()`, msg/s from the first message handled) to the last commit."""
    guarantee, target, options, sink_options = CASES[name]
    slug = f"{guarantee}-{target}-{run}-{list(CASES).index(name)}"
    source = f"drain-{slug}"
    create_topic(bootstrap, source, 1, {})
    output = None
    sink = None
    if target == "topic":
        output = f"drain-{slug}-out"
        create_topic(bootstrap, output, 1, {})
    fill(bootstrap, source, count)
    handled = 0
    first_handled: list[float] = []
    finished = threading.Event()
    handler: Callable[..., Any]

    def count_and_check() -> None:
        nonlocal handled
        if not handled:
            first_handled.append(time.monotonic())
        handled += 1

    if target == "sqlite":
        sink = SqliteSink(directory / f"{slug}.db", **sink_options)
        with sink, sink.transaction() as tx:
            tx.execute("CREATE TABLE IF NOT EXISTS copied (position BIGINT, value BLOB)")

        if options.get("handle_batches"):

            def handler(messages: list[Message], tx: Any) -> None:
                nonlocal handled
                if not handled:
                    first_handled.append(time.monotonic())
                handled += len(messages)
                tx.executemany(
                    "INSERT INTO copied VALUES (?, ?)",
                    [(message.offset(), message.value()) for message in messages],
                )

        else:

            def handler(message: Message, tx: Any) -> None:
                count_and_check()
                tx.execute("INSERT INTO copied VALUES (?, ?)", (message.offset(), message.value()))

    else:

        def handler(message: Message) -> bytes | None:
            count_and_check()
            return message.value()

    processor: Processor

    def after_commit(batch: Any) -> None:
        # The run ends when the last record's commit is done (offsets: Kafka's, or the sink's).
        if batch and batch[-1].offset() == count - 1:
            finished.set()
            processor.stop()

    processor = Processor(
        bootstrap,
        f"drain-{slug}",
        [source],
        guarantee,
        handler,
        sink=sink,
        output_topic=output,
        run_preflight=False,
        on_after_commit=after_commit,
        **options,
    )
    started = time.monotonic()
    stats = processor.run(idle_timeout=30)
    elapsed = time.monotonic() - started
    if not finished.is_set() or handled < count:
        print(f"  {name} run {run}: only {handled} of {count} handled", file=sys.stderr)
    steady = (started + elapsed - first_handled[0]) if first_handled else elapsed
    print(
        f"  {name} run {run}: {count / elapsed:,.0f} msg/s, {count / steady:,.0f} after the "
        f"first message ({stats.committed_batches} commits, {elapsed:.2f} s, start "
        f"{elapsed - steady:.2f} s)",
        file=sys.stderr,
    )
    return count / elapsed, count / steady


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=30_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cases", default=",".join(DEFAULT_CASES), help=", ".join(CASES))
    arguments = parser.parse_args()
    names = [name.strip() for name in arguments.cases.split(",") if name.strip()]
    for name in names:
        if name not in CASES:
            parser.error(f"unknown case {name!r}: choose from {', '.join(CASES)}")
    load = os.getloadavg()
    results: dict[str, list[float]] = {name: [] for name in names}
    steady: dict[str, list[float]] = {name: [] for name in names}
    with (
        BrokerProcess({"group.initial.rebalance.delay.ms": "0"}) as broker,
        tempfile.TemporaryDirectory(prefix="odradek-drain-") as directory,
    ):
        # Interleaved, so a burst of load elsewhere on the machine hits every case alike.
        for run in range(arguments.repeat):
            for name in names:
                rate, steady_rate = run_case(
                    broker.bootstrap_servers, name, arguments.messages, run, Path(directory)
                )
                results[name].append(rate)
                steady[name].append(steady_rate)
    baseline = median(results["at-least-once"]) if "at-least-once" in results else None
    rows = []
    for name, rates in results.items():
        rows.append(
            [
                name,
                f"{median(rates):,.0f}",
                f"{min(rates):,.0f}-{max(rates):,.0f}",
                f"{median(rates) / baseline:.2f}x" if baseline else "-",
                f"{median(steady[name]):,.0f}",
            ]
        )
    print_table(
        f"{arguments.messages:,} pre-filled records of 100 bytes, one partition, drained by one "
        f"Processor (median of {arguments.repeat}; load average before: "
        f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} cores)",
        ["case", "msg/s (median)", "range", "vs at-least-once", "after the first message"],
        rows,
    )


if __name__ == "__main__":
    main()
