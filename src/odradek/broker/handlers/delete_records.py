"""DeleteRecords: raise a partition's log start offset (the low watermark).

On a cluster only the leader deletes, and answers once every live replica's log start reached
the offset (Kafka's DelayedDeleteRecords; followers take the leader's log start from their
Fetch responses and report theirs back), or REQUEST_TIMED_OUT after the request's timeout.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from odradek.broker import dispatcher
from odradek.broker.context import BrokerContext
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import RequestHeader, make, nested, response_module, response_type

HIGH_WATERMARK = -1  # "delete everything up to the high watermark"


@dispatcher.register(ApiKey.DELETE_RECORDS, 0, 2)
async def handle(context: BrokerContext, header: RequestHeader, request: Any) -> Any:
    version = header.api_version
    module = response_module(ApiKey.DELETE_RECORDS, version)
    partition_type = nested(module, "DeleteRecordsPartitionResult")
    topic_type = nested(module, "DeleteRecordsTopicResult")
    topics = []
    for topic in request.topics:
        partitions = []
        for partition in topic.partitions:
            if context.cluster is not None:
                answer = await _on_cluster(context, topic.name, partition, request.timeout)
                if answer is not None:
                    error, low_watermark = answer
                    partitions.append(
                        make(
                            partition_type,
                            partition_index=partition.partition_index,
                            low_watermark=low_watermark,
                            error_code=error,
                        )
                    )
                    continue
            log = context.logs.log(topic.name, partition.partition_index)
            error, low_watermark = ErrorCode.none, -1
            if log is None:
                error = ErrorCode.unknown_topic_or_partition
            else:
                offset = (
                    log.high_watermark if partition.offset == HIGH_WATERMARK else partition.offset
                )
                if offset < 0 or offset > log.high_watermark:
                    error = ErrorCode.offset_out_of_range
                else:
                    low_watermark = log.delete_records_before(offset)
            partitions.append(
                make(
                    partition_type,
                    partition_index=partition.partition_index,
                    low_watermark=low_watermark,
                    error_code=error,
                )
            )
        topics.append(make(topic_type, name=topic.name, partitions=tuple(partitions)))
    return make(
        response_type(ApiKey.DELETE_RECORDS, version), throttle_time=0, topics=tuple(topics)
    )


async def _on_cluster(
    context: BrokerContext, topic: str, partition: Any, timeout: Any
) -> tuple[ErrorCode, int] | None:
    """A replicated partition's answer (None: a local internal topic, served as alone)."""
    assert context.cluster is not None
    replicas = context.cluster.replicas
    hosted, error, _leader = replicas.route(topic, partition.partition_index)
    if hosted is None and error is ErrorCode.none:
        return None
    if hosted is None or error is not ErrorCode.none:
        return error, -1
    log = hosted.log
    offset = log.high_watermark if partition.offset == HIGH_WATERMARK else partition.offset
    if offset < 0 or offset > log.high_watermark:
        return ErrorCode.offset_out_of_range, -1
    log.delete_records_before(offset)
    return await replicas.wait_for_low_watermark(
        hosted, offset, int(timeout.total_seconds() * 1000)
    )
