"""Helpers shared by the client tests."""

from __future__ import annotations

import itertools

from confluent_kafka.admin import AdminClient, NewTopic

_names = itertools.count()


def create_topic(admin: AdminClient, partitions: int = 1, **config: str) -> str:
    name = f"topic-{next(_names)}"
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config)],
        operation_timeout=10,
    )
    futures[name].result(timeout=10)
    return name
