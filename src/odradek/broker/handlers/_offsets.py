"""Per-partition request checks and responses shared by the offset handlers.

OffsetCommit, TxnOffsetCommit and OffsetDelete answer the same way for a partition the broker
does not have (UNKNOWN_TOPIC_OR_PARTITION, never sent to the coordinator) and return the same
topic → partition → error_code shape.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kio.schema.errors import ErrorCode

from odradek.broker.context import BrokerContext
from odradek.coordinator.group import PartitionCommit
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import make, nested, response_module

PartitionErrors = dict[str, dict[int, ErrorCode]]


def known_partitions(
    context: BrokerContext, topics: Iterable[Any]
) -> tuple[PartitionErrors, dict[str, list[Any]]]:
    """Each requested partition's error so far, and the request's partitions this broker has
    (on a cluster: the partitions the metadata image has).

    A known partition starts at NONE; the coordinator's answer overwrites it.
    """
    errors: PartitionErrors = {}
    known: dict[str, list[Any]] = {}
    image = context.cluster.image if context.cluster is not None else None
    for topic in topics:
        topic_errors = errors.setdefault(topic.name, {})
        # On a cluster the coordinator need not host the topic: the metadata image says
        # which partitions exist.
        described = image.topic(topic.name) if image is not None else None
        for partition in topic.partitions:
            index = partition.partition_index
            exists = (
                described is not None and index in described.partitions
                if image is not None
                else context.logs.log(topic.name, index) is not None
            )
            if not exists:
                topic_errors[index] = ErrorCode.unknown_topic_or_partition
            else:
                topic_errors[index] = ErrorCode.none
                known.setdefault(topic.name, []).append(partition)
    return errors, known


def partition_commits(known: Mapping[str, list[Any]]) -> dict[str, dict[int, PartitionCommit]]:
    """The offsets an (Txn)OffsetCommit request commits for the partitions the broker has."""
    return {
        topic: {
            partition.partition_index: PartitionCommit(
                partition.committed_offset,
                getattr(partition, "committed_leader_epoch", -1),
                partition.committed_metadata,
            )
            for partition in partitions
        }
        for topic, partitions in known.items()
    }


def response_topics(
    api_key: ApiKey, version: int, type_prefix: str, errors: PartitionErrors
) -> tuple[Any, ...]:
    """The response's topics, built from `<type_prefix>Topic` and `<type_prefix>Partition`."""
    module = response_module(api_key, version)
    topic_type = nested(module, f"{type_prefix}Topic")
    partition_type = nested(module, f"{type_prefix}Partition")
    return tuple(
        make(
            topic_type,
            name=name,
            partitions=tuple(
                make(partition_type, partition_index=index, error_code=error)
                for index, error in partitions.items()
            ),
        )
        for name, partitions in errors.items()
    )
