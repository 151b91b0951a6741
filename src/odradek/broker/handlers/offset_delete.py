"""OffsetDelete: drop a group's committed offsets for partitions it no longer consumes."""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from odradek.broker import dispatcher
from odradek.broker.context import BrokerContext
from odradek.broker.group_runtime import CoordinatorNotAvailableError
from odradek.broker.handlers._offsets import known_partitions, response_topics
from odradek.coordinator.group import OffsetDeleteResponse
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import RequestHeader, make, response_type


@dispatcher.register(ApiKey.OFFSET_DELETE, 0, 0)
async def handle(context: BrokerContext, header: RequestHeader, request: Any) -> Any:
    version = header.api_version
    errors, known = known_partitions(context, request.topics)
    valid = {
        topic: [partition.partition_index for partition in partitions]
        for topic, partitions in known.items()
    }
    try:
        answer: OffsetDeleteResponse = await context.groups.run(
            lambda reference, now: context.groups.coordinator.delete_offsets(
                reference, request.group_id, valid, now
            ),
            group_id=request.group_id,
        )
    except CoordinatorNotAvailableError as unavailable:
        answer = OffsetDeleteResponse(unavailable.error_code, {})
    response = response_type(ApiKey.OFFSET_DELETE, version)
    if answer.error != ErrorCode.none:
        return make(response, error_code=answer.error, throttle_time=0, topics=())
    for name, partitions in answer.errors.items():
        errors[name].update(partitions)
    return make(
        response,
        error_code=ErrorCode.none,
        throttle_time=0,
        topics=response_topics(ApiKey.OFFSET_DELETE, version, "OffsetDeleteResponse", errors),
    )
