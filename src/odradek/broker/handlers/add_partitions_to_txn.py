"""AddPartitionsToTxn: partitions join the producer's ongoing transaction.

v0-v3 carry one transaction (clients); v4+ a batch of them, each optionally `verify_only`
(what a partition leader sends for KIP-890's produce check; v5 without `verify_only` is a leader
adding the partition for a Produce v12 batch, KIP-890 part 2). Partitions of unknown topics (on
a cluster: unknown to the metadata image) get UNKNOWN_TOPIC_OR_PARTITION and the rest of that
transaction OPERATION_NOT_ATTEMPTED, with nothing written, as in Kafka.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from odradek.broker import dispatcher
from odradek.broker.context import BrokerContext
from odradek.coordinator.txn import TRANSACTION_VERSION_2, TopicPartition, error_for_version
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import RequestHeader, make, nested, response_module, response_type


async def _add(
    context: BrokerContext,
    version: int,
    transactional_id: str,
    producer_id: int,
    producer_epoch: int,
    topics: Any,
    verify_only: bool,
) -> dict[str, dict[int, ErrorCode]]:
    partitions = [
        TopicPartition(topic.name, index) for topic in topics for index in topic.partitions
    ]
    unknown = {tp for tp in partitions if not _exists(context, tp)}
    if unknown:
        errors = {
            tp: ErrorCode.unknown_topic_or_partition
            if tp in unknown
            else ErrorCode.operation_not_attempted
            for tp in partitions
        }
    else:
        result = await context.transactions.add_partitions(
            transactional_id,
            producer_id,
            producer_epoch,
            partitions,
            verify_only,
            # v5 without verify_only comes from a partition leader adding the partition for
            # a Produce v12 batch (KIP-890 part 2): transaction version 2.
            TRANSACTION_VERSION_2 if version >= 5 and not verify_only else None,
        )
        errors = {
            tp: error_for_version(ApiKey.ADD_PARTITIONS_TO_TXN, version, error)
            for tp, error in result.partition_errors.items()
        }
    by_topic: dict[str, dict[int, ErrorCode]] = {}
    for (topic, index), error in errors.items():
        by_topic.setdefault(topic, {})[index] = error
    return by_topic


def _exists(context: BrokerContext, partition: TopicPartition) -> bool:
    """Whether the partition exists: on a cluster in the metadata image (the coordinator
    need not host a replica of it), alone in the local logs."""
    if context.cluster is not None:
        described = context.cluster.image.topic(partition.topic)
        if described is not None:
            return partition.partition in described.partitions
    return context.logs.log(partition.topic, partition.partition) is not None


@dispatcher.register(ApiKey.ADD_PARTITIONS_TO_TXN, 0, 5)
async def handle(context: BrokerContext, header: RequestHeader, request: Any) -> Any:
    version = header.api_version
    module = response_module(ApiKey.ADD_PARTITIONS_TO_TXN, version)
    topic_type = nested(module, "AddPartitionsToTxnTopicResult")
    partition_type = nested(module, "AddPartitionsToTxnPartitionResult")

    def topic_results(by_topic: dict[str, dict[int, ErrorCode]]) -> tuple[Any, ...]:
        return tuple(
            make(
                topic_type,
                name=name,
                results_by_partition=tuple(
                    make(partition_type, partition_index=index, partition_error_code=error)
                    for index, error in partitions.items()
                ),
            )
            for name, partitions in by_topic.items()
        )

    response = response_type(ApiKey.ADD_PARTITIONS_TO_TXN, version)
    if version < 4:
        by_topic = await _add(
            context,
            version,
            request.v3_and_below_transactional_id,
            request.v3_and_below_producer_id,
            request.v3_and_below_producer_epoch,
            request.v3_and_below_topics,
            verify_only=False,
        )
        return make(
            response, throttle_time=0, results_by_topic_v3_and_below=topic_results(by_topic)
        )
    transaction_type = nested(module, "AddPartitionsToTxnResult")
    results = []
    for transaction in request.transactions:
        by_topic = await _add(
            context,
            version,
            transaction.transactional_id,
            transaction.producer_id,
            transaction.producer_epoch,
            transaction.topics,
            transaction.verify_only,
        )
        results.append(
            make(
                transaction_type,
                transactional_id=transaction.transactional_id,
                topic_results=topic_results(by_topic),
            )
        )
    return make(
        response, throttle_time=0, error_code=ErrorCode.none, results_by_transaction=tuple(results)
    )
