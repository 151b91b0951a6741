"""A Quix Streams application that counts records per key, exactly once (run by
tests/cluster/test_cluster_quix.py with the interpreter of `.venv-quix`, where quixstreams is
installed: it needs an older confluent-kafka than the project pins).

    python quix_count_app.py BOOTSTRAP INPUT OUTPUT GROUP STATE_DIR DELAY_MS

Each input record (key: str) increments its key's count in Quix's state store; the new count
goes to OUTPUT as a JSON integer under the same key. processing_guarantee="exactly-once": the
output, the state's changelog and the consumer offsets are committed in one Kafka transaction,
so a read_committed reader of OUTPUT sees, per key, exactly 1, 2, ..., n. The handler sleeps
DELAY_MS per record so that a backlog takes a while. SIGTERM stops it (Quix's own handler).
"""

from __future__ import annotations

import sys
import time
from typing import Any

from quixstreams import Application  # type: ignore[import-not-found]


def main() -> None:
    bootstrap, source, target, group, state_dir, delay_ms = sys.argv[1:7]
    delay = float(delay_ms) / 1000
    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        processing_guarantee="exactly-once",
        commit_interval=0.5,
        state_dir=state_dir,
        consumer_extra_config={"session.timeout.ms": 6000, "heartbeat.interval.ms": 500},
        producer_extra_config={"transaction.timeout.ms": 15000},
    )
    input_topic = app.topic(source, key_deserializer="str", value_deserializer="bytes")
    output_topic = app.topic(target, key_serializer="str", value_serializer="json")

    def count(_value: Any, state: Any) -> int:
        time.sleep(delay)
        total = int(state.get("count", 0)) + 1
        state.set("count", total)
        return total

    app.dataframe(input_topic).apply(count, stateful=True).to_topic(output_topic)
    app.run()


if __name__ == "__main__":
    main()
