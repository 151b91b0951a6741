"""WriteTxnMarkers: write COMMIT/ABORT markers to this leader's partitions.

Kafka's coordinators send it to partition leaders; admin tools send it to abort a hanging
transaction (KIP-664). Alone, the coordinator writes its markers in-process, so this serves the
tools; on a cluster a coordinator sends it to the leaders of its transaction's partitions on
other brokers, a partition not led here answers NOT_LEADER_OR_FOLLOWER, and the answer waits
until each marker is replicated (acks=all, as Kafka appends markers). Every partition answers on
its own: UNKNOWN_TOPIC_OR_PARTITION, INVALID_PRODUCER_EPOCH for an epoch older than the
producer's, TRANSACTION_COORDINATOR_FENCED for an older coordinator epoch. v2's
`transaction_version` does not change what is written.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from odradek.broker import dispatcher
from odradek.broker.context import BrokerContext
from odradek.broker.txn_runtime import NotLeaderError
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import RequestHeader, make, nested, response_module, response_type
from odradek.storage.errors import (
    InvalidProducerEpoch,
    StorageError,
    TransactionCoordinatorFenced,
)


@dispatcher.register(ApiKey.WRITE_TXN_MARKERS, 1, 1)
async def handle(context: BrokerContext, header: RequestHeader, request: Any) -> Any:
    version = header.api_version
    module = response_module(ApiKey.WRITE_TXN_MARKERS, version)
    marker_type = nested(module, "WritableTxnMarkerResult")
    topic_type = nested(module, "WritableTxnMarkerTopicResult")
    partition_type = nested(module, "WritableTxnMarkerPartitionResult")
    waits = []
    results = []
    for marker in request.markers:
        topics = []
        for topic in marker.topics:
            partitions = []
            for index in topic.partition_indexes:
                error = ErrorCode.none
                try:
                    end = context.transactions.write_marker(
                        topic.name,
                        index,
                        marker.producer_id,
                        marker.producer_epoch,
                        marker.transaction_result,
                        marker.coordinator_epoch,
                        context.now_ms(),
                    )
                except InvalidProducerEpoch:
                    error, end = ErrorCode.invalid_producer_epoch, None
                except TransactionCoordinatorFenced:
                    error, end = ErrorCode.transaction_coordinator_fenced, None
                except NotLeaderError:
                    error, end = ErrorCode.not_leader_or_follower, None
                except (StorageError, OSError):
                    error, end = ErrorCode.kafka_storage_error, None
                else:
                    if end is None:
                        error = ErrorCode.unknown_topic_or_partition
                if end is not None:
                    waits.append((topic.name, index, end))
                partitions.append(make(partition_type, partition_index=index, error_code=error))
            topics.append(make(topic_type, name=topic.name, partitions=tuple(partitions)))
        results.append(make(marker_type, producer_id=marker.producer_id, topics=tuple(topics)))
    if context.cluster is not None:
        for name, index, end in waits:
            replicated = await context.transactions.wait_replicated(name, index, end)
            if replicated is not ErrorCode.none:
                results = _with_error(results, name, index, replicated, module)
    elif context.config.acks_all_fsync:
        for name, index, end in waits:
            commit = context.group_commit(name, index)
            if commit is not None:
                await commit.wait_flushed(end)
    return make(response_type(ApiKey.WRITE_TXN_MARKERS, version), markers=tuple(results))


def _with_error(
    results: list[Any], name: str, index: int, error: ErrorCode, module: Any
) -> list[Any]:
    """The results with `name`-`index` answering `error` (its marker was not replicated)."""
    marker_type = nested(module, "WritableTxnMarkerResult")
    topic_type = nested(module, "WritableTxnMarkerTopicResult")
    partition_type = nested(module, "WritableTxnMarkerPartitionResult")
    return [
        make(
            marker_type,
            producer_id=marker.producer_id,
            topics=tuple(
                make(
                    topic_type,
                    name=topic.name,
                    partitions=tuple(
                        make(partition_type, partition_index=p.partition_index, error_code=error)
                        if (topic.name, p.partition_index) == (name, index)
                        else p
                        for p in topic.partitions
                    ),
                )
                for topic in marker.topics
            ),
        )
        for marker in results
    ]
