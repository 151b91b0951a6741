"""OffsetDelete: drop a group's committed offsets for partitions it no longer consumes."""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from odradek.broker import dispatcher
from odradek.broker.context import BrokerContext
from odradek.broker.group_runtime import CoordinatorNotAvailableError
from odradek.coordinator.group import OffsetDeleteResponse
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import RequestHeader, make, nested, response_module, response_type


@dispatcher.register(ApiKey.OFFSET_DELETE, 0, 0)
async def handle(context: BrokerContext, header: RequestHeader, request: Any) -> Any:
    version = header.api_version
    errors: dict[str, dict[int, ErrorCode]] = {}
    valid: dict[str, list[int]] = {}
    for topic in request.topics:
        topic_errors = errors.setdefault(topic.name, {})
        for partition in topic.partitions:
            index = partition.partition_index
            if context.logs.log(topic.name, index) is None:
                topic_errors[index] = ErrorCode.unknown_topic_or_partition
            else:
                topic_errors[index] = ErrorCode.none
                valid.setdefault(topic.name, []).append(index)
    try:
        answer: OffsetDeleteResponse = await context.groups.run(
            lambda reference, now: context.groups.coordinator.delete_offsets(
                reference, request.group_id, valid, now
            )
        )
    except CoordinatorNotAvailableError:
        answer = OffsetDeleteResponse(ErrorCode.coordinator_not_available, {})
    module = response_module(ApiKey.OFFSET_DELETE, version)
    response = response_type(ApiKey.OFFSET_DELETE, version)
    if answer.error != ErrorCode.none:
        return make(response, error_code=answer.error, throttle_time=0, topics=())
    for name, partitions in answer.errors.items():
        errors[name].update(partitions)
    topic_type = nested(module, "OffsetDeleteResponseTopic")
    partition_type = nested(module, "OffsetDeleteResponsePartition")
    return make(
        response,
        error_code=ErrorCode.none,
        throttle_time=0,
        topics=tuple(
            make(
                topic_type,
                name=name,
                partitions=tuple(
                    make(partition_type, partition_index=index, error_code=error)
                    for index, error in partitions.items()
                ),
            )
            for name, partitions in errors.items()
        ),
    )
