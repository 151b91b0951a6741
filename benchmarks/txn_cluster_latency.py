"""A transaction's latency on a cluster, and what the transaction log costs at start-up.

* start: `Cluster(brokers=N).start()` (controller and brokers accepting connections);
* first transaction: from then until a confluent-kafka transactional producer's first
  `init_transactions()` returns (FindCoordinator creates `__transaction_state` through the
  controller; every leader of one of its partitions loads it);
* per transaction (one record to each partition of an RF=min(3, N) topic by default,
  min.insync.replicas=min(2, RF)):
  `begin_transaction()` + `produce()` + `commit_transaction()` wall time, `commit_transaction()`
  alone, and from the start of the transaction until a read_committed consumer (already
  assigned and polling) returns the record.

  .venv/bin/python benchmarks/txn_cluster_latency.py [--brokers 3] [--transactions 30]
      [--topic-partitions 1] [--replicas 3] [--partitions 50]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from _common import median, print_table
from odradek.cluster import Cluster


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--brokers", type=int, default=3)
    parser.add_argument("--transactions", type=int, default=30)
    parser.add_argument("--partitions", type=int, default=None, help="of __transaction_state")
    parser.add_argument(
        "--topic-partitions", type=int, default=1, help="one record to each per transaction"
    )
    parser.add_argument("--replicas", type=int, default=None, help="of the topic")
    parser.add_argument("--data-dir", default=None, help="kept afterwards (node logs)")
    args = parser.parse_args()
    config = {}
    if args.partitions is not None:
        config["transaction.state.log.num.partitions"] = str(args.partitions)
    with tempfile.TemporaryDirectory() as temporary:
        data_dir = args.data_dir or temporary
        cluster = Cluster(brokers=args.brokers, data_dir=data_dir, config=config, log_level="INFO")
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
    replicas = args.replicas or min(3, args.brokers)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics(
        [
            NewTopic(
                topic,
                args.topic_partitions,
                replicas,
                config={"min.insync.replicas": str(min(2, replicas))},
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
    consumer.assign([TopicPartition(topic, index, 0) for index in range(args.topic_partitions)])
    whole: list[float] = []
    commits: list[float] = []
    visible: list[float] = []
    for number in range(args.transactions):
        value = f"record-{number}".encode()
        begin = time.monotonic()
        producer.begin_transaction()
        for index in range(args.topic_partitions):
            producer.produce(topic, value, partition=index)
        before_commit = time.monotonic()
        producer.commit_transaction(30)
        committed = time.monotonic()
        seen = 0
        commits.append(committed - before_commit)
        whole.append(committed - begin)
        while True:
            message = consumer.poll(5)
            if message is not None and message.error() is None and message.value() == value:
                seen += 1
                if seen == args.topic_partitions:
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
        f"{args.brokers} broker(s), {args.transactions} transactions of one record to each of "
        f"{args.topic_partitions} partition(s) (RF={replicas}), "
        f"cluster start {start_s:.2f} s, first init_transactions {first_s:.2f} s",
        ("step", "p50 ms", "p90 ms"),
        rows,
    )


if __name__ == "__main__":
    main()
