"""Produce throughput and delivery latency as a confluent-kafka (librdkafka) user sees them.

Targets, in alternating rounds (every round runs every target once, so drift in the machine
hits all targets alike):
  * librdkafka's built-in mock cluster (`test.mock.num.brokers=1`), the reference C broker;
  * an `odradek serve` process, acks=1;
  * the same process, acks=all with odradek.acks.all.fsync=true (group-commit fdatasync);
  * a second `odradek serve` process with odradek.acks.all.fsync=false, acks=all;
  * the first process, acks=1, to a topic with compression.type=zstd: the producer sends
    uncompressed batches, so the broker recompresses every one (Kafka's LogValidator path).

Each run is a fresh child process (this script with --worker) so the client's CPU never shares
a core's accounting with the measuring process, and every run starts from a cold producer.
Only produce is measured: the mock keeps a bounded log, so nothing is consumed back.

    .venv/bin/python benchmarks/produce_bench.py [--runs 5] [--messages 200000] [--quick]
        [--record-size 100] [--acks1-only] [--cluster]

`--record-size 1024 --acks1-only --messages 60000` is the large-record comparison: only the
mock and Odradek at acks=1, alternating, with the broker's CPU-seconds per GB of values;
`--cluster` adds the same producer against a 3-broker Odradek cluster (RF=3) at acks=1 and
acks=all, its CPU summed over the three brokers.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from dataclasses import dataclass

from _common import BrokerProcess, cpu_seconds, create_topic, median, print_table
from odradek.cluster import Cluster

RECORD_BYTES = 100
LINGER_MS = 5
TOPIC = "produce-bench"
RECOMPRESSED_TOPIC = "produce-bench-zstd"


# -- the load: one producer in a child process ----------------------------------------------


def worker(bootstrap: str, acks: str, messages: int, topic: str, record_bytes: int) -> None:
    """Produce `messages` records to partition 0, print one JSON line of results."""
    from confluent_kafka import Producer

    config: dict[str, object] = {
        "linger.ms": LINGER_MS,
        "acks": acks,
        "enable.idempotence": False,
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
    }
    if bootstrap == "mock":
        config["test.mock.num.brokers"] = 1
        config["log_level"] = 3  # silence the "Mock cluster enabled" notice
    else:
        config["bootstrap.servers"] = bootstrap
    producer = Producer(config)
    # Warm up metadata and the connection, so the run measures steady produce.
    producer.produce(topic, b"w" * record_bytes, partition=0)
    producer.flush(30)

    perf_ns = time.perf_counter_ns
    sent_ns = [0] * messages
    latencies_ns = [0] * messages
    errors = [0]
    last_delivery = [0]

    def on_delivery(error: object, message: object) -> None:
        now = perf_ns()
        # The record's first 8 bytes carry its index: exact matching, no ordering assumption.
        index = int.from_bytes(message.value()[:8], "big")  # type: ignore[attr-defined]
        if error is not None:
            errors[0] += 1
        latencies_ns[index] = now - sent_ns[index]
        last_delivery[0] = now

    padding = b"p" * (record_bytes - 8)
    produce = producer.produce
    poll = producer.poll
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    start = perf_ns()
    for index in range(messages):
        value = index.to_bytes(8, "big") + padding
        while True:
            try:
                sent_ns[index] = perf_ns()
                produce(topic, value, partition=0, on_delivery=on_delivery)
                break
            except BufferError:
                poll(0.005)
        poll(0)
    remaining = producer.flush(120)
    elapsed = (last_delivery[0] - start) / 1e9
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    latencies_ns.sort()
    print(
        json.dumps(
            {
                "elapsed": elapsed,
                "errors": errors[0] + remaining,
                "p50_ms": latencies_ns[len(latencies_ns) // 2] / 1e6,
                "p99_ms": latencies_ns[int(len(latencies_ns) * 0.99)] / 1e6,
                "client_cpu": (cpu_after.ru_utime + cpu_after.ru_stime)
                - (cpu_before.ru_utime + cpu_before.ru_stime),
            }
        )
    )


# -- the measuring process ------------------------------------------------------------------


@dataclass
class Target:
    label: str
    bootstrap: str
    acks: str
    broker: BrokerProcess | None
    topic: str
    # Broker processes whose CPU counts (default: `broker`'s); a cluster's three brokers.
    pids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.pids and self.broker is not None:
            self.pids = (self.broker.pid,)


def run_once(target: Target, messages: int, record_bytes: int) -> dict[str, float]:
    broker_cpu_before = sum(cpu_seconds(pid) for pid in target.pids)
    completed = subprocess.run(
        [
            sys.executable,
            __file__,
            "--worker",
            target.bootstrap,
            target.acks,
            str(messages),
            target.topic,
            str(record_bytes),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"{target.label}: worker failed:\n{completed.stderr}")
    result: dict[str, float] = json.loads(completed.stdout.strip().splitlines()[-1])
    result["broker_cpu"] = (
        sum(cpu_seconds(pid) for pid in target.pids) - broker_cpu_before
        if target.pids
        else float("nan")
    )
    return result


def start_cluster() -> Cluster:
    """A controller and 3 brokers (`odradek.Cluster`, real processes), one partition, RF=3,
    min.insync.replicas=2, every replica in the ISR."""
    cluster = Cluster(brokers=3).start()
    create_topic(
        cluster.bootstrap_servers, TOPIC, 1, {"min.insync.replicas": "2"}, replication_factor=3
    )
    cluster.wait_for_isr(TOPIC, 0, size=3, timeout_s=30)
    return cluster


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per target (default 5)")
    parser.add_argument("--messages", type=int, default=200_000, help="records per run")
    parser.add_argument("--quick", action="store_true", help="3 runs of 50k records")
    parser.add_argument(
        "--record-size", type=int, default=RECORD_BYTES, help="value bytes per record (>= 8)"
    )
    parser.add_argument(
        "--acks1-only", action="store_true", help="only the mock and Odradek at acks=1"
    )
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="also a 3-broker Odradek cluster (RF=3, min.insync.replicas=2) at acks=1 and "
        "acks=all; its broker CPU is the sum over the three brokers",
    )
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        bootstrap, acks, messages, topic, record_bytes = args.worker
        worker(bootstrap, acks, int(messages), topic, int(record_bytes))
        return
    runs, messages = (3, 50_000) if args.quick else (args.runs, args.messages)
    record_bytes = max(8, args.record_size)

    print(
        f"produce_bench: confluent-kafka producer, {record_bytes}-byte values, no key, "
        f"linger.ms={LINGER_MS}, enable.idempotence=false, one partition, "
        f"{messages:,} records per run, {runs} runs per target in alternating rounds.\n"
        "Each run is a fresh child process (client CPU separate from this process; the mock "
        "broker runs inside that child, so its 'client CPU' includes the mock broker). "
        "Throughput = records / (first produce() -> last delivery callback). Latency = "
        "produce() call -> delivery callback, per record. Medians over runs."
    )
    default_broker = BrokerProcess().start()
    no_fsync_broker = BrokerProcess({"odradek.acks.all.fsync": "false"}).start()
    cluster = start_cluster() if args.cluster else None
    try:
        for broker in (default_broker, no_fsync_broker):
            create_topic(broker.bootstrap_servers, TOPIC, 1, {})
        create_topic(
            default_broker.bootstrap_servers, RECOMPRESSED_TOPIC, 1, {"compression.type": "zstd"}
        )
        targets = [
            Target("librdkafka mock, acks=1", "mock", "1", None, TOPIC),
            Target("Odradek, acks=1", default_broker.bootstrap_servers, "1", default_broker, TOPIC),
            Target("librdkafka mock, acks=all", "mock", "all", None, TOPIC),
            Target(
                "Odradek, acks=all, fsync=true",
                default_broker.bootstrap_servers,
                "all",
                default_broker,
                TOPIC,
            ),
            Target(
                "Odradek, acks=all, fsync=false",
                no_fsync_broker.bootstrap_servers,
                "all",
                no_fsync_broker,
                TOPIC,
            ),
            Target(
                "Odradek, acks=1, zstd topic",
                default_broker.bootstrap_servers,
                "1",
                default_broker,
                RECOMPRESSED_TOPIC,
            ),
        ]
        if args.acks1_only:
            targets = targets[:2]
        if cluster is not None:
            pids = tuple(cluster.pid(node) for node in cluster.node_ids)
            targets += [
                Target(f"Odradek RF=3, acks={acks}", cluster.bootstrap_servers, acks, None, TOPIC)
                for acks in ("1", "all")
            ]
            for target in targets[-2:]:
                target.pids = pids
        results: dict[str, list[dict[str, float]]] = {t.label: [] for t in targets}
        for round_number in range(runs):
            for target in targets:
                result = run_once(target, messages, record_bytes)
                results[target.label].append(result)
                print(
                    f"  round {round_number + 1}/{runs} {target.label:32} "
                    f"{messages / result['elapsed']:>10,.0f} msg/s  "
                    f"p50 {result['p50_ms']:6.2f} ms  p99 {result['p99_ms']:7.2f} ms",
                    flush=True,
                )
    finally:
        default_broker.stop()
        no_fsync_broker.stop()
        if cluster is not None:
            cluster.stop()

    reference = median([messages / r["elapsed"] for r in results[targets[0].label]])
    gigabytes = messages * record_bytes / 1e9
    rows = []
    for target in targets:
        measured = results[target.label]
        rate = median([messages / r["elapsed"] for r in measured])
        errors = sum(int(r["errors"]) for r in measured)
        rows.append(
            [
                target.label,
                f"{rate:,.0f}",
                f"{rate * record_bytes / 1e6:.1f}",
                f"{rate / reference:.2f}x",
                f"{median([r['p50_ms'] for r in measured]):.2f}",
                f"{median([r['p99_ms'] for r in measured]):.2f}",
                f"{median([r['client_cpu'] for r in measured]):.2f}",
                "-" if not target.pids else f"{median([r['broker_cpu'] for r in measured]):.2f}",
                "-"
                if not target.pids
                else f"{median([r['broker_cpu'] for r in measured]) / gigabytes:.1f}",
                str(errors),
            ]
        )
    print_table(
        f"Produce, {messages:,} x {record_bytes} B per run, median of {runs} runs",
        [
            "target",
            "msgs/s",
            "MB/s (values)",
            "vs mock acks=1",
            "p50 ms",
            "p99 ms",
            "client CPU s",
            "broker CPU s",
            "broker CPU s/GB",
            "errors",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
