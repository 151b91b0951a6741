"""Opens a transaction, writes to a partition, says "ready" and waits to be killed: the
hanging transaction of the CLI tests (a long transaction.timeout.ms keeps it open)."""

from __future__ import annotations

import sys
import time

from confluent_kafka import Producer


def main() -> None:
    bootstrap, topic, transactional_id = sys.argv[1:4]
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": transactional_id,
            "transaction.timeout.ms": 600_000,
        }
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, value=b"hanging", partition=0)
    producer.flush(30)
    print("ready", flush=True)
    time.sleep(600)


if __name__ == "__main__":
    main()
