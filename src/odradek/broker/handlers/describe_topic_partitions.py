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
from collections.abc import Callable
from typing import Any

from kio.schema.errors import ErrorCode

from odradek.broker import dispatcher
from odradek.broker.authorized_operations import topic_operations
from odradek.broker.context import BrokerContext
from odradek.broker.handlers.metadata import INTERNAL_TOPICS
from odradek.controller import NO_LEADER
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
    topics, describe_partition = _partition_source(context, partition_type)
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
    operations = topic_operations(True)
    described = []
    next_cursor = None
    remaining = limit
    for name in names:
        if remaining <= 0:
            next_cursor = make(nested(module, "Cursor"), topic_name=name, partition_index=0)
            break
        known = topics.get(name)
        if known is None:
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
        topic_id, partition_count = known
        end = min(partition_count, first + remaining)
        partitions = tuple(describe_partition(name, index) for index in range(first, end))
        described.append(
            make(
                topic_type,
                error_code=ErrorCode.none,
                name=name,
                topic_id=topic_id,
                is_internal=name in INTERNAL_TOPICS,
                partitions=partitions,
                topic_authorized_operations=operations,
            )
        )
        if end < partition_count:
            next_cursor = make(nested(module, "Cursor"), topic_name=name, partition_index=end)
            break
        remaining -= len(partitions)
    return make(response, throttle_time=0, topics=tuple(described), next_cursor=next_cursor)


def _partition_source(
    context: BrokerContext, partition_type: type
) -> tuple[dict[str, tuple[uuid.UUID, int]], Callable[[str, int], Any]]:
    """(name -> (topic id, partition count), describe(name, index) -> a response partition):
    from the metadata image on a cluster, from the local logs alone."""
    member = context.cluster
    if member is None:
        node = context.node_id
        local = {
            name: (metadata.topic_id, metadata.partitions)
            for name, metadata in context.logs.topics().items()
        }

        def describe_local(name: str, index: int) -> Any:
            return make(
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

        return local, describe_local

    image = member.image
    known = {
        topic.name: (topic.topic_id, max(topic.partitions, default=-1) + 1)
        for topic in image.topics_by_id.values()
    }

    def describe_replicated(name: str, index: int) -> Any:
        state = image.partition_metadata(name, index, member.listener_name)
        if state is None:  # a gap in the partition indexes: not something the controller makes
            return make(
                partition_type,
                error_code=ErrorCode.unknown_topic_or_partition,
                partition_index=index,
                leader_id=NO_LEADER,
                leader_epoch=-1,
                replica_nodes=(),
                isr_nodes=(),
                eligible_leader_replicas=(),
                last_known_elr=(),
                offline_replicas=(),
            )
        return make(
            partition_type,
            error_code=ErrorCode.leader_not_available
            if state.leader_id == NO_LEADER
            else ErrorCode.none,
            partition_index=index,
            leader_id=state.leader_id,
            leader_epoch=state.leader_epoch,
            replica_nodes=state.replica_nodes,
            isr_nodes=state.isr_nodes,
            eligible_leader_replicas=(),
            last_known_elr=(),
            offline_replicas=state.offline_replicas,
        )

    return known, describe_replicated
