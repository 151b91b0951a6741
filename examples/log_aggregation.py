"""Log aggregation, at-most-once: count log lines per service and level, as fast as possible.

Losing a few lines when a process crashes is acceptable; counting one twice is not worth paying
for. The producer sends with acks=0 and no retries; the processor commits each batch's offsets
*before* counting it, so a crash loses at most the batch in hand and never counts it twice.

    python examples/log_aggregation.py 127.0.0.1:9092 --produce 1000 --idle-timeout 3
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import signal
from collections import Counter

from confluent_kafka import Message

from odradek.client import GuaranteeProducer, Processor, preflight

TOPIC = "app-logs"
GUARANTEE = "at-most-once"


def produce_sample(bootstrap: str, count: int) -> None:
    services, levels = ["api", "billing", "search"], ["INFO", "INFO", "INFO", "WARN", "ERROR"]
    with GuaranteeProducer(bootstrap, GUARANTEE) as producer:
        for index in range(count):
            line = {"service": random.choice(services), "level": random.choice(levels), "n": index}
            producer.produce(TOPIC, json.dumps(line).encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bootstrap", help="bootstrap.servers, e.g. 127.0.0.1:9092")
    parser.add_argument("--group", default="log-aggregation")
    parser.add_argument("--produce", type=int, default=0, help="first send this many sample lines")
    parser.add_argument("--idle-timeout", type=float, default=None)
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")

    if arguments.produce:
        produce_sample(arguments.bootstrap, arguments.produce)
    print(preflight(arguments.bootstrap, [TOPIC], GUARANTEE))

    counts: Counter[tuple[str, str]] = Counter()

    def count(message: Message) -> None:
        line = json.loads(message.value() or b"{}")
        counts[(line.get("service", "?"), line.get("level", "?"))] += 1

    processor = Processor(
        arguments.bootstrap, arguments.group, [TOPIC], GUARANTEE, count, run_preflight=False
    )
    signal.signal(signal.SIGTERM, lambda *_: processor.stop())
    stats = processor.run(idle_timeout=arguments.idle_timeout)
    for (service, level), number in sorted(counts.items()):
        print(f"{service:10} {level:6} {number}")
    print(f"consumed {stats.consumed}, dropped {stats.dropped} in {stats.elapsed_seconds:.1f} s")


if __name__ == "__main__":
    main()
