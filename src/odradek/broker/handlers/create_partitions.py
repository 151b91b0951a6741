"""CreatePartitions: grow a topic's partition count (never shrink)."""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from odradek.broker import cluster_handlers, dispatcher
from odradek.broker.context import BrokerContext
from odradek.broker.handlers.create_topics import MAX_PARTITIONS_PER_REQUEST, TOO_MANY_PARTITIONS
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import RequestHeader, make, nested, response_module, response_type


@dispatcher.register(ApiKey.CREATE_PARTITIONS, 0, 3)
async def handle(context: BrokerContext, header: RequestHeader, request: Any) -> Any:
    if context.cluster is not None:  # a cluster member: the controller decides
        return await cluster_handlers.forward(context, header, request)
    version = header.api_version
    result_type = nested(
        response_module(ApiKey.CREATE_PARTITIONS, version), "CreatePartitionsTopicResult"
    )
    results = []
    for topic in request.topics:
        metadata = context.logs.topics().get(topic.name)
        error, message = ErrorCode.none, None
        if metadata is None:
            error, message = (
                ErrorCode.unknown_topic_or_partition,
                f"Topic '{topic.name}' does not exist.",
            )
        elif topic.count < metadata.partitions:
            error = ErrorCode.invalid_partitions
            message = (
                f"Topic currently has {metadata.partitions} partitions, which is higher than "
                f"the requested {topic.count}."
            )
        elif topic.count == metadata.partitions:
            error = ErrorCode.invalid_partitions
            message = f"Topic already has {metadata.partitions} partitions."
        elif topic.count - metadata.partitions > MAX_PARTITIONS_PER_REQUEST:
            # The same bound as CreateTopics: each new partition is a directory and open files.
            error, message = ErrorCode.policy_violation, TOO_MANY_PARTITIONS
        elif topic.assignments is not None and any(
            list(assignment.broker_ids) != [context.node_id] for assignment in topic.assignments
        ):
            error, message = ErrorCode.invalid_replica_assignment, "Unknown broker in assignment."
        elif not request.validate_only:
            context.logs.create_partitions(topic.name, topic.count)
        results.append(make(result_type, name=topic.name, error_code=error, error_message=message))
    return make(
        response_type(ApiKey.CREATE_PARTITIONS, version), throttle_time=0, results=tuple(results)
    )
