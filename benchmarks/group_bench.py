"""Consumer groups as a confluent-kafka (librdkafka) user sees them: offset-commit latency and
throughput, and the time for a group to grow from 1 to 3 members and settle.

Targets, in alternating rounds (every round runs every target once, so drift in the machine
hits all targets alike):
  * librdkafka's built-in mock cluster (`test.mock.num.brokers=1`), classic protocol only;
  * an `odradek serve` process with group.initial.rebalance.delay.ms=0, classic protocol;
  * the same process, KIP-848 consumer protocol (`group.protocol=consumer`);
  * a second `odradek serve` with odradek.acks.all.fsync=false, classic: Odradek writes commits
    to __consumer_offsets with acks=all, so by default each one waits for an fdatasync.

Each run is a fresh child process (this script with --worker). For the mock, the child creates
the mock cluster once, inside a host producer, and points every consumer of the run at its
listener: with `test.mock.num.brokers` in a consumer's own config, each consumer would get a
private mock cluster and never meet the others in a group.

    .venv/bin/python benchmarks/group_bench.py [--runs 5] [--commits 2000] [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

from _common import BrokerProcess, create_topic, median, print_table

# The mock auto-creates a topic with 4 partitions on first produce; Odradek's topic matches.
PARTITIONS = 4
TOPIC = "group-bench"
SESSION_TIMEOUT_MS = 6000
# Classic members learn of a rebalance from a heartbeat answer; KIP-848 members learn of a new
# target assignment the same way. Both intervals are short so the coordinator is measured,
# not the heartbeat timer.
HEARTBEAT_MS = 100
SETTLE_TIMEOUT_S = 30.0
ODRADEK_OVERRIDES = {
    "group.initial.rebalance.delay.ms": "0",
    "group.consumer.heartbeat.interval.ms": str(HEARTBEAT_MS),
    "group.consumer.min.heartbeat.interval.ms": str(HEARTBEAT_MS),
}


# -- the load: consumers in a child process -------------------------------------------------


class Cluster:
    """Where the consumers of one run connect: an Odradek address, or a mock cluster created
    here and kept alive (inside `host`) until the run ends."""

    def __init__(self, bootstrap: str) -> None:
        self.host: Any = None
        if bootstrap != "mock":
            self.bootstrap = bootstrap
            return
        from confluent_kafka import Producer

        self.host = Producer({"test.mock.num.brokers": 1, "log_level": 3})
        # The first produce auto-creates the topic in the mock (PARTITIONS partitions).
        self.host.produce(TOPIC, b"x")
        self.host.flush(10)
        brokers = self.host.list_topics(timeout=10).brokers.values()
        self.bootstrap = ",".join(f"{broker.host}:{broker.port}" for broker in brokers)

    def consumer(self, group_id: str, protocol: str, extra: dict[str, object] | None = None) -> Any:
        from confluent_kafka import Consumer

        config: dict[str, object] = {
            "bootstrap.servers": self.bootstrap,
            "group.id": group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "log_level": 3,
        }
        if protocol == "consumer":
            # Session and heartbeat come from the broker in KIP-848.
            config["group.protocol"] = "consumer"
        else:
            config["session.timeout.ms"] = SESSION_TIMEOUT_MS
            config["heartbeat.interval.ms"] = HEARTBEAT_MS
        consumer = Consumer({**config, **(extra or {})})
        consumer.subscribe([TOPIC])
        return consumer


def _settled(consumers: list[Any]) -> bool:
    """Every member owns at least one partition and together they own each exactly once."""
    owned = [{tp.partition for tp in consumer.assignment()} for consumer in consumers]
    if not all(owned):
        return False
    every = [partition for partitions in owned for partition in partitions]
    return sorted(every) == list(range(PARTITIONS))


def _poll_until_settled(consumers: list[Any], timeout: float) -> float:
    """Seconds until `_settled`, polling every consumer round-robin; NaN on timeout."""
    start = time.perf_counter()
    deadline = start + timeout
    while time.perf_counter() < deadline:
        for consumer in consumers:
            consumer.poll(0.002)
        if _settled(consumers):
            return time.perf_counter() - start
    return float("nan")


def worker_commits(bootstrap: str, protocol: str, commits: int) -> dict[str, float]:
    from confluent_kafka import TopicPartition

    base = commits + 1  # offsets of the async pass: base .. base + commits - 1
    done = [0]
    errors = [0]

    def on_commit(error: object, partitions: list[Any]) -> None:
        # librdkafka also reports synchronous commits here (at a later poll): count only the
        # async pass's offsets.
        if all(tp.offset >= base for tp in partitions):
            done[0] += 1
            if error is not None:
                errors[0] += 1

    cluster = Cluster(bootstrap)
    consumer = cluster.consumer(
        f"commits-{uuid.uuid4().hex[:8]}", protocol, {"on_commit": on_commit}
    )
    try:
        _poll_until_settled([consumer], SETTLE_TIMEOUT_S)
        if not _settled([consumer]):
            raise RuntimeError("the consumer never got its assignment")
        partition = min(tp.partition for tp in consumer.assignment())
        commit = consumer.commit
        # Warm-up: the first commit may wait for the coordinator connection.
        commit(offsets=[TopicPartition(TOPIC, partition, 0)], asynchronous=False)

        latencies = []
        perf = time.perf_counter
        start = perf()
        for offset in range(1, base):
            sent = perf()
            commit(offsets=[TopicPartition(TOPIC, partition, offset)], asynchronous=False)
            latencies.append(perf() - sent)
        sync_elapsed = perf() - start

        start = perf()
        for offset in range(base, base + commits):
            commit(offsets=[TopicPartition(TOPIC, partition, offset)], asynchronous=True)
            consumer.poll(0)
        deadline = perf() + 60
        while done[0] < commits and perf() < deadline:
            consumer.poll(0.001)
        async_elapsed = perf() - start
        committed = consumer.committed([TopicPartition(TOPIC, partition)], timeout=10)[0].offset
        latencies.sort()
        return {
            "p50_ms": latencies[len(latencies) // 2] * 1000,
            "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
            "sync_rate": commits / sync_elapsed,
            "async_rate": done[0] / async_elapsed,
            "errors": errors[0] + (commits - done[0]),
            "last_committed_ok": float(committed == base + commits - 1),
        }
    finally:
        consumer.close()


def worker_settle(bootstrap: str, protocol: str) -> dict[str, float]:
    cluster = Cluster(bootstrap)
    group_id = f"settle-{uuid.uuid4().hex[:8]}"
    first = cluster.consumer(group_id, protocol)
    consumers = [first]
    try:
        first_join = _poll_until_settled(consumers, SETTLE_TIMEOUT_S)
        start = time.perf_counter()
        consumers += [cluster.consumer(group_id, protocol) for _ in range(2)]
        remaining = SETTLE_TIMEOUT_S - (time.perf_counter() - start)
        _poll_until_settled(consumers, remaining)
        settle = time.perf_counter() - start if _settled(consumers) else float("nan")
        return {"first_join_s": first_join, "settle_s": settle}
    finally:
        for consumer in consumers:
            consumer.close()


# -- the measuring process ------------------------------------------------------------------


@dataclass
class Target:
    label: str
    bootstrap: str
    protocol: str


def run_worker(*args: str) -> dict[str, float]:
    completed = subprocess.run(
        [sys.executable, __file__, "--worker", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{completed.stderr}")
    result: dict[str, float] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per target (default 5)")
    parser.add_argument("--commits", type=int, default=2000, help="commits per pass per run")
    parser.add_argument("--quick", action="store_true", help="3 runs of 300 commits")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, bootstrap, protocol, *rest = args.worker
        if kind == "commits":
            result = worker_commits(bootstrap, protocol, int(rest[0]))
        else:
            result = worker_settle(bootstrap, protocol)
        print(json.dumps(result))
        return
    runs, commits = (3, 300) if args.quick else (args.runs, args.commits)

    print(
        f"group_bench: confluent-kafka consumers, topic of {PARTITIONS} partitions, "
        f"{runs} runs per target in alternating rounds, each run a fresh child process.\n"
        f"Commits: {commits:,} synchronous commit() calls of one partition's offset (latency per "
        f"call), then {commits:,} asynchronous ones (rate = commits / time until every "
        "callback fired).\n"
        "Settle: one member joins and gets every partition; then two more are created and the "
        "clock runs until all three own disjoint, non-empty shares covering every partition.\n"
        f"Classic: session.timeout.ms={SESSION_TIMEOUT_MS}, heartbeat.interval.ms="
        f"{HEARTBEAT_MS}, eager range assignor. Odradek: "
        + ", ".join(f"{key}={value}" for key, value in ODRADEK_OVERRIDES.items())
        + ". Medians over runs."
    )
    broker = BrokerProcess(ODRADEK_OVERRIDES).start()
    no_fsync_broker = BrokerProcess({**ODRADEK_OVERRIDES, "odradek.acks.all.fsync": "false"})
    try:
        no_fsync_broker.start()
        for started in (broker, no_fsync_broker):
            create_topic(started.bootstrap_servers, TOPIC, PARTITIONS, {})
        targets = [
            Target("librdkafka mock, classic", "mock", "classic"),
            Target("Odradek, classic", broker.bootstrap_servers, "classic"),
            Target("Odradek, consumer (KIP-848)", broker.bootstrap_servers, "consumer"),
            Target("Odradek, classic, fsync=false", no_fsync_broker.bootstrap_servers, "classic"),
        ]
        commit_results: dict[str, list[dict[str, float]]] = {t.label: [] for t in targets}
        settle_results: dict[str, list[dict[str, float]]] = {t.label: [] for t in targets}
        for round_number in range(runs):
            for target in targets:
                measured = run_worker("commits", target.bootstrap, target.protocol, str(commits))
                commit_results[target.label].append(measured)
                settled = run_worker("settle", target.bootstrap, target.protocol)
                settle_results[target.label].append(settled)
                print(
                    f"  round {round_number + 1}/{runs} {target.label:30} "
                    f"sync p50 {measured['p50_ms']:6.3f} ms  p99 {measured['p99_ms']:6.3f} ms  "
                    f"{measured['sync_rate']:>7,.0f} sync/s  {measured['async_rate']:>7,.0f} "
                    f"async/s  first join {settled['first_join_s']:.3f} s  "
                    f"1->3 settle {settled['settle_s']:.3f} s",
                    flush=True,
                )
    finally:
        broker.stop()
        no_fsync_broker.stop()

    rows = []
    for target in targets:
        commit_runs = commit_results[target.label]
        settle_runs = settle_results[target.label]
        problems = sum(
            int(r["errors"]) + (0 if r["last_committed_ok"] else 1) for r in commit_runs
        ) + sum(1 for r in settle_runs if math.isnan(r["settle_s"]))
        rows.append(
            [
                target.label,
                _ms(median([r["p50_ms"] for r in commit_runs])),
                _ms(median([r["p99_ms"] for r in commit_runs])),
                f"{median([r['sync_rate'] for r in commit_runs]):,.0f}",
                f"{median([r['async_rate'] for r in commit_runs]):,.0f}",
                f"{median([r['first_join_s'] for r in settle_runs]):.3f}",
                f"{median([r['settle_s'] for r in settle_runs]):.3f}",
                str(problems),
            ]
        )
    print_table(
        f"Consumer groups, median of {runs} runs ({commits:,} commits per pass)",
        [
            "target",
            "sync commit p50 ms",
            "p99 ms",
            "sync commits/s",
            "async commits/s",
            "first join s",
            "1->3 settle s",
            "errors",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
