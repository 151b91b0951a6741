"""The toolkit's exactly-once `Processor` as a process, for the cluster kill tests.

    python eos_processor.py BOOTSTRAP INPUT GROUP LOG (--output TOPIC | --postgres DSN)
        [--delay-ms MS]

Copies every input value once: with --output into an output topic (one Kafka transaction per
commit interval holding the records and the consumer offsets), with --postgres into the table
`copied` (the row and the offsets in one database transaction). The handler sleeps `--delay-ms`
per message, so a backlog takes long enough that a broker kill falls inside a transaction.

LOG receives, line-buffered (a SIGKILL loses nothing already written), after each commit:
  COMMITTED partition next_offset    one line per partition of the committed batch
The transactional.id is fixed (instance "a"): a restarted process fences its predecessor.
SIGTERM stops it cleanly (the open transaction is committed first).
"""

from __future__ import annotations

import argparse
import logging
import signal
import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import Message

from odradek.client import PostgresSink, Processor

SCHEMA = "CREATE TABLE IF NOT EXISTS copied (partition_id INTEGER, offset_id BIGINT, value TEXT)"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("bootstrap")
    parser.add_argument("input")
    parser.add_argument("group")
    parser.add_argument("log")
    parser.add_argument("--output", default=None)
    parser.add_argument("--postgres", default=None)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--debug", default="", help="librdkafka debug contexts (to stderr)")
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    log = open(arguments.log, "a", buffering=1)  # noqa: SIM115 -- lives as long as we do
    delay = arguments.delay_ms / 1000

    handler: Any
    sink = None
    if arguments.postgres is not None:
        sink = PostgresSink(arguments.postgres)
        with sink, sink.transaction() as tx:
            tx.execute(SCHEMA)

        def handler(message: Message, tx: Any) -> None:
            time.sleep(delay)
            tx.execute(
                "INSERT INTO copied (partition_id, offset_id, value) VALUES (%s, %s, %s)",
                (message.partition(), message.offset(), (message.value() or b"").decode()),
            )

    else:

        def handler(message: Message) -> Any:
            time.sleep(delay)
            return message.value()

    def after_commit(batch: Sequence[Message]) -> None:
        next_offsets: dict[int, int] = {}
        for message in batch:
            next_offsets[message.partition()] = max(
                next_offsets.get(message.partition(), 0), message.offset() + 1
            )
        for partition, offset in sorted(next_offsets.items()):
            log.write(f"COMMITTED {partition} {offset}\n")

    processor = Processor(
        arguments.bootstrap,
        arguments.group,
        [arguments.input],
        "exactly-once",
        handler,
        sink=sink,
        output_topic=arguments.output,
        config={
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
            "transaction.timeout.ms": 15000,
            **({"debug": arguments.debug} if arguments.debug else {}),
        },
        instance_id="a",
        batch_size=50,
        on_after_commit=after_commit,
        run_preflight=False,
    )
    signal.signal(signal.SIGTERM, lambda *_: processor.stop())
    processor.run()
    log.close()


if __name__ == "__main__":
    main()
