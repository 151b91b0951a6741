"""The seed's "Speed" row, measured: one workload under each guarantee, side by side.

Starts `odradek serve` in a temporary directory, then for each guarantee: a `GuaranteeProducer`
sends N 100-byte records while a `Processor` (in a thread of this process) copies each record to
an output topic (exactly-once: one transaction per commit interval, 100 ms). Reports producer
throughput, end-to-end throughput (first send to last record processed) and latency (record
create time to processing, p50/p99). Prints a table; asserts nothing.

    .venv/bin/python benchmarks/guarantee_bench.py [--messages 20000] [--quick]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from confluent_kafka import Message
from confluent_kafka.admin import AdminClient, NewTopic

from odradek.client import GuaranteeProducer, Processor

GUARANTEES = ["at-most-once", "at-least-once", "exactly-once"]


def start_broker(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    odradek = Path(sys.executable).parent / "odradek"
    process = subprocess.Popen(
        [
            *(str(odradek), "serve", "--port", str(port), "--data-dir", str(directory)),
            *("--override", "group.initial.rebalance.delay.ms=0"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("odradek serve did not start")


def run_one(bootstrap: str, guarantee: str, count: int) -> dict[str, float]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    source, output = f"bench-{guarantee}", f"bench-{guarantee}-out"
    for topic in admin.create_topics([NewTopic(source, 1, 1), NewTopic(output, 1, 1)]).values():
        topic.result(10)
    latencies: list[float] = []
    done = threading.Event()

    def copy(message: Message) -> bytes | None:
        latencies.append(time.time() * 1000 - message.timestamp()[1])
        if len(latencies) >= count:
            done.set()
        return message.value()

    processor = Processor(
        bootstrap,
        f"bench-{guarantee}",
        [source],
        guarantee,
        copy,
        output_topic=output,
        batch_size=500,
        run_preflight=False,
        config={"linger.ms": 5},
    )
    thread = threading.Thread(target=processor.run, daemon=True)
    thread.start()
    time.sleep(1.0)  # let the processor join its group
    payload = os.urandom(100)
    started = time.monotonic()
    with GuaranteeProducer(bootstrap, guarantee, {"linger.ms": 5}) as producer:
        for _ in range(count):
            producer.produce(source, payload)
    produced = time.monotonic()
    done.wait(120)
    finished = time.monotonic()
    processor.stop()
    thread.join(30)
    return {
        "produce msgs/s": count / (produced - started),
        "end-to-end msgs/s": len(latencies) / (finished - started),
        "processed": len(latencies),
        "p50 ms": statistics.median(latencies) if latencies else float("nan"),
        "p99 ms": statistics.quantiles(latencies, n=100)[98]
        if len(latencies) > 1
        else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--quick", action="store_true", help="5,000 messages")
    arguments = parser.parse_args()
    count = 5_000 if arguments.quick else arguments.messages
    directory = Path(tempfile.mkdtemp(prefix="odradek-bench-"))
    broker, bootstrap = start_broker(directory)
    try:
        rows = {guarantee: run_one(bootstrap, guarantee, count) for guarantee in GUARANTEES}
    finally:
        broker.send_signal(signal.SIGTERM)
        broker.wait(30)
        shutil.rmtree(directory, ignore_errors=True)
    print(f"{count} records of 100 bytes, one partition, copied to an output topic")
    print("| guarantee | produce msgs/s | end-to-end msgs/s | latency p50 ms | latency p99 ms |")
    print("| --- | --- | --- | --- | --- |")
    for guarantee, row in rows.items():
        print(
            f"| {guarantee} | {row['produce msgs/s']:,.0f} | {row['end-to-end msgs/s']:,.0f} | "
            f"{row['p50 ms']:.1f} | {row['p99 ms']:.1f} |"
            + ("" if row["processed"] == count else f" (processed {row['processed']:.0f})")
        )


if __name__ == "__main__":
    main()
