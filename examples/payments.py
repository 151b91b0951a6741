"""Payment/order system, exactly-once into PostgreSQL: no payment lost, none applied twice.

Each payment moves money between two accounts and records the order. The processor applies a
batch of payments and stores the consumer offsets *in PostgreSQL, in the same transaction*: the
rows and the offsets commit together or not at all. On restart (or when a partition moves to
another instance) it reads its offsets from the database and seeks there; every offset write is a
compare-and-set on an owner token, so an instance that lost its partitions cannot commit. Kafka's
committed offsets are only a copy for lag monitoring. Costs: a database transaction per batch,
read_committed consumers, and acks=all with min.insync.replicas>=2 on a real cluster.

    python examples/payments.py 127.0.0.1:9092 --dsn "host=127.0.0.1 dbname=shop" \
        --produce 100 --idle-timeout 3
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import signal
from typing import Any

from confluent_kafka import Message

from odradek.client import GuaranteeProducer, PostgresSink, Processor, preflight

TOPIC = "payments"
GUARANTEE = "exactly-once"
ACCOUNTS = ["alice", "bob", "carol", "dave"]
SCHEMA = [
    "CREATE TABLE IF NOT EXISTS accounts (name TEXT PRIMARY KEY, balance BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS orders (order_id TEXT PRIMARY KEY, payer TEXT, payee TEXT,"
    " amount BIGINT)",
]


def produce_sample(bootstrap: str, count: int) -> None:
    # Payments enter with acks=all and retries; a retry duplicate would be a second payment
    # with the same order id, which `apply` below refuses.
    with GuaranteeProducer(bootstrap, "at-least-once") as producer:
        for index in range(count):
            payer, payee = random.sample(ACCOUNTS, 2)
            payment = {"order_id": f"order-{index}", "payer": payer, "payee": payee}
            payment["amount"] = random.randint(1, 100)
            producer.produce(TOPIC, json.dumps(payment).encode(), key=payer.encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bootstrap", help="bootstrap.servers, e.g. 127.0.0.1:9092")
    parser.add_argument("--dsn", required=True, help='libpq DSN, e.g. "host=127.0.0.1 dbname=x"')
    parser.add_argument("--group", default="payments")
    parser.add_argument("--produce", type=int, default=0, help="first send this many payments")
    parser.add_argument("--idle-timeout", type=float, default=None)
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")

    if arguments.produce:
        produce_sample(arguments.bootstrap, arguments.produce)
    report = preflight(arguments.bootstrap, [TOPIC], GUARANTEE)
    print(report)  # on one broker: not ok, durability rests on one disk; it runs regardless

    sink = PostgresSink(arguments.dsn)
    with sink, sink.transaction() as tx:
        for statement in SCHEMA:
            tx.execute(statement)
        for name in ACCOUNTS:
            tx.execute(
                "INSERT INTO accounts (name, balance) VALUES (%s, 1000)"
                " ON CONFLICT (name) DO NOTHING",
                (name,),
            )

    def apply(message: Message, tx: Any) -> None:
        payment = json.loads(message.value() or b"{}")
        amount = int(payment["amount"])
        if amount <= 0:
            raise ValueError(f"amount must be positive: {payment}")  # retried, then dead-lettered
        recorded = tx.execute(
            "INSERT INTO orders (order_id, payer, payee, amount) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (order_id) DO NOTHING",
            (payment["order_id"], payment["payer"], payment["payee"], amount),
        )
        if recorded.rowcount == 0:
            return  # the same order sent twice by a retrying producer: pay once
        for name, change in ((payment["payer"], -amount), (payment["payee"], amount)):
            tx.execute("UPDATE accounts SET balance = balance + %s WHERE name = %s", (change, name))

    processor = Processor(
        arguments.bootstrap,
        arguments.group,
        [TOPIC],
        GUARANTEE,
        apply,
        sink=sink,
        run_preflight=False,
    )
    signal.signal(signal.SIGTERM, lambda *_: processor.stop())
    stats = processor.run(idle_timeout=arguments.idle_timeout)
    with sink, sink.transaction() as tx:
        balances = tx.execute("SELECT name, balance FROM accounts ORDER BY name").fetchall()
        (orders,) = tx.execute("SELECT count(*) FROM orders").fetchone()
    print(f"consumed {stats.consumed} payments in {stats.committed_batches} transactions")
    print(f"orders recorded: {orders}; balances: {dict(balances)}")
    print(f"money in the system: {sum(b for _, b in balances)} (always {1000 * len(ACCOUNTS)})")


if __name__ == "__main__":
    main()
