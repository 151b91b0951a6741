"""Idempotent and transactional produce vs plain acks=all, as a confluent-kafka user sees them.

Three configurations, 1 KiB records to a 6-partition topic, in alternating rounds (every round
runs each configuration once, so drift in the machine hits all alike):
  * plain acks=all: enable.idempotence=false, acks=all;
  * idempotent: enable.idempotence=true (acks=all, at most 5 requests in flight);
  * transactional: transactional.id set, begin_transaction ... commit_transaction every 100 ms.

Every run gets a fresh `odradek serve` process (default config: acks=all waits for the
group-commit fdatasync) after the page cache is written back and dropped, and a fresh child
process as the client (this script with --worker), so client CPU is apart from this process.
The client produces as fast as it can for a fixed time; throughput is records / (first
produce() -> last delivery, or end of the final commit). In a transactional run each commit
is timed in two parts: flush() of the records still queued, then commit_transaction() itself
(the AddPartitionsToTxn/EndTxn round trip including the broker's commit markers): the
"EndTxn" latency.

    .venv/bin/python benchmarks/txn_bench.py [--runs 5] [--seconds 5] [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from typing import Any

from _common import (
    BrokerProcess,
    cpu_seconds,
    create_topic,
    median,
    print_table,
    settle_page_cache,
)

RECORD_BYTES = 1024
PARTITIONS = 6
LINGER_MS = 5
COMMIT_INTERVAL_S = 0.100
TOPIC = "txn-bench"
CONFIGS = ["plain", "idempotent", "transactional"]
LABELS = {
    "plain": "plain acks=all",
    "idempotent": "idempotent",
    "transactional": "transactional, 100 ms",
}


# -- the load: one producer in a child process ----------------------------------------------


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * fraction))]


def worker(bootstrap: str, mode: str, seconds: float, topic: str) -> None:
    """Produce for `seconds` in `mode`, print one JSON line of results."""
    from confluent_kafka import Producer

    config: dict[str, object] = {
        "bootstrap.servers": bootstrap,
        "linger.ms": LINGER_MS,
        "acks": "all",
        "enable.idempotence": mode != "plain",
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
    }
    if mode == "transactional":
        config["transactional.id"] = f"txn-bench-{time.time_ns()}"
    errors = [0]
    delivered = [0]
    last_delivery = [0]
    perf_ns = time.perf_counter_ns

    def on_delivery(error: object, _message: object) -> None:
        if error is not None:
            errors[0] += 1
        else:
            delivered[0] += 1
        last_delivery[0] = perf_ns()

    config["on_delivery"] = on_delivery
    producer = Producer(config)
    transactional = mode == "transactional"
    padding = b"p" * RECORD_BYTES

    # Warm up metadata, connections, the producer id (and for transactions the coordinator and
    # every partition's first AddPartitionsToTxn), so the run measures steady produce.
    if transactional:
        producer.init_transactions(30)
        producer.begin_transaction()
    for partition in range(PARTITIONS):
        producer.produce(topic, padding, partition=partition)
    if transactional:
        producer.commit_transaction(30)
    producer.flush(30)
    errors[0] = delivered[0] = 0

    produce = producer.produce
    poll = producer.poll
    flush_ms: list[float] = []
    commit_ms: list[float] = []
    produced = 0
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    start = perf_ns()
    deadline = start + int(seconds * 1e9)
    interval_ns = int(COMMIT_INTERVAL_S * 1e9)
    if transactional:
        producer.begin_transaction()
    next_commit = start + interval_ns
    partition = 0
    while True:
        # Produce in bursts of 100 between clock checks: the clock costs more than produce().
        for _ in range(100):
            try:
                produce(topic, padding, partition=partition)
            except BufferError:
                poll(0.005)
                continue
            produced += 1
            partition = partition + 1 if partition < PARTITIONS - 1 else 0
        poll(0)
        now = perf_ns()
        if transactional and now >= next_commit:
            producer.flush(60)
            flushed = perf_ns()
            producer.commit_transaction(60)
            committed = perf_ns()
            flush_ms.append((flushed - now) / 1e6)
            commit_ms.append((committed - flushed) / 1e6)
            if committed >= deadline:
                end = committed
                break
            producer.begin_transaction()
            next_commit = committed + interval_ns
        elif not transactional and now >= deadline:
            remaining = producer.flush(120)
            errors[0] += remaining
            end = last_delivery[0]
            break
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    flush_ms.sort()
    commit_ms.sort()
    total_ms = sorted(f + c for f, c in zip(flush_ms, commit_ms, strict=True))
    print(
        json.dumps(
            {
                "records": delivered[0],
                "produced": produced,
                "elapsed": (end - start) / 1e9,
                "errors": errors[0],
                "commits": len(commit_ms),
                "endtxn_p50_ms": percentile(commit_ms, 0.50),
                "endtxn_p99_ms": percentile(commit_ms, 0.99),
                "flush_p50_ms": percentile(flush_ms, 0.50),
                "total_p50_ms": percentile(total_ms, 0.50),
                "total_p99_ms": percentile(total_ms, 0.99),
                "endtxn_all_ms": commit_ms,
                "total_all_ms": total_ms,
                "client_cpu": (cpu_after.ru_utime + cpu_after.ru_stime)
                - (cpu_before.ru_utime + cpu_before.ru_stime),
            }
        )
    )


# -- the measuring process ------------------------------------------------------------------


def run_once(mode: str, seconds: float) -> dict[str, Any]:
    """Fresh page cache, fresh broker, one worker child; the worker's results + broker CPU."""
    settle_page_cache()
    with BrokerProcess() as broker:
        create_topic(broker.bootstrap_servers, TOPIC, PARTITIONS, {})
        broker_cpu_before = cpu_seconds(broker.pid)
        completed = subprocess.run(
            [
                sys.executable,
                __file__,
                "--worker",
                broker.bootstrap_servers,
                mode,
                str(seconds),
                TOPIC,
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        broker_cpu = cpu_seconds(broker.pid) - broker_cpu_before
    if completed.returncode != 0:
        raise RuntimeError(f"{mode}: worker failed:\n{completed.stderr}")
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    result["broker_cpu"] = broker_cpu
    result["rate"] = result["records"] / result["elapsed"]
    return result


def fmt(value: float, digits: int = 2) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per configuration (default 5)")
    parser.add_argument("--seconds", type=float, default=5.0, help="produce time per run")
    parser.add_argument("--quick", action="store_true", help="3 runs of 2 s")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        bootstrap, mode, seconds, topic = args.worker
        worker(bootstrap, mode, float(seconds), topic)
        return
    runs, seconds = (3, 2.0) if args.quick else (args.runs, args.seconds)

    print(
        f"txn_bench: confluent-kafka producer, {RECORD_BYTES}-byte values, no key, "
        f"{PARTITIONS} partitions (round-robin), linger.ms={LINGER_MS}, acks=all, default "
        f"batch sizes; {seconds:g} s of produce per run, {runs} runs per configuration in "
        "alternating rounds; fresh broker (default config, acks=all fsync on) and "
        f"{settle_page_cache()} before every run; each run a fresh child process. "
        "Throughput = records / (first produce() -> last delivery or end of the last commit). "
        f"Transactional: commit every {COMMIT_INTERVAL_S * 1000:.0f} ms; EndTxn = the "
        "commit_transaction() call after flush(). Medians over runs."
    )
    results: dict[str, list[dict[str, Any]]] = {mode: [] for mode in CONFIGS}
    for round_number in range(runs):
        for mode in CONFIGS:
            result = run_once(mode, seconds)
            results[mode].append(result)
            extra = (
                f"  {int(result['commits'])} commits, EndTxn p50 "
                f"{result['endtxn_p50_ms']:.2f} ms p99 {result['endtxn_p99_ms']:.2f} ms"
                if mode == "transactional"
                else ""
            )
            print(
                f"  round {round_number + 1}/{runs} {mode:14} {result['rate']:>9,.0f} msg/s "
                f"{result['rate'] * RECORD_BYTES / 1e6:7.1f} MB/s  "
                f"client CPU {result['client_cpu']:.2f} s  broker CPU {result['broker_cpu']:.2f} s"
                f"{extra}",
                flush=True,
            )

    rate = {mode: median([r["rate"] for r in results[mode]]) for mode in CONFIGS}
    goals = {
        "plain": ("", ""),
        "idempotent": (
            ">= 0.95x plain",
            "yes" if rate["idempotent"] >= 0.95 * rate["plain"] else "no",
        ),
        "transactional": (
            ">= 0.9x idempotent",
            "yes" if rate["transactional"] >= 0.9 * rate["idempotent"] else "no",
        ),
    }
    # EndTxn percentiles over every commit of every run (~45 per 5 s run): a per-run p99 of
    # a few dozen commits would just be that run's maximum.
    endtxn = sorted(ms for r in results["transactional"] for ms in r["endtxn_all_ms"])
    total = sorted(ms for r in results["transactional"] for ms in r["total_all_ms"])
    rows = []
    for mode in CONFIGS:
        measured = results[mode]
        txn = mode == "transactional"
        rows.append(
            [
                LABELS[mode],
                f"{rate[mode]:,.0f}",
                f"{rate[mode] * RECORD_BYTES / 1e6:.1f}",
                f"{rate[mode] / rate['plain']:.2f}x",
                "-" if mode == "plain" else f"{rate[mode] / rate['idempotent']:.2f}x",
                goals[mode][0] or "-",
                goals[mode][1] or "-",
                f"{fmt(percentile(endtxn, 0.50))} / {fmt(percentile(endtxn, 0.99))} ({len(endtxn)})"
                if txn
                else "-",
                f"{fmt(percentile(total, 0.50))} / {fmt(percentile(total, 0.99))}" if txn else "-",
                f"{median([r['client_cpu'] for r in measured]):.2f} / "
                f"{median([r['broker_cpu'] for r in measured]):.2f}",
                str(sum(int(r["errors"]) for r in measured)),
            ]
        )
    print_table(
        f"Idempotent and transactional produce: {RECORD_BYTES} B records, {PARTITIONS} "
        f"partitions, {seconds:g} s per run, median of {runs} runs; EndTxn over all commits",
        [
            "configuration",
            "msgs/s",
            "MB/s",
            "vs plain",
            "vs idem.",
            "goal",
            "met",
            "EndTxn p50 / p99 ms (n)",
            "flush+commit p50 / p99 ms",
            "CPU s client / broker",
            "errors",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
