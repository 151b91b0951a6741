"""Notification service, at-least-once with an idempotent consumer: better twice than never, and
the idempotent consumer makes "twice" rare.

The producer waits for acks=all and retries; it stamps every notification with a message id.
The processor commits offsets only after the notification was sent, so a crash sends again what
was in flight. Each send is recorded, with its message id, in SQLite in the same transaction as
the "sent" row; a redelivered notification whose id is recorded is skipped. What remains
possible is a duplicate from a crash *during* the send itself (the recipient got it, the record
did not commit): that is the price of never losing one.

    python examples/notification_service.py 127.0.0.1:9092 --produce 100 --idle-timeout 3
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
from typing import Any

from confluent_kafka import Message

from odradek.client import (
    GuaranteeProducer,
    IdempotentConsumer,
    Processor,
    SqliteSink,
    message_id,
    preflight,
)

TOPIC = "notifications"
GUARANTEE = "at-least-once"


def produce_sample(bootstrap: str, count: int) -> None:
    with GuaranteeProducer(bootstrap, GUARANTEE) as producer:
        for index in range(count):
            user = f"user-{index % 7}"
            body = {"user": user, "text": f"your parcel {index} has shipped"}
            producer.produce(TOPIC, json.dumps(body).encode(), key=user.encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bootstrap", help="bootstrap.servers, e.g. 127.0.0.1:9092")
    parser.add_argument("--group", default="notification-service")
    parser.add_argument("--database", default="notifications.db")
    parser.add_argument("--produce", type=int, default=0, help="first send this many notifications")
    parser.add_argument("--idle-timeout", type=float, default=None)
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")

    if arguments.produce:
        produce_sample(arguments.bootstrap, arguments.produce)
    print(preflight(arguments.bootstrap, [TOPIC], GUARANTEE))

    sink = SqliteSink(arguments.database)
    with sink, sink.transaction() as tx:
        tx.execute(
            "CREATE TABLE IF NOT EXISTS sent (message_id TEXT, user_id TEXT, text TEXT,"
            " sent_at TEXT DEFAULT CURRENT_TIMESTAMP)"
        )

    def send(message: Message, tx: Any) -> None:
        notification = json.loads(message.value() or b"{}")
        # A real service calls its mail/SMS/push provider here.
        print(f"-> {notification['user']}: {notification['text']}")
        tx.execute(
            "INSERT INTO sent (message_id, user_id, text) VALUES (?, ?, ?)",
            (message_id(message), notification["user"], notification["text"]),
        )

    processor = Processor(
        arguments.bootstrap,
        arguments.group,
        [TOPIC],
        GUARANTEE,
        IdempotentConsumer(sink, send, scope="notifications"),
        sink=sink,
        run_preflight=False,
    )
    signal.signal(signal.SIGTERM, lambda *_: processor.stop())
    stats = processor.run(idle_timeout=arguments.idle_timeout)
    print(
        f"consumed {stats.consumed}, sent {stats.processed - stats.duplicates_skipped}, "
        f"duplicates skipped {stats.duplicates_skipped}, dead-lettered {stats.dead_lettered}"
    )


if __name__ == "__main__":
    main()
