"""A consume-transform-produce copier (run as a process, killed with SIGKILL by the tests):
reads `input` read_committed in group `group`, writes each value to `output` and commits the
consumed offsets in the same transaction (send_offsets_to_transaction, KIP-447)."""

from __future__ import annotations

import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer


def main() -> None:
    bootstrap, source, target, group, transactional_id = sys.argv[1:6]
    # A pause inside each transaction widens the window in which a kill lands mid-transaction.
    pause_s = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 2000,
            "heartbeat.interval.ms": 300,
        }
    )
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": transactional_id,
            "transaction.timeout.ms": 10000,
            "linger.ms": 5,
        }
    )
    producer.init_transactions(30)
    consumer.subscribe([source])
    print("copier ready", flush=True)
    while True:
        messages = consumer.consume(num_messages=10, timeout=0.5)
        messages = [m for m in messages if m.error() is None]
        if not messages:
            continue
        producer.begin_transaction()
        for message in messages:
            producer.produce(target, key=message.key(), value=message.value())
        time.sleep(pause_s)
        try:
            producer.send_offsets_to_transaction(
                consumer.position(consumer.assignment()), consumer.consumer_group_metadata(), 30
            )
            producer.commit_transaction(30)
        except KafkaException as error:
            if error.args[0].txn_requires_abort():
                producer.abort_transaction(30)
                # Rewind to the committed offsets and copy those messages again.
                committed = consumer.committed(consumer.assignment(), timeout=30)
                for partition in committed:
                    if partition.offset >= 0:
                        consumer.seek(partition)
                continue
            raise


if __name__ == "__main__":
    main()
