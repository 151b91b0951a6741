"""A transaction's latency on a cluster, and what the transaction log costs at start-up.

* start: `Cluster(brokers=N).start()` (controller and brokers accepting connections);
* first transaction: from then until a confluent-kafka transactional producer's first
  `init_transactions()` returns (FindCoordinator creates `__transaction_state` through the
  controller; every leader of one of its partitions loads it);
* per transaction (one record to an RF=min(3, N) topic, min.insync.replicas=min(2, N)):
  `begin_transaction()` + `produce()` + `commit_transaction()` wall time, `commit_transaction()`
  alone, and from the start of the transaction until a read_committed consumer (already
  assigned and polling) returns the record.

  .venv/bin/python benchmarks/txn_cluster_latency.py [--brokers 3] [--transactions 30]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid

from _common import median, print_table
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from odradek.cluster import Cluster


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--brokers", type=int, default=3)
    parser.add_argument("--transactions", type=int, default=30)
    parser.add_argument("--partitions", type=int, default=None, help="of __transaction_state")
    args = parser.parse_args()
    config = {}
    if args.partitions is not None:
        config["transaction.state.log.num.partitions"] = str(args.partitions)
    with tempfile.TemporaryDirectory() as data_dir:
        cluster = Cluster(brokers=args.brokers, data_dir=data_dir, config=config)
        started = time.monotonic()
        cluster.start()
        start_s = time.monotonic() - started
        try:
            measure(cluster, args, start_s)
        finally:
            cluster.stop()


def measure(cluster: Cluster, args: argparse.Namespace, start_s: float) -> None:
    bootstrap = cluster.bootstrap_servers
    topic = f"latency-{uuid.uuid4().hex[:8]}"
    replicas = min(3, args.brokers)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics(
        [
            NewTopic(
                topic,
                1,
                replicas,
                config={"min.insync.replicas": str(min(2, args.brokers))},
            )
        ]
    )[topic].result(30)
    before_init = time.monotonic()
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": f"latency-{uuid.uuid4()}",
            "linger.ms": 0,
        }
    )
    producer.init_transactions(60)
    first_s = time.monotonic() - before_init
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"latency-{uuid.uuid4()}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 100,
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    whole: list[float] = []
    commits: list[float] = []
    visible: list[float] = []
    for number in range(args.transactions):
        value = f"record-{number}".encode()
        begin = time.monotonic()
        producer.begin_transaction()
        producer.produce(topic, value)
        before_commit = time.monotonic()
        producer.commit_transaction(30)
        committed = time.monotonic()
        commits.append(committed - before_commit)
        whole.append(committed - begin)
        while True:
            message = consumer.poll(5)
            if message is not None and message.error() is None and message.value() == value:
                visible.append(time.monotonic() - begin)
                break
    consumer.close()
    rows = [
        (name, f"{median(values) * 1000:.0f}", f"{percentile(values, 0.9) * 1000:.0f}")
        for name, values in (
            ("begin+produce+commit", whole),
            ("commit_transaction()", commits),
            ("start -> read_committed read", visible),
        )
    ]
    print_table(
        f"{args.brokers} broker(s), {args.transactions} transactions of one record, "
        f"cluster start {start_s:.2f} s, first init_transactions {first_s:.2f} s",
        ("step", "p50 ms", "p90 ms"),
        rows,
    )


if __name__ == "__main__":
    main()
