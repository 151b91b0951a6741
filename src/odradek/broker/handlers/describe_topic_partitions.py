"""DescribeTopicPartitions (KIP-966): Metadata's topic description, paginated by partitions.

As Kafka's DescribeTopicPartitionsRequestHandler and KRaftMetadataCache: no topics named means
every topic; topics are described in name order from the cursor's topic (partitions of that
topic from the cursor's index); at most min(response_partition_limit,
`max.request.partition.size.limit`) partitions go out, and `next_cursor` points at the first
partition left out (a topic cut in the middle, or the next topic at index 0). A named topic that
does not exist is reported UNKNOWN_TOPIC_OR_PARTITION (INVALID_TOPIC_EXCEPTION for an illegal
name); a cursor topic missing from the named topics fails the request with INVALID_REQUEST.
"""

from __future__ import annotations

import uuid
from typing import Any

from kio.schema.errors import ErrorCode

from odradek.broker import dispatcher
from odradek.broker.authorized_operations import topic_operations
from odradek.broker.context import BrokerContext
from odradek.broker.handlers.metadata import INTERNAL_TOPICS
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import RequestHeader, make, nested, response_module, response_type
from odradek.storage.log_manager import InvalidTopicName, validate_topic_name

ZERO_UUID = uuid.UUID(int=0)


@dispatcher.register(ApiKey.DESCRIBE_TOPIC_PARTITIONS, 0, 0)
async def handle(context: BrokerContext, header: RequestHeader, request: Any) -> Any:
    module = response_module(ApiKey.DESCRIBE_TOPIC_PARTITIONS, header.api_version)
    topic_type = nested(module, "DescribeTopicPartitionsResponseTopic")
    partition_type = nested(module, "DescribeTopicPartitionsResponsePartition")
    response = response_type(ApiKey.DESCRIBE_TOPIC_PARTITIONS, header.api_version)
    topics = context.logs.topics()
    cursor = request.cursor
    cursor_topic = cursor.topic_name if cursor is not None else ""
    every_topic = not request.topics
    if every_topic:
        names = sorted(name for name in topics if name >= cursor_topic)
    else:
        names = sorted({topic.name for topic in request.topics if topic.name >= cursor_topic})
        if cursor is not None and cursor.topic_name not in names:
            # Kafka throws InvalidRequestException: every requested topic carries the error.
            return make(
                response,
                throttle_time=0,
                topics=tuple(
                    make(
                        topic_type,
                        error_code=ErrorCode.invalid_request,
                        name=topic.name,
                        topic_id=ZERO_UUID,
                        is_internal=False,
                        partitions=(),
                    )
                    for topic in request.topics
                ),
                next_cursor=None,
            )
    limit = min(
        request.response_partition_limit,
        int(context.config.properties["max.request.partition.size.limit"]),
    )
    node = context.node_id
    operations = topic_operations(True)
    described = []
    next_cursor = None
    remaining = limit
    for name in names:
        if remaining <= 0:
            next_cursor = make(nested(module, "Cursor"), topic_name=name, partition_index=0)
            break
        metadata = topics.get(name)
        if metadata is None:
            if not every_topic:
                try:
                    validate_topic_name(name)
                    error = ErrorCode.unknown_topic_or_partition
                except InvalidTopicName:
                    error = ErrorCode.invalid_topic_exception
                described.append(
                    make(
                        topic_type,
                        error_code=error,
                        name=name,
                        topic_id=ZERO_UUID,
                        is_internal=name in INTERNAL_TOPICS,
                        partitions=(),
                        topic_authorized_operations=operations,
                    )
                )
            continue
        first = cursor.partition_index if cursor is not None and name == cursor_topic else 0
        first = max(first, 0)
        end = min(metadata.partitions, first + remaining)
        partitions = tuple(
            make(
                partition_type,
                error_code=ErrorCode.none,
                partition_index=index,
                leader_id=node,
                leader_epoch=0,
                replica_nodes=(node,),
                isr_nodes=(node,),
                eligible_leader_replicas=(),
                last_known_elr=(),
                offline_replicas=(),
            )
            for index in range(first, end)
        )
        described.append(
            make(
                topic_type,
                error_code=ErrorCode.none,
                name=name,
                topic_id=metadata.topic_id,
                is_internal=name in INTERNAL_TOPICS,
                partitions=partitions,
                topic_authorized_operations=operations,
            )
        )
        if end < metadata.partitions:
            next_cursor = make(nested(module, "Cursor"), topic_name=name, partition_index=end)
            break
        remaining -= len(partitions)
    return make(response, throttle_time=0, topics=tuple(described), next_cursor=next_cursor)
