"""A confluent-kafka group consumer run as a subprocess, so tests can SIGKILL / SIGSTOP it.

    python group_consumer.py BOOTSTRAP TOPIC GROUP OUTPUT {after|before} [options]

Writes one line per event to OUTPUT (line-buffered, so a SIGKILL loses nothing written):
  ASSIGNED p,p,...   the partitions it owns after a rebalance
  P p o              processed the record at partition p, offset o
  COMMITTED          the commit before this line succeeded
  FAILED             a commit failed (its records may be processed again)
  W p o              committed but not processed (at-most-once kill window)
  PAUSE              it stopped at its kill point and waits to be killed
"""

from __future__ import annotations

import argparse
import signal
import time

from confluent_kafka import Consumer, KafkaException, TopicPartition


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("bootstrap")
    parser.add_argument("topic")
    parser.add_argument("group")
    parser.add_argument("output")
    parser.add_argument("mode", choices=["after", "before"])
    parser.add_argument("--kill-after", type=int, default=0)
    parser.add_argument("--protocol", default="classic")
    parser.add_argument("--session-timeout-ms", type=int, default=3000)
    arguments = parser.parse_args()
    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    output = open(arguments.output, "a", buffering=1)  # noqa: SIM115 -- lives as long as we do
    config = {
        "bootstrap.servers": arguments.bootstrap,
        "group.id": arguments.group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "enable.auto.offset.store": True,
    }
    if arguments.protocol == "consumer":
        config["group.protocol"] = "consumer"
    else:
        config["session.timeout.ms"] = arguments.session_timeout_ms
        config["heartbeat.interval.ms"] = 300
    consumer = Consumer(config)

    # With the KIP-848 protocol librdkafka's callbacks are incremental (only what was added or
    # revoked, possibly nothing), so the partitions owned are tracked across callbacks.
    incremental = arguments.protocol == "consumer"
    owned: set[int] = set()

    def on_assign(consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if not incremental:
            owned.clear()
        owned.update(tp.partition for tp in partitions)
        output.write(f"ASSIGNED {','.join(map(str, sorted(owned)))}\n")

    def on_revoke(consumer: Consumer, partitions: list[TopicPartition]) -> None:
        owned.difference_update(tp.partition for tp in partitions)
        if incremental:
            output.write(f"ASSIGNED {','.join(map(str, sorted(owned)))}\n")

    consumer.subscribe([arguments.topic], on_assign=on_assign, on_revoke=on_revoke)
    processed = 0
    while not stop:
        messages = [m for m in consumer.consume(num_messages=5, timeout=0.2) if not m.error()]
        if not messages:
            continue
        if arguments.mode == "before":
            last: dict[int, int] = {}
            for message in messages:
                last[message.partition()] = message.offset() + 1
            try:
                consumer.commit(
                    offsets=[TopicPartition(arguments.topic, p, o) for p, o in last.items()],
                    asynchronous=False,
                )
            except KafkaException:
                output.write("FAILED\n")
                continue
            output.write("COMMITTED\n")
            if arguments.kill_after and processed + len(messages) > arguments.kill_after:
                for message in messages:
                    output.write(f"W {message.partition()} {message.offset()}\n")
                output.write("PAUSE\n")
                time.sleep(3600)
        for message in messages:
            output.write(f"P {message.partition()} {message.offset()}\n")
            processed += 1
            if arguments.mode == "after" and processed == arguments.kill_after:
                output.write("PAUSE\n")
                time.sleep(3600)
        if arguments.mode == "after":
            try:
                consumer.commit(asynchronous=False)
                output.write("COMMITTED\n")
            except KafkaException:
                output.write("FAILED\n")
    consumer.close()
    output.close()


if __name__ == "__main__":
    main()
